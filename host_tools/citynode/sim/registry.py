"""The registry of running virtual nodes: one JSON file each in a per-user runtime directory, read
by `citynode ports` and the port chooser of every command.

    path = register({"port": "/dev/pts/7", "flash": "/tmp/n1", "node_id": "wl-01", ...})
    running()          # [{"port": ..., "pid": ...}, ...] of live nodes; stale files removed
    unregister(path)
"""
import json
import os
from pathlib import Path


def registry_dir():
    """Where running virtual nodes leave one JSON file each (read by `citynode ports`)."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and os.path.isdir(base):
        return Path(base) / "citynode"
    return Path("/tmp") / ("citynode-%d" % os.getuid())


def running():
    """The virtual nodes that are running now, as registered; stale entries are removed."""
    out = []
    d = registry_dir()
    for p in sorted(d.glob("sim-*.json")) if d.is_dir() else ():
        try:
            info = json.loads(p.read_text())
            os.kill(info["pid"], 0)
        except (OSError, ValueError, KeyError, TypeError):
            try:
                p.unlink()
            except OSError:
                pass
            continue
        if os.path.exists(info.get("port") or ""):
            out.append(info)
    return out


def register(info):
    """Write `info` (it must have "port" and "pid") atomically; the file's path."""
    d = registry_dir()
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = d / ("sim-%d-%s.json" % (info["pid"], info["port"].rsplit("/", 1)[-1]))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(info))
    os.replace(tmp, path)
    return path


def unregister(path):
    try:
        Path(path).unlink()
    except OSError:
        pass

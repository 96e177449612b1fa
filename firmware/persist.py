"""Small files on the node's flash, written whole: a temporary file, then a rename.

    import persist
    persist.write_json("config.json", cfg)     # never leaves a half-written config
    boot = persist.next_boot()                 # the boot counter, written once per boot

Paths are relative on purpose: under the virtual node's VfsPosix mount, os.rename of absolute
paths fails (ENOENT) while relative ones work; on a board both work.
"""
import json
import os


def read_json(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except OSError:
        return default


def read_bytes(path, most):
    """The file's bytes, or None if it is missing or larger than `most` (never read whole)."""
    try:
        if os.stat(path)[6] > most:
            return None
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def write_bytes(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, path)


def write_json(path, obj):
    write_bytes(path, json.dumps(obj).encode())


def remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def next_boot(path="state.json"):
    """Increment and return the boot counter (0 for the first boot of a fresh flash)."""
    st = read_json(path, {})
    n = st.get("boot", -1) + 1 if isinstance(st, dict) else 0
    write_json(path, {"boot": n})
    return n

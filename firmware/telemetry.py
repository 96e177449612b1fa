"""The node's MQTT payloads and the command parser, exactly as CONTRACT.md defines them.

Pure: runs on MicroPython and CPython.
    telemetry.reading(12, 431, 1764390000, 3600, {"water_level_cm": 123.4}, {})  # -> bytes
    telemetry.parse_cmd(b'{"id":"c-1","cmd":"ping","args":{}}')                # -> ("c-1", "ping", {})
"""
import json

MAX_CMD = 512  # CONTRACT.md: larger command payloads are refused
COMMANDS = ("ping", "sample", "get_config", "set", "reboot")


class CommandError(ValueError):
    """A command refused before it ran; args[0] is the reason, `id` the command's id if known."""

    def __init__(self, reason, cid=None):
        super().__init__(reason)
        self.id = cid


def _rounded(values):
    # Two decimals are well below every sensor's resolution; avoids 27.099999999 on the wire.
    out = {}
    for k in values:
        v = values[k]
        out[k] = round(v, 2) if isinstance(v, float) else v
    return out


def reading(boot, seq, ts, up, values, errors, kept=None):
    d = {"boot": boot, "seq": seq, "ts": ts, "up": up, "values": _rounded(values)}
    if errors:
        d["errors"] = errors
    if kept:
        d["kept"] = kept
    return json.dumps(d).encode()


def event(boot, seq, ts, name, detail):
    return json.dumps({"boot": boot, "seq": seq, "ts": ts, "event": name, "detail": detail}).encode()


def status(online, fw=None, boot=None, reset=None):
    if not online:
        return b'{"state":"offline"}'
    return json.dumps({"state": "online", "fw": fw, "boot": boot, "reset": reset}).encode()


def reply(cid, ok, result=None, error=None):
    d = {"id": cid, "ok": ok}
    if ok:
        d["result"] = result if result is not None else {}
    else:
        d["error"] = error
    return json.dumps(d).encode()


def parse_cmd(payload, size=None):
    """(id, cmd, args) or CommandError with a short reason."""
    if size is None:
        size = len(payload)
    if size > MAX_CMD:
        raise CommandError("payload too large (%d > %d bytes)" % (size, MAX_CMD))
    try:
        d = json.loads(payload)
    except (ValueError, UnicodeError):
        raise CommandError("malformed JSON")
    if not isinstance(d, dict):
        raise CommandError("expected a JSON object")
    cid = d.get("id")
    if cid is not None and not isinstance(cid, (str, int)):
        raise CommandError("id must be a string", None)
    cmd = d.get("cmd")
    if cmd not in COMMANDS:
        raise CommandError("unknown command", cid)
    args = d.get("args", {})
    if not isinstance(args, dict):
        raise CommandError("args must be an object", cid)
    return cid, cmd, args

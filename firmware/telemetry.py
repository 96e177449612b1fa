"""The node's MQTT payloads, exactly as docs/contract.md defines them (commands: commands.py).

Pure: runs on MicroPython and CPython.
    telemetry.reading(12, 431, 1764390000, 3600, {"water_level_cm": 123.4}, {})  # -> bytes
    telemetry.reply("c-1", True, {"up": 5})                                     # -> bytes
"""
import json

def num(v):
    """A reading as JSON text. Two decimals are below every sensor's resolution, and MicroPython's
    float repr is not the shortest one (81.9 prints as 81.90000000000001), so format it here.
    None for NaN and infinities, which JSON cannot carry."""
    if isinstance(v, float):
        if v != v or v in (float("inf"), float("-inf")):
            return None
        t = "%.2f" % v
        t = t.rstrip("0")
        return t + "0" if t[-1] == "." else t
    return str(v)


def reading(boot, seq, ts, up, values, errors, kept=None):
    vals = []
    for k in values:
        t = num(values[k])
        if t is not None:
            vals.append('"%s":%s' % (k, t))
    out = '{"boot":%d,"seq":%d,"ts":%s,"up":%d,"values":{%s}' % (
        boot, seq, "null" if ts is None else "%d" % ts, up, ",".join(vals))
    if errors:
        out += ',"errors":' + json.dumps(errors)
    if kept:
        out += ',"kept":' + json.dumps(kept)
    return (out + "}").encode()


def event(boot, seq, ts, name, detail):
    return json.dumps({"boot": boot, "seq": seq, "ts": ts, "event": name, "detail": detail}).encode()


def status(online, fw=None, boot=None, reset=None, trial=False):
    if not online:
        return b'{"state":"offline"}'
    return json.dumps({"state": "online", "fw": fw, "boot": boot, "reset": reset, "trial": trial}).encode()


def asleep(sleep_s, ts):
    """The retained status of a node going to deep sleep: it should wake `sleep_s` after `ts`
    (null while its clock is unsynchronised); commands sent meanwhile wait at the broker."""
    return ('{"state":"asleep","sleep_s":%d,"ts":%s}' % (sleep_s, "null" if ts is None else "%d" % ts)).encode()


def reply(cid, ok, result=None, error=None):
    d = {"id": cid, "ok": ok}
    if ok:
        d["result"] = result if result is not None else {}
    else:
        d["error"] = error
    return json.dumps(d).encode()

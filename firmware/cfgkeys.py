"""The keys a `set` command may change, their rules, and the secrets `get_config` hides.

A node answers `get_config` and `set` with this module alone: its config was validated whole at
boot (config.py), so a `set` of one allow-listed key needs only that key's rule, not the
validator (about 14 KB of heap from .mpy, more than a from-files node has to spare). config.py
takes these keys' bounds from here, so a value is judged the same by `set`, at boot and on the
host. Pure: runs unchanged on MicroPython and CPython.

    cfgkeys.check("interval_s", 0)                        # "at least 1 s"; None if allowed
    cfgkeys.put(raw, "site.name", "Jl. Siliwangi")        # in place; ValueError
    cfgkeys.masked(cfg)["wifi"]["password"]               # "***"
"""

# config.json larger than this is refused before it is parsed (the node's heap is ~100 KB); every
# field's length and every list's count is capped too, so a config that validates stays far below.
MAX_BYTES = 8192
# The shortest sampling interval on a real board: the sim board's benches may run flat out (0),
# but a command never makes a node sample flat out, not even there.
MIN_INTERVAL_S = 1
SECRETS = (("wifi", "password"), ("mqtt", "password"))
MASK = "***"
# Keys the `set` command may change (dotted paths): key -> (kind, lo, hi), config.py's field kinds.
# Everything else needs a config push over USB.
RULES = {"interval_s": ("interval", MIN_INTERVAL_S, 86400), "alarm_interval_s": ("interval", MIN_INTERVAL_S, 86400),
         "mqtt.keepalive_s": ("int", 10, 3600), "site.name": ("str", 0, 64)}
# What the host tool parses a KEY=VALUE as.
SETTABLE = {"interval_s": "num", "alarm_interval_s": "num", "mqtt.keepalive_s": "int", "site.name": "str"}


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v):
    return (is_int(v) or isinstance(v, float)) and v == v and v not in (float("inf"), float("-inf"))


def text_ok(s):
    # Printable text: no C0/C1 control characters, no UTF-16 surrogate (invalid in UTF-8).
    for c in s:
        o = ord(c)
        if o < 0x20 or 0x7F <= o < 0xA0 or 0xD800 <= o < 0xE000:
            return False
    return True


def check(key, value):
    """Why `set key=value` is refused (config.py's words for the same field), or None."""
    r = RULES.get(key) if isinstance(key, str) else None
    if r is None:
        return "not a settable key (settable: %s)" % ", ".join(sorted(RULES))
    kind, lo, hi = r
    if kind == "str":
        if not isinstance(value, str):
            return "expected a string"
        if not lo <= len(value) <= hi:
            return "expected %d to %d characters" % (lo, hi)
        if not text_ok(value):
            return "control characters and lone surrogates are not allowed"
        return None
    if kind == "int" and not is_int(value):
        return "expected an integer"
    if kind == "interval":
        if not is_num(value):
            return "expected a number of seconds"
        if value < MIN_INTERVAL_S:
            return "at least %d s" % MIN_INTERVAL_S
    if not lo <= value <= hi:
        return "out of range %s..%s%s" % (lo, hi, " s" if kind == "interval" else "")
    return None


def put(d, key, value):
    """d with the dotted key set, in place (objects on the path are made); ValueError if a part of
    the path is not an object. On a node `set` puts a checked value into the config as written
    (then writes it) and into the config validated at boot: the other fields are not looked at
    again, which is sound only while the file is the one that was validated (commands.py)."""
    o = d
    parts = key.split(".")
    for p in parts[:-1]:
        o = o.setdefault(p, {})
        if not isinstance(o, dict):
            raise ValueError("%s: %s is not an object" % (key, p))
    o[parts[-1]] = value
    return d


def masked(cfg):
    """A copy with every secret replaced by MASK (what get_config and `config show` print). Only
    the objects that hold a secret are copied: the rest is shared with cfg, so change neither."""
    out = dict(cfg)
    for sec, key in SECRETS:
        d = out.get(sec)
        if isinstance(d, dict) and d.get(key):
            d = out[sec] = dict(d)
            d[key] = MASK
    return out


def copy(v):
    if isinstance(v, dict):
        return {k: copy(v[k]) for k in v}
    if isinstance(v, list):
        return [copy(x) for x in v]
    return v

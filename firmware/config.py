"""Validate a node's config.json against its board profile; fill defaults; refuse it whole.

Pure: no I/O, no `machine`; runs unchanged on MicroPython and CPython (the host tool imports
this very file, so there is one source of truth).

    import config
    cfg = config.validate(json.load(f), board)   # raises config.ConfigError("sensors[1].rx: ...")

The keys a `set` command may change and their bounds, the size cap (MAX_BYTES) and the secrets
(masked) are in cfgkeys.py, which the node uses without this module once it runs.
"""
from cfgkeys import RULES, check, copy, is_int as _is_int, is_num as _is_num, put, text_ok as _text_ok

REQ = "required"  # marks a field without a default

MAX_ALARMS = 16

# One entry per sensor type: the driver module under drivers/ and the fields it takes.
# (key, kind, default, lo, hi). Pins left out come from the board's "defaults" for the module.
# Adding a sensor type: its module in drivers/ and one entry here.
_RANGE = (("mount_height_cm", "num", REQ, 5, 2000), ("samples", "int", 7, 1, 31),
          ("offset_cm", "num", 0.0, -500, 500), ("mad_k", "num", 3.0, 0.5, 20))
_PM = (("uart", "uart", None, 0, 0), ("rx", "pin_in", None, 0, 0), ("tx", "pin_out", None, 0, 0),
       ("warmup_s", "int", 30, 0, 600), ("frames", "int", 5, 1, 20))
_MQ = (("adc", "adc", None, 0, 0), ("rl_kohm", "num", 10.0, 0.1, 1000), ("r0_kohm", "num", 10.0, 0.01, 10000),
       ("gas", "gas", REQ, 0, 0), ("vc_v", "num", 5.0, 1.0, 5.5), ("divider", "num", 1.0, 1.0, 10.0),
       ("preheat_s", "int", 180, 0, 172800), ("samples", "int", 32, 1, 256))
SENSORS = {
    "hcsr04": ("hcsr04", (("trig", "pin_out", None, 0, 0), ("echo", "pin_in", None, 0, 0),
                          ("max_range_cm", "num", 400.0, 20, 1000), ("min_range_cm", "num", 2.0, 0, 100),
                          ("temp_c", "num", 20.0, -40, 85)) + _RANGE),
    "a02yyuw": ("a02yyuw", (("uart", "uart", None, 0, 0), ("rx", "pin_in", None, 0, 0),
                            ("tx", "pin_out", None, 0, 0), ("max_range_cm", "num", 450.0, 20, 1000),
                            ("min_range_cm", "num", 3.0, 0, 100)) + _RANGE),
    "pms5003": ("pms5003", _PM),
    "sds011": ("sds011", _PM),
    "mq135": ("mq", _MQ),
    "mq7": ("mq", _MQ),
    "mq2": ("mq", _MQ),
    "bme280": ("bme280", (("i2c", "i2c", None, 0, 0), ("sda", "pin_out", None, 0, 0),
                          ("scl", "pin_out", None, 0, 0), ("address", "int", 0x76, 0x76, 0x77))),
    "dht22": ("dht22", (("pin", "pin_out", None, 0, 0),)),
}
# Gases each MQ type has a curve for (drivers/mq.py holds the curves; a test keeps both in step).
MQ_GASES = {"mq135": ("co2", "nh3", "co", "alcohol", "toluene", "acetone"),
            "mq7": ("co", "h2"),
            "mq2": ("lpg", "co", "smoke", "h2", "alcohol", "propane")}

def _rule(key, default):
    # The schema entry of a key `set` may change: its kind and bounds are cfgkeys.RULES'.
    kind, lo, hi = RULES[key]
    return (key[key.rfind(".") + 1:], kind, default, lo, hi)


_SITE = (_rule("site.name", ""), ("lat", "num", None, -90, 90), ("lon", "num", None, -180, 180))
_WIFI = (("ssid", "str", REQ, 1, 32), ("password", "str", "", 0, 63))
# TLS: the broker is verified with a CA certificate in a PEM file on the node's flash (`ca`) and/or
# the SHA-256 of its public key (`pin_sha256`, hex of the DER SubjectPublicKeyInfo); `cert`/`key`
# are a client certificate's PEM files. Unverified TLS only with an explicit `tls_insecure`.
_MQTT = (("host", "host", REQ, 1, 253), ("port", "int", None, 1, 65535), ("tls", "bool", False, 0, 0),
         ("ca", "file", None, 1, 32), ("pin_sha256", "pin", None, 64, 64), ("cert", "file", None, 1, 32),
         ("key", "file", None, 1, 32), ("tls_insecure", "bool", False, 0, 0),
         ("user", "str", None, 0, 64), ("password", "str", None, 0, 128), ("prefix", "prefix", "city", 1, 64),
         _rule("mqtt.keepalive_s", 60), ("backoff_max_s", "int", 300, 2, 3600),
         ("ack_timeout_s", "int", 10, 1, 10))   # 3 sends x 10 s stay inside a task's 45 s watchdog beat
_POWER = (("deep_sleep", "bool", False, 0, 0),)
# pubkey: the fleet's Ed25519 OTA key (`citynode ota keygen`), 32 bytes as hex. Written only with
# `config push` over USB: not in SETTABLE, so no MQTT command can change who may update a node.
_OTA = (("pubkey", "hex", None, 64, 64), ("trial_s", "int", 120, 10, 3600))
_TOP = (("node_id", "id", REQ, 1, 32), ("board", "str", REQ, 1, 32), ("site", _SITE, {}, 0, 0),
        ("wifi", _WIFI, None, 0, 0), ("mqtt", _MQTT, REQ, 0, 0), _rule("interval_s", 60),
        _rule("alarm_interval_s", 10), ("outbox_kb", "int", 64, 4, 4096),
        ("power", _POWER, {}, 0, 0), ("ota", _OTA, {}, 0, 0), ("safe_pin", "pin_in", None, 0, 0), ("ntp_host", "host", "pool.ntp.org", 1, 253),
        ("sensors", "sensors", [], 0, 16), ("alarms", "alarms", {}, 0, MAX_ALARMS))



class ConfigError(ValueError):
    def __init__(self, path, msg):
        super().__init__("%s: %s" % (path, msg) if path else msg)
        self.path = path


def _name_ok(s, extra):
    for c in s:
        if not ("a" <= c <= "z" or "0" <= c <= "9" or c in extra):
            return False
    return True


class _V:
    # One validation run: the board, and the pins claimed so far (pin -> (owner, path)).
    def __init__(self, board):
        self.board = board
        self.pins = {}

    def field(self, path, kind, v, lo, hi, owner=None):
        b = self.board
        if kind == "int":
            if not _is_int(v):
                raise ConfigError(path, "expected an integer")
        elif kind == "num":
            if not _is_num(v):
                raise ConfigError(path, "expected a number")
        elif kind == "bool":
            if not isinstance(v, bool):
                raise ConfigError(path, "expected true or false")
            return v
        elif kind == "interval":
            if not _is_num(v):
                raise ConfigError(path, "expected a number of seconds")
            if b.get("chip") == "sim":
                lo = 0  # the virtual node's benches sample flat out
            if not lo <= v <= hi:
                raise ConfigError(path, "out of range %s..%s s" % (lo, hi))
            return v
        elif kind == "pin":
            if not isinstance(v, str) or len(v) != 64 or not _name_ok(v, "abcdef"):
                raise ConfigError(path, "expected the SHA-256 of the broker's public key: 64 hex digits (lower case)")
            return v
        elif kind == "file":
            if not isinstance(v, str) or not lo <= len(v) <= hi or not _name_ok(v.lower(), "._-") or v[0] == ".":
                raise ConfigError(path, "expected a file name on the node's flash (a-z, 0-9, . _ -; up to %d)" % hi)
            return v
        elif kind == "gas":
            if not isinstance(v, str):
                raise ConfigError(path, "expected a gas name")
            return v
        elif kind == "hex":
            if not isinstance(v, str) or len(v) != lo or not all(c in "0123456789abcdef" for c in v):
                raise ConfigError(path, "expected %d hex digits" % lo)
            return v
        elif kind in ("str", "host", "id", "prefix"):
            if not isinstance(v, str):
                raise ConfigError(path, "expected a string")
            if not lo <= len(v) <= hi:
                raise ConfigError(path, "expected %d to %d characters" % (lo, hi))
            if not _text_ok(v):
                raise ConfigError(path, "control characters and lone surrogates are not allowed")
            if kind == "id" and not _name_ok(v, "-"):
                raise ConfigError(path, "only a-z, 0-9 and - are allowed")
            if kind == "host" and not _name_ok(v.lower(), "-.:_"):
                raise ConfigError(path, "not a host name or address")
            if kind == "prefix" and (not _name_ok(v, "-_/") or v[0] == "/" or v[-1] == "/" or "//" in v):
                raise ConfigError(path, "a topic prefix takes a-z, 0-9, - _ and inner /")
            return v
        elif kind in ("pin", "pin_in", "pin_out", "adc"):
            if not _is_int(v):
                raise ConfigError(path, "expected an integer pin")
            if v not in b["pins"]:
                raise ConfigError(path, "GPIO%d is not a usable pin on %s" % (v, b["name"]))
            if v in b["reserved"]:
                raise ConfigError(path, "GPIO%d is reserved on %s (USB serial)" % (v, b["name"]))
            if kind == "pin_out" and v in b["input_only"]:
                raise ConfigError(path, "GPIO%d is input-only on %s" % (v, b["name"]))
            if kind == "adc" and v not in b["adc"]:
                raise ConfigError(path, "GPIO%d has no usable ADC on %s (ADC1 only)" % (v, b["name"]))
            prev = self.pins.get(v)
            if prev is not None and (owner is None or prev[0] != owner):
                raise ConfigError(path, "GPIO%d is already used by %s" % (v, prev[1]))
            self.pins[v] = (owner, path)
            return v
        elif kind in ("uart", "i2c"):
            tab = b["uarts" if kind == "uart" else "i2c"]
            if not _is_int(v) or str(v) not in tab:
                raise ConfigError(path, "expected one of %s %s" % (kind.upper(), ", ".join(sorted(tab))))
            return v
        else:
            raise ConfigError(path, "unknown field kind")
        if not lo <= v <= hi:
            raise ConfigError(path, "out of range %s..%s" % (lo, hi))
        return v

    def obj(self, path, schema, d, owner=None, defaults=None, skip=()):
        if not isinstance(d, dict):
            raise ConfigError(path, "expected an object")
        known = [f[0] for f in schema]
        for k in d:
            if k not in known and k not in skip:
                raise ConfigError(self.join(path, k), "unknown field")
        out = {}
        for key, kind, default, lo, hi in schema:
            p = self.join(path, key)
            if key in d:
                v = d[key]
            elif defaults and key in defaults:
                v = defaults[key]
            elif default is REQ:
                raise ConfigError(p, "required")
            else:
                if default is not None:
                    out[key] = default if not isinstance(default, (dict, list)) else self.sub(p, kind, default, lo, hi, owner)
                continue
            out[key] = self.sub(p, kind, v, lo, hi, owner)
        return out

    def sub(self, path, kind, v, lo, hi, owner):
        if isinstance(kind, tuple):
            return self.obj(path, kind, v)
        if kind == "sensors":
            return self.sensors(path, v, hi)
        if kind == "alarms":
            return self.alarms(path, v, hi)
        return self.field(path, kind, v, lo, hi, owner)

    @staticmethod
    def join(path, key):
        return path + "." + key if path else key

    def sensors(self, path, v, most):
        if not isinstance(v, list):
            raise ConfigError(path, "expected a list")
        if len(v) > most:
            raise ConfigError(path, "at most %d sensors" % most)
        out, names, uarts = [], [], {}
        for i in range(len(v)):
            p = "%s[%d]" % (path, i)
            s = v[i]
            if not isinstance(s, dict):
                raise ConfigError(p, "expected an object")
            name = s.get("name")
            if not isinstance(name, str) or not 1 <= len(name) <= 16 or not _name_ok(name, "_"):
                raise ConfigError(p + ".name", "expected 1 to 16 characters of a-z, 0-9, _")
            if name in names:
                raise ConfigError(p + ".name", "duplicate sensor name %r" % name)
            names.append(name)
            t = s.get("type")
            if t not in SENSORS:
                raise ConfigError(p + ".type", "unknown sensor type %r (known: %s)" % (t, ", ".join(sorted(SENSORS))))
            mod, schema = SENSORS[t]
            bus = s.get("i2c")
            owner = ("i2c%s" % bus) if t == "bme280" else None
            d = self.obj(p, schema, s, owner, self.board["defaults"].get(mod), ("name", "type"))
            if t in MQ_GASES and d["gas"] not in MQ_GASES[t]:
                raise ConfigError(p + ".gas", "%s has no curve for %r (known: %s)" % (t, d["gas"], ", ".join(MQ_GASES[t])))
            if "uart" in d:
                if d["uart"] in uarts:
                    raise ConfigError(p + ".uart", "UART%d is already used by %s" % (d["uart"], uarts[d["uart"]]))
                uarts[d["uart"]] = name
            d["name"] = name
            d["type"] = t
            out.append(d)
        return out

    def alarms(self, path, v, most):
        if not isinstance(v, dict):
            raise ConfigError(path, "expected an object")
        if len(v) > most:
            raise ConfigError(path, "at most %d alarms" % most)
        out = {}
        for q in v:
            p = self.join(path, q)
            if not isinstance(q, str) or len(q) > 32 or not _name_ok(q, "_") or "_" not in q:
                raise ConfigError(p, "expected a quantity name such as water_level_cm")
            a = self.obj(p, (("high", "num", REQ, -1e6, 1e6), ("clear", "num", REQ, -1e6, 1e6)), v[q])
            if not a["clear"] < a["high"]:
                raise ConfigError(p + ".clear", "must be below high (hysteresis)")
            out[q] = a
        return out


def validate(cfg, board):
    """Return a new config with defaults filled in, or raise ConfigError naming the first bad
    field. `board` is the parsed boards/<name>.json of cfg["board"]."""
    if not isinstance(cfg, dict):
        raise ConfigError("", "config must be a JSON object")
    if cfg.get("board") != board.get("name"):
        raise ConfigError("board", "expected %r for this board profile, got %r" % (board.get("name"), cfg.get("board")))
    v = _V(board)
    out = v.obj("", _TOP, cfg)
    if out.get("wifi") is None and board.get("chip") != "sim":
        raise ConfigError("wifi", "required")
    _tls(out["mqtt"])
    return out


def _tls(m):
    # Verified TLS or an explicit, logged choice not to verify; 8883 is TLS's port.
    if m.get("port") is None:
        m["port"] = 8883 if m["tls"] else 1883
    for k in ("ca", "pin_sha256", "cert", "key"):
        if k in m and not m["tls"]:
            raise ConfigError("mqtt." + k, "needs \"tls\": true")
    if m["tls_insecure"] and not m["tls"]:
        raise ConfigError("mqtt.tls_insecure", "needs \"tls\": true")
    if ("cert" in m) != ("key" in m):
        raise ConfigError("mqtt.cert" if "key" in m else "mqtt.key", "a client certificate needs both cert and key")
    if m["tls"] and "ca" not in m and "pin_sha256" not in m and not m["tls_insecure"]:
        raise ConfigError("mqtt.tls", "the broker cannot be verified: give mqtt.ca (a CA file on the node) "
                                      "or mqtt.pin_sha256, or set mqtt.tls_insecure: true to connect unverified")


def set_key(cfg, key, value, board):
    """(new_cfg, validated) with one allow-listed dotted key changed in a copy of cfg; ConfigError
    if the key is not settable or the result is invalid. cfg itself is left as it was."""
    why = check(key, value)
    if why:
        raise ConfigError(key, why)
    try:
        new = put(copy(cfg), key, value)
    except ValueError as e:
        raise ConfigError("", str(e))
    return new, validate(new, board)

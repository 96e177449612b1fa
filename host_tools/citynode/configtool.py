"""A node's config.json: built from the fleet inventory (a CSV a crew edits in a spreadsheet) and
the site's shared defaults, checked by the firmware's own validator, written whole on the node.

    site = configtool.load_json("site.json", "defaults")
    cfg = configtool.from_inventory("fleet.csv", "wl-cikapundung-01", defaults=site)
    configtool.check(cfg)                       # CheckFailed("sensors[1].rx: expected an integer pin")
    with transport.Device(port) as dev:
        configtool.push(dev, cfg)

Inventory columns (one row per node; see docs/commands/config.md):
  node_id, board, site_name, lat, lon   the node and where it stands
  sensors   name:type[:key=value...] for each sensor, separated by ";" or new lines, e.g.
            water:hcsr04:mount_height_cm=300; air:bme280
  alarms    quantity=high/clear, separated by ";", e.g. water_level_cm=150/140
  notes     ignored, as is any column whose name starts with "#"
  any other column is a config key, dotted for nested ones: interval_s, mqtt.prefix, wifi.ssid
Secrets come from the defaults file or CITYNODE_WIFI_PASSWORD / CITYNODE_MQTT_PASSWORD, never
from the CSV; a secret written "${NAME}" in the defaults comes from the environment variable NAME.
A secret the config needs (wifi.password beside a wifi.ssid, mqtt.password beside an mqtt.user)
and nobody gave is an error when the inventory is validated, before any port is opened.
In the defaults, "{node_id}" in a string is replaced by the row's node_id.

Calibration results (CALIBRATION: offset_cm, r0_kohm) belong to the node: `keep_calibration`
carries them from the node's config into a new one, and `set_sensor_key` writes one into the
node's row of the inventory (the file rewritten atomically, every other byte kept).
"""
import copy
import csv
import json
import os
import re

from . import fw
from .errors import CheckFailed, CitynodeError
from .words import counted

SECRET_ENV = (("wifi", "password", "CITYNODE_WIFI_PASSWORD"), ("mqtt", "password", "CITYNODE_MQTT_PASSWORD"))
REQUIRED_COLUMNS = ("node_id", "board")
CONFIG_COLUMNS = REQUIRED_COLUMNS + ("sensors",)   # what a node's config cannot be made without
CALIBRATION = ("offset_cm", "r0_kohm")   # what `citynode calibrate` measures on the node
SPECIAL = ("node_id", "board", "site_name", "lat", "lon", "sensors", "alarms", "notes")
PATH = "config.json"


# --- files on the host -----------------------------------------------------------------------

_JSON_KIND = {list: "an array", str: "a string", bool: "true or false", int: "a number", float: "a number",
              type(None): "null"}


def load_json(path, what="config"):
    """A config or defaults file as a dict. Refused in one line: a file that cannot be read, is
    not JSON, holds something other than an object, or gives a key twice (JSON would keep the
    last; a crew that typed node_id twice meant one of them, and we cannot tell which)."""
    twice = {}    # id(object) -> the first key it was given twice
    made = []     # every object, kept alive so that no id is reused by a later one

    def pairs(kv):
        d = {}
        made.append(d)
        for k, v in kv:
            if k in d and id(d) not in twice:
                twice[id(d)] = k
            d[k] = v
        return d

    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f, object_pairs_hook=pairs)
    except OSError as e:
        raise CheckFailed("%s: %s" % (path, e.strerror or e))
    except ValueError as e:
        raise CheckFailed("%s: not valid JSON (%s)" % (path, e))
    except RecursionError:
        raise CheckFailed("%s: not valid JSON (nested too deeply)" % path)
    if not isinstance(doc, dict):
        raise CheckFailed("%s: expected a JSON object, not %s" % (path, _JSON_KIND.get(type(doc), "that")))
    dup = _given_twice(doc, "", twice)
    if dup:
        raise CheckFailed("%s: %s: the key is given more than once (keep one)" % (path, dup))
    return doc


def _given_twice(v, path, twice):
    """The dotted/indexed path of the first key given twice in `v`, or None."""
    if isinstance(v, dict):
        if id(v) in twice:
            return "%s.%s" % (path, twice[id(v)]) if path else twice[id(v)]
        items = [("%s.%s" % (path, k) if path else k, x) for k, x in v.items()]
    elif isinstance(v, list):
        items = [("%s[%d]" % (path, i), x) for i, x in enumerate(v)]
    else:
        return None
    for p, x in items:
        found = _given_twice(x, p, twice)
        if found:
            return found
    return None


def check(cfg, where=""):
    """Validate with the firmware's validator; returns the config with defaults filled. The
    firmware's message gets a hint where the host can give one: the field meant by a misspelt
    key, the gases an MQ sensor has curves for."""
    try:
        return fw.validate(cfg)
    except fw.ConfigError as e:
        raise CheckFailed(where + str(e) + _hint(cfg, e.path, str(e)))


def _schema_at(cfg, path):
    """The field names the validator knows at `path`'s parent (a dotted/indexed path)."""
    c = fw.config
    parts = path.replace("]", "").replace("[", ".").split(".")
    fields, node = c._TOP, cfg
    for k in parts[:-1]:
        if fields == "sensors":
            try:
                node = node[int(k)]
            except (ValueError, IndexError, KeyError, TypeError):
                return []
            t = node.get("type") if isinstance(node, dict) else None
            return [f[0] for f in c.SENSORS[t][1]] + ["name", "type"] if t in c.SENSORS else []
        f = [x for x in fields if x[0] == k] if isinstance(fields, tuple) else []
        if not f:
            return []
        fields, node = f[0][1], node.get(k) if isinstance(node, dict) else None
    return [f[0] for f in fields] if isinstance(fields, tuple) else []


def _hint(cfg, path, msg):
    import difflib
    if msg.endswith("unknown field") and path:
        key = path.rsplit(".", 1)[-1]
        near = difflib.get_close_matches(key, _schema_at(cfg, path), 1, 0.7)
        if near:
            return "; did you mean `%s`?" % near[0]
    if path.endswith(".gas") and msg.endswith("required"):
        try:
            t = cfg["sensors"][int(path.split("[")[1].split("]")[0])]["type"]
        except (KeyError, IndexError, ValueError, TypeError):
            return ""
        gases = fw.config.MQ_GASES.get(t)
        if gases:
            return " (the gas %s measures: one of %s)" % (t, ", ".join(gases))
    return ""


# --- a starting config ---------------------------------------------------------------------------

PLACEHOLDERS = {"node_id": "new-node-01", "wifi.ssid": "your-ssid", "wifi.password": "${CITYNODE_WIFI_PASSWORD}",
                "mqtt.host": "broker.example", "mount_height_cm": 300.0}


def starting_config(board, sensors=()):
    """A config for `board` with every field at its default (required ones filled with a
    placeholder to replace) and one sensor of each type in `sensors`, pins from the board."""
    c = fw.config
    prof = fw.board(board)

    def fill(schema, path=""):
        out = {}
        for key, kind, default, lo, hi in schema:
            p = path + key
            if isinstance(kind, tuple):
                out[key] = fill(kind, p + ".")
            elif p in PLACEHOLDERS:
                out[key] = PLACEHOLDERS[p]
            elif kind == "sensors":
                out[key] = []
            elif key == "board":
                out[key] = board
            elif default is not c.REQ and default is not None:   # unset optional fields stay out
                out[key] = default
        return out

    cfg = fill(c._TOP)
    if prof.get("chip") == "sim":
        cfg.pop("wifi")
    if prof.get("safe_pin") is not None:
        cfg["safe_pin"] = prof["safe_pin"]
    for t in sensors:
        if t not in c.SENSORS:
            raise CheckFailed("unknown sensor type %r (known: %s)" % (t, ", ".join(sorted(c.SENSORS))))
        mod, schema = c.SENSORS[t]
        d = {"name": t if sum(1 for x in sensors if x == t) == 1 else "%s_%d" % (t, len(cfg["sensors"]))}
        d["type"] = t
        pins = prof.get("defaults", {}).get(mod, {})
        for key, kind, default, lo, hi in schema:
            if key in pins:
                d[key] = pins[key]
            elif key == "gas":
                d[key] = c.MQ_GASES[t][0]
            elif key in PLACEHOLDERS:
                d[key] = PLACEHOLDERS[key]
            elif default is not c.REQ and default is not None:
                d[key] = default
        cfg["sensors"].append(d)
    return cfg


def apply_secrets(cfg, env=None):
    """Secrets from the environment: CITYNODE_WIFI_PASSWORD / CITYNODE_MQTT_PASSWORD, or the
    variable a "${NAME}" value names."""
    env = os.environ if env is None else env
    for sec, key, var in SECRET_ENV:
        d = cfg.get(sec)
        if not isinstance(d, dict):
            continue
        m = re.fullmatch(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", d.get(key) or "") if isinstance(d.get(key), str) else None
        if m:
            if env.get(m.group(1)):
                d[key] = env[m.group(1)]
        elif env.get(var):
            d[key] = env[var]
    return cfg


def missing_secrets(cfg, skip=()):
    """[(dotted key, environment variable)] of the secrets this config needs and has not got:
    wifi.password beside wifi.ssid, mqtt.password beside mqtt.user (not the sections in `skip`:
    "mqtt" when the fleet's secrets give the node its own login)."""
    out = []
    for sec, key, var in SECRET_ENV:
        if sec in skip:
            continue
        d = cfg.get(sec)
        if not isinstance(d, dict) or not d.get("ssid" if sec == "wifi" else "user"):
            continue
        v = d.get(key)
        m = re.fullmatch(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", v) if isinstance(v, str) else None
        if m:
            out.append(("%s.%s" % (sec, key), m.group(1)))
        elif v is None:   # absent; an explicit "" is an open network / a broker without one
            out.append(("%s.%s" % (sec, key), var))
    return out


def check_secrets(cfg, where="", skip=()):
    miss = missing_secrets(cfg, skip)
    if miss:
        raise CheckFailed(where + "; ".join("%s: missing secret (set %s)" % m for m in miss))


# --- the inventory ---------------------------------------------------------------------------

def _value(text):
    """A cell as JSON would have it: 300 -> 300, 5.5 or 5,5 -> 5.5, true -> True, else the text."""
    t = text.strip()
    if re.fullmatch(r"[+-]?\d+", t):
        return int(t)
    if re.fullmatch(r"[+-]?(\d+[.,]\d*|[.,]\d+)([eE][+-]?\d+)?", t):
        return float(t.replace(",", "."))   # a spreadsheet in a decimal-comma locale
    if t.lower() in ("true", "false"):
        return t.lower() == "true"
    return t


def _split(text):
    return [s.strip() for s in re.split(r"[;\n]", text or "") if s.strip()]


def parse_sensors(text):
    """'water:hcsr04:mount_height_cm=300; air:bme280' -> the config's sensors list."""
    out = []
    for i, spec in enumerate(_split(text)):
        parts = [p.strip() for p in spec.split(":")]
        if len(parts) < 2 or not parts[0] or not parts[1]:
            raise ValueError("sensors[%d]: %r: expected name:type[:key=value...]" % (i, spec))
        s = {"name": parts[0], "type": parts[1]}
        for kv in parts[2:]:
            if "=" not in kv:
                raise ValueError("sensors[%d]: %r: expected key=value" % (i, kv))
            k, v = kv.split("=", 1)
            s[k.strip()] = _value(v)
        out.append(s)
    return out


def parse_alarms(text):
    """'water_level_cm=150/140' -> {"water_level_cm": {"high": 150, "clear": 140}}."""
    out = {}
    for spec in _split(text):
        m = re.fullmatch(r"([a-z0-9_]+)\s*=\s*([^/]+)/(.+)", spec)
        if not m:
            raise ValueError("alarms: %r: expected quantity=high/clear" % spec)
        out[m.group(1)] = {"high": _value(m.group(2)), "clear": _value(m.group(3))}
    return out


def _set(cfg, dotted, value):
    d = cfg
    keys = dotted.split(".")
    for k in keys[:-1]:
        if not isinstance(d.get(k), dict):
            d[k] = {}
        d = d[k]
    d[keys[-1]] = value


def _template(v, node_id):
    if isinstance(v, str):
        return v.replace("{node_id}", node_id)
    if isinstance(v, dict):
        return {k: _template(x, node_id) for k, x in v.items()}
    if isinstance(v, list):
        return [_template(x, node_id) for x in v]
    return v


def read_inventory(path, required=REQUIRED_COLUMNS):
    """[(line number, row dict)] with the header checked (the `required` columns there)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            text = f.read()
    except OSError as e:
        raise CheckFailed("%s: %s" % (path, e.strerror or e))
    except UnicodeDecodeError:
        raise CheckFailed("%s: not UTF-8 text (save the spreadsheet as CSV UTF-8)" % path)
    header = text.split("\n", 1)[0]
    delim = max((",", ";", "\t"), key=header.count)   # a decimal-comma locale exports with ";"
    reader = csv.DictReader(text.splitlines(True), delimiter=delim)
    cols = [c.strip() for c in reader.fieldnames or []]
    missing = [c for c in required if c not in cols]
    if missing:
        raise CheckFailed("%s: missing column %s (have: %s)" % (path, ", ".join(missing), ", ".join(cols) or "none"))
    rows = []
    for row in reader:
        if not any(isinstance(v, str) and v.strip() for k, v in row.items() if k is not None):
            continue
        if None in row:    # more cells than the header has columns
            raise CheckFailed("%s line %d: %d cells, the header has %d columns (a stray %r?)"
                              % (path, reader.line_num, len(cols) + len(row[None]), len(cols), delim))
        short = [(k or "").strip() for k, v in row.items() if v is None]
        if short:          # a row cut short: its last cells are missing, not empty
            raise CheckFailed("%s line %d%s: the row ends before column %s (%d of %d cells)"
                              % (path, reader.line_num, " (%s)" % row.get("node_id") if row.get("node_id") else "",
                                 short[0], len(cols) - len(short), len(cols)))
        clean = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
        rows.append((reader.line_num, clean))
    return rows


def row_config(row, defaults=None):
    """The config of one inventory row on top of the site defaults (not validated)."""
    nid = row.get("node_id", "")
    cfg = _template(copy.deepcopy(defaults or {}), nid)
    cfg["node_id"] = nid
    if row.get("board"):
        cfg["board"] = row["board"]
    site = cfg.get("site") if isinstance(cfg.get("site"), dict) else {}
    if row.get("site_name"):
        site["name"] = row["site_name"]
    for k in ("lat", "lon"):
        if row.get(k):
            v = _value(row[k])
            if isinstance(v, str):
                raise ValueError("%s: %r is not a number" % (k, row[k]))
            site[k] = v
    if site:
        cfg["site"] = site
    cfg["sensors"] = parse_sensors(row.get("sensors"))
    if row.get("alarms"):
        cfg["alarms"] = parse_alarms(row["alarms"])
    for col, v in row.items():
        if col in SPECIAL or col.startswith("#") or not col or not v:
            continue
        if not re.fullmatch(r"[a-z0-9_]+(\.[a-z0-9_]+)*", col):
            raise ValueError("column %r: not a config key" % col)
        if col in ("wifi.password", "mqtt.password"):
            raise ValueError("column %r: secrets do not belong in the inventory; use %s" % (
                col, "CITYNODE_WIFI_PASSWORD" if col.startswith("wifi") else "CITYNODE_MQTT_PASSWORD"))
        _set(cfg, col, _value(v))
    return cfg


def _row(path, line, row, defaults, env):
    """(config, where) of one inventory row, validated; secrets are checked by the caller."""
    nid = row.get("node_id", "")
    where = "%s line %d%s: " % (path, line, " (%s)" % nid if nid else "")
    if not nid:
        raise CheckFailed(where + "node_id: required")
    try:
        cfg = apply_secrets(row_config(row, defaults), env)
    except ValueError as e:
        raise CheckFailed(where + str(e))
    check(cfg, where)
    if not cfg["sensors"]:
        raise CheckFailed(where + "sensors: empty (column sensors): a node that measures nothing")
    return cfg, where


def inventory_configs(path, defaults=None, env=None, skip_secrets=()):
    """Every row's config, validated: [(node_id, raw config)]. CheckFailed names the row."""
    rows = read_inventory(path, CONFIG_COLUMNS)
    seen, out = {}, []
    for line, row in rows:
        nid = row.get("node_id", "")
        if nid in seen:
            raise CheckFailed("%s line %d (%s): node_id: %r is also on line %d" % (path, line, nid, nid, seen[nid]))
        cfg, where = _row(path, line, row, defaults, env)
        seen[nid] = line
        out.append((nid, cfg, where))
    if not out:
        raise CheckFailed("%s: no nodes in the inventory" % path)
    for nid, cfg, where in out:
        check_secrets(cfg, where, skip_secrets)
    return [(nid, cfg) for nid, cfg, _ in out]


def from_inventory(path, node_id, defaults=None, env=None, skip_secrets=()):
    """The validated raw config of one node of the inventory."""
    rows = read_inventory(path, CONFIG_COLUMNS)
    hits = [(line, r) for line, r in rows if r.get("node_id") == node_id]
    if not hits:
        known = [r.get("node_id") for _, r in rows if r.get("node_id")]
        raise CheckFailed("%s: no row with node_id %r (%s: %s)" % (
            path, node_id, counted(len(known), "node"), ", ".join(known[:5]) + (" ..." if len(known) > 5 else "")))
    if len(hits) > 1:
        raise CheckFailed("%s: node_id %r is on lines %s" % (path, node_id, ", ".join(str(h[0]) for h in hits)))
    cfg, where = _row(path, hits[0][0], hits[0][1], defaults, env)
    check_secrets(cfg, where, skip_secrets)
    return cfg


# --- calibration: the node's, until someone replaces it -----------------------------------------

def keep_calibration(new, old):
    """A copy of `new` with the calibration fields of `old` (the node's config) on the sensors of
    the same name and type; [(sensor name, key, value kept)] of what was carried over."""
    new = copy.deepcopy(new)
    kept = []
    olds = {s.get("name"): s for s in (old or {}).get("sensors") or [] if isinstance(s, dict)}
    for s in new.get("sensors") or []:
        o = olds.get(s.get("name"))
        if not isinstance(o, dict) or o.get("type") != s.get("type"):
            continue
        for k in CALIBRATION:
            if o.get(k) is not None and s.get(k) != o[k]:
                s[k] = o[k]
                kept.append((s["name"], k, o[k]))
    return new, kept


def _flat(v, path, out):
    if isinstance(v, dict):
        for k in v:
            _flat(v[k], "%s.%s" % (path, k) if path else k, out)
    elif isinstance(v, list) and all(isinstance(x, dict) for x in v) and v:
        for i, x in enumerate(v):
            _flat(x, "%s[%s]" % (path, x.get("name", i) if isinstance(x, dict) else i), out)
    else:
        out[path] = v
    return out


def diff(old, new):
    """What changes from `old` to `new`, secrets masked: [(key, old value or None, new value or
    None)], sensors named by their name (sensors[water].offset_cm)."""
    a = _flat(masked(old) if isinstance(old, dict) else {}, "", {})
    b = _flat(masked(new), "", {})
    out = []
    for k in list(a) + [k for k in b if k not in a]:
        if a.get(k, KeyError) != b.get(k, KeyError):
            out.append((k, a.get(k), b.get(k)))
    for sec, key, _ in SECRET_ENV:   # a changed secret is a change, masked both sides
        x = (old or {}).get(sec, {}).get(key) if isinstance((old or {}).get(sec), dict) else None
        y = new.get(sec, {}).get(key) if isinstance(new.get(sec), dict) else None
        if x and y and x != y:
            out.append(("%s.%s" % (sec, key), "***", "*** (changed)"))
    return out


def diff_lines(changes):
    if not changes:
        return ["no change"]
    out = []
    for k, a, b in changes:
        if a is None:
            out.append("+ %s: %s" % (k, json.dumps(b, ensure_ascii=False)))
        elif b is None:
            out.append("- %s: %s" % (k, json.dumps(a, ensure_ascii=False)))
        else:
            out.append("~ %s: %s -> %s" % (k, json.dumps(a, ensure_ascii=False), json.dumps(b, ensure_ascii=False)))
    return out


def _fmt(v):
    return ("%r" % v if isinstance(v, float) else str(v).lower() if isinstance(v, bool) else str(v))


def sensors_cell(sensors):
    """The inventory's sensors cell for a config's sensors list (the inverse of parse_sensors)."""
    return "; ".join(":".join([s["name"], s["type"]] + ["%s=%s" % (k, _fmt(v)) for k, v in s.items()
                                                        if k not in ("name", "type")]) for s in sensors)


def set_in_cell(cell, name, key, value):
    """The sensors cell with `key=value` set on sensor `name` (replaced or appended); the other
    specs, and their separators, as they were."""
    parts = re.split(r"(\s*[;\n]\s*)", cell)
    for i in range(0, len(parts), 2):
        bits = parts[i].split(":")
        if bits[0].strip() != name:
            continue
        kv = "%s=%s" % (key, _fmt(value))
        for j in range(2, len(bits)):
            if bits[j].split("=", 1)[0].strip() == key:
                bits[j] = kv
                break
        else:
            bits.append(kv)
        parts[i] = ":".join(bits)
        return "".join(parts)
    raise ValueError("no sensor %r in the cell %r" % (name, cell))


def set_sensor_key(path, node_id, name, key, value):
    """Write `key=value` into sensor `name` of `node_id`'s row of the inventory at `path`: that
    row rewritten, every other byte of the file as it was, the file replaced atomically.
    Returns the row's new sensors cell."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            text = f.read()
        with open(path, "rb") as f:
            bom = f.read(3) == b"\xef\xbb\xbf"
    except OSError as e:
        raise CheckFailed("%s: %s" % (path, e.strerror or e))
    delim = max((",", ";", "\t"), key=text.split("\n", 1)[0].count)
    lines = text.splitlines(True)
    eol = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    reader = csv.reader(lines, delimiter=delim)
    header = [c.strip() for c in next(reader, [])]
    if "node_id" not in header or "sensors" not in header:
        raise CheckFailed("%s: no node_id or sensors column" % path)
    start = reader.line_num
    hit = None
    for rec in reader:
        end = reader.line_num
        if rec and header.index("node_id") < len(rec) and rec[header.index("node_id")].strip() == node_id:
            if hit:
                raise CheckFailed("%s: node_id %r is on lines %d and %d" % (path, node_id, hit[0] + 1, start + 1))
            hit = (start, end, rec)
        start = end
    if not hit:
        raise CheckFailed("%s: no row with node_id %r" % (path, node_id))
    first, last, rec = hit
    col = header.index("sensors")
    if col >= len(rec):
        raise CheckFailed("%s line %d (%s): the row ends before column sensors" % (path, first + 1, node_id))
    try:
        rec[col] = set_in_cell(rec[col], name, key, value)
    except ValueError as e:
        raise CheckFailed("%s line %d (%s): %s" % (path, first + 1, node_id, e))
    import io
    buf = io.StringIO()
    csv.writer(buf, delimiter=delim, lineterminator=eol).writerow(rec)
    row_text = buf.getvalue()
    if not lines[last - 1].endswith(("\n", "\r")):
        row_text = row_text[:-len(eol)]
    out = "".join(lines[:first]) + row_text + "".join(lines[last:])
    tmp = path + ".tmp"
    try:
        with open(tmp, "w", newline="", encoding="utf-8-sig" if bom else "utf-8") as f:
            f.write(out)
        os.replace(tmp, path)
    except OSError as e:
        raise CheckFailed("%s: %s" % (path, e.strerror or e))
    return rec[col]


# --- the node's copy ---------------------------------------------------------------------------

def encode(cfg):
    return json.dumps(cfg, indent=1, ensure_ascii=False) + "\n"


def put_file(dev, path, text, words=None):
    """Write a text file on the node whole: PATH.tmp, checked, then a rename (relative paths) that
    a Ctrl-C waits for. From the rename on, the Device says the node holds `words` (by default
    "new PATH in place"); an interrupt before it removes PATH.tmp and leaves PATH as it was."""
    from .transport import whole
    tmp, size = path + ".tmp", len(text.encode())
    dev.leftovers.add(tmp)
    out = dev.exec("import os\nwith open(%r,'w') as f:f.write(%r)\nprint(os.stat(%r)[6])\n" % (tmp, text, tmp))
    if out.strip() != str(size).encode():
        raise CheckFailed("%s: %s on the node has %s bytes, expected %d: %s unchanged" % (
            dev.port, tmp, out.strip().decode(errors="replace"), size, path))
    with whole():
        dev.exec("import os\nos.rename(%r,%r)\n" % (tmp, path))
        dev.leftovers.discard(tmp)
        dev.holds(path, words or "new %s in place" % path)


def push(dev, cfg, files=None, words=None):
    """Write the node's own files (its CA, client certificate: {name: text}) and then config.json,
    each whole. A config larger than the node may parse is refused before anything is written.
    `words`: what the node holds once config.json is in place (put_file)."""
    text = encode(cfg)
    if len(text.encode()) > fw.cfgkeys.MAX_BYTES:
        raise CheckFailed("config.json: %d bytes, the node takes at most %d" % (len(text.encode()), fw.cfgkeys.MAX_BYTES))
    for name in sorted(files or {}):
        put_file(dev, name, files[name])
    put_file(dev, PATH, text, words)
    return text


def push_and_restart(dev, cfg, files=None, reset=True):
    """push(), then a soft reset into the new config. When the push fails half way the node is
    soft-reset too: config.json is replaced only by its final rename, so the node goes back to
    work on its previous config instead of waiting in the REPL."""
    try:
        text = push(dev, cfg, files)
    except Exception:
        if reset and dev.t is not None and dev.in_raw:  # we stopped it: set it going again
            try:
                dev.soft_reset()
            except CitynodeError:
                pass
        raise
    if reset:
        dev.soft_reset()
    else:
        dev.leave()
    return text


# Where a node's own credentials go on its flash (mqtt.ca, mqtt.cert, mqtt.key name them).
NODE_CA, NODE_CERT, NODE_KEY = "ca.crt", "client.crt", "client.key"


def with_secrets(cfg, secrets_dir):
    """(cfg, files): the node's own user and password from `citynode broker config`'s secrets,
    verified TLS against the fleet's CA (a file on its flash), its client certificate if it has
    one; validated again. The inventory and the defaults never hold these."""
    from . import broker
    files = broker.node_files(secrets_dir, cfg.get("node_id"))
    cfg = copy.deepcopy(cfg)
    m = cfg.setdefault("mqtt", {})
    m["user"], m["password"] = files["creds"]["username"], files["creds"]["password"]
    m["tls"], m["ca"] = True, NODE_CA
    m.pop("tls_insecure", None)
    out = {NODE_CA: files["ca"]}
    if "cert" in files:
        m["cert"], m["key"] = NODE_CERT, NODE_KEY
        out[NODE_CERT], out[NODE_KEY] = files["cert"], files["key"]
    check(cfg, "%s: " % cfg.get("node_id"))
    return cfg, out


def pull(dev):
    """The node's config.json as text, or None when it has none."""
    out = dev.exec("try:\n f=open(%r)\nexcept OSError:\n print('\\x00',end='')\nelse:\n"
                   " while 1:\n  b=f.read(256)\n  if not b:break\n  print(b,end='')\n f.close()\n" % PATH)
    if out == b"\x00":
        return None
    return out.decode("utf-8", "replace")


def node_config(dev):
    """The node's config.json as a dict, or None (none there, or not a JSON object)."""
    text = pull(dev)
    try:
        cfg = json.loads(text) if text is not None else None
    except ValueError:
        return None
    return cfg if isinstance(cfg, dict) else None


def masked(cfg):
    return fw.cfgkeys.masked(cfg)

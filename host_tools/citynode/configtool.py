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
from the CSV. In the defaults, "{node_id}" in a string is replaced by the row's node_id.
"""
import copy
import csv
import json
import os
import re

from . import fw
from .errors import CheckFailed, CitynodeError

SECRET_ENV = (("wifi", "password", "CITYNODE_WIFI_PASSWORD"), ("mqtt", "password", "CITYNODE_MQTT_PASSWORD"))
REQUIRED_COLUMNS = ("node_id", "board")
SPECIAL = ("node_id", "board", "site_name", "lat", "lon", "sensors", "alarms", "notes")
PATH = "config.json"


# --- files on the host -----------------------------------------------------------------------

def load_json(path, what="config"):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as e:
        raise CheckFailed("%s: %s" % (path, e.strerror or e))
    except ValueError as e:
        raise CheckFailed("%s: not valid JSON (%s)" % (path, e))


def check(cfg, where=""):
    """Validate with the firmware's validator; returns the config with defaults filled."""
    try:
        return fw.validate(cfg)
    except fw.ConfigError as e:
        raise CheckFailed(where + str(e))


def apply_secrets(cfg, env=None):
    env = os.environ if env is None else env
    for sec, key, var in SECRET_ENV:
        if env.get(var) and isinstance(cfg.get(sec), dict):
            cfg[sec][key] = env[var]
    return cfg


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


def read_inventory(path):
    """[(line number, row dict)] with the header checked."""
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
    missing = [c for c in REQUIRED_COLUMNS if c not in cols]
    if missing:
        raise CheckFailed("%s: missing column %s (have: %s)" % (path, ", ".join(missing), ", ".join(cols) or "none"))
    rows = []
    for row in reader:
        clean = {(k or "").strip(): (v or "").strip() if isinstance(v, str) else "" for k, v in row.items()}
        if any(clean.values()):
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
    if row.get("sensors"):
        cfg["sensors"] = parse_sensors(row["sensors"])
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


def inventory_configs(path, defaults=None, env=None):
    """Every row's config, validated: [(node_id, raw config)]. CheckFailed names the row."""
    rows = read_inventory(path)
    seen, out = {}, []
    for line, row in rows:
        nid = row.get("node_id", "")
        where = "%s line %d%s: " % (path, line, " (%s)" % nid if nid else "")
        if not nid:
            raise CheckFailed(where + "node_id: required")
        if nid in seen:
            raise CheckFailed(where + "node_id: %r is also on line %d" % (nid, seen[nid]))
        seen[nid] = line
        try:
            cfg = apply_secrets(row_config(row, defaults), env)
        except ValueError as e:
            raise CheckFailed(where + str(e))
        check(cfg, where)
        out.append((nid, cfg))
    if not out:
        raise CheckFailed("%s: no nodes in the inventory" % path)
    return out


def from_inventory(path, node_id, defaults=None, env=None):
    """The validated raw config of one node of the inventory."""
    rows = read_inventory(path)
    hits = [(line, r) for line, r in rows if r.get("node_id") == node_id]
    if not hits:
        known = [r.get("node_id") for _, r in rows if r.get("node_id")]
        raise CheckFailed("%s: no row with node_id %r (%d nodes: %s)" % (
            path, node_id, len(known), ", ".join(known[:5]) + (" ..." if len(known) > 5 else "")))
    if len(hits) > 1:
        raise CheckFailed("%s: node_id %r is on lines %s" % (path, node_id, ", ".join(str(h[0]) for h in hits)))
    line, row = hits[0]
    where = "%s line %d (%s): " % (path, line, node_id)
    try:
        cfg = apply_secrets(row_config(row, defaults), env)
    except ValueError as e:
        raise CheckFailed(where + str(e))
    check(cfg, where)
    return cfg


# --- the node's copy ---------------------------------------------------------------------------

def encode(cfg):
    return json.dumps(cfg, indent=1, ensure_ascii=False) + "\n"


def put_file(dev, path, text):
    """Write a text file on the node whole: a temporary file, then a rename (relative paths)."""
    out = dev.exec("import os\nwith open(%r,'w') as f:f.write(%r)\nos.rename(%r,%r)\nprint(os.stat(%r)[6])\n"
                   % (path + ".tmp", text, path + ".tmp", path, path))
    if out.strip() != str(len(text.encode())).encode():
        raise CheckFailed("%s: %s on the node has %s bytes, expected %d" % (
            dev.port, path, out.strip().decode(errors="replace"), len(text.encode())))


def push(dev, cfg, files=None):
    """Write the node's own files (its CA, client certificate: {name: text}) and then config.json,
    each whole. A config larger than the node may parse is refused before anything is written."""
    text = encode(cfg)
    if len(text.encode()) > fw.config.MAX_BYTES:
        raise CheckFailed("config.json: %d bytes, the node takes at most %d" % (len(text.encode()), fw.config.MAX_BYTES))
    for name in sorted(files or {}):
        put_file(dev, name, files[name])
    put_file(dev, PATH, text)
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


def masked(cfg):
    return fw.config.masked(cfg)

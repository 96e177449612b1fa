"""What a node is and how it is doing, in one call over USB: chip, MAC, flash, MicroPython,
firmware, boot count, last reset, free heap and flash, config (secrets masked), calibrations and
the last crash record.

    from citynode import info, transport
    with transport.Device("/dev/ttyUSB0") as dev:
        doc = info.read(dev)          # {"chip": "ESP32 ...", "mac": "24:0a:...", ...}

The node runs one short script in its raw REPL (no firmware module needed: a node with an old or
broken firmware still answers); the board's own part (chip, MAC, flash size, reset cause) comes
from board.chip_info(), the board seam.
"""
import json

from . import configtool
from .errors import CheckFailed

FIELDS = ("port", "chip", "mac", "flash_size", "micropython", "build", "mpy", "firmware", "frozen",
          "node_id", "boot", "reset", "heap_free", "flash_free", "config", "calibration", "crash")

# The node prints one line: INFO {json}. Everything it cannot find is null.
SCRIPT = """import sys,os,gc,json
def _j(p):
 try:
  with open(p) as f:return json.load(f)
 except Exception:return None
d={}
try:
 import board
 d.update(board.chip_info())
except Exception as e:
 d['chip_error']=repr(e)
i=sys.implementation
d['micropython']='.'.join(str(x) for x in i.version[:3])
d['build']=(os.uname().version if hasattr(os,'uname') else sys.version.split('; ')[-1])+(' '+i._build if hasattr(i,'_build') else '')
d['mpy']=getattr(i,'_mpy',None)
try:
 from version import VERSION
 d['firmware']=VERSION
except Exception:
 d['firmware']=None
n=os.listdir()
d['frozen']=d['firmware'] is not None and 'node.py' not in n and 'node.mpy' not in n
d['boot']=(_j('state.json') or {}).get('boot')
d['flash_free']=None
for p in ('','/'):
 try:
  s=os.statvfs(p);d['flash_free']=s[0]*s[3];break
 except Exception:
  pass
d['crash']=_j('crash.json')
d['crash_reported']=d['crash'] is None
if d['crash'] is None:d['crash']=_j('crash.last.json')
d['config']=_j('config.json')
gc.collect()
d['heap_free']=gc.mem_free()
print('INFO '+json.dumps(d))
"""


def summary(cfg):
    """The config as a crew reads it, secrets masked."""
    if not isinstance(cfg, dict):
        return None
    m = configtool.masked(cfg)
    mq = m.get("mqtt") if isinstance(m.get("mqtt"), dict) else {}
    wifi = m.get("wifi") if isinstance(m.get("wifi"), dict) else {}
    return {"node_id": m.get("node_id"), "board": m.get("board"),
            "site": (m.get("site") or {}).get("name") if isinstance(m.get("site"), dict) else None,
            "wifi": {"ssid": wifi.get("ssid"), "password": wifi.get("password")} if wifi else None,
            "mqtt": {k: mq.get(k) for k in ("host", "port", "tls", "user", "password", "prefix") if k in mq},
            "interval_s": m.get("interval_s"),
            "deep_sleep": (m.get("power") or {}).get("deep_sleep", False) if isinstance(m.get("power"), dict) else False,
            "sensors": ["%s:%s" % (s.get("name"), s.get("type")) for s in m.get("sensors") or []
                        if isinstance(s, dict)]}


def calibration(cfg):
    """{sensor name: {offset_cm / r0_kohm: value or None}} for the sensors that have one."""
    out = {}
    for s in (cfg or {}).get("sensors") or []:
        if not isinstance(s, dict):
            continue
        if s.get("type") in ("hcsr04", "a02yyuw"):
            out[s.get("name")] = {"offset_cm": s.get("offset_cm")}
        elif str(s.get("type", "")).startswith("mq"):
            out[s.get("name")] = {"r0_kohm": s.get("r0_kohm")}
    return out


def read(dev):
    """Every FIELDS entry of the node on the open Device `dev` (one exec call)."""
    out = dev.exec(SCRIPT)
    line = [ln for ln in out.decode("utf-8", "replace").splitlines() if ln.startswith("INFO ")]
    if not line:
        raise CheckFailed("%s: the node did not answer the info script" % dev.port)
    raw = json.loads(line[-1][5:])
    cfg = raw.pop("config")
    doc = {"port": dev.port}
    doc.update(raw)
    doc["node_id"] = cfg.get("node_id") if isinstance(cfg, dict) else None
    doc["config"] = summary(cfg)
    doc["calibration"] = calibration(cfg) if isinstance(cfg, dict) else {}
    for k in FIELDS:
        doc.setdefault(k, None)
    return doc

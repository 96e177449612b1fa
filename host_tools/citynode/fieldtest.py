"""The field test: does this node measure right, and do its readings reach the broker?

    from citynode import fieldtest
    rep = fieldtest.run("/dev/ttyUSB0", samples=5, broker="broker.example:1883")
    print(rep["result"], [c["reason"] for c in rep["checks"] if c["result"] == "FAIL"])

Over USB (raw REPL, which stops the node's main.py while we are there): the config, every
configured sensor read `samples` times through the node's own drivers (firmware/probe.py), and
the Wi-Fi link. Then the node is soft-reset so main.py runs again, and on the broker: its birth
(the node's broker connection) and a round trip, a `sample` command whose reading must arrive
as telemetry with the (boot, seq) the reply named.
"""
import json
import os
import re
import statistics
import threading
import time
import uuid
from pathlib import Path

from . import fw, monitor, transport
from .errors import CheckFailed, CitynodeError

PASS, FAIL, NA = "PASS", "FAIL", "n/a"
PROBE_SRC = fw.FIRMWARE / "probe.py"

# Plausible values for a quantity in a city, whatever the sensor: a reading outside is a wiring,
# mounting or config fault, not weather. Water and distance depend on the mount (see _range).
PLAUSIBLE = {"air_temp_c": (-30.0, 60.0), "rh_pct": (1.0, 100.0), "pressure_hpa": (500.0, 1100.0),
             "pm1_0_ugm3": (0.0, 1000.0), "pm2_5_ugm3": (0.0, 1000.0), "pm10_ugm3": (0.0, 1000.0),
             "co_ppm": (0.0, 1000.0), "nh3_ppm": (0.0, 500.0), "co2_ppm": (300.0, 10000.0)}
GAS_DEFAULT = (0.0, 10000.0)
# How far from the median of the test's reads a steady sensor's read may lie (see outliers()).
# PM and gas vary with the air from second to second: their spread is reported, not judged.
STEADY = {"water_level_cm": 3.0, "distance_cm": 3.0, "air_temp_c": 1.0, "rh_pct": 5.0, "pressure_hpa": 2.0}
WEAK_RSSI = -80  # dBm: below this an ESP32 link drops often (Espressif's RF guidance is > -70 for margin)

WHY = {"timeout": "no data: unplugged, miswired or unpowered",
       "not_found": "not found on its bus: check the wiring and the address",
       "checksum": "garbled data: check the RX/TX wiring and the cable length",
       "out_of_range": "outside the sensor's range: check the mounting (nothing in front, not too close)",
       "warming_up": "still warming up",
       "io_error": "bus error: check the wiring"}


# --- on the node -------------------------------------------------------------------------------

def node_config(dev):
    """The node's config.json as stored (secrets included), parsed."""
    out = dev.exec("import os\ntry:\n print(open('config.json').read())\nexcept OSError:\n print('NOCONFIG')\n")
    text = out.decode("utf-8", "replace").strip()
    if text == "NOCONFIG":
        raise CheckFailed("%s: no config.json on the node (push one: citynode config push FILE)" % dev.port)
    try:
        return json.loads(text)
    except ValueError:
        raise CheckFailed("%s: config.json on the node is not valid JSON" % dev.port)


RUNNING = re.compile(rb"citynode: (node \S+ boot \d+[^\r\n]*|safe mode: [^\r\n]*)\r?\n")


def restart(dev, timeout=10.0):
    """Soft-reset the node and wait until its firmware says it runs ("node ID boot N (soft) fw X")
    or why it cannot ("safe mode: ..."): that line, or None when none came within timeout."""
    dev.soft_reset()
    ser = dev.t.serial
    buf = b""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        buf = (buf + ser.read(ser.in_waiting or 1))[-2048:]
        m = RUNNING.search(buf)
        if m:
            return m.group(1).decode("utf-8", "replace")
    return None


def probe(dev, samples, names=None, wifi=True, rs=False, gap_ms=200, timeout=None):
    """Run firmware/probe.py on the node; its result dict."""
    args = "%d, %s, %s, %d, %s" % (samples, json.dumps(names) if names else "None", wifi, gap_ms, rs)
    # A reading takes at most a few seconds; a PM sensor's fan adds its warm-up once.
    budget = timeout or (60 + samples * (gap_ms / 1000 + 16))
    out = dev.exec(PROBE_SRC.read_text() + "\nrun(%s)\n" % args, timeout=budget)
    for line in out.decode("utf-8", "replace").splitlines():
        if line.startswith("PROBE "):
            return json.loads(line[6:])
    raise CheckFailed("%s: the probe printed no result" % dev.port)


# --- judging (pure) ----------------------------------------------------------------------------

def _range(q, conf):
    if q == "water_level_cm":
        return 0.0, conf["mount_height_cm"] + conf.get("offset_cm", 0.0)
    if q == "distance_cm":
        return conf.get("min_range_cm", 2.0), min(conf.get("max_range_cm", 400.0), conf["mount_height_cm"] + 10)
    if q.endswith("_ppm"):
        return PLAUSIBLE.get(q, GAS_DEFAULT)
    return PLAUSIBLE.get(q)


def outliers(vs, tol):
    """(reads further than tol from the median, whether that many may be ignored). A single
    ultrasonic read can still carry a corner reflection the driver did not reject; the median
    of three or more reads stands one such read in four, two reads cannot say which is wrong."""
    med = statistics.median(vs)
    off = [v for v in vs if abs(v - med) > tol]
    allowed = max(1, len(vs) // 4) if len(vs) >= 3 else 0
    return off, len(off) <= allowed


def _fmt(v):
    return ("%.4g" % v) if isinstance(v, float) else str(v)


def sensor_check(conf, got, samples, up_ms=None):
    """One row for one sensor from the probe's result for it."""
    name = conf["name"]
    row = {"check": "sensor %s" % name, "sensor": name, "type": conf["type"], "result": PASS,
           "detail": "", "reason": None, "quantities": {}}
    errors = got.get("errors", {})
    values = got.get("values", {})
    ok = max([len(v) for v in values.values()] or [0])
    row["reads_ok"], row["errors"] = ok, errors
    fails = []
    if errors:
        codes = ", ".join("%s x%d" % (c, k) for c, k in sorted(errors.items()))
        worst = max(errors, key=errors.get)
        why = WHY.get(worst, worst)
        if worst == "warming_up" and conf["type"].startswith("mq") and up_ms is not None:
            left = conf.get("preheat_s", 180) - up_ms // 1000
            why += " (MQ heater: %d s of preheat_s=%d to go; test again then)" % (max(left, 0), conf.get("preheat_s", 180))
        elif worst == "warming_up":
            why += "; test again in a minute"
        if ok == 0:
            fails.append("%s: %s" % (codes, why))
        else:
            fails.append("only %d of %d reads succeeded (%s): %s" % (ok, samples, codes, why))
    parts = []
    for q, vs in sorted(values.items()):
        med = statistics.median(vs)
        spread = max(vs) - min(vs)
        row["quantities"][q] = {"median": med, "spread": round(spread, 3), "n": len(vs), "values": vs}
        parts.append("%s %s (spread %s)" % (q, _fmt(med), _fmt(round(spread, 2))))
        rng = _range(q, conf)
        if rng and not all(rng[0] <= v <= rng[1] for v in vs):
            bad = [v for v in vs if not rng[0] <= v <= rng[1]]
            fails.append("%s %s outside the plausible %s..%s" % (q, _fmt(bad[0]), _fmt(rng[0]), _fmt(rng[1])))
        lim = STEADY.get(q)
        if lim is not None:
            off, tolerable = outliers(vs, lim)
            if not tolerable:
                fails.append("unstable: %d of %d %s reads more than %s from their median %s (spread %s)"
                             % (len(off), len(vs), q, _fmt(lim), _fmt(med), _fmt(round(spread, 2))))
            elif off:
                parts[-1] += ", %d outlier ignored" % len(off) if len(off) == 1 else ", %d outliers ignored" % len(off)
    if conf["type"] in ("hcsr04", "a02yyuw") and "distance_cm" in values:
        d = statistics.median(values["distance_cm"])
        if d > conf["mount_height_cm"] + 5:
            fails.append("distance %s cm is below the channel bed (mount_height_cm %s): mount height wrong?"
                         % (_fmt(d), _fmt(conf["mount_height_cm"])))
    kept = got.get("kept") or []
    if kept and conf.get("samples"):
        parts.append("kept %.1f/%d per read" % (sum(kept) / len(kept), conf["samples"]))
    row["kept"] = kept
    row["detail"] = "; ".join(parts) if parts else "no values"
    if fails:
        row["result"], row["reason"] = FAIL, "; ".join(fails)
    return row


def wifi_check(w, sim):
    row = {"check": "wifi", "result": PASS, "detail": "", "reason": None, "wifi": w}
    if sim or w is None:
        row["result"], row["detail"] = NA, "n/a (virtual node)"
        return row
    if not w.get("connected"):
        row["result"] = FAIL
        row["reason"] = "not connected to %r (%s)" % (w.get("ssid"), ", ".join(str(s) for s in w.get("status", [])))
        return row
    row["detail"] = "%r, RSSI %d dBm, IP %s" % (w["ssid"], w["rssi"], w.get("ip"))
    if w["rssi"] < WEAK_RSSI:
        row["result"] = FAIL
        row["reason"] = "weak signal %d dBm (needs > %d dBm): move the node or its antenna" % (w["rssi"], WEAK_RSSI)
    return row


# --- on the broker -----------------------------------------------------------------------------

class NodeOnBroker:
    """Subscribed to one node's status, telemetry and reply topics; collects what arrives."""

    def __init__(self, broker, prefix, node_id):
        self.base = "%s/%s/" % (prefix, node_id)
        self.cv = threading.Condition()
        self.msgs = []
        self.client = monitor.connect(broker, on_message=self._on_message,
                                      subscriptions=[(self.base + k, 1) for k in ("status", "telemetry", "reply")])

    def _on_message(self, client, userdata, msg):
        try:
            doc = json.loads(msg.payload)
        except ValueError:
            doc = None
        with self.cv:
            self.msgs.append((time.monotonic(), msg.topic[len(self.base):], bool(msg.retain), doc))
            self.cv.notify_all()

    def wait(self, pred, timeout):
        """The first (t, kind, retained, doc) for which pred holds, or None after timeout."""
        end = time.monotonic() + timeout
        with self.cv:
            while True:
                for m in self.msgs:
                    if pred(m):
                        return m
                left = end - time.monotonic()
                if left <= 0:
                    return None
                self.cv.wait(left)

    def command(self, cmd, args=None):
        cid = "ft-" + uuid.uuid4().hex[:8]
        self.client.publish(self.base + "cmd", json.dumps({"id": cid, "cmd": cmd, "args": args or {}}), qos=1)
        return cid

    def close(self):
        monitor._stop(self.client)


def broker_checks(nob, t_reset, online_s=30.0, reply_s=30.0):
    """The node's birth after the reset, then a sample round trip. Rows."""
    birth = nob.wait(lambda m: m[1] == "status" and not m[2] and m[0] >= t_reset and isinstance(m[3], dict)
                     and m[3].get("state") == "online", online_s)
    if birth is None:
        return [{"check": "broker", "result": FAIL, "detail": "",
                 "reason": "the node did not come online on the broker within %.0f s of its restart "
                           "(check mqtt.host/port/user and the Wi-Fi)" % online_s},
                {"check": "round trip", "result": FAIL, "detail": "", "reason": "skipped: node not on the broker"}]
    boot = birth[3].get("boot")
    rows = [{"check": "broker", "result": PASS, "reason": None,
             "detail": "online %.1f s after the restart (boot %s, fw %s, reset %s)"
                       % (birth[0] - t_reset, boot, birth[3].get("fw"), birth[3].get("reset"))}]
    t0 = time.monotonic()
    lost = []
    reply = None
    # A command may be sent once more: a node that loses one says so in the detail, and only a
    # node that answers neither fails.
    for wait_s in (min(10.0, reply_s / 2), reply_s / 2):
        cid = nob.command("sample")
        reply = nob.wait(lambda m: m[1] == "reply" and isinstance(m[3], dict) and m[3].get("id") == cid, wait_s)
        if reply is not None:
            break
        lost.append(cid)
    if reply is None:
        rows.append({"check": "round trip", "result": FAIL, "detail": "",
                     "reason": "no reply to %d sample commands within %.0f s" % (len(lost), time.monotonic() - t0)})
        return rows
    doc = reply[3]
    if not doc.get("ok"):
        rows.append({"check": "round trip", "result": FAIL, "detail": "",
                     "reason": "the node refused the sample command: %s" % doc.get("error")})
        return rows
    seq = (doc.get("result") or {}).get("seq")
    tele = nob.wait(lambda m: m[1] == "telemetry" and isinstance(m[3], dict) and m[3].get("boot") == boot
                    and m[3].get("seq") == seq, max(1.0, reply_s - (time.monotonic() - t0)))
    if tele is None:
        rows.append({"check": "round trip", "result": FAIL, "detail": "",
                     "reason": "the node replied (seq %s) but that reading never reached the broker" % seq})
        return rows
    want = (doc.get("result") or {}).get("values") or {}
    got = tele[3].get("values") or {}
    row = {"check": "round trip", "result": PASS, "reason": None,
           "detail": "reading boot %s seq %s seen on the broker %.1f s after the request (%d values)%s"
                     % (boot, seq, tele[0] - t0, len(got),
                        "; WARNING: the first sample command (%s) got no reply within 10 s, the second did" % lost[0]
                        if lost else "")}
    if lost:
        row["lost_commands"] = lost
    if sorted(want) != sorted(got):
        row["result"] = FAIL
        row["reason"] = "the telemetry's values %s differ from the reply's %s" % (sorted(got), sorted(want))
    rows.append(row)
    return rows


# --- the whole test ----------------------------------------------------------------------------

def sim_broker(port):
    """The broker a running virtual node on `port` was started with (`citynode sim --broker`), or
    None: not a virtual node, or one that uses its config's."""
    from .sim.registry import running
    try:
        me = os.path.realpath(port)
        return next((v.get("broker") for v in running() if os.path.realpath(v["port"]) == me), None)
    except (OSError, TypeError, KeyError):
        return None


def run(port, samples=5, broker=None, user=None, password=None, tls=False, online_s=30.0, held=None):
    """The field test of the node on `port`; the report dict. Unreachable (exit 3) when the
    node or the broker cannot be reached; the checks' FAILs are in the report, not raised.
    held: what earlier steps left on the node (Device.held), for an interrupt's line."""
    started = time.time()
    rep = {"port": port, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
           "samples": samples, "checks": []}
    checks = rep["checks"]
    t = rep["timing_s"] = {}
    t0 = time.monotonic()
    dev = transport.Device(port, timeout=10.0, held=held).open()
    nob = None
    reset_at = None
    handed_on = False       # nob goes on to the broker checks below
    try:
        raw = node_config(dev)
        rep["node_id"] = raw.get("node_id") if isinstance(raw, dict) else None
        try:
            cfg = fw.validate(raw)
        except fw.ConfigError as e:
            checks.append({"check": "config", "result": FAIL, "detail": "", "reason": "config.json: %s" % e})
            rep["result"] = FAIL
            return rep
        m = cfg["mqtt"]
        rep["prefix"] = m["prefix"]
        checks.append({"check": "config", "result": PASS, "reason": None,
                       "detail": "%s on %s, %d sensors, broker %s:%d" % (cfg["node_id"], cfg["board"], len(cfg["sensors"]),
                                                                         m["host"], m["port"])})
        # a virtual node started with --broker uses that broker, not its config's: so does its test
        broker = broker or sim_broker(port)
        b = monitor.parse_broker(broker, user, password, tls) if broker else monitor.Broker(
            m["host"], m["port"], user, password, tls or m["tls"])
        rep["broker"] = str(b)
        t["config"] = round(time.monotonic() - t0, 2)
        nob = NodeOnBroker(b, m["prefix"], cfg["node_id"])  # unreachable: exit 3 before we touch more
        t1 = time.monotonic()
        res = probe(dev, samples)
        t["probe"] = round(time.monotonic() - t1, 2)
        rep["sim"] = res.get("sim")
        rep["up_ms"] = res.get("up_ms")
        for conf in cfg["sensors"]:
            checks.append(sensor_check(conf, res["sensors"].get(conf["name"], {}), samples, res.get("up_ms")))
        checks.append(wifi_check(res.get("wifi"), res.get("sim")))
        reset_at = time.monotonic()
        rep["restart"] = restart(dev)
        t["restart"] = round(time.monotonic() - reset_at, 2)
        handed_on = True
    finally:
        if reset_at is None and dev.t is not None and not transport.interrupted():
            # Whatever went wrong, leave the node running its firmware, not sitting in the REPL.
            try:
                restart(dev)
            except CitynodeError:
                pass
        dev.close()
        if nob is not None and not handed_on:
            nob.close()     # its network thread must not outlive a failed test
    try:
        t2 = time.monotonic()
        checks.extend(broker_checks(nob, reset_at, online_s))
        t["broker"] = round(time.monotonic() - t2, 2)
    finally:
        nob.close()
    rep["took_s"] = round(time.time() - started, 1)
    rep["result"] = FAIL if any(c["result"] == FAIL for c in checks) else PASS
    return rep


def save_report(rep, directory):
    """DIR/<node_id>-<UTC time>.json; returns its path."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    stamp = rep["started"].replace(":", "").replace("-", "")
    p = d / ("%s-%s.json" % (rep.get("node_id") or "unknown", stamp))
    n = 1
    while p.exists():
        n += 1
        p = d / ("%s-%s-%d.json" % (rep.get("node_id") or "unknown", stamp, n))
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(rep, indent=1, default=str))
    tmp.rename(p)
    return p

"""Calibration on the node, stored in its config.json: the water sensor's offset against a staff
gauge, and an MQ gas sensor's R0 in clean air.

    from citynode import calibrate
    r = calibrate.water("/dev/ttyUSB0", reference_cm=62.0)   # offset_cm so the node reads 62.0 now
    r = calibrate.gas("/dev/ttyUSB0", minutes=10)            # r0_kohm from Rs in clean air

Both measure through the node's own drivers (firmware/probe.py over the raw REPL), refuse
with the reason and store nothing when the readings are not steady, validate the new config
with the firmware's validator, write it whole (temporary file, then rename) and read again
with it, so "after" is a measurement, not arithmetic. The node is soft-reset at the end so its
firmware runs with the new config. The result carries the node's new inventory sensors cell
("cell"); given `inventory`, the result is also written into that node's row of the CSV.
"""
import copy
import json
import statistics

from . import configtool, fieldtest, transport
from .errors import CheckFailed, CitynodeError

WATER_TYPES = ("hcsr04", "a02yyuw")
GAS_TYPES = ("mq135", "mq7", "mq2")
MAX_DRIFT_PCT = 3.0   # Rs moving more than this over the window: the heater has not settled
MAX_NOISE_PCT = 10.0  # Rs spread over the window relative to its median


def _config(dev):
    text = configtool.pull(dev)
    if text is None:
        raise CheckFailed("%s: no config.json on the node (push one: citynode config push FILE)" % dev.port)
    try:
        raw = json.loads(text)
    except ValueError:
        raise CheckFailed("%s: config.json on the node is not valid JSON" % dev.port)
    return raw, configtool.check(raw, "config.json on the node: ")


def pick(cfg, name, types, what):
    """The sensor to calibrate: `name`, or the only one of `types`. Exit 2 when ambiguous."""
    cands = [s for s in cfg["sensors"] if s["type"] in types]
    if name:
        for s in cfg["sensors"]:
            if s["name"] == name:
                if s["type"] not in types:
                    raise CitynodeError("sensor %r is a %s, not a %s sensor (%s)" % (name, s["type"], what, "/".join(types)), 2)
                return s
        raise CitynodeError("no sensor %r in the node's config (its %s sensors: %s)"
                            % (name, what, ", ".join(s["name"] for s in cands) or "none"), 2)
    if not cands:
        raise CheckFailed("the node has no %s sensor (%s) in its config" % (what, "/".join(types)))
    if len(cands) > 1:
        raise CitynodeError("the node has %d %s sensors (%s): name the one to calibrate"
                            % (len(cands), what, ", ".join(s["name"] for s in cands)), 2, param="sensor")
    return cands[0]


def _store(dev, raw, name, key, value):
    new = copy.deepcopy(raw)
    for s in new["sensors"]:
        if s.get("name") == name:
            s[key] = value
    try:
        configtool.check(new)
    except CheckFailed as e:
        raise CheckFailed("%s = %s would not be a valid config (%s): nothing stored" % (key, value, e))
    configtool.push(dev, new, words="calibration stored: %s = %s in config.json" % (key, value))
    return new


def _inventory(r, raw_new, inventory, key):
    """The sensors cell to paste into the inventory; with `inventory`, written into the node's row."""
    r["cell"] = configtool.sensors_cell(raw_new["sensors"])
    if inventory:
        r["inventory"] = {"file": inventory,
                          "cell": configtool.set_sensor_key(inventory, r["node_id"], r["sensor"], key,
                                                            r[key]["after"])}


def _failed_reads(name, got, samples):
    errs = got.get("errors") or {}
    if errs:
        codes = ", ".join("%s x%d" % kv for kv in sorted(errs.items()))
        worst = max(errs, key=errs.get)
        raise CheckFailed("%s: %d of %d reads failed (%s: %s): nothing stored"
                          % (name, sum(errs.values()), samples, codes, fieldtest.WHY.get(worst, worst)))


def offset_for(reference_cm, mount_height_cm, distance_cm):
    """The offset_cm that makes level = mount - distance + offset read `reference_cm`."""
    return round(reference_cm - (mount_height_cm - distance_cm), 1)


def _check_reference(name, reference_cm, mount_height_cm):
    """The level a gauge shows lies between the channel bed (0) and the sensor above it: an offset
    made from any other reference would only make the node report that impossible level."""
    if not 0 <= reference_cm <= mount_height_cm:     # NaN fails too
        raise CheckFailed("%s: reference %g cm is outside 0..%g cm (the channel bed up to the sensor, "
                          "its mount_height_cm): nothing stored" % (name, reference_cm, mount_height_cm),
                          param="reference_cm")


def water(port, reference_cm, samples=7, sensor=None, max_spread_cm=2.0, inventory=None):
    sess = _session(port)
    with sess as dev:
        raw, cfg = _config(dev)
        conf = pick(cfg, sensor, WATER_TYPES, "water")
        name = conf["name"]
        _check_reference(name, reference_cm, conf["mount_height_cm"])
        got = fieldtest.probe(dev, samples, [name], wifi=False)["sensors"][name]
        _failed_reads(name, got, samples)
        ds = got["values"]["distance_cm"]
        spread = max(ds) - min(ds)
        off, tolerable = fieldtest.outliers(ds, max_spread_cm / 2)
        if not tolerable:
            raise CheckFailed("%s: readings unstable, %d of %d reads more than %.1f cm from their median (spread %.1f cm): "
                              "nothing stored; steady the mount, wait for calm water and try again"
                              % (name, len(off), len(ds), max_spread_cm / 2, spread))
        d = statistics.median(ds)
        before = statistics.median(got["values"]["water_level_cm"])
        old = conf.get("offset_cm", 0.0)
        new = offset_for(reference_cm, conf["mount_height_cm"], d)
        raw_new = _store(dev, raw, name, "offset_cm", new)
        after = fieldtest.probe(dev, samples, [name], wifi=False)["sensors"][name]
        lv = after.get("values", {}).get("water_level_cm") or []
        r = {"port": port, "node_id": cfg["node_id"], "sensor": name, "type": conf["type"],
             "reference_cm": reference_cm, "samples": samples, "distance_cm": d, "spread_cm": round(spread, 2),
             "outliers": off,
             "offset_cm": {"before": old, "after": new},
             "level_cm": {"before": before, "after": statistics.median(lv) if lv else None}}
        _inventory(r, raw_new, inventory, "offset_cm")
    r["running"] = sess.running
    return r


def gas(port, minutes=2.0, sensor=None, max_drift_pct=MAX_DRIFT_PCT, inventory=None):
    window = minutes * 60
    period = min(5.0, max(0.2, window / 10))
    n = max(5, int(window / period) + 1)
    sess = _session(port)
    with sess as dev:
        raw, cfg = _config(dev)
        conf = pick(cfg, sensor, GAS_TYPES, "gas")
        name = conf["name"]
        # One quick read first: a missing sensor or a cold heater is refused before the wait.
        first = fieldtest.probe(dev, 1, [name], wifi=False, rs=True)
        _failed_reads(name, first["sensors"][name], 1)
        up = first.get("up_ms")
        pre = conf["preheat_s"]
        if up is not None and up < pre * 1000:
            raise CheckFailed("%s: warming up: the heater has been on %d s of preheat_s=%d; calibrate again in %d s "
                              "(a new sensor needs a 24-48 h burn-in first): nothing stored"
                              % (name, up // 1000, pre, pre - up // 1000))
        res = fieldtest.probe(dev, n, [name], wifi=False, rs=True, gap_ms=int(period * 1000),
                              timeout=window + 60)
        got = res["sensors"][name]
        _failed_reads(name, got, n)
        rs = got["values"]["rs_kohm"]
        med = statistics.median(rs)
        third = max(1, len(rs) // 3)
        drift = (statistics.fmean(rs[-third:]) - statistics.fmean(rs[:third])) / med * 100
        noise = (max(rs) - min(rs)) / med * 100
        if abs(drift) > max_drift_pct:
            raise CheckFailed("%s: Rs still drifting (%+.1f %% over %.1f min, limit %.1f %%): the sensor is warming up "
                              "or the air is changing; wait and try again: nothing stored"
                              % (name, drift, minutes, max_drift_pct))
        if noise > MAX_NOISE_PCT:
            raise CheckFailed("%s: Rs unsteady (spread %.1f %% of its median, limit %.1f %%): check the supply "
                              "and the wiring: nothing stored" % (name, noise, MAX_NOISE_PCT))
        r0 = round(med / res["clean_air"][conf["type"]], 2)
        q = conf["gas"] + "_ppm"
        before = statistics.median(got["values"][q])
        old = conf["r0_kohm"]
        raw_new = _store(dev, raw, name, "r0_kohm", r0)
        after = fieldtest.probe(dev, 3, [name], wifi=False, rs=True)["sensors"][name]
        r = {"port": port, "node_id": cfg["node_id"], "sensor": name, "type": conf["type"], "gas": conf["gas"],
             "minutes": minutes, "reads": len(rs), "rs_kohm": round(med, 3), "drift_pct": round(drift, 2),
             "noise_pct": round(noise, 2), "clean_air_ratio": res["clean_air"][conf["type"]],
             "r0_kohm": {"before": old, "after": r0},
             "ppm": {"quantity": q, "before": round(before, 3),
                     "after": round(statistics.median(after["values"][q]), 3) if after["values"].get(q) else None}}
        _inventory(r, raw_new, inventory, "r0_kohm")
    r["running"] = sess.running
    return r


class _session:
    """An open Device that is soft-reset when we are done, whatever happened, so the node goes
    back to work (with its new config) instead of sitting in the REPL."""

    def __init__(self, port):
        self.dev = transport.Device(port, timeout=10.0)
        self.running = None

    def __enter__(self):
        return self.dev.open()

    def __exit__(self, exc_type, exc, tb):
        try:
            if self.dev.t is not None and not transport.interrupted():
                self.running = fieldtest.restart(self.dev)
        except CitynodeError:
            if exc_type is None:
                raise
        finally:
            self.dev.close()

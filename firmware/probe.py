"""What the host's field test and calibration run on the node over the raw REPL: every configured
sensor read n times through the real drivers, the gas sensors' Rs, and the Wi-Fi link. Prints
one line, "PROBE {json}", and changes nothing on the node.

    import probe
    probe.run(5)                         # PROBE {"sensors": {"water": {"values": {...}}}, "wifi": ...}
    probe.run(7, ["water"], wifi_check=False)
"""
import asyncio
import json

import board
import drivers


def _code(e):
    c = drivers.code(e)
    return "error: %r" % e if c == "error" else c   # a bug: the field test shows what it was


def _count(d, k):
    d[k] = d.get(k, 0) + 1


async def _read(s, values):
    # An MQ driver counts its warm-up from power-up (hw.uptime_ms), as the node's own does.
    return await asyncio.wait_for_ms(s.read(values), 15000)


async def _one(s, c, r, values, rs):
    if s is None:
        return
    mine = {}
    try:
        if rs and hasattr(s, "measure_rs"):
            # Calibration: Rs itself, whatever the warm-up (the host judges the drift).
            import drivers.mq as mq
            x = await s.measure_rs()
            r["values"].setdefault("rs_kohm", []).append(x)
            r["values"].setdefault(c["gas"] + "_ppm", []).append(mq.ppm(x / c["r0_kohm"], *mq.CURVES[c["type"]][c["gas"]]))
            return
        if c["type"] == "hcsr04" and "air_temp_c" in values:
            mine["air_temp_c"] = values["air_temp_c"]
        k = await _read(s, mine)
        if k is not None:
            r["kept"].append(k)
        for q in mine:
            if q not in values:
                values[q] = mine[q]
                r["values"].setdefault(q, []).append(mine[q])
    except Exception as e:
        _count(r["errors"], _code(e))


async def sensors(cfg, hw, n, names=None, gap_ms=200, rs=False):
    confs = [c for c in cfg["sensors"] if not names or c["name"] in names]
    out, made = {}, {}
    warm = 0
    for c in confs:
        r = out[c["name"]] = {"type": c["type"], "values": {}, "errors": {}, "kept": []}
        try:
            s = made[c["name"]] = drivers.make(c, hw)
        except Exception as e:
            r["errors"][_code(e)] = n
            continue
        if hasattr(s, "wake"):
            # The node may have put a PM sensor to sleep between its cycles: wake it and give the
            # fan its warm-up, as the node itself does before a reading.
            await s.wake()
            warm = max(warm, s.warmup_ms)
            r["warmup_ms"] = s.warmup_ms
    if warm:
        await asyncio.sleep_ms(warm)
    air = [c for c in confs if drivers.rank(c) == 0]
    rest = [c for c in confs if c not in air]
    for i in range(n):
        if i:
            await asyncio.sleep_ms(gap_ms)
        values = {}
        # Air first, as the node does: the HC-SR04 corrects the speed of sound with its
        # temperature. The rest in parallel (separate buses): a PM reading takes seconds.
        for c in air:
            await _one(made.get(c["name"]), c, out[c["name"]], values, rs)
        await asyncio.gather(*[_one(made.get(c["name"]), c, out[c["name"]], values, rs) for c in rest])
    # PM sensors are left awake: the node's next driver assumes a sensor powered with the board.
    return out


def run(n=5, names=None, wifi_check=True, gap_ms=200, rs=False):
    _, cfg, profile = board.load()
    hw = board.open(profile)
    # ms since power-up, what an MQ heater's warm-up counts from (the board's, for both boards)
    res = {"node_id": cfg["node_id"], "sim": board.SIM, "up_ms": hw.uptime_ms(),
           "sensors": asyncio.run(sensors(cfg, hw, n, names, gap_ms, rs))}
    if rs:
        import drivers.mq as mq
        res["clean_air"] = mq.CLEAN_AIR
    if wifi_check:
        w = hw.wifi(cfg)
        res["wifi"] = w.report() if w else None
    print("PROBE " + json.dumps(res))

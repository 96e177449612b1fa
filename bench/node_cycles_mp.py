# Runs inside a virtual node's flash dir on the unix port:
#   micropython -X heapsize=64k node_cycles_mp.py HOST PORT CYCLES
# Prints one JSON line of figures. The node publishes to the broker while it cycles.
import asyncio
import gc
import json
import sys
import time

import persist


class GcProbe:
    # node.cycle() collects at its end; what is allocated just before that is the cycle's peak.
    def __init__(self):
        self.peak = 0

    def collect(self):
        a = gc.mem_alloc()
        if a > self.peak:
            self.peak = a
        gc.collect()

    def mem_free(self):
        return gc.mem_free()


async def main(host, port, cycles):
    raw = persist.read_json("config.json")
    profile = persist.read_json("boards/%s.json" % raw["board"])
    import config
    cfg = config.validate(raw, profile)
    del config
    sys.modules.pop("config")
    gc.collect()
    import board
    import node
    import outbox
    hw = board.open(profile)
    ob = outbox.Outbox("outbox.d", cfg["outbox_kb"])
    n = node.Node(cfg, profile, hw, 0, "power", ob, None, lambda: int(time.time()), lambda m: None, raw,
                  broker=(host, port))
    import drivers
    for e in n.sensors:
        e[1] = drivers.make(e[0], hw)
    probe = GcProbe()
    node.gc = probe
    gc.collect()
    code = gc.mem_alloc()  # modules and the node's standing objects, before any cycle
    sizes = [0, 0]  # bytes, messages: a list of 1,000 sizes would itself need 4 KB of heap
    store = n.store

    def measuring_store(kind, payload):
        if kind == 0x74:
            sizes[0] += len(payload)
            sizes[1] += 1
        store(kind, payload)

    n.store = measuring_store
    lt = asyncio.create_task(n.link.run())
    pt = asyncio.create_task(n.publisher())
    try:
        await asyncio.wait_for_ms(n.link.up.wait(), 20000)
    except asyncio.TimeoutError:
        print("no broker connection within 20 s:", n.link.last_error)
        sys.exit(1)
    gc.collect()
    base = gc.mem_alloc()
    errors = {}
    t0 = time.ticks_ms()
    for i in range(cycles):
        r = await n.cycle()
        for k in r["errors"]:
            e = k + ":" + r["errors"][k]
            errors[e] = errors.get(e, 0) + 1
    ms = time.ticks_diff(time.ticks_ms(), t0)
    t1 = time.ticks_ms()
    while n.pending() and time.ticks_diff(time.ticks_ms(), t1) < 20000:
        await asyncio.sleep_ms(20)
    lt.cancel()
    pt.cancel()
    print(json.dumps({"cycles": cycles, "ms_per_cycle": ms / cycles, "peak_alloc": probe.peak,
                      "base_alloc": base, "code_alloc": code, "mem_total": gc.mem_alloc() + gc.mem_free(),
                      "bytes_per_msg": sizes[0] / sizes[1], "undelivered": n.pending(),
                      "errors": errors, "values": sorted(r["values"])}))


asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))

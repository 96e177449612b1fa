# Runs inside a virtual node's flash dir on the unix port:
#   micropython -X heapsize=64k node_cycles_mp.py HOST PORT CYCLES [GC_THRESHOLD [CMD_EVERY]]
# Prints one JSON line of figures. The node publishes to the broker while it cycles.
import asyncio
import gc
import json
import sys
import time


CMD_EVERY = 5   # cycles between two commands (argv[5]; 0: none)
# What an operator or a crew sends, in turn: `set` writes config.json (site.name, to the name it
# has: later runs start from the same config), and from files each loads the node's command code. A `set` comes
# no more often than the node's guard lets them run (cmdguard: 5 at once, then one per 12 s);
# when it would, a ping is sent in its place.
CMDS = ('{"id":"b-%d","cmd":"ping"}', '{"id":"b-%d","cmd":"set","args":{"key":"site.name","value":%s}}',
        '{"id":"b-%d","cmd":"get_config"}')
SET_BURST, SET_EVERY_MS = 4, 13000


class GcProbe:
    # node.cycle() collects at its end; what is allocated just before that is the cycle's peak.
    def __init__(self):
        self.peak = 0
        self.at = 0      # the collect at which the peak was seen
        self.n = 0
        self.after = 0   # in use after the last collect
        self.garbage = 0  # sum over cycles of what a cycle left to collect

    def collect(self):
        sample()
        a = gc.mem_alloc()
        self.n += 1
        if a > self.peak:
            self.peak = a
            self.at = self.n
        if self.after:
            self.garbage += a - self.after
        gc.collect()
        self.after = gc.mem_alloc()

    def mem_free(self):
        return gc.mem_free()


LIVE = [0]  # the most heap seen in use at a sample point (meaningful with a small gc.threshold)


def sample():
    a = gc.mem_alloc()
    if a > LIVE[0]:
        LIVE[0] = a


def sample_publishes():
    # Sample while a batch of publishes is in flight: each one's end sees the others' state.
    import mqtt
    publish = mqtt.MQTTClient.publish

    async def sampled(self, *a, **k):
        sample()
        r = await publish(self, *a, **k)
        sample()
        return r

    mqtt.MQTTClient.publish = sampled


def load_code(cfg):
    # Every module this node runs, and only those: the drivers of its sensors (what
    # drivers.make and the sim board load). What they take is the code (bytecode, function and
    # class objects, their qstrs): frozen, the bytecode stays in flash and the objects remain.
    import board, node, outbox, drivers  # noqa: E401,F401
    # A board loads its system class (esp32hw); the virtual node's (simhw_sys) stands in for it
    # at run time and is frozen with the simulated chips: charge the board's, as a board would.
    import esp32hw  # noqa: F401
    try:
        import simhw, simhw_sys  # noqa: E401,F401
    except ImportError:
        pass
    for s in cfg["sensors"]:
        t = drivers._ALIAS.get(s["type"], s["type"])
        __import__("drivers." + t)
        if "uart" in s:
            import simhw_uart  # noqa: F401
        if t == "bme280":
            import simhw_bme280  # noqa: F401


async def main(host, port, cycles, threshold=0, every=CMD_EVERY):
    gc.collect()
    start = gc.mem_alloc()  # the interpreter's own, and this script's
    # As main.py boots: board.load() validates with config.py, which is dropped (its qstrs
    # stay: counted as data), then the node's modules are loaded.
    import board
    gc.collect()
    code = gc.mem_alloc() - start
    raw, cfg, profile = board.load()
    for m in ("config", "cfgkeys"):
        sys.modules.pop(m)
    gc.collect()
    a = gc.mem_alloc()
    load_code(cfg)
    gc.collect()
    code += gc.mem_alloc() - a
    import node
    import outbox
    hw = board.open(profile)
    ob = outbox.Outbox("outbox.d", cfg["outbox_kb"])
    del raw, profile
    n = node.Node(cfg, hw, 0, "power", ob, None, lambda: int(time.time()), lambda m: None,
                  broker=(host, port))
    import drivers
    for e in n.sensors:
        e[1] = drivers.make(e[0], hw)
    probe = GcProbe()
    node.gc = probe
    gc.collect()
    standing = gc.mem_alloc()  # modules and the node's standing objects, before any cycle
    sizes = [0, 0]  # bytes, messages: a list of 1,000 sizes would itself need 4 KB of heap
    store = n.store

    def measuring_store(kind, payload):
        if kind == 0x74:
            sizes[0] += len(payload)
            sizes[1] += 1
        sample()
        store(kind, payload)
        sample()

    n.store = measuring_store
    beat = n.beat

    def sampling_beat(name):
        sample()
        beat(name)

    n.beat = sampling_beat
    sample_publishes()
    # A command now and then (CMDS in turn), as an operator's `citynode ping`, `cmd set` or
    # `config show`: the node loads its command code for it and drops it after; every one must
    # be answered ok.
    cmds = [0, 0]   # sent, answered ok
    sets = [0, 0]   # sent, ticks of the last
    reply = n.commands.reply

    async def counted(payload):
        if json.loads(payload)["ok"]:
            cmds[1] += 1
        await reply(payload)

    n.commands.reply = counted
    lt = asyncio.create_task(n.link.run())
    pt = asyncio.create_task(n.publisher())
    ct = asyncio.create_task(n.commands.task())
    try:
        await asyncio.wait_for_ms(n.link.up.wait(), 20000)
    except asyncio.TimeoutError:
        print("no broker connection within 20 s:", n.link.last_error)
        sys.exit(1)
    gc.collect()
    base = gc.mem_alloc()
    if threshold:
        # A collection after every `threshold` bytes: what is in use at a sample point is then
        # live data plus at most `threshold` of garbage.
        gc.threshold(threshold)
    LIVE[0] = 0
    errors = {}
    t0 = time.ticks_ms()
    for i in range(cycles):
        if every and i % every == every - 1:
            k = cmds[0] % len(CMDS)
            if k == 1:
                if sets[0] >= SET_BURST and time.ticks_diff(time.ticks_ms(), sets[1]) < SET_EVERY_MS:
                    k = 0
                else:
                    sets[0] += 1
                    sets[1] = time.ticks_ms()
            p = (CMDS[k] % ((i, json.dumps(n.cfg["site"]["name"])) if k == 1 else i)).encode()
            n._on_message(n.t_cmd, p, len(p))
            cmds[0] += 1
        r = await n.cycle()
        for k in r["errors"]:
            e = k + ":" + r["errors"][k]
            errors[e] = errors.get(e, 0) + 1
    ms = time.ticks_diff(time.ticks_ms(), t0)
    t1 = time.ticks_ms()
    while (n.pending() or not n.commands.idle()) and time.ticks_diff(time.ticks_ms(), t1) < 20000:
        await asyncio.sleep_ms(20)
    lt.cancel()
    pt.cancel()
    ct.cancel()
    print(json.dumps({"cycles": cycles, "ms_per_cycle": ms / cycles, "peak_alloc": probe.peak, "peak_at": probe.at, "live_peak": LIVE[0], "threshold": threshold, "garbage_per_cycle": probe.garbage / max(probe.n - 1, 1),
                      "base_alloc": base, "standing_alloc": standing,
                      "start_alloc": start, "code_alloc": code, "mem_total": gc.mem_alloc() + gc.mem_free(),
                      "bytes_per_msg": sizes[0] / sizes[1], "undelivered": n.pending(),
                      "commands": cmds[0], "commands_ok": cmds[1], "sets": sets[0],
                      "errors": errors, "values": sorted(r["values"])}))


asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 0,
                 int(sys.argv[5]) if len(sys.argv) > 5 else CMD_EVERY))

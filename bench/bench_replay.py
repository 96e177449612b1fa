"""Issue 6's end-to-end figure: the time a virtual node takes to replay 1,000 held readings to
Mosquitto after an outage, measured at a subscriber. The outbox is filled beforehand with the
firmware's own outbox.py (it runs on CPython too). Prints a markdown section."""
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from helpers import Mosquitto, Sub, wait_for  # noqa: E402
from nodeproc import VNode, sim_config  # noqa: E402

N = 1000


def fill(flash, n):
    spec = importlib.util.spec_from_file_location("fw_outbox", ROOT / "firmware" / "outbox.py")
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    cwd = os.getcwd()
    os.chdir(flash)
    try:
        ob = m.Outbox("outbox.d", 512)
        for i in range(n):
            rec = {"boot": 99, "seq": i, "ts": 1764390000 + i, "up": i,
                   "values": {"water_level_cm": 123.4, "distance_cm": 176.6, "air_temp_c": 27.1, "rh_pct": 80.2}}
            ob.append(b"t" + json.dumps(rec, separators=(",", ":")).encode())
        ob.close()
    finally:
        os.chdir(cwd)


def run_once(tmp, k):
    b = Mosquitto(Path(tmp) / ("broker%d" % k))
    b.start()
    cfg = sim_config("replay-%d" % k, interval=60, keepalive=30, sensors=[], outbox_kb=512)
    node = VNode(tmp, cfg, b)
    node.flash.mkdir(parents=True, exist_ok=True)
    # The firmware must be on the flash before the outbox: sim installs it when main.py is missing.
    from citynode.sim import install_firmware
    install_firmware(node.flash)
    fill(node.flash, N)
    with Sub(b, "city/%s/telemetry" % cfg["node_id"]) as sub:
        t0 = time.monotonic()
        node.start()
        first = wait_for(lambda: sub.all(), 30, what="first held reading")
        t1 = time.monotonic()
        wait_for(lambda: len({json.loads(m.payload)["seq"] for m in sub.all()
                              if json.loads(m.payload)["boot"] == 99}) >= N, 120, what="all held readings")
        t2 = time.monotonic()
        got = [json.loads(m.payload) for m in sub.all()]
    node.kill()
    b.stop()
    held = [d["seq"] for d in got if d["boot"] == 99]
    return {"start_to_first": t1 - t0, "replay": t2 - t1, "in_order": held[:N] == list(range(N)),
            "dups": len(held) - len(set(held))}


def main():
    tmp = tempfile.mkdtemp(prefix="citynode-bench-replay-")
    try:
        runs = [run_once(tmp, k) for k in range(3)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    best = min(r["replay"] for r in runs)
    print("## Replay of 1,000 held readings (virtual node -> Mosquitto -> subscriber)\n")
    print("| run | node start to first reading (s) | first to 1,000th reading (s) | readings/s | in order | duplicates |")
    print("|---|---|---|---|---|---|")
    for i, r in enumerate(runs):
        print("| %d | %.2f | %.2f | %.0f | %s | %d |" % (i + 1, r["start_to_first"], r["replay"], N / r["replay"],
                                                     "yes" if r["in_order"] else "NO", r["dups"]))
    print("\nBest: 1,000 held readings replayed in %.2f s (%.0f readings/s), eight QoS 1 publishes in flight." % (best, N / best))


if __name__ == "__main__":
    main()

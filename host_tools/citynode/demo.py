"""`make demo`: a broker on loopback, three virtual nodes with different sensor sets, and their
readings printed live until Ctrl-C.

    python -m citynode.demo [--nodes examples/sim-water.json,...] [--seconds N]
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from . import fw
from .localbroker import LocalBroker

EXAMPLES = fw.EXAMPLES
DEFAULT_NODES = ("sim-water.json", "sim-air.json", "sim-drain.json")
SCENARIO = EXAMPLES / "sim-rain.json"


def start_nodes(broker, configs, flash_root):
    procs = []
    for cfg in configs:
        node_id = json.loads(Path(cfg).read_text())["node_id"]
        flash = flash_root / node_id
        shutil.rmtree(flash, ignore_errors=True)  # a fresh factory flash: the demo shows boot 0
        flash.mkdir(parents=True)
        cmd = [sys.executable, "-m", "citynode", "sim", "--flash", str(flash), "--config", str(cfg),
               "--broker", broker.address]
        if SCENARIO.exists():
            cmd += ["--scenario", str(SCENARIO)]
        log = open(flash_root / ("%s.log" % node_id), "w")
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
    return procs


def line(topic, payload):
    node, kind = topic.split("/")[-2:]
    try:
        d = json.loads(payload)
    except ValueError:
        return "%-11s %-8s %r" % (node, kind, payload[:80])
    if kind == "telemetry":
        vals = " ".join("%s=%s" % (k, v) for k, v in sorted(d.get("values", {}).items()))
        errs = " ".join("%s:%s" % kv for kv in sorted(d.get("errors", {}).items()))
        return "%-11s boot %d seq %-4d %s%s" % (node, d["boot"], d["seq"], vals, ("  errors " + errs) if errs else "")
    if kind == "status":
        return "%-11s status %s" % (node, d.get("state"))
    if kind == "event":
        return "%-11s EVENT %s %s" % (node, d.get("event"), json.dumps(d.get("detail")))
    return "%-11s %s %s" % (node, kind, payload.decode(errors="replace"))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="citynode.demo")
    ap.add_argument("--nodes", default=",".join(str(EXAMPLES / n) for n in DEFAULT_NODES))
    ap.add_argument("--seconds", type=float, default=0, help="stop after this long (0: until Ctrl-C)")
    ap.add_argument("--flash-root", default="demo-flash")
    a = ap.parse_args(argv)
    import paho.mqtt.client as mqtt

    flash_root = Path(a.flash_root)
    flash_root.mkdir(parents=True, exist_ok=True)
    with LocalBroker() as broker:
        print("broker: %s on %s" % (broker.kind, broker.address))
        procs = start_nodes(broker, a.nodes.split(","), flash_root)
        print("virtual nodes: %d (flash and logs in %s)" % (len(procs), flash_root))
        print("watch the fleet too:  .venv/bin/citynode monitor --broker %s" % broker.address)
        print("Ctrl-C stops.\n")
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        c.on_message = lambda cl, ud, m: print(time.strftime("%H:%M:%S"), line(m.topic, m.payload), flush=True)
        c.connect(broker.host, broker.port, 30)
        c.subscribe([("city/+/telemetry", 1), ("city/+/status", 1), ("city/+/event", 1)])
        c.loop_start()
        try:
            end = time.monotonic() + a.seconds if a.seconds else None
            while end is None or time.monotonic() < end:
                time.sleep(0.2)
                dead = [p for p in procs if p.poll() is not None]
                if dead:
                    print("a virtual node stopped (exit %s); see its log in %s" % (dead[0].returncode, flash_root))
                    break
        except KeyboardInterrupt:
            print()
        finally:
            c.loop_stop()
            for p in procs:
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Field tools benchmark: monitor throughput against mosquitto_sub on the same stream, and
provisioning of 1, 4 and 8 virtual nodes at once against one. Prints a markdown section.

    .venv/bin/python bench/bench_field.py            # both parts, under 2 minutes
    .venv/bin/python bench/bench_field.py monitor    # one part
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "host_tools"))

from helpers import Mosquitto  # noqa: E402

BIN = Path(sys.executable).parent
CITYNODE = str(BIN / "citynode")
NODES, PER_NODE = 10, 3000


class LineClock:
    """Reads a consumer's stdout; notes when the first and the last expected line arrived."""

    def __init__(self, proc, want, is_data):
        self.proc, self.want, self.is_data = proc, want, is_data
        self.ready = 0
        self.count = 0
        self.first = self.last = None
        self.done = threading.Event()
        self.lines = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        for line in self.proc.stdout:
            if not self.is_data(line):
                self.ready += 1
                continue
            now = time.perf_counter()
            if self.first is None:
                self.first = now
            self.count += 1
            self.last = now
            if self.count >= self.want:
                self.lines.append(line)
                self.done.set()
        self.done.set()

    @property
    def rate(self):
        if self.count < 2:
            return 0.0
        return (self.count - 1) / (self.last - self.first)


def wait(pred, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.02)
    raise SystemExit("bench: timed out waiting for %s" % what)


def bench_monitor():
    from citynode import monitor

    work = Path(tempfile.mkdtemp(prefix="bench-mon-"))
    broker = Mosquitto(work / "broker")
    broker.start()
    procs = []
    try:
        host, port = broker.host, str(broker.port)
        topics = ["city/+/status", "city/+/telemetry", "city/+/event"]
        sub = subprocess.Popen(["mosquitto_sub", "-h", host, "-p", port, "-q", "1", "-v"]
                               + sum((["-t", t] for t in topics), []),
                               stdout=subprocess.PIPE, text=True)
        mon = subprocess.Popen([CITYNODE, "monitor", "--broker", broker.address, "--json"],
                               stdout=subprocess.PIPE, text=True)
        procs += [sub, mon]
        total = NODES * PER_NODE
        sub_clock = LineClock(sub, total, lambda s: "/telemetry " in s)
        mon_clock = LineClock(mon, total, lambda s: '"kind":"telemetry"' in s)
        for i in range(NODES):
            subprocess.run(["mosquitto_pub", "-h", host, "-p", port, "-q", "1", "-r", "-t",
                            "city/n-%02d/status" % i, "-m",
                            '{"state":"online","fw":"0.3.1","boot":1,"reset":"power"}'], check=True)
        wait(lambda: sub_clock.ready >= NODES and mon_clock.ready >= NODES, 20, "both consumers subscribed")

        t0 = time.perf_counter()
        pubs = []
        for i in range(NODES):
            p = subprocess.Popen(["mosquitto_pub", "-h", host, "-p", port, "-q", "1", "-l", "-t",
                                  "city/n-%02d/telemetry" % i], stdin=subprocess.PIPE, text=True)
            pubs.append((i, p))
        for i, p in pubs:
            p.stdin.write("".join(json.dumps({"boot": 1, "seq": s, "ts": 1764390000 + s, "up": s,
                                              "values": {"water_level_cm": 120.0 + (s % 7) / 10}}) + "\n"
                                  for s in range(PER_NODE)))
            p.stdin.close()
        for _, p in pubs:
            p.wait(60)
        t_pub = time.perf_counter() - t0
        sub_clock.done.wait(60)
        mon_clock.done.wait(60)
        last = json.loads(mon_clock.lines[-1]) if mon_clock.lines else {}

        # The accounting alone, no broker: how many messages per second Fleet.feed takes.
        f = monitor.Fleet("city")
        payloads = [("city/n-%02d/telemetry" % (s % NODES),
                     json.dumps({"boot": 1, "seq": s // NODES, "ts": 1, "up": 1, "values": {"x_cm": 1.0}}).encode())
                    for s in range(total)]
        t = time.perf_counter()
        for topic, p in payloads:
            f.feed(topic, p)
        feed_rate = total / (time.perf_counter() - t)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(5)
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)

    out = ["### Monitor throughput", "",
           "%d telemetry messages (QoS 1) from %d publishers (`mosquitto_pub -l`, %.1f s to send), "
           "one Mosquitto on loopback, both consumers subscribed (QoS 1) to the same stream in the same run. "
           "Rate = messages / time between the first and the last message each consumer saw. "
           "`Fleet.feed` is the monitor's accounting alone, fed from memory after the run."
           % (total, NODES, t_pub), "",
           "| consumer | received | msg/s | vs mosquitto_sub |", "|---|---:|---:|---:|",
           "| `mosquitto_sub -v` (C) | %d | %.0f | 1.00 |" % (sub_clock.count, sub_clock.rate),
           "| `citynode monitor --json` (a line per message) | %d | %.0f | %.2f |"
           % (mon_clock.count, mon_clock.rate, mon_clock.rate / sub_clock.rate),
           "| `Fleet.feed` alone (accounting, no broker) | %d | %.0f | %.2f |"
           % (total, feed_rate, feed_rate / sub_clock.rate), "",
           "The monitor's accounting of the run (its last --json line): lost=%s dups=%s (expected 0 and 0)."
           % (last.get("lost"), last.get("dups")), ""]
    return "\n".join(out)


# The A02YYUW (UART frames): the sim's HC-SR04 echo is a real pulse timed by time_pulse_us, which
# eight MicroPython processes on two cores stretch, and that would measure the sim, not provisioning.
PROV_SENSORS = "water:a02yyuw:mount_height_cm=300; air:bme280"


def _tree(dst):
    """firmware/ and boards/ as committed (git HEAD), else as they are: what the nodes start with
    and what provision deploys, fixed while people edit the working tree."""
    dst.mkdir(parents=True)
    try:
        tar = subprocess.run(["git", "-C", str(ROOT), "archive", "HEAD", "firmware", "boards"],
                             capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dst)], input=tar, check=True)
    except (OSError, subprocess.CalledProcessError):
        shutil.copytree(ROOT / "firmware", dst / "firmware")
        shutil.copytree(ROOT / "boards", dst / "boards")
    return dst


def _start_sims(work, broker, n, baud, src):
    """n `citynode sim --serial` processes (one per node, as n boards would be); their ports."""
    from citynode.sim import install_firmware
    procs, ports = [], []
    for i in range(n):
        install_firmware(work / ("node-%d" % i), src)
        p = subprocess.Popen([CITYNODE, "sim", "--serial", "--flash", str(work / ("node-%d" % i)), "--broker",
                              broker.address, "--baud", str(baud)], stdout=subprocess.PIPE, text=True,
                             start_new_session=True)
        procs.append(p)
    for p in procs:
        ports.append(p.stdout.readline().strip())
    return procs, ports


def _stop_sims(procs):
    import signal
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        p.wait(15)


def bench_provision(counts=(1, 4, 8), baud=115200, samples=3):
    work = Path(tempfile.mkdtemp(prefix="bench-prov-"))
    broker = Mosquitto(work / "broker")
    broker.start()
    src = _tree(work / "src")
    rows = []
    try:
        for n in counts:
            d = work / ("fleet-%d" % n)
            inv = d / "fleet.csv"
            d.mkdir()
            inv.write_text("node_id,board,sensors,mqtt.host,mqtt.port,interval_s\n" + "".join(
                "bench-%d-%d,sim,%s,127.0.0.1,1,60\n" % (n, i, PROV_SENSORS) for i in range(n)))
            procs, ports = _start_sims(d, broker, n, baud, src)
            try:
                time.sleep(1.0)  # the nodes boot (no config yet: safe mode) before the crew starts
                t = time.perf_counter()
                r = subprocess.run([CITYNODE, "--json", "provision", "--inventory", str(inv), "--ports", ",".join(ports),
                                    "--skip-flash", "--broker", broker.address, "--samples", str(samples),
                                    "--src", str(src)],
                                   capture_output=True, text=True, timeout=300)
                wall = time.perf_counter() - t
            finally:
                _stop_sims(procs)
            doc = json.loads(r.stdout) if r.stdout.strip() else {"nodes": []}
            nodes = doc["nodes"]

            def mean(step):
                xs = [x["steps"][step]["seconds"] for x in nodes if step in x["steps"]]
                return sum(xs) / len(xs) if xs else float("nan")
            rows.append((n, wall, mean("deploy"), mean("config"), mean("test"),
                         sum(1 for x in nodes if x["result"] == "PASS"),
                         [x["reason"] for x in nodes if x["result"] != "PASS"][:2]))
    finally:
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    one = rows[0][1]
    out = ["### Provisioning virtual nodes at once", "",
           "`citynode provision --ports P1,...,Pn` (deploy of the whole firmware as .mpy to virtual nodes that hold only its sources, "
           "config push, field test with %d reads per sensor and a telemetry round trip on Mosquitto), one "
           "`citynode sim --serial --baud %d` process per node, so the serial link is paced like a board's USB UART. "
           "Wall time of the whole command, Python start-up included; flashing is skipped (`--skip-flash`: "
           "bench_flash.py measures it)."
           % (samples, baud), "",
           "| nodes at once | wall s | vs 1 node | per node: deploy s | config s | field test s | passed |",
           "|---:|---:|---:|---:|---:|---:|---:|"]
    for n, wall, dep, cfg, tst, ok, why in rows:
        out.append("| %d | %.1f | %.2fx | %.1f | %.1f | %.1f | %d/%d%s |" % (
            n, wall, wall / one, dep, cfg, tst, ok, n, (" (" + "; ".join(why) + ")") if why else ""))
    out += ["", "An ideal fleet would take as long as one node; the excess is what %d CPU cores pay for n MicroPython "
            "processes, their serial relays and the host's workers." % os.cpu_count(), ""]
    return "\n".join(out)


def main(argv):
    parts = argv[1:] or ["monitor", "provision"]
    t = time.monotonic()
    sections = []
    if "monitor" in parts:
        sections.append(bench_monitor())
    if "provision" in parts:
        sections.append(bench_provision())
    print("## Field tools (bench/bench_field.py)\n")
    print("Machine: %d CPU cores, Python %s. Total bench time %.0f s.\n"
          % (os.cpu_count(), sys.version.split()[0], time.monotonic() - t))
    print("\n".join(sections))


if __name__ == "__main__":
    main(sys.argv)

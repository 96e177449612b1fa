"""Updates over the air against a USB deploy: bytes on the node's link and seconds to update one
virtual node over MQTT (the whole firmware; one module changed, as a full bundle and as a delta),
beside `citynode deploy` over a serial link paced at 115200 baud; and the time of one Ed25519
verification on CPython and the MicroPython unix port (and a 32-bit unix port, when
CITYNODE_MICROPYTHON32 names one).

    .venv/bin/python bench/bench_ota.py

Prints a markdown section. The node's link goes through a counting TCP relay, so bytes are the
MQTT bytes both ways on the node's side (what a radio would carry, less TCP/IP and TLS framing).
Seconds run from the start of the push to the new version's birth on the broker, the reboot
included.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "host_tools"))
sys.path.insert(0, str(ROOT / "tests"))

from helpers import Mosquitto, Sub, free_port, wait_for  # noqa: E402
from citynode import ota  # noqa: E402
from citynode.sim import SimNode  # noqa: E402

BIN = Path(sys.executable).parent
BAUD = 115200


class CountingRelay:
    """127.0.0.1:port -> target, counting the bytes each way."""

    def __init__(self, target):
        self.target = target
        self.up = self.down = 0
        self.port = free_port()
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", self.port))
        self.ls.listen(8)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                a, _ = self.ls.accept()
            except OSError:
                return
            b = socket.create_connection(self.target)
            for s in (a, b):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._pipe, args=(a, b, "up"), daemon=True).start()
            threading.Thread(target=self._pipe, args=(b, a, "down"), daemon=True).start()

    def _pipe(self, src, dst, way):
        while True:
            try:
                d = src.recv(65536)
            except OSError:
                d = b""
            if not d:
                for s in (src, dst):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                return
            setattr(self, way, getattr(self, way) + len(d))
            try:
                dst.sendall(d)
            except OSError:
                return


def one_module_changed(dst):
    shutil.copytree(ROOT / "firmware", dst / "firmware", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "boards", dst / "boards")
    with open(dst / "firmware" / "node.py", "a") as f:
        f.write("\n_BENCH_CHANGED = 1\n")
    return dst


def push(broker, relay, node_id, bundle):
    u0, d0 = relay.up, relay.down
    t0 = time.monotonic()
    r = ota.push([node_id], broker.address, bundle)[node_id]
    dt = time.monotonic() - t0
    if r.state != "ok":
        raise SystemExit("push failed: %s" % (r.as_dict(),))
    time.sleep(0.3)   # the node's commit and last acks
    return {"s": dt, "to_node": relay.down - d0, "from_node": relay.up - u0, "bundle": len(bundle.data)}


def deploy(tmp, src, env):
    """citynode deploy of `src` to a paced serial node that has the package's firmware."""
    node = SimNode(tmp / "flash-usb", serial=True, baud=BAUD, empty=True, register=False).start()
    try:
        out = {}
        for name, tree in (("full", ROOT), ("one", src)):
            w0 = dict(node.wire)
            t0 = time.monotonic()
            p = subprocess.run([str(BIN / "citynode"), "deploy", "--port", node.port, "--json", "--src", str(tree)],
                               capture_output=True, text=True, env=env, timeout=300)
            if p.returncode:
                raise SystemExit("deploy failed: %s" % p.stderr[-1000:])
            out[name] = {"s": time.monotonic() - t0, "to_node": node.wire["to_node"] - w0["to_node"],
                         "from_node": node.wire["from_node"] - w0["from_node"],
                         "files": len(json.loads(p.stdout)["sent"])}
        return out
    finally:
        node.stop()


VERIFY = r"""
import sys, time
sys.path.insert(0, %r)
import ed25519
pub, msg, sig = bytes.fromhex(%r), bytes.fromhex(%r), bytes.fromhex(%r)
assert ed25519.verify(pub, msg, sig)
now = (lambda: time.ticks_us() / 1e6) if hasattr(time, "ticks_us") else time.perf_counter
n = 20
t0 = now()
for _ in range(n):
    ed25519.verify(pub, msg, sig)
print((now() - t0) / n * 1000)
"""


def verify_ms(exe):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    k = Ed25519PrivateKey.generate()
    # what a node verifies: the context and a SHA-256 digest of the bundle's header
    msg = ota.CONTEXT + bytes(32)
    pub = ota.public_hex(k)
    src = VERIFY % (str(ROOT / "firmware"), pub, msg.hex(), k.sign(msg).hex())
    p = subprocess.run([exe, "-c", src], capture_output=True, text=True, timeout=120)
    if p.returncode:
        return None
    return float(p.stdout.split()[-1])


def main():
    tmp = Path(tempfile.mkdtemp(prefix="bench-ota-"))
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp / "cache"), XDG_RUNTIME_DIR=str(tmp))
    os.environ["XDG_CACHE_HOME"] = env["XDG_CACHE_HOME"]
    broker = Mosquitto(tmp / "broker")
    broker.start()
    relay = CountingRelay((broker.host, broker.port))
    r = {}
    try:
        ota.keygen(tmp / "s")
        pub = (tmp / "s" / "ota.pub").read_text().strip()
        src = one_module_changed(tmp / "one")
        full = ota.Bundle.read(ota.bundle(secrets=tmp / "s", out=tmp / "full.cnota", version="0.9.0")["out"])
        one = ota.Bundle.read(ota.bundle(src=src, secrets=tmp / "s", out=tmp / "one.cnota", version="0.9.1")["out"])
        delta = ota.Bundle.read(ota.bundle(src=src, secrets=tmp / "s", out=tmp / "delta.cnota", version="0.9.2",
                                           base=tmp / "full.cnota")["out"])
        cfg = {"node_id": "bench-ota", "board": "sim", "mqtt": {"host": "127.0.0.1", "port": 1}, "interval_s": 1,
               "sensors": [{"name": "water", "type": "hcsr04", "mount_height_cm": 300.0}], "ota": {"pubkey": pub}}
        (tmp / "cfg.json").write_text(json.dumps(cfg))
        node = SimNode(tmp / "flash", broker="127.0.0.1:%d" % relay.port, config=str(tmp / "cfg.json"),
                       output=lambda line: None).start()
        try:
            with Sub(broker, "city/bench-ota/status") as sub:
                wait_for(lambda: sub.all(lambda m: b"online" in m.payload), 20, what="birth")
            r["full"] = push(broker, relay, "bench-ota", full)
            r["one"] = push(broker, relay, "bench-ota", one)
            # the delta is made against `full`: go back to it first (not measured)
            ota.push(["bench-ota"], broker.address, full, downgrade=True)
            time.sleep(0.3)
            r["delta"] = push(broker, relay, "bench-ota", delta)
        finally:
            node.stop()
        usb = deploy(tmp, src, env)
    finally:
        broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    ver = {"CPython %s" % ".".join(map(str, sys.version_info[:3])): verify_ms(sys.executable),
           "MicroPython unix port (64-bit)": verify_ms(str(BIN / "micropython"))}
    # the virtual ESP32 of `make esp32-unix` (32-bit, single-precision floats), when it is built
    plain = ROOT / "build" / "esp32-unix" / "micropython-plain"
    m32 = os.environ.get("CITYNODE_MICROPYTHON32") or (str(plain) if plain.exists() else None)
    if m32:
        ver["MicroPython unix port, 32-bit (%s)" % os.path.relpath(m32, ROOT)] = verify_ms(m32)

    print("## Updates over the air (MQTT) against deploy over USB\n")
    print("One virtual node on Mosquitto (loopback), its link through a counting relay; the firmware "
          "is %s files. USB: `citynode deploy` to a virtual node whose serial link is paced at %d baud "
          "(%d B/s each way).\n" % (len(full.manifest["files"]), BAUD, BAUD // 10))
    print("| update | bundle B | to node B | from node B | seconds |")
    print("|---|---:|---:|---:|---:|")
    rows = [("OTA, whole firmware", r["full"]), ("OTA, one module changed (full bundle)", r["one"]),
            ("OTA, one module changed (delta, `--base`)", r["delta"])]
    for name, x in rows:
        print("| %s | %s | %s | %s | %.2f |" % (name, format(x["bundle"], ","), format(x["to_node"], ","),
                                            format(x["from_node"], ","), x["s"]))
    for name, k in (("USB deploy at 115200, whole firmware", "full"), ("USB deploy at 115200, one module changed", "one")):
        x = usb[k]
        print("| %s (%d file%s) | – | %s | %s | %.2f |" % (name, x["files"], "" if x["files"] == 1 else "s",
                                                          format(x["to_node"], ","), format(x["from_node"], ","), x["s"]))
    print("\n- seconds, OTA: from the push's start to the new version's birth (offer, chunks of %d B with "
          "%d in flight, hashing on the node, reboot, trial boot). USB: the whole `citynode deploy` process, "
          "soft reset included; on a board it also needs someone at the node with a cable." % (ota.CHUNK, ota.WINDOW))
    print("- from node: the node's acknowledgements (one per chunk, QoS 0) and its MQTT traffic "
          "(telemetry once a second) during the update.\n")
    print("Ed25519 verification of a bundle's signature (firmware/ed25519.py, mean of 20):\n")
    print("| interpreter | ms per verify |")
    print("|---|---:|")
    for k, v in ver.items():
        print("| %s | %s |" % (k, "%.1f" % v if v is not None else "failed"))


if __name__ == "__main__":
    main()

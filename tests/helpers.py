"""Test helpers that are not fixtures: a real Mosquitto on loopback, free ports, waiting."""
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Listener:
    """A port that listens and never answers, for a --broker that must not be contacted: a
    client's connect completes in the kernel's backlog whether or not it is accepted, so
    connected() tells afterwards, without waiting, whether anything tried."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.setblocking(False)
        self.address = "127.0.0.1:%d" % self.sock.getsockname()[1]

    def connected(self):
        try:
            conn, _ = self.sock.accept()
        except BlockingIOError:
            return False
        conn.close()
        return True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.sock.close()


def wait_for(pred, timeout=10.0, step=0.05, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))


class Mosquitto:
    """Mosquitto on 127.0.0.1 with a generated config. Persistent, so a subscriber's queue
    survives stop()/start(). Runs as root with `user root`: otherwise it drops to the mosquitto
    user and cannot write its persistence file into our private temp dir."""

    def __init__(self, workdir, port=None, password_file=None):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.password_file = password_file
        self.proc = None
        self.log = self.dir / "mosquitto.log"

    @property
    def address(self):
        return "%s:%d" % (self.host, self.port)

    def write_conf(self):
        lines = [
            "listener %d 127.0.0.1" % self.port,
            "persistence true",
            "persistence_location %s/" % self.dir,
            "autosave_interval 1",
            "log_dest file %s" % self.log,
            "log_type all",
            "max_queued_messages 100000",
            "max_inflight_messages 20",
        ]
        if os.geteuid() == 0:
            lines.append("user root")
        if self.password_file:
            lines += ["allow_anonymous false", "password_file %s" % self.password_file]
        else:
            lines.append("allow_anonymous true")
        conf = self.dir / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self):
        conf = self.write_conf()
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_for(self._accepts, 10, what="mosquitto on port %d" % self.port)

    def _accepts(self):
        if self.proc.poll() is not None:
            raise RuntimeError("mosquitto exited: %s" % (self.log.read_text()[-2000:] if self.log.exists() else ""))
        try:
            socket.create_connection((self.host, self.port), 0.2).close()
            return True
        except OSError:
            return False

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def freeze(self):
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self):
        self.proc.send_signal(signal.SIGCONT)


class Gate:
    """A TCP relay on 127.0.0.1 in front of a broker, the path between a node and it. close()
    turns new connections away (accepted and hung up at once) while those already through go on;
    open() lets them through again. Deterministic where freezing the broker at a moment races a
    node that reconnects within milliseconds.

        g = Gate(broker).start()      # g.address for the node
        g.close(); ...; g.open()
    """

    def __init__(self, broker):
        import threading
        self.target = (broker.host, broker.port)
        self.host = "127.0.0.1"
        self.srv = socket.socket()
        self.srv.bind((self.host, 0))
        self.port = self.srv.getsockname()[1]
        self.passing = threading.Event()
        self.passing.set()
        self.refused = 0          # connections turned away
        self.socks = []

    @property
    def address(self):
        return "%s:%d" % (self.host, self.port)

    def start(self):
        import threading
        self.srv.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def close(self):
        self.passing.clear()

    def open(self):
        self.passing.set()

    def _accept(self):
        import threading
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return      # stop()
            if not self.passing.is_set():
                self.refused += 1
                c.close()
                continue
            try:
                u = socket.create_connection(self.target, 5)
            except OSError:
                c.close()
                continue
            self.socks += [c, u]
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                b.sendall(d)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self):
        for s in [self.srv] + self.socks:
            try:
                s.shutdown(socket.SHUT_RDWR)   # wakes the threads blocked on them (close does not)
            except OSError:
                pass
            s.close()


class Sub:
    """A paho-mqtt 2.x subscriber on the test broker that keeps every message it gets.

        with Sub(broker, "city/#") as s:
            s.wait(lambda m: m.topic.endswith("/status"))
    """

    def __init__(self, broker, *topics, client_id=None, clean=True, qos=1):
        import threading
        import paho.mqtt.client as mqtt
        self.msgs = []
        self.lock = threading.RLock()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or "",
                             clean_session=clean)
        self.c.on_message = self._on
        self.subscribed = threading.Event()
        self.c.on_subscribe = lambda *a: self.subscribed.set()
        self.c.connect(broker.host, broker.port, 30)
        self.c.loop_start()
        for t in topics:
            self.c.subscribe(t, qos)
        if topics:
            self.subscribed.wait(5)

    def _on(self, client, userdata, msg):
        with self.lock:
            self.msgs.append(msg)

    def all(self, pred=lambda m: True):
        with self.lock:
            return [m for m in self.msgs if pred(m)]

    def json(self, suffix):
        import json
        return [json.loads(m.payload) for m in self.all(lambda m: m.topic.endswith(suffix))]

    def wait(self, pred, timeout=10.0, what="a message"):
        return wait_for(lambda: self.all(pred), timeout, what=what)

    def publish(self, topic, payload, qos=1, retain=False):
        self.c.publish(topic, payload, qos, retain).wait_for_publish(5)

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


class Mirror:
    """A loopback HTTP server over a directory: the firmware mirror `citynode firmware download
    --mirror URL` fetches from. put() adds a file under the URL."""

    def __init__(self, root):
        import http.server
        import threading

        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        root_s = str(self.root)

        class Quiet(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=root_s, **kw)

            def log_message(self, *a):
                pass

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
        self.url = "http://127.0.0.1:%d/mpy" % self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def put(self, name, data):
        (self.root / "mpy").mkdir(exist_ok=True)
        (self.root / "mpy" / name).write_bytes(data)

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()

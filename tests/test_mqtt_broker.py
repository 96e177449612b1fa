"""firmware/mqtt.py on the MicroPython unix port against a real Mosquitto, paho-mqtt as the peer."""
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from helpers import Mosquitto, wait_for

ROOT = Path(__file__).resolve().parent.parent
MICROPYTHON = str(Path(sys.executable).with_name("micropython"))
SCRIPT = str(ROOT / "tests/unix/mqtt_against_broker.py")


class MP:
    """The script under micropython; its stdout lines collected by a thread."""

    def __init__(self, broker, mode, *args):
        self.p = subprocess.Popen([MICROPYTHON, SCRIPT, mode, broker.host, str(broker.port), *map(str, args)],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.p.stdout:
            self.lines.append(line.rstrip("\n"))

    def line(self, prefix, timeout=5.0):
        def find():
            for ln in self.lines:
                if ln.startswith(prefix):
                    return ln
            if self.p.poll() is not None:
                time.sleep(0.1)  # let the pump catch up, then one more look
                for ln in self.lines:
                    if ln.startswith(prefix):
                        return ln
                raise AssertionError("micropython exited (rc=%s) before %r:\n%s"
                                     % (self.p.returncode, prefix, "\n".join(self.lines)))
            return None
        return wait_for(find, timeout, 0.01, what="%r from micropython; got %r" % (prefix, self.lines))

    def stop(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait(5)


class Peer:
    """paho-mqtt client: subscribes before returning, keeps every message."""

    def __init__(self, broker, *topics, client_id="peer"):
        self.msgs = []
        self.c = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id)
        self.c.on_message = lambda c, u, m: self.msgs.append(m)
        subscribed = threading.Event()
        self.c.on_subscribe = lambda *a: subscribed.set()
        self.c.connect(broker.host, broker.port, keepalive=30)
        self.c.loop_start()
        if topics:
            self.c.subscribe([(t, 1) for t in topics])
            assert subscribed.wait(5), "paho did not get its SUBACK"

    def got(self, topic):
        return [m for m in self.msgs if m.topic == topic]

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def peers():
    made = []
    yield lambda *a, **k: made.append(Peer(*a, **k)) or made[-1]
    for p in made:
        p.close()


@pytest.fixture
def mps():
    made = []
    yield lambda *a: made.append(MP(*a)) or made[-1]
    for m in made:
        m.stop()


def test_publish_subscribe_qos0_qos1_retained(broker, peers, mps):
    peer = peers(broker, "t/#")
    mp = mps(broker, "pubsub")
    mp.line("READY")
    wait_for(lambda: peer.got("t/ret"), 5, what="t/ret at the peer")
    (q0,), (q1,), (ret,) = peer.got("t/q0"), peer.got("t/q1"), peer.got("t/ret")
    assert (q0.payload, q0.qos) == (b"zero", 0)
    assert (q1.payload, q1.qos) == (b"one", 1)
    assert ret.payload == b"kept" and ret.qos == 1
    # retained: a subscriber that comes later still gets it, flagged as retained
    late = peers(broker, "t/ret", client_id="late")
    wait_for(lambda: late.got("t/ret"), 5, what="retained t/ret")
    assert late.got("t/ret")[0].payload == b"kept" and late.got("t/ret")[0].retain

    # our client receives what paho publishes, at QoS 0 and 1, and answers from an async handler
    peer.c.publish("t/in", b"hello", qos=0)
    assert mp.line("MSG t/in 5") == "MSG t/in 5 hello"
    peer.c.publish("t/in", b"again", qos=1)
    mp.line("MSG t/in 5 again")
    wait_for(lambda: len(peer.got("t/echo")) == 2, 5, what="two echoes")
    assert [m.payload for m in peer.got("t/echo")] == [b"hello", b"again"]
    assert all(m.qos == 1 for m in peer.got("t/echo"))
    # larger than max_payload (512): dropped, reported with its size, and the client goes on
    peer.c.publish("t/in", b"x" * 600, qos=1)
    assert mp.line("MSG t/in 600") == "MSG t/in 600 "
    peer.c.publish("t/in", b"stop", qos=1)
    mp.line("BYE")
    assert mp.p.wait(5) == 0


def _round_trip(peer, topic="t/mark"):
    """A message of the peer's own (it subscribes to `topic`) through the broker and back: what
    the broker did before it (a will it would have sent) has reached the peer by then."""
    mark = b"mark-%d" % len(peer.msgs)
    peer.c.publish(topic, mark, qos=1)
    wait_for(lambda: [m for m in peer.got(topic) if m.payload == mark], 5, 0.01, what="the marker")


def test_will_delivered_when_process_is_killed(broker, peers, mps):
    keepalive = 2
    peer = peers(broker, "t/will", "t/mark")
    mp = mps(broker, "will", keepalive)
    mp.line("READY")
    _round_trip(peer)
    assert peer.got("t/will") == []   # no will while the client lives
    t0 = time.monotonic()
    mp.p.kill()
    wait_for(lambda: peer.got("t/will"), 1.5 * keepalive, 0.01, what="the will")
    assert time.monotonic() - t0 <= 1.5 * keepalive
    (m,) = peer.got("t/will")
    assert (m.payload, m.qos) == (b"offline", 1)


def test_clean_disconnect_sends_no_will(broker, peers, mps):
    peer = peers(broker, "t/#")
    mp = mps(broker, "pubsub")
    mp.line("READY")
    peer.c.publish("t/in", b"stop", qos=1)
    mp.line("BYE")
    assert mp.p.wait(5) == 0          # its socket is closed: the broker has had its DISCONNECT
    _round_trip(peer)
    assert peer.got("t/will") == []


def test_frozen_broker_is_detected_within_1_5_keepalive(broker, mps):
    keepalive = 2   # PINGREQ every 1 s
    mp = mps(broker, "freeze", keepalive)
    mp.line("READY")
    mp.line("PONG")  # a PINGREQ answered while the broker is well
    assert not [ln for ln in mp.lines if ln.startswith("DEAD")], mp.lines
    broker.freeze()
    try:
        t0 = time.monotonic()
        line = mp.line("DEAD", 1.5 * keepalive + 1)
        took = time.monotonic() - t0
    finally:
        broker.thaw()
    assert line == "DEAD no PINGRESP"
    assert took <= 1.5 * keepalive, "dead after %.2f s" % took


@pytest.mark.skipif(not shutil.which("mosquitto_passwd"), reason="needs mosquitto_passwd")
def test_connack_refusal_from_real_broker(tmp_path, mps):
    pw = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(pw), "node", "right"], check=True,
                   capture_output=True)
    b = Mosquitto(tmp_path / "broker", password_file=pw)
    b.start()
    try:
        assert mps(b, "auth", "node", "right").line("OK") == "OK"
        assert mps(b, "auth", "node", "wrong").line("ERR") == "ERR refused: not authorised"
    finally:
        b.stop()

"""Issue 14 against Mosquitto configured by `citynode broker` itself: verified TLS with each node's
own identity, the ACL between nodes, a man in the middle, retained and replayed commands, and the
host side (files, modes, nothing secret printed, --secrets on config push)."""
import json
import os
import socket
import ssl
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from citynode import broker as brokerlib
from citynode import monitor
from citynode.cli import main
from helpers import MOSQUITTO, Mosquitto, free_port, wait_for
from nodeproc import VNode, sim_config

INVENTORY = "node_id,board,notes\nsec-a,sim,first\nsec-b,sim,second\n"


class FleetBroker(Mosquitto):
    """Mosquitto on the mosquitto.conf that `citynode broker config` wrote, with only a log file
    added (and `user root`: as root it would otherwise drop to a user that cannot read our temp
    files)."""

    def __init__(self, workdir, out, port):
        super().__init__(workdir, port)
        self.out = Path(out)

    def write_conf(self):
        extra = ["log_dest file %s" % self.log, "log_type all"] + (["user root"] if os.geteuid() == 0 else [])
        conf = self.dir / "run.conf"
        conf.write_text((self.out / "mosquitto.conf").read_text() + "\n".join(extra) + "\n")
        return conf


class Fleet:
    def __init__(self, tmp, client_certs=False):
        self.secrets = tmp / "secrets"
        self.out = tmp / "mosq"
        self.inventory = tmp / "fleet.csv"
        self.inventory.write_text(INVENTORY)
        self.port = free_port()
        self.init = brokerlib.init(self.secrets, ["127.0.0.1", "localhost"])
        brokerlib.config(self.inventory, self.secrets, self.out, "127.0.0.1:%d" % self.port, client_certs)
        self.client_certs = client_certs
        self.broker = FleetBroker(tmp / "run", self.out, self.port)
        self.ca = self.secrets / "ca.crt"

    def creds(self, who):
        p = self.secrets / (brokerlib.OPERATOR if who == "operator" else "nodes/%s.json" % who)
        return json.loads(p.read_text())

    def client(self, who, subs=(), client_id=None):
        """A paho client logged in as `who` over verified TLS; (client, messages)."""
        got = []
        c = self.creds(who)
        tls = monitor.TLS(str(self.ca))
        if self.client_certs:
            stem = self.secrets / ("operator" if who == "operator" else "nodes/" + who)
            tls = monitor.TLS(str(self.ca), str(stem) + ".crt", str(stem) + ".key")
        b = monitor.Broker("127.0.0.1", self.port, c["username"], c["password"], tls)
        cl = monitor.connect(b, client_id=client_id, subscriptions=[(t, 1) for t in subs],
                             on_message=lambda cl, u, m: got.append(m))
        return cl, got

    def node(self, tmp, node_id, at=None, **mqtt):
        """A virtual node with its own login, verifying the broker with the fleet's CA; `at`: the
        port it dials instead of the fleet broker's."""
        p = self.secrets / "nodes" / (node_id + ".json")
        c = json.loads(p.read_text()) if p.exists() else {"username": None, "password": None}
        m = {"host": "127.0.0.1", "port": self.port, "tls": True, "ca": "ca.crt", "keepalive_s": 10,
             "user": c["username"], "password": c["password"]}
        m.update(mqtt)
        m = {k: v for k, v in m.items() if v is not None}
        cfg = sim_config(node_id, interval=1, sensors=[{"name": "air", "type": "bme280"}])
        cfg["mqtt"] = m
        where = self.broker if at is None else type("At", (), {"address": "127.0.0.1:%d" % at})()
        n = VNode(tmp, cfg, where)
        (n.flash / "ca.crt").write_bytes(self.ca.read_bytes())
        if m.get("cert"):
            for f in ("crt", "key"):
                (n.flash / ("client." + f)).write_bytes((self.secrets / "nodes" / ("%s.%s" % (node_id, f))).read_bytes())
        return n


@pytest.fixture
def fleet(tmp_path):
    f = Fleet(tmp_path)
    f.broker.start()
    yield f
    f.broker.stop()


def stop(*clients):
    for c in clients:
        monitor._stop(c)


def replies(msgs, cid=None):
    out = [json.loads(m.payload) for m in list(msgs) if m.topic.endswith("/reply")]
    return [r for r in out if cid is None or r.get("id") == cid]


def cmd(cl, node_id, cid, name, args=None, retain=False):
    cl.publish("city/%s/cmd" % node_id, json.dumps({"id": cid, "cmd": name, "args": args or {}}), 1,
               retain).wait_for_publish(5)


# --- the host side ------------------------------------------------------------------------------

def test_broker_cli_makes_the_files_prints_no_secret_and_keeps_credentials(tmp_path):
    inv = tmp_path / "fleet.csv"
    inv.write_text(INVENTORY)
    before = inv.read_bytes()
    s, o = tmp_path / "secrets", tmp_path / "out"
    r1 = CliRunner().invoke(main, ["broker", "init", "--secrets", str(s), "--host", "127.0.0.1", "--host", "mqtt.city.example"])
    assert r1.exit_code == 0, r1.output
    r2 = CliRunner().invoke(main, ["broker", "config", "--inventory", str(inv), "--secrets", str(s), "--out", str(o),
                                   "--listen", "127.0.0.1:18883"])
    assert r2.exit_code == 0, r2.output
    assert "broker config for 2 nodes (2 new credentials)" in r2.stdout
    for f in ("mosquitto.conf", "passwd", "acl", "ca.crt", "server.crt", "server.key"):
        assert (o / f).is_file(), f
    for p in (s / "ca.key", s / "server.key", s / "operator.json", s / "nodes/sec-a.json", o / "passwd", o / "server.key"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    assert stat.S_IMODE(s.stat().st_mode) == 0o700
    secrets = [json.loads((s / f).read_text())["password"] for f in ("operator.json", "nodes/sec-a.json", "nodes/sec-b.json")]
    assert len(set(secrets)) == 3 and all(len(x) >= 32 for x in secrets)
    for text in (r1.output, r2.output, (o / "mosquitto.conf").read_text(), (o / "acl").read_text(),
                 (o / "passwd").read_text(), inv.read_text()):
        assert not any(x in text for x in secrets)
    assert inv.read_bytes() == before
    conf = (o / "mosquitto.conf").read_text()
    assert "listener 18883 127.0.0.1" in conf and "allow_anonymous false" in conf
    # passwd: every line verifies as Mosquitto's $7$ PBKDF2-SHA512 with its password
    lines = dict(x.split(":", 1) for x in (o / "passwd").read_text().split())
    assert brokerlib.passwd_check(lines["sec-a"], secrets[1]) and not brokerlib.passwd_check(lines["sec-a"], secrets[2])
    # a second run keeps every password (nodes in the field hold them) and the CA
    ca = (s / "ca.crt").read_bytes()
    r3 = CliRunner().invoke(main, ["broker", "config", "--inventory", str(inv), "--secrets", str(s), "--out", str(o),
                                   "--json"])
    assert r3.exit_code == 0 and json.loads(r3.stdout)["new_credentials"] == []
    assert json.loads((s / "nodes/sec-a.json").read_text())["password"] == secrets[1] and (s / "ca.crt").read_bytes() == ca
    r4 = CliRunner().invoke(main, ["broker", "init", "--secrets", str(s), "--host", "10.1.2.3"])
    assert r4.exit_code == 0 and (s / "ca.crt").read_bytes() == ca
    assert json.loads((s / "operator.json").read_text())["password"] == secrets[0]
    # a node added to the inventory gets one new credential, counted in the singular
    inv.write_text(INVENTORY + "sec-c,sim,third\n")
    r5 = CliRunner().invoke(main, ["broker", "config", "--inventory", str(inv), "--secrets", str(s), "--out", str(o)])
    assert r5.exit_code == 0 and "broker config for 3 nodes (1 new credential)" in r5.stdout, r5.output


def test_our_hash_is_mosquitto_passwds_hash(tmp_path):
    # mosquitto_passwd's own line verifies with our check, and our line with the same salt is it.
    p = tmp_path / "pw"
    p.write_text("")
    subprocess.run(["mosquitto_passwd", "-b", str(p), "u", "pa:ss w0rd"], check=True)
    theirs = p.read_text().strip().split(":", 1)[1]
    assert theirs.startswith("$7$") and brokerlib.passwd_check(theirs, "pa:ss w0rd")
    import base64
    salt = base64.b64decode(theirs.split("$")[3])
    assert brokerlib.passwd_hash("pa:ss w0rd", salt, int(theirs.split("$")[2])) == theirs


@pytest.mark.parametrize("args, code, msg", [
    (["broker", "init", "--secrets", "S", "--host", "bad host!"], 2, "'bad host!': not a DNS name or an IP address (--host)"),
    (["broker", "config", "--inventory", "INV", "--secrets", "S", "--out", "O", "--listen", "nowhere"], 2,
     "'nowhere': expected IP:PORT, e.g. 0.0.0.0:8883 (--listen)"),
    (["broker", "config", "--inventory", "INV", "--secrets", "S", "--out", "O"], 1, "no ca.key: not a fleet's secrets yet"),
])
def test_broker_cli_refuses_bad_input_in_one_line(tmp_path, args, code, msg):
    (tmp_path / "S").mkdir()
    (tmp_path / "INV").write_text(INVENTORY)
    args = [str(tmp_path / a) if a in ("S", "INV", "O") else a for a in args]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == code, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and msg in lines[0] and "Traceback" not in r.output, r.output
    assert not (tmp_path / "O").exists()


def test_config_push_with_secrets_puts_the_nodes_own_login_and_the_ca_on_it(tmp_path):
    from citynode.sim import SimNode
    f = Fleet(tmp_path)
    inv = tmp_path / "push.csv"
    inv.write_text("node_id,board,sensors,mqtt.host\nsec-a,sim,air:bme280,127.0.0.1\n")
    n = SimNode(tmp_path / "flash", serial=True, empty=True, register=False).start()
    try:
        r = CliRunner().invoke(main, ["config", "push", "--inventory", str(inv), "--node", "sec-a", "--secrets",
                                      str(f.secrets), "--port", n.port, "--no-reset", "--json"])
        assert r.exit_code == 0, r.output
        on = json.loads((n.flash / "config.json").read_text())
        mine = f.creds("sec-a")
        assert on["mqtt"]["user"] == "sec-a" and on["mqtt"]["password"] == mine["password"]
        assert on["mqtt"]["tls"] is True and on["mqtt"]["ca"] == "ca.crt"
        assert (n.flash / "ca.crt").read_bytes() == f.ca.read_bytes()
        assert json.loads(r.stdout)["files"] == ["ca.crt"] and mine["password"] not in r.output
        assert f.creds("sec-b")["password"] not in (n.flash / "config.json").read_text()
    finally:
        n.stop()


def test_a_failed_config_push_leaves_the_node_running_its_previous_config(tmp_path, broker):
    from citynode.sim import SimNode
    from helpers import Sub
    cfg = sim_config("push-01", interval=1, sensors=[])
    cfg["mqtt"]["port"] = broker.port
    cfgp = tmp_path / "old.json"
    cfgp.write_text(json.dumps(cfg))
    n = SimNode(tmp_path / "flash", broker=broker.address, config=str(cfgp), serial=True, register=False).start()
    try:
        with Sub(broker, "city/push-01/status") as sub:
            sub.wait(lambda m: json.loads(m.payload).get("reset") == "power", 20, "first birth")
            # The push fails half way: the node cannot write the CA beside its config.
            (n.flash / "ca.crt.tmp").mkdir()
            f = Fleet(tmp_path)
            inv = tmp_path / "push.csv"
            inv.write_text("node_id,board,sensors,mqtt.host\npush-01,sim,air:bme280,127.0.0.1\n")
            brokerlib.config(inv, f.secrets, tmp_path / "o2", "127.0.0.1:1")
            r = CliRunner().invoke(main, ["config", "push", "--inventory", str(inv), "--node", "push-01",
                                          "--secrets", str(f.secrets), "--port", n.port])
            assert r.exit_code != 0 and "Traceback" not in r.output, r.output
            # ... and the node is back at work on the config it had, not waiting in the REPL.
            sub.wait(lambda m: json.loads(m.payload).get("reset") == "soft", 20, "the node back online")
            assert json.loads((n.flash / "config.json").read_text()) == cfg
    finally:
        n.stop()


# --- against the generated broker -----------------------------------------------------------------

def test_generated_broker_refuses_anonymous_and_wrong_passwords(fleet):
    from citynode.errors import Unreachable
    tls = monitor.TLS(str(fleet.ca))
    for user, pw in ((None, None), ("sec-a", "wrong"), ("sec-a", fleet.creds("sec-b")["password"])):
        with pytest.raises(Unreachable, match="refused"):
            monitor.connect(monitor.Broker("127.0.0.1", fleet.port, user, pw, tls))
    with pytest.raises(Unreachable):   # plain MQTT on the TLS port: nothing
        monitor.connect(monitor.Broker("127.0.0.1", fleet.port, "operator", fleet.creds("operator")["password"]), timeout=2)


def test_acl_node_a_cannot_publish_as_b_nor_reach_bs_commands(fleet):
    op, seen = fleet.client("operator", ["city/#"])
    a, a_got = fleet.client("sec-a", ["city/sec-b/cmd", "city/sec-a/cmd", "city/sec-b/telemetry",
                                      "city/sec-b/ota", "city/sec-a/ota"])
    try:
        for t in ("telemetry", "status", "event", "reply", "cmd"):
            a.publish("city/sec-b/" + t, b'{"forged": true}', 1).wait_for_publish(5)
        a.publish("city/sec-a/cmd", b'{"self": "cmd"}', 1).wait_for_publish(5)   # its own cmd: also not
        a.publish("city/sec-a/telemetry", b'{"mine": 1}', 1).wait_for_publish(5)
        # One client's messages arrive in order: once its own has arrived, the forged ones had their turn.
        wait_for(lambda: any(m.topic == "city/sec-a/telemetry" for m in seen), 10, what="A's own telemetry")
        assert [m.topic for m in seen] == ["city/sec-a/telemetry"], [m.topic for m in seen]
        cmd(op, "sec-b", "for-b", "ping")
        cmd(op, "sec-a", "for-a", "ping")
        wait_for(lambda: any(m.topic == "city/sec-a/cmd" for m in a_got), 10, what="A's own command")
        assert [m.topic for m in a_got] == ["city/sec-a/cmd"], [m.topic for m in a_got]
        # updates: the operator may offer one to any node, a node hears only its own
        for n in ("sec-b", "sec-a"):
            op.publish("city/%s/ota" % n, b'{"op": "offer"}', 1).wait_for_publish(5)
        wait_for(lambda: any(m.topic == "city/sec-a/ota" for m in a_got), 10, what="A's own update offer")
        assert [m.topic for m in a_got] == ["city/sec-a/cmd", "city/sec-a/ota"], [m.topic for m in a_got]
    finally:
        stop(op, a)


def test_a_node_over_verified_tls_with_its_own_identity_answers_the_operator(fleet, tmp_path):
    op, seen = fleet.client("operator", ["city/sec-b/#"])
    node = fleet.node(tmp_path, "sec-b").start()
    try:
        wait_for(lambda: any(m.topic.endswith("/status") and b'"online"' in m.payload for m in seen), 30, what="birth")
        # The birth is sent inside the session's start, the log line once it has started: wait for it.
        wait_for(lambda: "link: connected to 127.0.0.1:%d (TLS)" % fleet.port in node.output(), 10,
                 what="the node's log of its TLS session")
        cmd(op, "sec-b", "p-1", "ping")
        cmd(op, "sec-b", "s-1", "set", {"key": "interval_s", "value": 0})
        cmd(op, "sec-b", "p-1", "ping")            # the same id again: its first reply, not a second run
        wait_for(lambda: len(replies(seen)) >= 3, 15, what="3 replies")
        ping = replies(seen, "p-1")
        assert len(ping) == 2 and ping[0] == ping[1] and ping[0]["ok"] is True, ping
        assert replies(seen, "s-1") == [{"id": "s-1", "ok": False, "error": "interval_s: at least 1 s"}]
        assert json.loads((node.flash / "config.json").read_text())["interval_s"] == 1
        tel = [json.loads(m.payload) for m in seen if m.topic.endswith("/telemetry")]
        assert tel and all(t["boot"] == 0 for t in tel)
    finally:
        node.kill()
        stop(op)


def test_a_retained_reboot_is_not_obeyed_on_connect_nor_on_reconnect(fleet, tmp_path):
    op, seen = fleet.client("operator", ["city/sec-a/reply", "city/sec-a/status"])
    cmd(op, "sec-a", "r-1", "reboot", retain=True)
    node = fleet.node(tmp_path, "sec-a").start()
    refused = {"id": "r-1", "ok": False, "error": "retained commands are not obeyed"}
    try:
        wait_for(lambda: replies(seen, "r-1"), 30, what="the answer to the retained reboot")
        # Another client takes the node's id: the broker drops the node, which reconnects,
        # subscribes again and is handed the retained reboot again.
        c = fleet.creds("operator")
        thief = monitor.connect(monitor.Broker("127.0.0.1", fleet.port, c["username"], c["password"],
                                               monitor.TLS(str(fleet.ca))), client_id="sec-a")
        stop(thief)
        wait_for(lambda: len(replies(seen, "r-1")) >= 2, 30, what="the second answer, after the reconnect")
        assert replies(seen, "r-1") == [refused, refused]
        assert "another client is using this node_id" in node.output()
        assert "reboot requested" not in node.output()
        assert json.loads((node.flash / "state.json").read_text())["boot"] == 0   # the boot counter
        births = [json.loads(m.payload) for m in seen if m.topic.endswith("/status") and not m.retain]
        assert births and all(b.get("boot", 0) == 0 for b in births), births
    finally:
        node.kill()
        op.publish("city/sec-a/cmd", b"", 1, True).wait_for_publish(5)
        stop(op)


def test_tls_insecure_connects_and_warns_and_a_pin_alone_verifies(fleet, tmp_path):
    op, seen = fleet.client("operator", ["city/+/status"])
    a = fleet.node(tmp_path, "sec-a", ca=None, tls_insecure=True).start()
    b = fleet.node(tmp_path, "sec-b", ca=None, pin_sha256=fleet.init["pin_sha256"]).start()
    try:
        for nid in ("sec-a", "sec-b"):
            wait_for(lambda: any(m.topic == "city/%s/status" % nid and b'"online"' in m.payload for m in seen), 30,
                     what="%s online" % nid)
        assert "link: WARNING: TLS without verification (mqtt.tls_insecure)" in a.output()
        assert "WARNING" not in b.output()
    finally:
        a.kill()
        b.kill()
        stop(op)


def _unlisten(sock):
    # close() alone leaves the port listening while a thread sits in accept(): shut it down first.
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


# --- a man in the middle ------------------------------------------------------------------------------

class Impostor:
    """A TLS listener with a certificate of its own for 127.0.0.1: counts handshakes and keeps
    every byte a client sends after one (a CONNECT would be there, with the password)."""

    def __init__(self, tmp, secrets=None):
        self.port = free_port()
        s = secrets or tmp / "mitm-secrets"
        if secrets is None:
            brokerlib.init(s, ["127.0.0.1"])   # another CA, another key: what an attacker can make
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(str(s / "server.crt"), str(s / "server.key"))
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(8)
        self.attempts = 0
        self.received = b""
        self.done = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self.done:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.attempts += 1
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn):
        conn.settimeout(5)
        try:
            with self.ctx.wrap_socket(conn, server_side=True) as t:
                while True:
                    d = t.recv(4096)
                    if not d:
                        return
                    self.received += d
        except (OSError, ssl.SSLError):
            pass

    def close(self):
        self.done = True
        _unlisten(self.sock)


def test_a_man_in_the_middle_gets_no_connect_and_no_password(fleet, tmp_path):
    mitm = Impostor(tmp_path)
    nodes = []
    try:
        for nid, extra in (("sec-a", {}), ("sec-b", {"ca": None, "pin_sha256": fleet.init["pin_sha256"]})):
            nodes.append(fleet.node(tmp_path, nid, at=mitm.port, **extra).start())
        wait_for(lambda: all("TLS: " in n.output() for n in nodes), 30, what="both nodes refusing")
        assert "TLS: broker not verified" in nodes[0].output(), nodes[0].output()
        assert "is not mqtt.pin_sha256" in nodes[1].output(), nodes[1].output()
        assert mitm.attempts >= 2 and mitm.received == b""
        for n in nodes:
            assert "link: connected" not in n.output()
        # The control: a node that does not verify hands the impostor its CONNECT, password and all.
        blind = fleet.node(tmp_path, "sec-c", at=mitm.port, ca=None, tls_insecure=True,
                           user="sec-c", password="the-password-sec-c").start()
        nodes.append(blind)
        wait_for(lambda: b"the-password-sec-c" in mitm.received, 30, what="the blind node's CONNECT at the impostor")
        assert mitm.received.startswith(b"\x10")   # a CONNECT packet
    finally:
        for n in nodes:
            n.kill()
        mitm.close()


def test_a_certificate_of_our_own_ca_for_another_name_is_refused(fleet, tmp_path):
    # The CA is right, the name is not: a certificate the fleet's CA issued to some other host
    # (another broker, a leaked test box) cannot stand in for ours.
    other = tmp_path / "other"
    other.mkdir()
    for f in ("ca.key", "ca.crt", "operator.json"):
        (other / f).write_bytes((fleet.secrets / f).read_bytes())
    brokerlib.init(other, ["other.example"])
    mitm = Impostor(tmp_path, other)
    n = fleet.node(tmp_path, "sec-a", at=mitm.port).start()
    try:
        wait_for(lambda: "TLS: " in n.output(), 30, what="the refusal")
        assert "TLS: broker not verified" in n.output() and "CN" in n.output(), n.output()
        assert mitm.attempts >= 1 and mitm.received == b"" and "link: connected" not in n.output()
    finally:
        n.kill()
        mitm.close()


def test_the_node_computes_the_same_pin_as_the_host():
    import importlib.util
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    spec = importlib.util.spec_from_file_location("tlsconn", Path(__file__).resolve().parents[1] / "firmware/tlsconn.py")
    tc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tc)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec = brokerlib._new_key()
    for k in (ec, key):
        cert = brokerlib._issue("n", k, None, None, 1, ca=True)
        der = cert.public_bytes(serialization.Encoding.DER)
        assert tc.pin_of(der) == brokerlib.spki_sha256(cert)
        pem = cert.public_bytes(serialization.Encoding.PEM)
        assert tc.der_blocks(pem + pem) == [der, der]
        for cut in (0, 1, 10, len(der) // 2):
            with pytest.raises(ValueError):
                tc.spki(der[:cut])


def test_client_certificates_are_the_identity_when_the_broker_wants_them(tmp_path):
    f = Fleet(tmp_path, client_certs=True)
    assert "require_certificate true" in (f.out / "mosquitto.conf").read_text()
    f.broker.start()
    op, seen = f.client("operator", ["city/sec-b/#"])
    with_cert = f.node(tmp_path, "sec-b", cert="client.crt", key="client.key", password=None).start()
    without = f.node(tmp_path, "sec-a").start()
    try:
        wait_for(lambda: any(m.topic.endswith("/status") and b'"online"' in m.payload for m in seen), 30, what="birth")
        cmd(op, "sec-b", "c-1", "ping")
        wait_for(lambda: replies(seen, "c-1"), 15, what="the reply")
        assert "link: connected" in with_cert.output()
        wait_for(lambda: "link: 127.0.0.1" in without.output(), 30, what="the node without a certificate refused")
        assert "link: connected" not in without.output()
    finally:
        with_cert.kill()
        without.kill()
        stop(op)
        f.broker.stop()


# --- a broker that never acknowledges -------------------------------------------------------------

class Deaf:
    """A loopback MQTT server that accepts a session (CONNACK, SUBACK, PINGRESP) but never
    acknowledges a PUBLISH: what issue 14 saw a node stay connected to for ever."""

    def __init__(self, port):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(8)
        self.events = []     # (monotonic time, connection number, "connect" | "publish", payload)
        self.conns = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._one, args=(conn, len(self.conns)), daemon=True).start()

    def _one(self, conn, k):
        f = conn.makefile("rb")
        try:
            while True:
                head = f.read(1)
                if not head:
                    return
                n, shift = 0, 0
                while True:
                    b = f.read(1)[0]
                    n |= (b & 0x7F) << shift
                    shift += 7
                    if not b & 0x80:
                        break
                body = f.read(n)
                t = head[0] & 0xF0
                if t == 0x10:
                    self.events.append((time.monotonic(), k, "connect", None))
                    conn.sendall(b"\x20\x02\x00\x00")
                elif t == 0x80:
                    conn.sendall(b"\x90\x03" + body[:2] + b"\x01")
                elif t == 0xC0:
                    conn.sendall(b"\xd0\x00")
                elif t == 0x30:
                    tl = int.from_bytes(body[:2], "big")
                    skip = 2 + tl + (2 if head[0] & 0x06 else 0)
                    self.events.append((time.monotonic(), k, "publish", (body[2:2 + tl].decode(), body[skip:])))
                    if head[0] & 0x01 and head[0] & 0x06:   # the retained birth alone is acknowledged
                        conn.sendall(b"\x40\x02" + body[2 + tl:4 + tl])
        except (OSError, IndexError, ValueError):
            return

    def connects(self):
        return [e for e in self.events if e[2] == "connect"]

    def close(self):
        _unlisten(self.sock)
        for c in self.conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
                c.close()
            except OSError:
                pass


def test_a_broker_that_never_acknowledges_is_left_and_no_reading_is_lost(tmp_path):
    from helpers import Sub
    port = free_port()
    real = Mosquitto(tmp_path / "real", port)
    # A collector with a persistent session, so that it misses nothing once the real broker is back.
    real.start()
    Sub(real, "city/deaf-01/telemetry", client_id="collector", clean=False).close()
    real.stop()
    deaf = Deaf(port)
    ack_s, backoff_s = 1, 2
    cfg = sim_config("deaf-01", interval=1, keepalive=10, sensors=[{"name": "air", "type": "bme280"}])
    cfg["mqtt"].update({"ack_timeout_s": ack_s, "backoff_max_s": backoff_s})
    node = VNode(tmp_path, cfg, real).start()
    window = 3 * ack_s   # the first send and two resends, ack_timeout_s apart
    try:
        wait_for(lambda: len(deaf.connects()) >= 3, 60, what="the node leaving the deaf broker twice")
        sessions = deaf.connects()
        for a, b in zip(sessions, sessions[1:]):
            first_pub = min(e[0] for e in deaf.events if e[1] == a[1] and e[2] == "publish")
            assert b[0] - first_pub <= 2 * window, (b[0] - first_pub, window)
        assert "link: lost (no PUBACK after" in node.output()
        top = max(json.loads(e[3][1])["seq"] for e in deaf.events if e[2] == "publish" and e[3][0].endswith("telemetry"))
        deaf.close()
        t_back = int(time.time())
        real.start()
        with Sub(real, "city/deaf-01/telemetry", client_id="collector", clean=False) as sub:
            docs = lambda: [json.loads(m.payload) for m in sub.all()]   # noqa: E731
            # every reading sampled while the broker was deaf, and the first ones after
            wait_for(lambda: any(d["ts"] > t_back + 1 for d in docs()), 60, what="readings after the real broker is back")
            seqs = {d["seq"] for d in docs()}
            assert top >= 2 and set(range(top + 1)) <= seqs and all(d["boot"] == 0 for d in docs())
            assert seqs == set(range(max(seqs) + 1)), sorted(seqs)
    finally:
        node.kill()
        deaf.close()
        real.stop()


# --- configs that used to pass the host and break the node -----------------------------------------

def test_configs_the_node_could_not_load_are_refused_on_the_host_in_one_line(tmp_path):
    base = json.loads((Path(__file__).resolve().parents[1] / "examples/contract.json").read_text())
    cases = []
    c = json.loads(json.dumps(base))
    c["board"] = "b" * 300                       # was a traceback (a file name too long)
    cases.append((c, "board: unknown board '%s...'" % ("b" * 40)))
    c = json.loads(json.dumps(base))
    c["alarms"] = {"q%d_cm" % i: {"high": 2, "clear": 1} for i in range(5000)}   # was 184 KB, MemoryError on the node
    cases.append((c, "alarms: at most 16 alarms"))
    c = json.loads(json.dumps(base))
    c["interval_s"] = 12345.678                  # written as 1e-400 below: it parses as 0.0, sampling flat out
    cases.append((c, "interval_s: out of range 1..86400 s"))
    for i, (cfg, msg) in enumerate(cases):
        p = tmp_path / ("c%d.json" % i)
        p.write_text(json.dumps(cfg).replace("12345.678", "1e-400"))
        r = CliRunner().invoke(main, ["config", "validate", str(p)])
        lines = r.stderr.strip().splitlines()
        assert r.exit_code == 1 and len(lines) == 1 and lines[0].startswith("Error: " + msg), r.output


def test_the_node_refuses_an_oversized_config_before_parsing_it(tmp_path):
    cfg = sim_config("big-01")
    text = json.dumps(cfg)
    text = text[:-1] + " " * 9000 + "}"          # valid JSON, 9 KB: refused before json.load
    n = VNode(tmp_path, cfg, type("B", (), {"address": "127.0.0.1:1"})())
    (tmp_path / "big-01.json").write_text(text)
    n.start()
    try:
        wait_for(lambda: "safe mode" in n.output(), 20, what="safe mode")
        assert "safe mode: config.json: %d bytes, at most 8192" % len(text) in n.output(), n.output()
    finally:
        n.kill()


def test_provision_with_secrets_plans_each_nodes_own_login(tmp_path):
    from citynode import provision
    f = Fleet(tmp_path)
    inv = tmp_path / "p.csv"
    inv.write_text("node_id,board,sensors,mqtt.host\nsec-a,sim,air:bme280,127.0.0.1\nsec-b,sim,air:bme280,127.0.0.1\n")
    work = provision.plan(str(inv), ["/dev/pts/98", "/dev/pts/99"], secrets=str(f.secrets))
    for (port, nid, cfg, files), want in zip(work, ("sec-a", "sec-b")):
        assert nid == want and cfg["mqtt"]["user"] == want and cfg["mqtt"]["password"] == f.creds(want)["password"]
        assert cfg["mqtt"]["tls"] is True and cfg["mqtt"]["ca"] == "ca.crt" and files == {"ca.crt": f.ca.read_text()}
    inv.write_text("node_id,board,sensors,mqtt.host\nsec-c,sim,air:bme280,127.0.0.1\n")   # no login made for it yet
    from citynode.errors import CheckFailed
    with pytest.raises(CheckFailed, match="no credentials for sec-c"):
        provision.plan(str(inv), ["/dev/pts/98"], secrets=str(f.secrets))


def test_provision_with_secrets_brings_a_node_up_on_its_own_login_over_verified_tls(fleet, tmp_path):
    # The whole path a crew takes: deploy, the node's login and the CA onto its flash, the restart,
    # its birth over verified TLS, and the field test's round trip as the operator.
    from test_provision import CITYNODE, start_fleet, stop
    inv = tmp_path / "prov.csv"
    inv.write_text("node_id,board,sensors,mqtt.host,mqtt.port,interval_s\nsec-a,sim,air:bme280,127.0.0.1,%d,5\n"
                   % fleet.port)
    proc, nodes = start_fleet(tmp_path, fleet.broker, 1)
    try:
        r = subprocess.run([CITYNODE, "--json", "provision", "--inventory", str(inv), "--ports", nodes[0][0],
                            "--secrets", str(fleet.secrets), "--samples", "1", "--src", str(tmp_path / "src"),
                            "--skip-flash"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-2000:])
        assert json.loads(r.stdout)["result"] == "PASS"
        flash = nodes[0][1]
        on = json.loads((flash / "config.json").read_text())
        assert on["mqtt"]["user"] == "sec-a" and on["mqtt"]["tls"] is True and on["mqtt"]["ca"] == "ca.crt"
        assert (flash / "ca.crt").read_bytes() == fleet.ca.read_bytes()
        assert fleet.creds("sec-a")["password"] not in r.stdout + r.stderr
    finally:
        stop(proc)

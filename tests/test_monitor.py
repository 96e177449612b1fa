"""`citynode monitor`: the accounting on its own (with hypothesis against a plain model), then
the real thing against Mosquitto, with readings lost, duplicated and held back on purpose by a
paho publisher playing the nodes: it is the consumer side that is under test here."""
import json
import subprocess
import sys
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from citynode import monitor
from citynode.cli import main
from helpers import Listener, free_port, wait_for

CITYNODE = str(Path(sys.executable).with_name("citynode"))


def tele(boot, seq, **values):
    return json.dumps({"boot": boot, "seq": seq, "ts": 1764390000 + seq, "up": seq * 60,
                       "values": values or {"water_level_cm": 100.0 + seq}})


# --- the pure accounting -----------------------------------------------------------------------

@given(st.lists(st.integers(0, 300), max_size=200))
def test_seqset_is_a_set(xs):
    s, model = monitor.SeqSet(), set()
    for x in xs:
        assert s.add(x) == (x not in model)
        model.add(x)
    for lo, hi in zip(s.lo, s.hi):
        assert lo <= hi
    for a, b in zip(s.hi, s.lo[1:]):
        assert a + 1 < b  # disjoint and not adjacent
    for x in range(-2, 305):
        assert (x in s) == (x in model)
    assert s.count_between(10, 200) == len([x for x in model if 10 <= x <= 200])


@settings(max_examples=200)
@given(st.lists(st.integers(0, 60), min_size=1, max_size=120), st.booleans())
def test_ledger_against_model(arrivals, saw_start):
    led = monitor.BootLedger(0 if saw_start else None)
    seen, dups, late = [], 0, 0
    for s in arrivals:
        v = led.add(s)
        if s in seen:
            assert v == "dup"
            dups += 1
        else:
            floor = 0 if saw_start else seen[0] if seen else s
            if seen and s < max(seen):
                assert v == ("late" if s >= floor else "early")
                late += s >= floor
            else:
                assert v in ("new", "gap")
            seen.append(s)
    floor = 0 if saw_start else arrivals[0]
    top = max(seen)
    assert led.holes == len(set(range(floor, top + 1)) - set(seen))
    assert led.dups == dups and led.late == late and led.received == len(seen)
    assert led.missing(1000) == sorted(set(range(floor, top + 1)) - set(seen))


def test_fleet_story():
    f = monitor.Fleet("city")
    # Joined mid-stream: the retained status says boot 12, the first reading is seq 431.
    f.feed("city/wl-01/status", b'{"state":"online","fw":"0.3.1","boot":12,"reset":"power"}', retained=True)
    assert f.feed("city/wl-01/telemetry", tele(12, 431))["verdict"] == "new"
    assert f.feed("city/wl-01/telemetry", tele(12, 432))["verdict"] == "new"
    r = f.feed("city/wl-01/telemetry", tele(12, 435, water_level_cm=1.0))  # 433, 434 lost ...
    assert r["verdict"] == "gap" and r["lost"] == 2
    assert f.feed("city/wl-01/telemetry", tele(12, 435))["verdict"] == "dup"  # QoS 1 twice
    r = f.feed("city/wl-01/telemetry", tele(12, 433, water_level_cm=99.0))  # ... one was held back
    assert r["verdict"] == "late" and r["lost"] == 1 and r["late"] == 1 and r["dups"] == 1
    n = f.nodes["wl-01"]
    assert n.values == {"water_level_cm": 1.0} and n.latest == (12, 435)  # late does not overwrite
    assert n.last_seen is not None and n.summary()["missing"] == {"12": [434]}
    # It reboots while we watch: boot 13 must start at 0, so a first reading of 2 means 0, 1 lost.
    f.feed("city/wl-01/status", b'{"state":"offline"}')
    assert n.state == "offline"
    f.feed("city/wl-01/status", b'{"state":"online","fw":"0.3.2","boot":13,"reset":"wdt"}')
    assert (n.state, n.fw, n.boot, n.reset) == ("online", "0.3.2", 13, "wdt")
    assert f.feed("city/wl-01/telemetry", tele(13, 2))["verdict"] == "gap"
    assert n.holes == 1 + 2 and n.latest == (13, 2)
    # Boot 12's lost reading still arrives late from the outbox after the reboot.
    assert f.feed("city/wl-01/telemetry", tele(12, 434))["verdict"] == "late"
    assert n.holes == 2 and n.latest == (13, 2)
    # Rubbish is counted, not fatal; other topics are not ours.
    assert f.feed("city/wl-01/telemetry", b"not json")["verdict"] == "bad"
    assert f.feed("city/wl-01/telemetry", b'{"boot":"x","seq":1}')["verdict"] == "bad"
    assert f.feed("city/wl-01/reply", b"{}") is None and f.feed("other/wl-01/status", b"{}") is None
    assert f.feed("city/wl-01/event", b'{"boot":13,"seq":2,"event":"water_high","detail":{}}')["kind"] == "event"
    t = f.totals()
    assert t == {"nodes": 1, "online": 1, "offline": 0, "messages": 13, "received": 6, "lost": 2,
                 "dups": 1, "late": 2}
    assert n.malformed == 2 and n.event == "water_high"


def test_new_node_first_boot_seen_from_birth():
    f = monitor.Fleet("bandung")
    f.feed("bandung/pm-02/status", b'{"state":"online","fw":"0.3.1","boot":1,"reset":"power"}')
    assert f.feed("bandung/pm-02/telemetry", tele(1, 3))["lost"] == 3  # 0, 1, 2 never came


def test_parse_broker():
    b = monitor.parse_broker("broker.example")
    assert (b.host, b.port) == ("broker.example", 1883)
    assert str(monitor.parse_broker("127.0.0.1:1884")) == "127.0.0.1:1884"
    assert monitor.parse_broker("[::1]:1885").port == 1885
    for bad in ("", "host:", "host:0", "host:x", ":1883"):
        with pytest.raises(monitor.BadInput) as e:
            monitor.parse_broker(bad)
        assert e.value.exit_code == 2


def test_topics_share():
    assert monitor.topics("city") == [("city/+/status", 1), ("city/+/telemetry", 1), ("city/+/event", 1)]
    assert monitor.topics("city", "ops") == [("city/+/status", 1), ("$share/ops/city/+/telemetry", 1),
                                             ("$share/ops/city/+/event", 1)]


# --- against Mosquitto -------------------------------------------------------------------------

def publisher(broker, client_id="fake-node", will=None):
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    if will:
        c.will_set(will, '{"state":"offline"}', qos=1, retain=True)
    c.connect(broker.host, broker.port, keepalive=30)
    c.loop_start()
    wait_for(c.is_connected, 5, what="publisher connected")
    return c


def pub(c, topic, payload, retain=False):
    c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)


def test_monitor_counts_loss_dups_and_will(broker):
    b = monitor.parse_broker(broker.address)
    recs = []
    w = monitor.Watch(b, "city", emit=recs.append)
    node = publisher(broker, "wl-01", will="city/wl-01/status")
    pub(node, "city/wl-01/status", '{"state":"online","fw":"0.3.1","boot":4,"reset":"power"}', retain=True)
    w.start()
    try:
        wait_for(lambda: recs, 5, what="the retained status")
        assert recs[0]["retained"] and recs[0]["payload"]["state"] == "online"
        # seq 0..19 of boot 4, with 5 and 6 lost, 10 delivered twice, and 5 arriving late.
        for s in range(20):
            if s not in (5, 6):
                pub(node, "city/wl-01/telemetry", tele(4, s))
            if s == 10:
                pub(node, "city/wl-01/telemetry", tele(4, s))
        pub(node, "city/wl-01/telemetry", tele(4, 5))
        wait_for(lambda: len(recs) >= 1 + 19 + 1, 5, what="all readings")
        rows, totals = w.snapshot()
        (row,) = rows
        assert (row["received"], row["lost"], row["dups"], row["late"]) == (19, 1, 1, 1)
        assert row["missing"] == {"4": [6]} and row["state"] == "online" and row["latest"] == [4, 19]
        assert [r["verdict"] for r in recs if r["kind"] == "telemetry"].count("dup") == 1
        # Power cut: the socket dies without DISCONNECT, the broker publishes the will.
        node.loop_stop()
        node.socket().close()
        wait_for(lambda: w.snapshot()[0][0]["state"] == "offline", 5, what="the will")
        assert recs[-1]["kind"] == "status" and not recs[-1]["retained"]
    finally:
        w.stop()


def test_cli_json_lines_and_table(broker):
    node = publisher(broker)
    pub(node, "bandung/pm-02/status", '{"state":"online","fw":"0.3.1","boot":1,"reset":"power"}', retain=True)
    mon = subprocess.Popen([CITYNODE, "monitor", "--broker", broker.address, "--prefix", "bandung",
                            "--json", "--once", "4"], stdout=subprocess.PIPE, text=True)
    try:
        first = json.loads(mon.stdout.readline())
        assert first["node"] == "pm-02" and first["kind"] == "status"
        for s in (0, 1, 3, 3):
            pub(node, "bandung/pm-02/telemetry", tele(1, s, pm2_5_ugm3=12.5))
        lines = [json.loads(x) for x in mon.stdout]
        assert mon.wait(10) == 0
        assert [x["payload"]["seq"] for x in lines] == [0, 1, 3, 3]
        assert [x["verdict"] for x in lines] == ["new", "new", "gap", "dup"]
        assert (lines[-1]["lost"], lines[-1]["dups"]) == (1, 1)
    finally:
        mon.kill()
        mon.wait()
    # The table, printed once at the end when stdout is not a terminal.
    r = subprocess.run([CITYNODE, "monitor", "--broker", broker.address, "--prefix", "bandung",
                        "--once", "1"], capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    assert "pm-02" in r.stdout and "online" in r.stdout and "0.3.1" in r.stdout
    assert "1 node, 1 online, 0 offline · 1 message · 0 lost, 0 duplicates, 0 late" in r.stdout
    node.loop_stop()
    node.disconnect()


def test_shared_subscription_splits_telemetry(broker):
    b = monitor.parse_broker(broker.address)
    node = publisher(broker)
    for i in range(3):
        pub(node, "city/n-%d/status" % i, '{"state":"online","fw":"0.3.1","boot":1,"reset":"power"}', retain=True)
    a = monitor.Watch(b, "city", share="ops").start()
    c = monitor.Watch(b, "city", share="ops").start()
    try:
        for s in range(30):
            pub(node, "city/n-%d/telemetry" % (s % 3), tele(1, s // 3))
        wait_for(lambda: a.fleet.messages + c.fleet.messages >= 2 * 3 + 30, 5, what="the split stream")
        got_a = sum(n.received for n in a.fleet.nodes.values())
        got_c = sum(n.received for n in c.fleet.nodes.values())
        assert got_a + got_c == 30 and got_a > 0 and got_c > 0  # each reading went to one monitor
        # Status is not shared: both monitors know every node is online (retained status).
        for w in (a, c):
            assert sorted(n.id for n in w.fleet.nodes.values() if n.state == "online") == ["n-0", "n-1", "n-2"]
    finally:
        a.stop()
        c.stop()
        node.loop_stop()
        node.disconnect()


def test_unreachable_broker_exit_3():
    port = free_port()
    r = CliRunner().invoke(main, ["monitor", "--broker", "127.0.0.1:%d" % port, "--once", "1"])
    assert r.exit_code == 3
    assert r.output.strip() == "Error: broker 127.0.0.1:%d could not be reached: Connection refused" % port


@pytest.mark.parametrize("args, msg", [
    (["--prefix", "city/#"], "prefix 'city/#': a topic prefix takes a-z, 0-9, - _ and inner / (--prefix)"),
    (["--prefix", "+"], "prefix '+': a topic prefix takes a-z, 0-9, - _ and inner / (--prefix)"),
    (["--prefix", ""], "prefix '': expected 1 to 64 characters (--prefix)"),
    (["--share", "a/b"], "share group 'a/b': expected a name without / + # or NUL (--share)"),
    (["--share", "#"], "share group '#': expected a name without / + # or NUL (--share)"),
    (["--share", ""], "share group '': expected a name without / + # or NUL (--share)"),
])
def test_a_prefix_or_share_group_with_wildcards_is_refused_before_connecting(args, msg):
    with Listener() as fake:
        r = CliRunner().invoke(main, ["monitor", "--broker", fake.address, "--once", "1"] + args)
        assert r.exit_code == 2 and r.stderr.strip() == "Error: " + msg, r.output
        assert not fake.connected(), "the broker was contacted"


def test_broker_going_away_is_survived(broker):
    """A broker restart is not the end of a monitor: paho reconnects and resubscribes."""
    w = monitor.Watch(monitor.parse_broker(broker.address), "city").start()
    try:
        subs = w.subacks
        broker.stop()
        wait_for(lambda: not w.connected, 5, what="disconnect noticed")
        broker.start()
        wait_for(lambda: w.connected, 15, what="reconnect")
        node = publisher(broker)
        wait_for(lambda: w.subacks >= 2 * subs, 5, what="the resubscription after the CONNACK")
        pub(node, "city/x/telemetry", tele(1, 0))
        wait_for(lambda: w.fleet.messages == 1, 5, what="a reading after the restart")
        node.loop_stop()
        node.disconnect()
    finally:
        w.stop()

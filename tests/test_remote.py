"""`citynode cmd` over a real Mosquitto to virtual nodes (`citynode sim`, the real firmware on the
MicroPython unix port): ping, set, --all, an offline node, a node that does not exist, a node in
deep sleep that gets its command at its next wake; and the refusals made before anything is sent."""
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from citynode import remote
from citynode.cli import main
from citynode.errors import BadInput
from helpers import Listener, Sub, wait_for
from nodeproc import VNode, sim_config

DOC = Path(__file__).resolve().parent.parent / "docs" / "commands" / "cmd.md"


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def nodes(tmp_path, broker):
    made = []

    def start(cfg, **kw):
        n = VNode(tmp_path, cfg, broker, **kw).start()
        made.append(n)
        return n

    yield start
    for n in made:
        n.stop()


def online(broker, *ids, prefix="city"):
    with Sub(broker, *["%s/%s/status" % (prefix, i) for i in ids]) as s:
        for i in ids:
            s.wait(lambda m, i=i: m.topic == "%s/%s/status" % (prefix, i) and b'"online"' in m.payload, 20,
                   what="%s online" % i)


def test_cmd_ping_and_set_are_answered(nodes, broker):
    n = nodes(sim_config("cmd-01", interval=60))
    online(broker, "cmd-01")
    r = cli("cmd", "cmd-01", "ping", "--broker", broker.address, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    (row,) = doc["nodes"]
    assert doc["ok"] and row["result"] == "ok" and row["reply"]["boot"] >= 0 and "fw" in row["reply"]

    r = cli("cmd", "cmd-01", "set", "interval_s=5", "--broker", broker.address)
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("cmd-01: ok in ") and '{"key": "interval_s", "value": 5}' in r.stdout
    assert json.loads((n.flash / "config.json").read_text())["interval_s"] == 5

    # the node refuses a value its validator refuses: exit 1 with its reason
    r = cli("cmd", "cmd-01", "set", "interval_s=-3", "--broker", broker.address)
    assert r.exit_code == 1 and r.stdout.startswith("cmd-01: refused: interval_s"), r.output
    # ... and docs/commands/cmd.md shows what the node says
    shown = re.search(r"set interval_s=-3 .*\n(wl-demo-01: refused: .*?) +# exit 1\n", DOC.read_text()).group(1)
    assert r.stdout.strip() == shown.replace("wl-demo-01", "cmd-01")

    r = cli("cmd", "cmd-01", "get-config", "--broker", broker.address, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["nodes"][0]["reply"]["interval_s"] == 5


def test_cmd_all_tabulates_and_unreached_nodes_exit_3(nodes, broker):
    nodes(sim_config("cmd-a", interval=60))
    b = nodes(sim_config("cmd-b", interval=60))
    online(broker, "cmd-a", "cmd-b")
    r = cli("cmd", "--all", "ping", "--broker", broker.address, "--json")
    assert r.exit_code == 0, r.output
    assert [(x["node_id"], x["result"]) for x in json.loads(r.stdout)["nodes"]] == [("cmd-a", "ok"), ("cmd-b", "ok")]
    r = cli("cmd", "--all", "ping", "--broker", broker.address)
    assert r.exit_code == 0 and "cmd-a" in r.stdout and "cmd-b" in r.stdout and "ok" in r.stdout

    b.stop()   # a clean stop publishes offline
    with Sub(broker, "city/cmd-b/status") as s:
        s.wait(lambda m: b'"offline"' in m.payload, 10)
    r = cli("cmd", "--all", "ping", "--broker", broker.address, "--json")
    assert r.exit_code == 3
    res = {x["node_id"]: x["result"] for x in json.loads(r.stdout)["nodes"]}
    assert res == {"cmd-a": "ok", "cmd-b": "offline"}

    r = cli("cmd", "cmd-zz", "ping", "--broker", broker.address, "--timeout", 1)
    assert r.exit_code == 3 and "no reply within 1 s (the broker has no status of this node)" in r.stdout


@pytest.mark.parametrize("args, msg", [
    (["cmd-01", "dance"], "unknown action 'dance'"),
    (["cmd-01", "set", "mount_height_cm=3"], "'mount_height_cm' is not settable (settable: alarm_interval_s, interval_s"),
    (["cmd-01", "set"], "set needs one KEY=VALUE"),
    (["cmd-01", "ping", "x"], "ping takes no arguments"),
    (["cmd-01"], "no action"),
])
def test_cmd_usage_errors_send_nothing(args, msg):
    r = cli("cmd", *args, "--broker", "127.0.0.1:1")
    assert r.exit_code == 2 and msg in r.output, r.output


ONLY = "only a-z, 0-9 and - are allowed"
PREFIX_RULE = "a topic prefix takes a-z, 0-9, - _ and inner /"


@pytest.mark.parametrize("args, msg", [
    (["+", "ping"], "node id '+': " + ONLY),
    (["#", "ping"], "node id '#': " + ONLY),
    (["BAD ID", "ping"], "node id 'BAD ID': " + ONLY),
    (["a/b", "ping"], "node id 'a/b': " + ONLY),
    (["", "ping"], "node id '': expected 1 to 32 characters"),
    (["n" * 33, "ping"], "node id '%s': expected 1 to 32 characters" % ("n" * 33)),
    (["cmd-01", "ping", "--prefix", "city/+"], "prefix 'city/+': %s (--prefix)" % PREFIX_RULE),
    (["--all", "ping", "--prefix", "#"], "prefix '#': %s (--prefix)" % PREFIX_RULE),
    (["cmd-01", "ping", "--prefix", "a//b"], "prefix 'a//b': %s (--prefix)" % PREFIX_RULE),
    (["cmd-01", "ping", "--prefix", ""], "prefix '': expected 1 to 64 characters (--prefix)"),
    (["cmd-01", "ping", "--prefix", "a\x00b"],
     "prefix 'a\\x00b': control characters and lone surrogates are not allowed (--prefix)"),
])
def test_cmd_refuses_a_node_id_or_prefix_no_node_can_have_before_connecting(args, msg):
    with Listener() as fake:
        r = cli("cmd", *args, "--broker", fake.address, "--timeout", 1)
        assert r.exit_code == 2, r.output
        assert r.stderr.strip() == "Error: " + msg and "Traceback" not in r.output, r.output
        r = cli("cmd", *args, "--broker", fake.address, "--timeout", 1, "--json")
        assert r.exit_code == 2 and json.loads(r.stdout) == {"ok": False, "error": msg, "exit": 2}
        assert not fake.connected(), "the broker was contacted"


def test_remote_send_checks_the_names_before_connecting():
    with Listener() as fake:
        b = remote.monitor.parse_broker(fake.address)
        with pytest.raises(BadInput, match="node id 'a/#'"):
            remote.send(b, "city", ["ok-1", "a/#"], "ping", timeout=1)
        with pytest.raises(BadInput, match="prefix 'city/'"):
            remote.send(b, "city/", None, "ping", timeout=1)
        assert not fake.connected()


def test_cmd_help_lists_actions_keys_and_examples():
    r = cli("cmd", "--help")
    for w in ("ping", "sample", "get-config", "set KEY=VALUE", "reboot", "interval_s", "site.name", "Examples:",
              "citynode cmd wl-01 set interval_s=30"):
        assert w in r.output, w


def test_a_sleeping_node_gets_its_command_at_its_next_wake(nodes, broker):
    cfg = sim_config("cmd-zz-sleep", interval=3, sensors=[{"name": "air", "type": "bme280"}],
                     power={"deep_sleep": True})
    with Sub(broker, "city/cmd-zz-sleep/status", "city/cmd-zz-sleep/reply") as sub:
        n = nodes(cfg)
        sub.wait(lambda m: b'"asleep"' in m.payload, 30, what="the node asleep")
        r = cli("cmd", "cmd-zz-sleep", "set", "interval_s=4", "--broker", broker.address, "--json")
        assert r.exit_code == 0, r.output
        (row,) = json.loads(r.stdout)["nodes"]
        assert row["result"] == "queued" and row["sleep_s"] == 3 and 0 <= row["wake_in_s"] <= 3, row
        # at its wake the broker hands it the command; it answers and applies it before sleeping
        rep = sub.wait(lambda m: m.topic.endswith("/reply"), 30, what="the reply after the wake")
        assert json.loads(rep[0].payload)["result"] == {"key": "interval_s", "value": 4}
        wait_for(lambda: json.loads((n.flash / "config.json").read_text())["interval_s"] == 4, 10)
        wait_for(lambda: [m for m in sub.all(lambda m: b'"asleep"' in m.payload) if b'"sleep_s":4' in m.payload], 30,
                 what="asleep with the new interval")


def test_monitor_with_no_nodes_under_its_prefix_names_the_ones_it_sees(nodes, broker):
    nodes(sim_config("mon-01", interval=60))
    online(broker, "mon-01")
    r = CliRunner().invoke(main, ["monitor", "--broker", broker.address, "--prefix", "bandung", "--once", "0.5"])
    assert r.exit_code == 0, r.output
    assert r.stderr.strip() == "no nodes under bandung/ on %s; nodes are under: city/ (1) (use --prefix)" % broker.address
    r = CliRunner().invoke(main, ["monitor", "--broker", broker.address, "--once", "0.5"])
    assert r.exit_code == 0 and "mon-01" in r.stdout and "no nodes under" not in r.stderr

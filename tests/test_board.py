"""Opt-in tests on a real node over USB: what CI cannot run (no ESP32 there).

    CITYNODE_PORT=/dev/ttyUSB0 CITYNODE_CONFIG=site/wl-01.json \
        .venv/bin/python -m pytest -m board

The node must run our firmware or be empty MicroPython (deploy puts ours on it). Its config
(CITYNODE_CONFIG, pushed by the first test) must point mqtt.host at this laptop's LAN address,
with a broker running here: the tests read the broker on 127.0.0.1 only (CITYNODE_BROKER_PORT,
default 1883). Without `-m board`, or without CITYNODE_PORT, every test here is skipped.
They run in file order: deploy, config, field test, then a look at the node's RAM.
"""
import json
import os
import time
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from citynode.cli import main
from helpers import Sub

pytestmark = pytest.mark.board

PORT = os.environ.get("CITYNODE_PORT")
BROKER = SimpleNamespace(host="127.0.0.1", port=int(os.environ.get("CITYNODE_BROKER_PORT", "1883")))
MIN_FREE = 30 * 1024  # heap left on an ESP32 (about 110 KB of GC heap) with every module loaded


@pytest.fixture(autouse=True)
def _opt_in(request):
    if "board" not in (request.config.getoption("-m") or ""):
        pytest.skip("a board test: run with `pytest -m board`")
    if not PORT:
        pytest.skip("set CITYNODE_PORT to the node's serial port")


def cli(*args):
    r = CliRunner().invoke(main, ["--json", *[str(a) for a in args]])
    assert "Traceback" not in r.output, r.output
    return r


def test_ports_lists_the_node():
    r = cli("ports")
    assert r.exit_code == 0, r.output
    assert PORT in [p["port"] for p in json.loads(r.stdout)]


def test_deploy_then_nothing_to_send():
    r = cli("deploy", "--port", PORT)
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["mpy"].startswith("6.") and not [p for p in s["sent"] if p.endswith(".part")]
    r = cli("deploy", "--port", PORT)
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["sent"] == [] and s["removed"] == [] and s["bytes"] == 0


def test_config_push_then_show_masks_secrets():
    path = os.environ.get("CITYNODE_CONFIG")
    if not path:
        pytest.skip("set CITYNODE_CONFIG to this node's config.json")
    r = cli("config", "push", path, "--port", PORT)
    assert r.exit_code == 0, r.output
    r = cli("config", "show", "--port", PORT)
    assert r.exit_code == 0, r.output
    shown = json.loads(r.stdout)
    assert shown["node_id"] == json.load(open(path))["node_id"]
    assert shown.get("wifi", {}).get("password") in (None, "***")


def test_field_test_passes_with_a_real_radio(tmp_path):
    r = cli("test", "--port", PORT, "--broker", "%s:%d" % (BROKER.host, BROKER.port), "--samples", 3,
            "--report", tmp_path)
    rep = json.loads(r.stdout)
    res = {c["check"]: c for c in rep["checks"]}
    assert r.exit_code == 0 and rep["result"] == "PASS", json.dumps(rep["checks"], indent=1)
    assert res["wifi"]["result"] == "PASS" and "dBm" in res["wifi"]["detail"], res["wifi"]


def test_node_keeps_heap_free_while_it_runs():
    # The figure the unix port cannot give: the ESP32's own heap, with the code loaded and the
    # node cycling. A ping's mem_free, twice, a minute apart: no leak either.
    sub = Sub(BROKER, "+/+/status", "+/+/reply")
    try:
        cfg = json.loads(cli("config", "show", "--port", PORT).stdout)   # soft-resets the node
        base = "%s/%s/" % (cfg.get("mqtt", {}).get("prefix", "city"), cfg["node_id"])
        _wait(sub, lambda m: m.topic == base + "status" and not m.retain and b'"online"' in m.payload,
              60, "the node's birth after its reset")
        free = []
        for i in range(2):
            cid = "board-ping-%d-%d" % (os.getpid(), i)
            sub.c.publish(base + "cmd", json.dumps({"id": cid, "cmd": "ping"}), 1)
            m = _wait(sub, lambda m: m.topic == base + "reply" and json.loads(m.payload).get("id") == cid,
                      30, "the reply to ping %s" % cid)
            free.append(json.loads(m.payload)["result"]["mem_free"])
            if not i:
                time.sleep(60)
        assert min(free) >= MIN_FREE, free
        assert free[1] >= free[0] - 2048, "heap shrank by %d B in a minute" % (free[0] - free[1])
    finally:
        sub.close()


def _wait(sub, pred, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = sub.all(pred)
        if got:
            return got[0]
        time.sleep(0.2)
    pytest.fail("no %s within %d s" % (what, timeout))

"""`citynode provision` on three virtual nodes at once (`citynode sim --serial --nodes 3`, blank
flashes but for the firmware) against Mosquitto, each flashed through its virtual ROM loader
first: one node has its PM sensor unplugged and fails, the others pass; and the refusals that
must come before any port is touched."""
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from citynode.sim import loader as simloader
from citynode.sim import rom as simrom
from citynode.cli import main, views
from citynode.sim import install_firmware
from helpers import free_port
from test_field import firmware_tree

CITYNODE = str(Path(sys.executable).with_name("citynode"))

INVENTORY = """node_id,board,sensors,mqtt.host,mqtt.port,mqtt.prefix,interval_s,notes
prov-01,sim,water:a02yyuw:mount_height_cm=300; air:bme280,127.0.0.1,1,prov,60,bridge
prov-02,sim,water:a02yyuw:mount_height_cm=300; pm:pms5003:warmup_s=1:frames=1,127.0.0.1,1,prov,60,market
prov-03,sim,gas:mq135:gas=nh3:preheat_s=0; air:bme280,127.0.0.1,1,prov,60,school
"""


def start_fleet(tmp, broker, n):
    """`citynode --json sim --serial --nodes n`: [(port, flash dir)] in node order. The flashes
    get the committed firmware first (the sim would copy the working tree's)."""
    src = firmware_tree(tmp / "src")
    for i in range(n):
        install_firmware(tmp / "fleet" / ("node-%d" % (i + 1)), src)
    p = subprocess.Popen([CITYNODE, "--json", "sim", "--serial", "--nodes", str(n), "--flash", str(tmp / "fleet"),
                          "--broker", broker.address], stdout=subprocess.PIPE, text=True, start_new_session=True)
    nodes = [json.loads(p.stdout.readline()) for _ in range(n)]
    return p, [(d["port"], Path(d["flash"])) for d in nodes]


def stop(p):
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(15)


def test_provision_three_virtual_nodes(tmp_path, broker, mirror):
    """The whole chain CI runs: the image downloaded from a mirror into the cache (SHA-256
    checked), then per node: write, verify, boot, deploy, config, field test."""
    inv = tmp_path / "fleet.csv"
    inv.write_text(INVENTORY)
    proc, nodes = start_fleet(tmp_path, broker, 3)
    src = tmp_path / "src"
    try:
        (nodes[1][1] / "sim.json").write_text('{"missing": ["pm"]}')  # prov-02's PM sensor is unplugged
        ports = ",".join(p for p, _ in nodes)
        img = simrom.build_image("ESP32", version="v1.29.0")
        mirror.put("ESP32_GENERIC-v1.29.0.bin", img)
        env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "xdg"))
        r = subprocess.run([CITYNODE, "firmware", "download", "--mirror", mirror.url, "--sha256",
                            hashlib.sha256(img).hexdigest()], capture_output=True, text=True, timeout=60, env=env)
        assert r.returncode == 0, r.stderr
        r = subprocess.run([CITYNODE, "--json", "provision", "--inventory", str(inv), "--ports", ports,
                            "--broker", broker.address, "--samples", "2",
                            "--report", str(tmp_path / "reports"), "--src", str(src)],
                           capture_output=True, text=True, timeout=180, env=env)
        assert r.returncode == 1, r.stderr
        doc = json.loads(r.stdout)
        rows = {x["node_id"]: x for x in doc["nodes"]}
        assert doc["result"] == "FAIL" and [x["port"] for x in doc["nodes"]] == [p for p, _ in nodes]
        assert rows["prov-01"]["result"] == "PASS" and rows["prov-03"]["result"] == "PASS"
        bad = rows["prov-02"]
        assert bad["result"] == "FAIL"
        assert bad["reason"] == "test: sensor pm: timeout x2: no data: unplugged, miswired or unpowered"
        for x in doc["nodes"]:
            st = x["steps"]
            assert st["flash"]["result"] == "PASS"
            assert st["flash"]["detail"] == "ESP32 at 0x1000, MicroPython v1.29.0"
            assert st["deploy"]["result"] == "PASS" and st["config"]["result"] == "PASS"
            assert "config.json written; node %s boot" % x["node_id"] in st["config"]["detail"]
            assert x["test"]["node_id"] == x["node_id"] and Path(x["report"]).exists()
        for (_, flash), nid in zip(nodes, ("prov-01", "prov-02", "prov-03")):
            assert simloader.image_path(flash).read_bytes()[0x1000:0x1000 + len(img)] == img
            cfg = json.loads((flash / "config.json").read_text())
            assert cfg["node_id"] == nid and cfg["mqtt"]["prefix"] == "prov"
        assert len(list((tmp_path / "reports").iterdir())) == 3
        assert "[prov-02 %s] test FAILED: sensor pm: timeout" % nodes[1][0] not in r.stderr  # --json: no progress lines
    finally:
        stop(proc)


def test_provision_refuses_before_touching_a_port(tmp_path, broker):
    inv = tmp_path / "fleet.csv"
    inv.write_text(INVENTORY.replace("mount_height_cm=300; pm", "mount_height_cm=3000; pm"))
    ghost = str(tmp_path / "ttyUSB9")
    r = CliRunner().invoke(main, ["provision", "--inventory", str(inv), "--ports", ",".join([ghost] * 3),
                                  "--broker", broker.address])
    assert r.exit_code == 1
    assert "fleet.csv line 3 (prov-02): sensors[0].mount_height_cm: out of range 5..2000" in r.output
    inv.write_text(INVENTORY)
    r = CliRunner().invoke(main, ["provision", "--inventory", str(inv), "--ports", ghost, "--broker", broker.address])
    assert r.exit_code == 2 and "1 port for 3 nodes" in r.output
    port = free_port()
    r = CliRunner().invoke(main, ["provision", "--inventory", str(inv), "--ports", ghost, "--nodes", "prov-03",
                                  "--skip-flash", "--broker", "127.0.0.1:%d" % port])
    assert r.exit_code == 3 and "broker 127.0.0.1:%d could not be reached" % port in r.output
    r = CliRunner().invoke(main, ["provision", "--inventory", str(inv), "--ports", ghost, "--nodes", "prov-03",
                                  "--broker", broker.address])
    assert r.exit_code == 2 and "no firmware image to flash" in r.output and "(--firmware)" in r.output
    r = CliRunner().invoke(main, ["provision", "--inventory", str(inv), "--ports", ghost, "--nodes", "prov-03",
                                  "--skip-flash", "--src", str(tmp_path), "--broker", broker.address])
    assert r.exit_code == 2 and "has no firmware/ directory" in r.output     # as deploy's --src


def test_provision_port_failure_does_not_stop_the_others(tmp_path, broker):
    """A board that is not there fails its row at deploy; the virtual node beside it passes."""
    inv = tmp_path / "fleet.csv"
    inv.write_text(INVENTORY)
    proc, nodes = start_fleet(tmp_path, broker, 1)
    src = tmp_path / "src"
    try:
        ghost = str(tmp_path / "ttyUSB9")
        r = subprocess.run([CITYNODE, "provision", "--inventory", str(inv), "--ports", "%s,%s" % (ghost, nodes[0][0]),
                            "--nodes", "prov-01,prov-03", "--skip-flash", "--broker", broker.address, "--samples", "1",
                            "--src", str(src)], capture_output=True, text=True, timeout=120)
        assert r.returncode == 1, r.stderr
        assert "provisioning: 2 nodes, 1 passed, 1 failed" in r.stdout
        assert "[prov-01 %s] deploy FAILED: %s: no such port" % (ghost, ghost) in r.stderr
        assert "[prov-03 %s] test: PASS" % nodes[0][0] in r.stderr
    finally:
        stop(proc)


def test_the_provisioning_table_counts_one_node_in_the_singular():
    row = {"node_id": "prov-01", "port": "/dev/ttyUSB0", "steps": {}, "result": "PASS", "seconds": 1.0, "reason": None}
    assert views.provision([row]).title == "provisioning: 1 node, 1 passed, 0 failed"
    assert views.provision([row, dict(row, result="FAIL")]).title == "provisioning: 2 nodes, 1 passed, 1 failed"

"""`citynode test` and `citynode calibrate` against virtual nodes (`citynode sim --serial`, the real
firmware and drivers on the MicroPython unix port behind a pseudo-terminal) and a real
Mosquitto; the judging of readings (ranges, spread, Wi-Fi on an ESP32) on crafted probe results."""
import json
import re
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from citynode import calibrate, fieldtest, monitor
from citynode.sim import install_firmware
from citynode.cli import main
from citynode.errors import Unreachable
from helpers import free_port

CITYNODE = str(Path(sys.executable).with_name("citynode"))
ROOT = Path(__file__).resolve().parent.parent


def firmware_tree(dst):
    """A copy of firmware/ and boards/ for the virtual nodes to run (the tree under test)."""
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "firmware", dst / "firmware", dirs_exist_ok=True, ignore=ignore)
    shutil.copytree(ROOT / "boards", dst / "boards", dirs_exist_ok=True)
    return dst

SENSORS = [{"name": "water", "type": "hcsr04", "mount_height_cm": 300.0},
           {"name": "pm", "type": "pms5003", "warmup_s": 1, "frames": 1},
           {"name": "gas", "type": "mq135", "gas": "nh3", "preheat_s": 0},
           {"name": "air", "type": "bme280"}]


def node_config(node_id="ft-01", sensors=SENSORS):
    # mqtt.host/port are not the test broker: the sim's --broker points the node at it, and the
    # field test is told with --broker, as a crew testing against a staging broker would be.
    return {"node_id": node_id, "board": "sim", "mqtt": {"host": "127.0.0.1", "port": 1, "prefix": "bdg"},
            "interval_s": 60, "sensors": sensors}


class Sim:
    """`citynode sim --serial` in its own process group; .port is its pseudo-terminal."""

    def __init__(self, tmp, broker, cfg, scenario=None):
        self.flash = Path(tmp) / ("flash-" + cfg["node_id"])
        install_firmware(self.flash, firmware_tree(Path(tmp) / "fw"))
        cp = Path(tmp) / (cfg["node_id"] + ".json")
        cp.write_text(json.dumps(cfg))
        args = [CITYNODE, "sim", "--serial", "--flash", str(self.flash), "--config", str(cp),
                "--broker", broker.address]
        if scenario is not None:
            sp = Path(tmp) / (cfg["node_id"] + "-sim.json")
            sp.write_text(json.dumps(scenario))
            args += ["--scenario", str(sp)]
        online = threading.Event()
        topic = "%s/%s/status" % (cfg["mqtt"]["prefix"], cfg["node_id"])
        watch = monitor.connect(monitor.parse_broker(broker.address), subscriptions=[(topic, 1)],
                                on_message=lambda c, u, m: b'"online"' in m.payload and online.set())
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, start_new_session=True)
        self.port = self.proc.stdout.readline().strip()
        assert self.port.startswith("/dev/"), "sim did not start"
        # As in the field, the node has booted and is running its firmware when the crew plugs
        # in (the sim's REPL is not ready in the first second after its port appears).
        assert online.wait(15), "the virtual node did not come online"
        monitor._stop(watch)

    def scenario(self, sc):
        # simhw reads sim.json whenever the board is opened: by the probe, and by main.py on restart
        (self.flash / "sim.json").write_text(json.dumps(sc))

    def config(self):
        return json.loads((self.flash / "config.json").read_text())

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture
def sim(tmp_path, broker):
    made = []

    def start(cfg=None, scenario=None):
        s = Sim(tmp_path, broker, cfg or node_config(), scenario)
        made.append(s)
        return s

    yield start
    for s in made:
        s.stop()


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


# --- the field test ----------------------------------------------------------------------------

def test_field_test_missing_pm_fails_with_reason_and_report(sim, broker, tmp_path):
    node = sim(scenario={"missing": ["pm"]})
    rdir = tmp_path / "reports"
    r = cli("--json", "test", "--port", node.port, "--broker", broker.address, "--samples", 3, "--report", rdir)
    assert r.exit_code == 1, r.output
    rep = json.loads(r.stdout)
    res = {c["check"]: c for c in rep["checks"]}
    assert rep["result"] == "FAIL" and rep["node_id"] == "ft-01"
    assert res["sensor pm"]["result"] == "FAIL"
    assert res["sensor pm"]["reason"] == "timeout x3: no data: unplugged, miswired or unpowered"
    for ok in ("config", "sensor water", "sensor gas", "sensor air", "broker", "round trip"):
        assert res[ok]["result"] == "PASS", res[ok]
    assert res["wifi"]["result"] == "n/a" and res["wifi"]["detail"] == "n/a (virtual node)"
    water = res["sensor water"]["quantities"]["water_level_cm"]
    assert water["n"] == 3 and 40 < water["median"] < 60  # the sim: water 250 cm below a 300 cm mount
    assert "boot" in res["round trip"]["detail"] and "seq" in res["round trip"]["detail"]
    (saved,) = rdir.iterdir()
    assert saved.name.startswith("ft-01-") and saved.suffix == ".json"
    assert json.loads(saved.read_text())["checks"] == rep["checks"]

    # The crew plugs the PM sensor back in: the same node now passes, and the table says so.
    node.scenario({})
    r = cli("test", "--port", node.port, "--broker", broker.address, "--samples", 3, "--report", rdir)
    assert r.exit_code == 0, r.output
    assert "field test of ft-01" in r.output and "PASS" in r.output and "FAIL" not in r.output
    assert len(list(rdir.iterdir())) == 2


def test_field_test_of_a_virtual_node_uses_the_broker_it_was_started_with(sim, broker):
    # `citynode sim --broker` points the node at another broker than its config's (127.0.0.1:1):
    # its field test checks that broker without being told again.
    node = sim(node_config(sensors=[SENSORS[0]]))
    r = cli("--json", "test", "--port", node.port, "--samples", 1)
    rep = json.loads(r.stdout)
    assert r.exit_code == 0, r.output
    assert rep["broker"].endswith(broker.address) and rep["result"] == "PASS", rep


def test_field_test_unreachable_broker_exit_3_leaves_node_running(sim, broker):
    node = sim()
    port = free_port()
    r = cli("test", "--port", node.port, "--broker", "127.0.0.1:%d" % port, "--samples", 1)
    assert r.exit_code == 3
    assert r.output.strip() == "Error: broker 127.0.0.1:%d could not be reached: Connection refused" % port
    # The node was soft-reset back into its firmware, not left in the REPL: it answers on the
    # real broker again, so a second test passes.
    r = cli("test", "--port", node.port, "--broker", broker.address, "--samples", 1)
    assert r.exit_code == 0, r.output


def test_field_test_unreachable_node_exit_3(tmp_path):
    r = cli("test", "--port", tmp_path / "ttyUSB9", "--broker", "127.0.0.1:1")
    assert r.exit_code == 3 and "no such port" in r.output


def test_config_show_puts_a_running_node_back_to_work(sim, broker):
    # Reading the config interrupts the firmware; the crew must not leave a node silent because
    # they looked at its config. --no-reset leaves it in the REPL for whoever wants it there.
    from helpers import Sub, wait_for
    node = sim()
    sub = Sub(broker, "bdg/ft-01/status")
    try:
        r = cli("--json", "config", "show", "--port", node.port)
        assert r.exit_code == 0 and json.loads(r.stdout)["node_id"] == "ft-01", r.output
        wait_for(lambda: sub.all(lambda m: not m.retain and b'"soft"' in m.payload and b'"online"' in m.payload),
                 15, what="the node's birth after config show")
        births = lambda: len(sub.all(lambda m: not m.retain and b'"online"' in m.payload))  # noqa: E731
        assert births() == 1
        boot = lambda: json.loads((node.flash / "state.json").read_text())["boot"]  # noqa: E731
        b1 = boot()
        r = cli("--json", "config", "show", "--port", node.port, "--no-reset")
        assert r.exit_code == 0, r.output
        from citynode import transport
        with transport.Device(node.port) as dev:
            dev.soft_reset()
        # the boot counter counts every start of main.py: one more, ours, not one for --no-reset too
        born = lambda: [json.loads(m.payload)["boot"] for m in sub.all(  # noqa: E731
            lambda m: not m.retain and b'"online"' in m.payload)]
        wait_for(lambda: boot() > b1 and boot() in born(), 15, what="the birth of the node's latest boot")
        assert boot() == b1 + 1 and len(born()) == 2
    finally:
        sub.close()


# --- calibration -------------------------------------------------------------------------------

def test_calibrate_water_stores_offset(sim, broker):
    node = sim()
    r = cli("--json", "calibrate", "water", "--port", node.port, "--reference-cm", 62.5, "--samples", 5)
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    off = out["offset_cm"]["after"]
    assert out["offset_cm"]["before"] == 0.0 and off == pytest.approx(62.5 - (300 - out["distance_cm"]), abs=0.06)
    assert out["level_cm"]["after"] == pytest.approx(62.5, abs=1.0)  # measured again with the new config
    assert node.config()["sensors"][0]["offset_cm"] == off
    assert not list(node.flash.glob("*.tmp"))
    assert out["running"].startswith("node ft-01 boot ")  # back at work, with the new config
    # Moving water (rain: the level rises during the reads) is refused, and nothing is stored.
    node.scenario({"rain": {"start_s": 0, "duration_s": 10, "rise_cm": 150}})
    r = cli("calibrate", "water", "--port", node.port, "--reference-cm", 80, "--samples", 5)
    assert r.exit_code == 1
    assert "readings unstable, " in r.output and "nothing stored" in r.output
    assert node.config()["sensors"][0]["offset_cm"] == off
    # Which sensor: by name, and not one of the wrong kind.
    r = cli("calibrate", "water", "--port", node.port, "--reference-cm", 80, "--sensor", "air")
    assert r.exit_code == 2 and "'air' is a bme280, not a water sensor" in r.output


def test_calibrate_water_refuses_a_reference_outside_the_bed_to_the_sensor(sim, broker):
    node = sim()     # mount_height_cm 300: a gauge can show 0 (the bed) up to 300 cm
    before = (node.flash / "config.json").read_text()
    for ref in (400, -5, 300.5, "nan"):
        r = cli("calibrate", "water", "--port", node.port, "--reference-cm", ref, "--samples", 3)
        assert r.exit_code == 1, r.output
        assert r.stderr.strip() == ("Error: water: reference %g cm is outside 0..300 cm (the channel bed up to the "
                                    "sensor, its mount_height_cm): nothing stored (--reference-cm)" % float(ref)), r.output
        assert (node.flash / "config.json").read_text() == before
    r = cli("--json", "calibrate", "water", "--port", node.port, "--reference-cm", 400, "--samples", 3)
    assert r.exit_code == 1 and json.loads(r.stdout)["exit"] == 1 and "reference 400 cm" in json.loads(r.stdout)["error"]
    assert (node.flash / "config.json").read_text() == before
    assert not list(node.flash.glob("*.tmp"))
    # the bounds themselves are levels a gauge can show
    r = cli("--json", "calibrate", "water", "--port", node.port, "--reference-cm", 300, "--samples", 3)
    assert r.exit_code == 0 and json.loads(r.stdout)["offset_cm"]["after"] > 0, r.output


def test_calibrate_gas_r0_and_drift_refusal(sim, broker):
    node = sim()
    r = cli("--json", "calibrate", "gas", "--port", node.port, "--minutes", 0.05)
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    # The sim's MQ-135 reads Rs about 48 kOhm at 08:00; R0 = Rs / 3.6 (clean air on the datasheet).
    assert out["r0_kohm"]["after"] == pytest.approx(out["rs_kohm"] / 3.6, abs=0.01)
    assert 10 < out["r0_kohm"]["after"] < 16 and abs(out["drift_pct"]) < 3
    assert node.config()["sensors"][2]["r0_kohm"] == out["r0_kohm"]["after"]
    assert out["ppm"]["after"] is not None
    # A sensor whose Rs is still moving (an hour of the sim's day every second) is refused.
    node.scenario({"time_scale": 3600, "start_h": 14})
    r = cli("calibrate", "gas", "--port", node.port, "--minutes", 0.05)
    assert r.exit_code == 1 and "Rs still drifting" in r.output and "nothing stored" in r.output
    assert node.config()["sensors"][2]["r0_kohm"] == out["r0_kohm"]["after"]
    # An unplugged gas sensor: refused at once with the reason.
    node.scenario({"missing": ["gas"]})
    r = cli("calibrate", "gas", "--port", node.port, "--minutes", 1)
    assert r.exit_code == 1 and "gas: 1 of 1 reads failed (not_found x1" in r.output, r.output


# --- judging, on crafted probe results (what an ESP32 would report) ----------------------------

WATER = {"name": "water", "type": "hcsr04", "mount_height_cm": 300.0, "offset_cm": 0.0, "samples": 7,
         "min_range_cm": 2.0, "max_range_cm": 400.0}


def test_sensor_check_ranges_and_spread():
    ok = fieldtest.sensor_check(WATER, {"values": {"water_level_cm": [50.0, 50.2, 49.9], "distance_cm": [250.0, 249.8, 250.1]},
                                        "errors": {}, "kept": [7, 6, 7]}, 3)
    assert ok["result"] == "PASS" and "kept 6.7/7 per read" in ok["detail"]
    spike = fieldtest.sensor_check(WATER, {"values": {"water_level_cm": [50.0, 58.0, 49.9], "distance_cm": [250.0, 242.0, 250.1]},
                                           "errors": {}}, 3)
    assert spike["result"] == "PASS" and "1 outlier ignored" in spike["detail"]  # one spike in three: the median stands
    wobbly = fieldtest.sensor_check(WATER, {"values": {"water_level_cm": [50.0, 58.0, 44.0], "distance_cm": [250.0, 242.0, 256.0]},
                                            "errors": {}}, 3)
    assert wobbly["result"] == "FAIL"
    assert "unstable: 2 of 3 distance_cm reads more than 3 from their median 250 (spread 14)" in wobbly["reason"]
    below = fieldtest.sensor_check(WATER, {"values": {"water_level_cm": [0.0, 0.0], "distance_cm": [320.0, 320.0]},
                                           "errors": {}}, 2)
    assert "below the channel bed" in below["reason"]
    hot = fieldtest.sensor_check({"name": "air", "type": "bme280"},
                                 {"values": {"air_temp_c": [85.0, 85.0], "rh_pct": [0.0, 0.0], "pressure_hpa": [1000.0, 1000.0]},
                                  "errors": {}}, 2)
    assert "air_temp_c 85 outside the plausible -30..60" in hot["reason"] and "rh_pct 0 outside" in hot["reason"]
    flaky = fieldtest.sensor_check({"name": "pm", "type": "pms5003"},
                                   {"values": {"pm2_5_ugm3": [12.0, 30.0]}, "errors": {"checksum": 1}}, 3)
    assert flaky["result"] == "FAIL" and flaky["reason"].startswith("only 2 of 3 reads succeeded (checksum x1)")
    assert flaky["quantities"]["pm2_5_ugm3"]["spread"] == 18.0  # PM varies: reported, not judged


def test_sensor_check_mq_warming_up_on_esp32():
    mq = {"name": "gas", "type": "mq135", "gas": "nh3", "preheat_s": 180}
    r = fieldtest.sensor_check(mq, {"values": {}, "errors": {"warming_up": 3}}, 3, up_ms=60000)
    assert r["result"] == "FAIL" and "120 s of preheat_s=180 to go" in r["reason"]


def test_wifi_check_esp32():
    assert fieldtest.wifi_check(None, True)["result"] == "n/a"
    good = fieldtest.wifi_check({"ssid": "pemkot-iot", "connected": True, "rssi": -61, "ip": "10.0.0.7",
                                 "status": ["STAT_GOT_IP"]}, False)
    assert good["result"] == "PASS" and good["detail"] == "'pemkot-iot', RSSI -61 dBm, IP 10.0.0.7"
    weak = fieldtest.wifi_check({"ssid": "pemkot-iot", "connected": True, "rssi": -88, "ip": "10.0.0.7"}, False)
    assert weak["result"] == "FAIL" and "weak signal -88 dBm" in weak["reason"]
    down = fieldtest.wifi_check({"ssid": "pemkot-iot", "connected": False, "status": ["STAT_WRONG_PASSWORD"]}, False)
    assert down["result"] == "FAIL" and down["reason"] == "not connected to 'pemkot-iot' (STAT_WRONG_PASSWORD)"


def test_offset_and_pick():
    assert calibrate.offset_for(62.5, 300.0, 247.3) == 9.8
    cfg = {"sensors": [WATER, dict(WATER, name="water2"), {"name": "air", "type": "bme280"}]}
    with pytest.raises(calibrate.CitynodeError, match="2 water sensors") as e:
        calibrate.pick(cfg, None, calibrate.WATER_TYPES, "water")
    assert e.value.exit_code == 2 and e.value.param == "sensor"   # the CLI names --sensor
    assert calibrate.pick(cfg, "water2", calibrate.WATER_TYPES, "water")["name"] == "water2"
    with pytest.raises(calibrate.CheckFailed, match="no gas sensor"):
        calibrate.pick(cfg, None, calibrate.GAS_TYPES, "gas")


def test_field_test_closes_its_broker_client_when_the_restart_fails(monkeypatch):
    """A restart that raises after the probe must not leave the broker client's thread running."""
    closed = []

    class Dev:
        t = None

        def __init__(self, port, timeout, held=None):
            pass

        def open(self):
            return self

        def close(self):
            pass

    class Nob:
        def __init__(self, *a):
            pass

        def close(self):
            closed.append(True)

    def restart(dev, timeout=10.0):
        raise Unreachable("the node did not come back")

    cfg = {"node_id": "ft-9", "board": "sim", "mqtt": {"host": "127.0.0.1", "port": 1}, "sensors": []}
    monkeypatch.setattr(fieldtest.transport, "Device", Dev)
    monkeypatch.setattr(fieldtest, "node_config", lambda dev: cfg)
    monkeypatch.setattr(fieldtest, "NodeOnBroker", Nob)
    monkeypatch.setattr(fieldtest, "probe", lambda dev, samples: {"sensors": {}, "sim": True, "wifi": None})
    monkeypatch.setattr(fieldtest, "restart", restart)
    with pytest.raises(Unreachable):
        fieldtest.run("/dev/null-node", samples=1)
    assert closed == [True]


def test_calibrate_then_push_of_the_original_row_keeps_the_calibration(sim, broker, tmp_path):
    node = sim()
    inv = tmp_path / "fleet.csv"
    other = "ft-02,sim,air:bme280,127.0.0.1,1,bdg,60\n"
    original = ("node_id,board,sensors,mqtt.host,mqtt.port,mqtt.prefix,interval_s\n"
                "ft-01,sim,water:hcsr04:mount_height_cm=300.0; pm:pms5003:warmup_s=1:frames=1; "
                "gas:mq135:gas=nh3:preheat_s=0; air:bme280,127.0.0.1,1,bdg,60\n"
                + other)
    inv.write_text(original)
    r = cli("--json", "calibrate", "water", "--port", node.port, "--reference-cm", 62.5, "--samples", 5,
            "--inventory", inv)
    assert r.exit_code == 0, r.output
    off = json.loads(r.stdout)["offset_cm"]["after"]
    r = cli("calibrate", "gas", "--port", node.port, "--minutes", 0.05)
    assert r.exit_code == 0, r.output
    r0 = node.config()["sensors"][2]["r0_kohm"]
    assert "inventory sensors cell for ft-01" in r.output and "gas:mq135:gas=nh3:preheat_s=0:r0_kohm=%r" % r0 in r.output
    # --inventory wrote the water result into ft-01's row, and changed nothing else in the file
    assert inv.read_text() == original.replace("mount_height_cm=300.0;", "mount_height_cm=300.0:offset_cm=%r;" % off)

    inv.write_text(original)   # the crew pushes the row as it was before the calibrations
    r = cli("config", "push", "--inventory", inv, "--node", "ft-01", "--port", node.port)
    assert r.exit_code == 0, r.output
    s = node.config()["sensors"]
    assert s[0]["offset_cm"] == off and s[2]["r0_kohm"] == r0
    r = cli("config", "push", "--inventory", inv, "--node", "ft-01", "--port", node.port, "--reset-calibration")
    assert r.exit_code == 0, r.output
    s = node.config()["sensors"]
    assert "offset_cm" not in s[0] and "r0_kohm" not in s[2]


def test_gas_warm_up_survives_a_soft_reset(sim, broker):
    # Every citynode command soft-resets the node; the MQ heater stayed on, so the gas sensor must
    # not say warming_up again for preheat_s after each visit.
    from helpers import Sub, wait_for
    cfg = dict(node_config(sensors=[{"name": "gas", "type": "mq135", "gas": "nh3", "preheat_s": 3}]), interval_s=1)
    sub = Sub(broker, "bdg/ft-01/#")
    try:
        node = sim(cfg)
        tele = lambda: [json.loads(m.payload) for m in sub.all(lambda m: m.topic.endswith("/telemetry"))]  # noqa: E731
        first = wait_for(lambda: [t for t in tele() if "nh3_ppm" in t["values"]], 20, what="a warm gas reading")[0]
        assert any(t.get("errors", {}).get("gas") == "warming_up" for t in tele() if t["boot"] == first["boot"])
        from citynode import transport
        with transport.Device(node.port) as dev:
            dev.raw()
            dev.soft_reset()
        after = wait_for(lambda: [t for t in tele() if t["boot"] > first["boot"]][:2], 20, what="readings after the reset")
        assert all("nh3_ppm" in t["values"] and "errors" not in t for t in after), after
    finally:
        sub.close()


def test_info_json_has_every_field(sim, broker):
    from citynode.info import FIELDS
    from helpers import Sub
    node = sim()
    node.config()  # the node's config as the sim wrote it
    cfg = json.loads((node.flash / "config.json").read_text())
    cfg["sensors"][0]["offset_cm"] = 4.2
    cfg["wifi"] = {"ssid": "pemkot-iot", "password": "hunter2"}
    (node.flash / "config.json").write_text(json.dumps(cfg))
    (node.flash / "crash.json").write_text('{"boot": 3, "up": 61, "error": "ZeroDivisionError()", "trace": "t"}')
    with Sub(broker, "bdg/ft-01/event") as sub:
        r = cli("--json", "info", "--port", node.port)
        assert r.exit_code == 0, r.output
        d = json.loads(r.stdout)
        assert all(k in d for k in FIELDS), [k for k in FIELDS if k not in d]
        assert d["chip"].startswith("virtual node") and re.fullmatch(r"02(:[0-9a-f]{2}){5}", d["mac"])
        assert d["flash_size"] > 0 and d["flash_free"] > 0 and d["heap_free"] > 0
        assert d["micropython"].count(".") == 2 and d["mpy"] and d["build"]
        assert d["firmware"] == fw_version() and d["frozen"] is False
        assert d["node_id"] == "ft-01" and isinstance(d["boot"], int) and d["reset"] == "power"
        assert d["config"]["wifi"] == {"ssid": "pemkot-iot", "password": "***"} and "hunter2" not in r.stdout
        assert d["config"]["sensors"] == ["water:hcsr04", "pm:pms5003", "gas:mq135", "air:bme280"]
        assert d["calibration"] == {"water": {"offset_cm": 4.2}, "gas": {"r0_kohm": None}}
        assert d["crash"]["error"] == "ZeroDivisionError()" and d["crash_reported"] is False
        # info soft-reset the node back to work: it reported the crash, and keeps it as the last one
        sub.wait(lambda m: b'"crash"' in m.payload, 20, what="the crash event")
    r = cli("info", "--port", node.port)
    assert r.exit_code == 0, r.output
    assert "last reset   soft" in r.output and "node_id      ft-01" in r.output
    assert "last crash   boot 3 after 61 s: ZeroDivisionError()" in r.output and "not yet reported" not in r.output
    assert "calibration  water offset_cm=4.2; gas r0_kohm=None" in r.output


def fw_version():
    import re as _re
    return _re.search(r'VERSION = "([^"]+)"', (ROOT / "firmware" / "version.py").read_text()).group(1)


def test_logs_follows_the_node_without_stopping_it(sim, broker):
    node = sim()
    boot = json.loads((node.flash / "state.json").read_text())["boot"]
    p = subprocess.Popen([CITYNODE, "logs", "--port", node.port, "--seconds", "12"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        broker.stop()          # the broker goes away and comes back: the node says so on its console
        time.sleep(2)
        broker.start()
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err
    lines = out.splitlines()
    assert any(re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3} citynode: link: lost( \(.*\))?", ln) for ln in lines), out
    assert any(" citynode: link: connected to " in ln for ln in lines), out
    assert "raw REPL" not in out
    # main.py never stopped: no new boot
    assert json.loads((node.flash / "state.json").read_text())["boot"] == boot
    # what the node kept since it booted, read from its REPL (then it is soft-reset back to work)
    r = cli("--json", "logs", "--port", node.port, "--since-boot", "--seconds", 1)
    assert r.exit_code == 0, r.output
    kept = [json.loads(ln) for ln in r.stdout.splitlines() if '"kept":true' in ln]
    texts = [k["line"] for k in kept]
    assert any(t.startswith("citynode: link: lost") for t in texts), texts
    assert texts[0].startswith("citynode: node ft-01 boot %d" % boot), texts
    assert all(k["ts"] <= time.time() for k in kept)


def test_reset_soft_and_hard(sim, broker):
    from helpers import Sub
    node = sim()
    boot = lambda: json.loads((node.flash / "state.json").read_text())["boot"]  # noqa: E731
    with Sub(broker, "bdg/ft-01/status") as sub:
        b0 = boot()
        r = cli("reset", "--port", node.port)
        assert r.exit_code == 0 and r.output.strip() == "%s: soft reset; the node starts main.py again" % node.port
        sub.wait(lambda m: not m.retain and b'"boot": %d' % (b0 + 1) in m.payload, 20, what="the birth after reset")
        r = cli("--json", "reset", "--hard", "--port", node.port)
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout) == {"ok": True, "port": node.port, "hard": True, "how": "machine.reset() on the node"}
        sub.wait(lambda m: not m.retain and b'"boot": %d' % (b0 + 2) in m.payload, 20, what="the birth after --hard")
    assert node.proc.poll() is None


def test_ctrl_c_during_a_calibration_leaves_the_node_at_work(sim, broker):
    from helpers import Sub, wait_for
    node = sim()
    with Sub(broker, "bdg/ft-01/status") as sub:
        p = subprocess.Popen([CITYNODE, "calibrate", "gas", "--port", node.port, "--minutes", "2"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(4)                      # watching Rs: the probe runs on the node
            assert p.poll() is None
            n = len(sub.all())
            p.send_signal(signal.SIGINT)
            out, err = p.communicate(timeout=30)
        finally:
            if p.poll() is None:
                p.kill()
        assert p.returncode == 130, err
        assert err.strip().splitlines() == ["interrupted: %s: unchanged; node back at work (soft reset)" % node.port], err
        wait_for(lambda: [m for m in sub.all()[n:] if b'"online"' in m.payload], 10, what="the node back online")
    assert "r0_kohm" not in node.config()["sensors"][2]

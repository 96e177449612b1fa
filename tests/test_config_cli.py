"""`citynode config`: validate, the inventory CSV, push (validated before the node is touched,
written atomically), show (masked) and pull. CliRunner for arguments and messages; a virtual
node in-process where a node is needed, so that its wire counter proves nothing was sent."""
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from citynode import configtool
from citynode.cli import main
from citynode.sim import SimNode

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
HEADER = "node_id,board,site_name,lat,lon,sensors,alarms,interval_s,notes\n"
GOOD = 'wl-01,esp32-generic,"Jl. Siliwangi",-6.885,107.613,water:hcsr04:mount_height_cm=300; air:bme280,water_level_cm=150/140,30,\n'


def cli(args, env=None):
    return CliRunner().invoke(main, args, env=env)


def one_error(r, code=1):
    assert r.exit_code == code, (r.exit_code, r.output)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.stderr
    assert "Traceback" not in r.output
    return lines[0][len("Error: "):]


@pytest.fixture
def node(tmp_path):
    n = SimNode(tmp_path / "flash", serial=True, empty=True, register=False).start()
    yield n
    n.stop()


def write_csv(tmp_path, *rows, header=HEADER):
    p = tmp_path / "fleet.csv"
    p.write_text(header + "".join(rows))
    return str(p)


# --- validate -----------------------------------------------------------------------------------

def test_validate_accepts_the_contract_example_and_names_the_bad_field(tmp_path):
    r = cli(["config", "validate", str(EXAMPLES / "contract.json")])
    assert r.exit_code == 0 and "OK (wl-cikapundung-01, board esp32-generic, 4 sensors)" in r.stdout
    cfg = json.loads((EXAMPLES / "contract.json").read_text())
    cfg["sensors"][1]["rx"] = "16"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(cfg))
    assert one_error(cli(["config", "validate", str(bad)])) == "sensors[1].rx: expected an integer pin"
    bad.write_text("{not json")
    assert "bad.json: not valid JSON" in one_error(cli(["config", "validate", str(bad)]))
    assert "No such file" in one_error(cli(["config", "validate", str(tmp_path / "none.json")]))


def test_validate_json_mode_prints_one_document():
    r = cli(["config", "validate", str(EXAMPLES / "contract.json"), "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout) == {"ok": True, "file": str(EXAMPLES / "contract.json"),
                                                         "node_id": "wl-cikapundung-01"}


def test_example_inventory_validates_every_row():
    # the secrets come from the environment, as in the field
    r = cli(["config", "validate", str(EXAMPLES / "fleet.csv"), "--defaults", str(EXAMPLES / "site-defaults.json")],
            env={"CITYNODE_WIFI_PASSWORD": "w", "CITYNODE_MQTT_PASSWORD": "m"})
    assert r.exit_code == 0, r.output
    assert "3 nodes OK" in r.stdout


def test_a_one_row_inventory_says_1_node(tmp_path):
    csv = write_csv(tmp_path, GOOD)
    r = cli(["config", "validate", csv, "--defaults", str(EXAMPLES / "site-defaults.json")],
            env={"CITYNODE_WIFI_PASSWORD": "w", "CITYNODE_MQTT_PASSWORD": "m"})
    assert r.exit_code == 0 and r.stdout.strip() == "%s: 1 node OK (wl-01)" % csv, r.output


@pytest.mark.parametrize("row, problem", [
    ('wl-02,esp32-generic,x,,,water:ultrasonic:mount_height_cm=300,,,\n',
     "line 2 (wl-02): sensors[0].type: unknown sensor type 'ultrasonic'"),
    ('wl-02,esp32-generic,x,,,water:hcsr04:mount_height_cm=300:trig=5:echo=18; w2:hcsr04:mount_height_cm=200:trig=5:echo=19,,,\n',
     "line 2 (wl-02): sensors[1].trig: GPIO5 is already used by sensors[0].trig"),
    (',esp32-generic,x,,,water:hcsr04:mount_height_cm=300,,,\n', "line 2: node_id: required"),
    ('wl-02,esp32-generic,x,north,,water:hcsr04:mount_height_cm=300,,,\n', "line 2 (wl-02): lat: 'north' is not a number"),
    ('wl-02,esp32-generic,x,,,water-hcsr04,,,\n', "line 2 (wl-02): sensors[0]: 'water-hcsr04': expected name:type"),
    ('wl-02,esp32-generic,x,,,water:hcsr04,,,\n', "line 2 (wl-02): sensors[0].mount_height_cm: required"),
    ('wl-02,esp32-nope,x,,,,,,\n', "line 2 (wl-02): board: unknown board 'esp32-nope'"),
    ('wl-02,esp32-generic,x,,,,water_level_cm=150,,\n', "line 2 (wl-02): alarms: 'water_level_cm=150': expected quantity=high/clear"),
])
def test_inventory_row_errors_name_the_row_and_the_problem(tmp_path, row, problem):
    csv = write_csv(tmp_path, row)
    msg = one_error(cli(["config", "validate", csv, "--defaults", str(EXAMPLES / "site-defaults.json")]))
    assert msg.startswith(csv + " " + problem), msg


def test_inventory_refuses_duplicates_and_secret_columns(tmp_path):
    csv = write_csv(tmp_path, GOOD, GOOD)
    assert "line 3 (wl-01): node_id: 'wl-01' is also on line 2" in one_error(
        cli(["config", "validate", csv, "--defaults", str(EXAMPLES / "site-defaults.json")]))
    csv = write_csv(tmp_path, "wl-01,esp32-generic,air:bme280,hunter2\n", header="node_id,board,sensors,mqtt.password\n")
    assert "secrets do not belong in the inventory; use CITYNODE_MQTT_PASSWORD" in one_error(
        cli(["config", "validate", csv, "--defaults", str(EXAMPLES / "site-defaults.json")]))


def test_inventory_from_a_decimal_comma_spreadsheet(tmp_path):
    p = tmp_path / "fleet.csv"
    p.write_text("\ufeffnode_id;board;site_name;lat;lon;sensors;mqtt.prefix\n"
                 "wl-01;esp32-generic;Jl. Siliwangi;-6,885;107,613;water:hcsr04:mount_height_cm=312,5;kota\n",
                 encoding="utf-8")
    cfg = configtool.from_inventory(str(p), "wl-01", json.loads((EXAMPLES / "site-defaults.json").read_text()),
                                    env={"CITYNODE_WIFI_PASSWORD": "w", "CITYNODE_MQTT_PASSWORD": "m"})
    assert cfg["site"] == {"name": "Jl. Siliwangi", "lat": -6.885, "lon": 107.613}
    assert cfg["sensors"] == [{"name": "water", "type": "hcsr04", "mount_height_cm": 312.5}]
    assert cfg["mqtt"]["prefix"] == "kota" and cfg["mqtt"]["user"] == "wl-01"


# --- push, show, pull ---------------------------------------------------------------------------

def test_push_from_inventory_with_env_secrets_then_show_masked_and_pull(tmp_path, node):
    csv = write_csv(tmp_path, GOOD)
    env = {"CITYNODE_WIFI_PASSWORD": "wifi-secret", "CITYNODE_MQTT_PASSWORD": "mqtt-secret"}
    r = cli(["config", "push", "--inventory", csv, "--node", "wl-01", "--defaults",
             str(EXAMPLES / "site-defaults.json"), "--port", node.port, "--no-reset"], env=env)
    assert r.exit_code == 0, r.output
    assert "wrote config.json for wl-01" in r.stdout
    on_node = json.loads((node.flash / "config.json").read_text())
    assert on_node["node_id"] == "wl-01" and on_node["site"]["name"] == "Jl. Siliwangi"
    assert on_node["sensors"][0] == {"name": "water", "type": "hcsr04", "mount_height_cm": 300}
    assert on_node["alarms"] == {"water_level_cm": {"high": 150, "clear": 140}} and on_node["interval_s"] == 30
    assert on_node["wifi"]["password"] == "wifi-secret" and on_node["mqtt"]["password"] == "mqtt-secret"
    assert on_node["mqtt"]["user"] == "wl-01"
    assert not (node.flash / "config.json.tmp").exists()

    r = cli(["config", "show", "--port", node.port, "--json"])
    assert r.exit_code == 0, r.output
    shown = json.loads(r.stdout)
    assert shown["wifi"]["password"] == "***" and shown["mqtt"]["password"] == "***"
    assert "secret" not in r.stdout

    out = tmp_path / "pulled.json"
    r = cli(["config", "pull", str(out), "--port", node.port])
    assert r.exit_code == 0 and json.loads(out.read_text()) == on_node, r.output


def test_push_file_replaces_the_config_whole(tmp_path, node):
    (node.flash / "config.json").write_text('{"old": true}')
    cfg = json.loads((EXAMPLES / "contract.json").read_text())
    p = tmp_path / "c.json"
    p.write_text(json.dumps(cfg))
    r = cli(["config", "push", str(p), "--port", node.port, "--json", "--no-reset"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["node_id"] == "wl-cikapundung-01"
    assert json.loads((node.flash / "config.json").read_text()) == cfg


@pytest.mark.parametrize("case", ["unknown_type", "pin_twice", "missing_node", "bad_file"])
def test_bad_input_is_refused_before_the_node_is_touched(tmp_path, node, case):
    (node.flash / "config.json").write_text('{"keep": "me"}')
    defaults = ["--defaults", str(EXAMPLES / "site-defaults.json")]
    if case == "unknown_type":
        args = ["--inventory", write_csv(tmp_path, GOOD.replace("air:bme280", "air:bme999")), "--node", "wl-01"] + defaults
        want = "sensors[1].type: unknown sensor type 'bme999'"
    elif case == "pin_twice":
        args = ["--inventory", write_csv(tmp_path, GOOD.replace("mount_height_cm=300", "mount_height_cm=300:trig=21")),
                "--node", "wl-01"] + defaults
        want = "sensors[1].sda: GPIO21 is already used by sensors[0].trig"
    elif case == "missing_node":
        args = ["--inventory", write_csv(tmp_path, GOOD), "--node", "wl-99"] + defaults
        want = "no row with node_id 'wl-99' (1 node: wl-01)"
    else:
        cfg = json.loads((EXAMPLES / "contract.json").read_text())
        del cfg["node_id"]
        p = tmp_path / "c.json"
        p.write_text(json.dumps(cfg))
        args = [str(p)]
        want = "c.json: node_id: required"
    msg = one_error(cli(["config", "push", "--port", node.port] + args))
    assert want in msg, msg
    assert node.wire["to_node"] == 0, "the node was written to"
    assert (node.flash / "config.json").read_text() == '{"keep": "me"}'
    assert sorted(p.name for p in node.flash.iterdir()) == ["config.json"]


def _contract_text_with(key_twice):
    """examples/contract.json's text with one key given a second time (JSON keeps the last)."""
    text = (EXAMPLES / "contract.json").read_text()
    if key_twice == "node_id":
        return text.replace('"node_id": "wl-cikapundung-01",', '"node_id": "wl-cikapundung-01", "node_id": "wl-x",', 1)
    return text.replace('"name": "water",', '"name": "water", "name": "w2",', 1)


@pytest.mark.parametrize("text, want", [
    ("[1, 2]", "expected a JSON object, not an array"),
    ("null", "expected a JSON object, not null"),
    ('"hello"', "expected a JSON object, not a string"),
    ("7", "expected a JSON object, not a number"),
    (_contract_text_with("node_id"), "node_id: the key is given more than once (keep one)"),
    (_contract_text_with("sensors"), "sensors[0].name: the key is given more than once (keep one)"),
    ("[" * 100000 + "]" * 100000, "not valid JSON (nested too deeply)"),
])
def test_a_file_that_is_not_one_object_with_each_key_once_is_refused_everywhere(tmp_path, node, text, want):
    (node.flash / "config.json").write_text('{"keep": "me"}')
    p = tmp_path / "c.json"
    p.write_text(text)
    want = "%s: %s" % (p, want)
    env = {"CITYNODE_WIFI_PASSWORD": "w", "CITYNODE_MQTT_PASSWORD": "m"}
    port = ["--port", node.port]
    for args in (["config", "validate", str(p)],
                 ["config", "push", str(p)] + port,
                 ["config", "diff", str(p)] + port,
                 ["config", "validate", write_csv(tmp_path, GOOD), "--defaults", str(p)],
                 ["config", "push", "--inventory", write_csv(tmp_path, GOOD), "--node", "wl-01", "--defaults", str(p)] + port):
        assert one_error(cli(args, env=env)) == want, args
        r = cli(args + ["--json"], env=env)
        assert r.exit_code == 1 and json.loads(r.stdout) == {"ok": False, "error": want, "exit": 1}, args
    assert node.wire["to_node"] == 0, "the node was written to"
    assert (node.flash / "config.json").read_text() == '{"keep": "me"}'


def test_push_arguments():
    assert "give either FILE or --inventory" in cli(["config", "push", "-p", "/dev/null"]).output
    assert cli(["config", "push", "-p", "/dev/null"]).exit_code == 2
    r = cli(["config", "push", "--inventory", "x.csv", "-p", "/dev/null"])
    assert r.exit_code == 2 and "--inventory needs --node ID" in r.output
    r = cli(["config", "push", "c.json", "--node", "x", "-p", "/dev/null"])
    assert r.exit_code == 2 and "--node and --defaults go with --inventory" in r.output


def test_show_without_config_on_the_node(node):
    msg = one_error(cli(["config", "show", "--port", node.port]))
    assert msg == "%s: the node has no config.json" % node.port


def test_inventory_example_is_what_the_docs_show():
    # docs/commands/config.md shows the first rows of examples/fleet.csv: they must stay the same
    text = (ROOT / "docs" / "commands" / "config.md").read_text()
    header, first = (EXAMPLES / "fleet.csv").read_text().splitlines()[:2]
    assert "```csv\n%s\n%s\n```" % (header, first) in text


# --- calibrations belong to the node (issue 13) -------------------------------------------------

SIM_ROW = "node_id,board,sensors,mqtt.host,mqtt.port,interval_s\n" \
          "cal-01,sim,water:hcsr04:mount_height_cm=300; gas:mq135:gas=nh3,127.0.0.1,1,30\n"


def calibrated(node, tmp_path):
    """The node's config as the inventory row made it, then calibrated on the node."""
    csv = tmp_path / "sim.csv"
    csv.write_text(SIM_ROW)
    cfg = configtool.from_inventory(str(csv), "cal-01", env={})
    cfg["sensors"][0]["offset_cm"] = 9.8
    cfg["sensors"][1]["r0_kohm"] = 13.37
    (node.flash / "config.json").write_text(json.dumps(cfg))
    return str(csv), cfg


def test_push_keeps_the_nodes_calibration_and_shows_the_diff(tmp_path, node):
    csv, cfg = calibrated(node, tmp_path)
    r = cli(["config", "push", "--inventory", csv, "--node", "cal-01", "--port", node.port, "--no-reset"])
    assert r.exit_code == 0, r.output
    on_node = json.loads((node.flash / "config.json").read_text())
    assert on_node["sensors"][0]["offset_cm"] == 9.8 and on_node["sensors"][1]["r0_kohm"] == 13.37
    assert "kept the node's calibration water.offset_cm = 9.8" in r.stdout
    assert "kept the node's calibration gas.r0_kohm = 13.37" in r.stdout
    assert "no change" in r.stdout

    # A changed row: the diff names what changes, and only that.
    Path(csv).write_text(SIM_ROW.replace(",30\n", ",45\n"))
    r = cli(["config", "push", "--inventory", csv, "--node", "cal-01", "--port", node.port, "--no-reset", "--json"])
    doc = json.loads(r.stdout)
    assert doc["changes"] == [{"key": "interval_s", "node": 30, "new": 45}], doc
    assert json.loads((node.flash / "config.json").read_text())["sensors"][0]["offset_cm"] == 9.8

    # --reset-calibration: the inventory's (none) replaces the node's.
    r = cli(["config", "push", "--inventory", csv, "--node", "cal-01", "--port", node.port, "--no-reset",
             "--reset-calibration"])
    assert r.exit_code == 0, r.output
    assert "- sensors[water].offset_cm: 9.8" in r.stdout and "- sensors[gas].r0_kohm: 13.37" in r.stdout
    on_node = json.loads((node.flash / "config.json").read_text())
    assert "offset_cm" not in on_node["sensors"][0] and "r0_kohm" not in on_node["sensors"][1]


def test_push_dry_run_changes_nothing_and_masks_secrets(tmp_path, node):
    cfg = json.loads((EXAMPLES / "contract.json").read_text())
    cfg["wifi"]["password"] = "old-wifi-secret"
    (node.flash / "config.json").write_text(json.dumps(cfg))
    before = (node.flash / "config.json").read_bytes()
    new = dict(cfg, interval_s=30, wifi=dict(cfg["wifi"], password="new-wifi-secret"))
    p = tmp_path / "c.json"
    p.write_text(json.dumps(new))
    r = cli(["config", "push", str(p), "--port", node.port, "--dry-run", "--no-reset"])
    assert r.exit_code == 0, r.output
    assert "~ interval_s: 60 -> 30" in r.stdout and "~ wifi.password: \"***\" -> \"*** (changed)\"" in r.stdout
    assert "secret" not in r.stdout and "dry run: 2 changes" in r.stdout
    assert (node.flash / "config.json").read_bytes() == before
    assert sorted(x.name for x in node.flash.iterdir()) == ["config.json"]


def test_set_sensor_key_rewrites_one_row_and_keeps_every_other_byte(tmp_path):
    p = tmp_path / "fleet.csv"
    text = ("node_id;board;site_name;sensors;notes\r\n"
            "wl-01;esp32-generic;\"Jl. A; B\";\"water:hcsr04:mount_height_cm=300:offset_cm=1,5; air:bme280\";x\r\n"
            "wl-02;esp32-generic;  spaced  ;water:a02yyuw:mount_height_cm=420;\"multi\r\nline\"\r\n")
    p.write_bytes(text.encode())
    cell = configtool.set_sensor_key(str(p), "wl-01", "water", "offset_cm", 9.8)
    assert cell == "water:hcsr04:mount_height_cm=300:offset_cm=9.8; air:bme280"
    want = text.replace("offset_cm=1,5", "offset_cm=9.8")
    assert p.read_bytes() == want.encode()
    configtool.set_sensor_key(str(p), "wl-02", "water", "offset_cm", -2.0)
    assert p.read_bytes() == want.replace("mount_height_cm=420", "mount_height_cm=420:offset_cm=-2.0").encode()
    assert not (tmp_path / "fleet.csv.tmp").exists()
    with pytest.raises(configtool.CheckFailed, match="no sensor 'gas'"):
        configtool.set_sensor_key(str(p), "wl-01", "gas", "r0_kohm", 10.0)
    with pytest.raises(configtool.CheckFailed, match="no row with node_id 'wl-09'"):
        configtool.set_sensor_key(str(p), "wl-09", "water", "offset_cm", 1.0)


# --- inventories that lost cells (issue 13) -----------------------------------------------------

ENV = {"CITYNODE_WIFI_PASSWORD": "w", "CITYNODE_MQTT_PASSWORD": "m"}


@pytest.mark.parametrize("header, row, problem", [
    (HEADER, 'wl-01,esp32-generic,"Jl. Siliwangi",-6.885,107.613\n',
     "line 2 (wl-01): the row ends before column sensors (5 of 9 cells)"),
    ("node_id,board,site_name,lat,lon\n", 'wl-01,esp32-generic,x,-6.885,107.613\n', "missing column sensors"),
    (HEADER, 'wl-01,esp32-generic,x,-6.885,107.613,,,30,\n',
     "line 2 (wl-01): sensors: empty (column sensors): a node that measures nothing"),
    (HEADER, 'wl-01,esp32-generic,x,-6.885,107.613, ; ,,30,\n',
     "line 2 (wl-01): sensors: empty (column sensors)"),
    (HEADER, GOOD.replace(",\n", ",,extra\n"), "line 2: 10 cells, the header has 9 columns"),
])
def test_inventory_with_lost_cells_is_refused(tmp_path, header, row, problem):
    csv = write_csv(tmp_path, GOOD.replace("wl-01", "wl-00"), row, header=header) if header == HEADER \
        else write_csv(tmp_path, row, header=header)
    msg = one_error(cli(["config", "validate", csv, "--defaults", str(EXAMPLES / "site-defaults.json")], env=ENV))
    assert problem.replace("line 2", "line 3") in msg or (header != HEADER and problem in msg), msg


def test_missing_secrets_are_refused_at_validate_time(tmp_path, node):
    csv = write_csv(tmp_path, GOOD)
    d = ["--defaults", str(EXAMPLES / "site-defaults.json")]
    msg = one_error(cli(["config", "validate", csv] + d, env={"CITYNODE_MQTT_PASSWORD": "m"}))
    assert msg == "%s line 2 (wl-01): wifi.password: missing secret (set CITYNODE_WIFI_PASSWORD)" % csv
    msg = one_error(cli(["config", "push", "--inventory", csv, "--node", "wl-01", "--port", node.port] + d,
                        env={"CITYNODE_WIFI_PASSWORD": "w"}))
    assert msg.endswith("mqtt.password: missing secret (set CITYNODE_MQTT_PASSWORD)")
    assert node.wire["to_node"] == 0
    # The defaults may name the variable a secret comes from.
    sd = json.loads((EXAMPLES / "site-defaults.json").read_text())
    sd["mqtt"]["password"] = "${BDG_MQTT_PASS}"
    dp = tmp_path / "site.json"
    dp.write_text(json.dumps(sd))
    msg = one_error(cli(["config", "validate", csv, "--defaults", str(dp)], env=ENV))
    assert msg.endswith("mqtt.password: missing secret (set BDG_MQTT_PASS)")
    r = cli(["config", "validate", csv, "--defaults", str(dp)], env=dict(ENV, BDG_MQTT_PASS="x"))
    assert r.exit_code == 0, r.output


# --- config new, config diff, hints (issue 13) --------------------------------------------------

@pytest.mark.parametrize("board, sensors", [("esp32-generic", ["hcsr04", "mq135", "bme280", "pms5003"]),
                                            ("esp32-s3", ["a02yyuw", "dht22"]), ("sim", ["mq7"])])
def test_config_new_writes_every_field_and_validates_once_filled(tmp_path, board, sensors):
    out = tmp_path / "node.json"
    args = ["config", "new", "--board", board, "-o", str(out)]
    for t in sensors:
        args += ["--sensor", t]
    r = cli(args)
    assert r.exit_code == 0, r.output
    cfg = json.loads(out.read_text())
    for k in ("node_id", "board", "site", "mqtt", "interval_s", "alarm_interval_s", "outbox_kb", "power",
              "ntp_host", "sensors", "alarms"):
        assert k in cfg, k
    assert cfg["board"] == board and [s["type"] for s in cfg["sensors"]] == sensors
    full = configtool.check(json.loads(out.read_text()) if board == "sim" else
                            configtool.apply_secrets(cfg, {"CITYNODE_WIFI_PASSWORD": "x"}))
    # every field of every sensor is written out, at its default
    for s, f in zip(cfg["sensors"], full["sensors"]):
        assert s == f, (s, f)
    assert cli(args).exit_code == 2 and "exists" in cli(args).output
    r = cli(["config", "new", "--board", board, "--sensor", "mq999"])
    assert r.exit_code == 1 and "unknown sensor type 'mq999'" in r.output


def test_misspelt_keys_and_a_gasless_mq_get_a_hint(tmp_path):
    cfg = configtool.starting_config("sim", ["hcsr04"])
    p = tmp_path / "c.json"
    cfg["intervl_s"] = 30
    p.write_text(json.dumps(cfg))
    assert one_error(cli(["config", "validate", str(p)])) == "intervl_s: unknown field; did you mean `interval_s`?"
    del cfg["intervl_s"]
    cfg["sensors"][0]["mount_heigth_cm"] = 250
    p.write_text(json.dumps(cfg))
    assert one_error(cli(["config", "validate", str(p)])).endswith(
        "sensors[0].mount_heigth_cm: unknown field; did you mean `mount_height_cm`?")
    cfg["sensors"] = [{"name": "gas", "type": "mq135"}]
    p.write_text(json.dumps(cfg))
    assert one_error(cli(["config", "validate", str(p)])) == \
        "sensors[0].gas: required (the gas mq135 measures: one of co2, nh3, co, alcohol, toluene, acetone)"


def test_config_diff_compares_a_file_with_the_node(tmp_path, node):
    cfg = configtool.starting_config("sim", ["hcsr04"])
    (node.flash / "config.json").write_text(json.dumps(cfg))
    p = tmp_path / "c.json"
    p.write_text(json.dumps(dict(cfg, interval_s=30)))
    r = cli(["config", "diff", str(p), "--port", node.port, "--no-reset"])
    assert r.exit_code == 0 and r.stdout.strip() == "~ interval_s: 60 -> 30", r.output
    p.write_text(json.dumps(cfg))
    r = cli(["config", "diff", str(p), "--port", node.port, "--no-reset", "--json"])
    assert json.loads(r.stdout) == {"same": True, "node_has_config": True, "changes": []}
    assert json.loads((node.flash / "config.json").read_text()) == cfg


def test_an_explicitly_empty_secret_is_not_missing(tmp_path):
    cfg = json.loads((EXAMPLES / "contract.json").read_text())
    cfg["wifi"]["password"] = ""          # an open network
    del cfg["mqtt"]["password"]
    p = tmp_path / "c.json"
    p.write_text(json.dumps(cfg))
    assert one_error(cli(["config", "validate", str(p)])) == \
        "mqtt.password: missing secret (set CITYNODE_MQTT_PASSWORD)"
    assert cli(["config", "validate", str(p)], env={"CITYNODE_MQTT_PASSWORD": "m"}).exit_code == 0

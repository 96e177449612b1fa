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
    r = cli(["config", "validate", str(EXAMPLES / "fleet.csv"), "--defaults", str(EXAMPLES / "site-defaults.json")])
    assert r.exit_code == 0, r.output
    assert "3 nodes OK" in r.stdout


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
    csv = write_csv(tmp_path, "wl-01,esp32-generic,hunter2\n", header="node_id,board,mqtt.password\n")
    assert "secrets do not belong in the inventory; use CITYNODE_MQTT_PASSWORD" in one_error(
        cli(["config", "validate", csv, "--defaults", str(EXAMPLES / "site-defaults.json")]))


def test_inventory_from_a_decimal_comma_spreadsheet(tmp_path):
    p = tmp_path / "fleet.csv"
    p.write_text("\ufeffnode_id;board;site_name;lat;lon;sensors;mqtt.prefix\n"
                 "wl-01;esp32-generic;Jl. Siliwangi;-6,885;107,613;water:hcsr04:mount_height_cm=312,5;kota\n",
                 encoding="utf-8")
    cfg = configtool.from_inventory(str(p), "wl-01", json.loads((EXAMPLES / "site-defaults.json").read_text()), env={})
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
        want = "no row with node_id 'wl-99' (1 nodes: wl-01)"
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

# Config validation on the unix port: a good config, and each kind of bad one with its message.
import json

import config

def board(name="esp32-generic"):
    # the virtual node's own board comes with the simulator, the others with the firmware
    d = "../../host_tools/citynode/sim/board/boards/" if name == "sim" else "../../boards/"
    with open(d + name + ".json") as f:
        return json.load(f)


def good():
    with open("../../examples/contract.json") as f:
        return json.load(f)


def refused(cfg, msg, b=None):
    try:
        config.validate(cfg, b or board())
    except config.ConfigError as e:
        assert str(e) == msg, "got %r, expected %r" % (str(e), msg)
        return
    raise AssertionError("accepted, expected %r" % msg)


def test_contract_example_is_valid_and_gets_defaults():
    c = config.validate(good(), board())
    assert c["node_id"] == "wl-cikapundung-01"
    assert c["mqtt"]["keepalive_s"] == 60 and c["outbox_kb"] == 64
    w = c["sensors"][0]
    assert w["offset_cm"] == 0.0 and w["max_range_cm"] == 400.0 and w["samples"] == 7
    pm = c["sensors"][1]
    assert pm["frames"] == 5
    assert c["power"]["deep_sleep"] is False


def test_pins_left_out_come_from_the_board():
    c = good()
    del c["sensors"][0]["trig"]
    del c["sensors"][0]["echo"]
    out = config.validate(c, board())
    assert out["sensors"][0]["trig"] == 5 and out["sensors"][0]["echo"] == 18


def test_input_is_not_changed():
    c = good()
    before = json.dumps(c)
    config.validate(c, board())
    assert json.dumps(c) == before


def test_node_id_pattern():
    for bad, msg in (("WL-1", "only a-z, 0-9 and - are allowed"), ("", "expected 1 to 32 characters"),
                     ("x" * 33, "expected 1 to 32 characters"), ("wl_1", "only a-z, 0-9 and - are allowed")):
        c = good()
        c["node_id"] = bad
        refused(c, "node_id: " + msg)
    c = good()
    c["node_id"] = 5
    refused(c, "node_id: expected a string")
    c = good()
    del c["node_id"]
    refused(c, "node_id: required")


def test_types_and_ranges():
    c = good()
    c["interval_s"] = "60"
    refused(c, "interval_s: expected a number")
    c = good()
    c["interval_s"] = -1
    refused(c, "interval_s: out of range 0..86400")
    c = good()
    c["mqtt"]["port"] = 70000
    refused(c, "mqtt.port: out of range 1..65535")
    c = good()
    c["mqtt"]["port"] = True
    refused(c, "mqtt.port: expected an integer")
    c = good()
    c["mqtt"]["tls"] = "no"
    refused(c, "mqtt.tls: expected true or false")
    c = good()
    c["site"]["lat"] = 91
    refused(c, "site.lat: out of range -90..90")
    c = good()
    c["mqtt"]["prefix"] = "city/#"
    refused(c, "mqtt.prefix: a topic prefix takes a-z, 0-9, - _ and inner /")


def test_unknown_fields_and_types():
    c = good()
    c["intervall_s"] = 5
    refused(c, "intervall_s: unknown field")
    c = good()
    c["sensors"][2]["type"] = "mq999"
    refused(c, "sensors[2].type: unknown sensor type 'mq999' (known: a02yyuw, bme280, dht22, hcsr04, mq135, mq2, mq7, pms5003, sds011)")
    c = good()
    c["sensors"][0]["colour"] = "red"
    refused(c, "sensors[0].colour: unknown field")
    c = good()
    c["sensors"][2]["gas"] = "ozone"
    refused(c, "sensors[2].gas: mq135 has no curve for 'ozone' (known: co2, nh3, co, alcohol, toluene, acetone)")


def test_pins_valid_for_the_board_and_not_used_twice():
    c = good()
    c["sensors"][1]["rx"] = "16"
    refused(c, "sensors[1].rx: expected an integer pin")
    c = good()
    c["sensors"][1]["rx"] = 18
    refused(c, "sensors[1].rx: GPIO18 is already used by sensors[0].echo")
    c = good()
    c["sensors"][0]["trig"] = 34
    refused(c, "sensors[0].trig: GPIO34 is input-only on esp32-generic")
    c = good()
    c["sensors"][0]["trig"] = 7
    refused(c, "sensors[0].trig: GPIO7 is not a usable pin on esp32-generic")
    c = good()
    c["sensors"][2]["adc"] = 25
    refused(c, "sensors[2].adc: GPIO25 has no usable ADC on esp32-generic (ADC1 only)")
    c = good()
    c["sensors"][1]["uart"] = 0
    refused(c, "sensors[1].uart: expected one of UART 1, 2")


def test_i2c_sensors_may_share_their_bus():
    c = good()
    c["sensors"].append({"name": "air2", "type": "bme280", "i2c": 0, "sda": 21, "scl": 22, "address": 0x77})
    config.validate(c, board())


def test_two_sensors_on_one_uart_are_refused():
    c = good()
    c["sensors"].append({"name": "pm_b", "type": "sds011", "uart": 2, "rx": 25, "tx": 26})
    refused(c, "sensors[4].uart: UART2 is already used by pm")


def test_duplicate_names_and_alarm_hysteresis():
    c = good()
    c["sensors"][1]["name"] = "water"
    refused(c, "sensors[1].name: duplicate sensor name 'water'")
    c = good()
    c["alarms"]["water_level_cm"]["clear"] = 150.0
    refused(c, "alarms.water_level_cm.clear: must be below high (hysteresis)")


def test_board_mismatch_and_wifi_required_on_esp32():
    c = good()
    c["board"] = "esp32-s3"
    refused(c, "board: expected 'esp32-generic' for this board profile, got 'esp32-s3'")
    c = good()
    del c["wifi"]
    refused(c, "wifi: required")
    c = good()
    c["board"] = "sim"
    del c["wifi"]
    config.validate(c, board("sim"))


def test_not_an_object():
    refused([], "config must be a JSON object")


def test_masked_hides_every_secret_and_keeps_the_rest():
    c = config.validate(good(), board())
    m = config.masked(c)
    assert m["wifi"]["password"] == "***" and m["mqtt"]["password"] == "***"
    assert m["mqtt"]["user"] == "wl-cikapundung-01"
    assert c["wifi"]["password"] == "change-me"


def test_set_key_allow_list():
    c = good()
    raw, v = config.set_key(c, "interval_s", 30, board())
    assert raw["interval_s"] == 30 and v["interval_s"] == 30 and c["interval_s"] == 60
    for key, val, msg in (("node_id", "x", "node_id: not a settable key"),
                          ("interval_s", -5, "interval_s: out of range 0..86400")):
        try:
            config.set_key(c, key, val, board())
        except config.ConfigError as e:
            assert str(e).startswith(msg), str(e)
        else:
            raise AssertionError("set_key accepted %s=%r" % (key, val))

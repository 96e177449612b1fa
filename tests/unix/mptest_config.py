# Config validation on the unix port: a good config, and each kind of bad one with its message.
import json

import cfgkeys
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
    refused(c, "interval_s: expected a number of seconds")
    c = good()
    c["interval_s"] = -1
    refused(c, "interval_s: out of range 1..86400 s")
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
    m = cfgkeys.masked(c)
    assert m["wifi"]["password"] == "***" and m["mqtt"]["password"] == "***"
    assert m["mqtt"]["user"] == "wl-cikapundung-01"
    assert c["wifi"]["password"] == "change-me"


def test_set_key_allow_list():
    c = good()
    raw, v = config.set_key(c, "interval_s", 30, board())
    assert raw["interval_s"] == 30 and v["interval_s"] == 30 and c["interval_s"] == 60
    for key, val, msg in (("node_id", "x", "node_id: not a settable key"),
                          ("interval_s", -5, "interval_s: at least 1 s")):
        try:
            config.set_key(c, key, val, board())
        except config.ConfigError as e:
            assert str(e).startswith(msg), str(e)
        else:
            raise AssertionError("set_key accepted %s=%r" % (key, val))


# --- issue 14: verified TLS, bounds, text, sizes ------------------------------------------------

def _tls(**m):
    c = good()
    for k in ("port", "tls", "ca"):
        c["mqtt"].pop(k)
    c["mqtt"].update(m)
    return c


def test_tls_needs_a_ca_a_pin_or_an_explicit_insecure():
    refused(_tls(tls=True), "mqtt.tls: the broker cannot be verified: give mqtt.ca (a CA file on the node) "
                            "or mqtt.pin_sha256, or set mqtt.tls_insecure: true to connect unverified")
    v = config.validate(_tls(tls=True, ca="ca.crt"), board())
    assert v["mqtt"]["port"] == 8883 and v["mqtt"]["ca"] == "ca.crt"   # TLS's port by default
    assert config.validate(_tls(tls=True, pin_sha256="ab" * 32), board())["mqtt"]["pin_sha256"] == "ab" * 32
    assert config.validate(_tls(tls=True, tls_insecure=True), board())["mqtt"]["tls_insecure"] is True
    assert config.validate(_tls(), board())["mqtt"]["port"] == 1883
    pin = "mqtt.pin_sha256: expected the SHA-256 of the broker's public key: 64 hex digits (lower case)"
    refused(_tls(tls=True, pin_sha256="AB" * 32), pin)
    refused(_tls(tls=True, pin_sha256="ab" * 31), pin)
    name = "mqtt.ca: expected a file name on the node's flash (a-z, 0-9, . _ -; up to 32)"
    refused(_tls(tls=True, ca="../etc/ca.crt"), name)
    refused(_tls(tls=True, ca=".ca"), name)
    refused(_tls(ca="ca.crt"), "mqtt.ca: needs \"tls\": true")
    refused(_tls(tls_insecure=True), "mqtt.tls_insecure: needs \"tls\": true")
    refused(_tls(tls=True, ca="ca.crt", cert="n.crt"), "mqtt.key: a client certificate needs both cert and key")
    v = config.validate(_tls(tls=True, ca="ca.crt", cert="n.crt", key="n.key"), board())
    assert v["mqtt"]["cert"] == "n.crt" and v["mqtt"]["key"] == "n.key"


def test_intervals_at_least_one_second_but_the_sim_board_may_run_flat_out():
    for k in ("interval_s", "alarm_interval_s"):
        for bad in (0, 0.5, 1e-400):
            c = good()
            c[k] = bad
            refused(c, k + ": out of range 1..86400 s")
    c = {"node_id": "s-1", "board": "sim", "mqtt": {"host": "127.0.0.1"}, "interval_s": 0, "alarm_interval_s": 0}
    v = config.validate(c, board("sim"))
    assert v["interval_s"] == 0
    # ... but never by command, not even there
    for k in ("interval_s", "alarm_interval_s"):
        try:
            config.set_key(c, k, 0, board("sim"))
        except config.ConfigError as e:
            assert str(e) == k + ": at least 1 s", str(e)
        else:
            raise AssertionError("set %s 0 accepted" % k)


def test_text_without_control_characters_or_lone_surrogates():
    for bad in ("a\x00b", "line\nbreak", "esc\x1b[2J", "del\x7f", "c1\x85"):
        c = good()
        c["site"]["name"] = bad
        refused(c, "site.name: control characters and lone surrogates are not allowed")
    c = good()
    c["site"]["name"] = json.loads('"half \\ud800 pair"')
    refused(c, "site.name: control characters and lone surrogates are not allowed")
    c = good()
    c["site"]["name"] = "Jl. Siliwangi – Cikapundung 🌊"
    assert config.validate(c, board())["site"]["name"] == c["site"]["name"]
    try:
        config.set_key(good(), "site.name", json.loads('"\\udfff"'), board())
    except config.ConfigError as e:
        assert str(e).startswith("site.name: control characters"), str(e)
    else:
        raise AssertionError("a lone surrogate was set")


def test_counts_are_capped_so_a_valid_config_stays_small():
    c = good()
    c["alarms"] = {"q%d_cm" % i: {"high": 2, "clear": 1} for i in range(config.MAX_ALARMS + 1)}
    refused(c, "alarms: at most %d alarms" % config.MAX_ALARMS)
    c["alarms"] = {"q%d_cm" % i: {"high": 2, "clear": 1} for i in range(config.MAX_ALARMS)}
    v = config.validate(c, board())
    assert len(json.dumps(v)) < cfgkeys.MAX_BYTES
    c = good()
    c["alarms"] = {"q" * 40 + "_cm": {"high": 2, "clear": 1}}
    refused(c, "alarms.%s: expected a quantity name such as water_level_cm" % ("q" * 40 + "_cm"))


def _largest():
    # Every list at its cap, every string at its longest: what the caps allow at most.
    return {"node_id": "n" * 32, "board": "sim",
            "site": {"name": "\u00e9" * 64, "lat": -6.123456789, "lon": 107.123456789},
            "wifi": {"ssid": "s" * 32, "password": "p" * 63},
            "mqtt": {"host": "h" * 253, "port": 8883, "tls": True, "ca": "c" * 32, "pin_sha256": "a" * 64,
                     "cert": "d" * 32, "key": "k" * 32, "user": "u" * 64, "password": "p" * 128,
                     "prefix": "p" * 64, "keepalive_s": 3600, "backoff_max_s": 3600, "ack_timeout_s": 10},
            "interval_s": 86400, "alarm_interval_s": 86400, "outbox_kb": 4096, "ntp_host": "t" * 253,
            "sensors": [{"name": "s%014d" % i, "type": "bme280", "i2c": 0, "address": 0x77} for i in range(16)],
            "alarms": {"q" * 29 + "_%02d" % i: {"high": 1e6, "clear": -1e6} for i in range(config.MAX_ALARMS)}}


def test_the_largest_valid_config_is_small_and_loads_in_a_few_kb():
    import gc
    b = board("sim")
    text = json.dumps(_largest())
    assert len(text) <= cfgkeys.MAX_BYTES, len(text)
    gc.collect()
    free = gc.mem_free()
    raw = json.loads(text)
    v = config.validate(raw, b)   # main.py holds both until the node starts
    gc.collect()
    held = free - gc.mem_free()
    assert v["sensors"][15]["name"] == "s00000000000015" and len(v["alarms"]) == config.MAX_ALARMS
    print("largest config: %d bytes of JSON, %d bytes of heap parsed and validated" % (len(text), held))
    assert held < 32 * 1024, held

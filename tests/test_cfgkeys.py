"""cfgkeys.py, the node's `set` without the validator: on a config validated at boot, changing one
key by its rule alone must accept exactly what `set` accepted when it validated the whole changed
config (the allow-list, the 1 s floor, then config.validate), and give the same config. Hypothesis
draws the keys and values, the examples' configs are the starting points."""
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from citynode import fw

ROOT = Path(__file__).resolve().parent.parent
cfgkeys, config = fw.cfgkeys, fw.config

STARTS = []
for _p in sorted((ROOT / "examples").glob("*.json")):
    _raw = json.loads(_p.read_text())
    try:
        config.validate(_raw, fw.board(_raw.get("board")))
    except (config.ConfigError, AttributeError):
        continue          # not a whole node's config (site-defaults.json, fleet rows)
    STARTS.append((_p.name, _raw, fw.board(_raw["board"])))

KEYS = sorted(cfgkeys.RULES) + ["node_id", "mqtt.port", "ota.pubkey", "site", "mqtt", "site.name.x",
                                "interval_s.x", "", "sensors", "power.deep_sleep"]
JSON = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats() | st.text(max_size=80),
                    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids, max_size=3),
                    max_leaves=6)
VALUES = (st.integers(-5, 90000) | st.floats(-1, 5000) | st.floats(-1, 1e6)
          | st.sampled_from([0, 1, 9, 10, 60.0, 0.5, 3600, 3601, 86400, 86401.0, 1e-400, float("nan"), float("inf"),
                             True, False, None, "60"])
          | st.text(max_size=70) | JSON)


def test_the_starting_configs_are_the_examples():
    assert {name for name, _, _ in STARTS} >= {"contract.json", "sim-water.json", "sim-every-sensor.json"}


@settings(max_examples=1000, deadline=None)
@given(start=st.sampled_from(STARTS), key=st.sampled_from(KEYS), value=VALUES)
def test_setting_a_key_by_its_rule_is_validating_the_whole(start, key, value):
    _, raw, board = start
    before = json.dumps(raw, sort_keys=True)
    cfg = config.validate(raw, board)
    # `set` as it was before cfgkeys.py: the allow-list and the floor, then the whole config
    full = None
    if key not in ("interval_s", "alarm_interval_s", "mqtt.keepalive_s", "site.name"):
        full = "%s: not a settable key" % key
    elif key.endswith("interval_s") and isinstance(value, (int, float)) and value < 1:
        full = "%s: at least 1 s" % key
    else:
        new = json.loads(json.dumps(raw))
        o = new
        for p in key.split(".")[:-1]:
            o = o.setdefault(p, {})
        o[key.split(".")[-1]] = value
        try:
            full = new, config.validate(new, board)
        except config.ConfigError as e:
            full = str(e)
    # What commands.py does on the file validated at boot: the key's rule, then the key put into
    # the config as written and into the validated one (copies here; the node's own in place).
    why = cfgkeys.check(key, value)
    if why:
        light = "%s: %s" % (key, why) if key else why
    else:
        light = cfgkeys.put(cfgkeys.copy(raw), key, value), cfgkeys.put(cfgkeys.copy(cfg), key, value)
    assert isinstance(light, str) == isinstance(full, str), (light, full)
    if isinstance(light, str):
        assert not key or light.startswith(key + ": ") and full.startswith(key + ": "), (light, full)  # named
    else:
        assert light[0] == full[0]                       # the config as written
        assert json.dumps(light[1], sort_keys=True) == json.dumps(full[1], sort_keys=True)  # as validated
        assert config.set_key(raw, key, value, board) == full   # and the host's set_key agrees
    assert json.dumps(raw, sort_keys=True) == before     # neither touched its input


@pytest.mark.parametrize("key, value, why", [
    ("interval_s", 0, "at least 1 s"),
    ("interval_s", 86401, "out of range 1..86400 s"),
    ("interval_s", "60", "expected a number of seconds"),
    ("alarm_interval_s", float("nan"), "expected a number of seconds"),
    ("mqtt.keepalive_s", 9, "out of range 10..3600"),
    ("mqtt.keepalive_s", 60.0, "expected an integer"),
    ("mqtt.keepalive_s", True, "expected an integer"),
    ("site.name", "x" * 65, "expected 0 to 64 characters"),
    ("site.name", "a\nb", "control characters and lone surrogates are not allowed"),
    ("site.name", 5, "expected a string"),
    ("ota.pubkey", "00" * 32, "not a settable key (settable: alarm_interval_s, interval_s, mqtt.keepalive_s, "
                              "site.name)"),
    ("interval_s", 30, None),
    ("site.name", "", None),
])
def test_each_rule_in_the_validators_words(key, value, why):
    assert cfgkeys.check(key, value) == why


def test_the_schema_takes_the_settable_bounds_from_cfgkeys():
    top = {f[0]: f for f in config._TOP}
    assert top["interval_s"][1:] == ("interval", 60, 1, 86400)
    assert {f[0]: f for f in config._MQTT}["keepalive_s"][3:] == cfgkeys.RULES["mqtt.keepalive_s"][1:]
    assert set(cfgkeys.SETTABLE) == set(cfgkeys.RULES)

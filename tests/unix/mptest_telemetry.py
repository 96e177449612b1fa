# Payloads exactly as docs/contract.md defines them, and the command parser's refusals.
import json

import commands
import telemetry
import node


def test_reading_fields_and_rounding():
    b = telemetry.reading(12, 431, 1764390000, 3600, {"water_level_cm": 123.4000001, "distance_cm": 176.6}, {})
    d = json.loads(b)
    assert d == {"boot": 12, "seq": 431, "ts": 1764390000, "up": 3600,
                 "values": {"water_level_cm": 123.4, "distance_cm": 176.6}}
    assert "errors" not in d  # left out when empty


def test_reading_numbers_are_short_and_valid_json():
    b = telemetry.reading(1, 2, 3, 4, {"pm10_ugm3": 81.9, "a_ugm3": 77.59999999999999, "b_cm": 50.0,
                                       "c_c": -3.456, "n_ppm": 7, "bad_x": float("nan")}, {})
    body = b.split(b'"values":{')[1].split(b"}")[0]
    assert sorted(body.split(b",")) == [b'"a_ugm3":77.6', b'"b_cm":50.0', b'"c_c":-3.46', b'"n_ppm":7',
                                        b'"pm10_ugm3":81.9'], b
    assert json.loads(b)["values"]["pm10_ugm3"] == 81.9


def test_reading_with_errors_null_ts_and_kept():
    d = json.loads(telemetry.reading(0, 0, None, 1, {}, {"pm": "timeout"}, {"water": 6}))
    assert d["ts"] is None and d["errors"] == {"pm": "timeout"} and d["kept"] == {"water": 6}
    assert d["values"] == {}


def test_event_status_reply():
    assert json.loads(telemetry.event(1, 2, 3, "water_high", {"value": 151.0})) == \
        {"boot": 1, "seq": 2, "ts": 3, "event": "water_high", "detail": {"value": 151.0}}
    assert telemetry.status(False) == b'{"state":"offline"}'
    assert json.loads(telemetry.status(True, "0.3.1", 12, "power")) == \
        {"state": "online", "fw": "0.3.1", "boot": 12, "reset": "power", "trial": False}
    assert json.loads(telemetry.status(True, "0.4.0", 13, "soft", True))["trial"] is True
    assert json.loads(telemetry.reply("c-17", True, {"up": 5})) == {"id": "c-17", "ok": True, "result": {"up": 5}}
    assert json.loads(telemetry.reply("c-17", False, error="unknown command")) == \
        {"id": "c-17", "ok": False, "error": "unknown command"}


def _refused(payload, reason, size=None):
    try:
        commands.parse(payload, size)
    except commands.CommandError as e:
        assert str(e) == reason, str(e)
        return e
    raise AssertionError("accepted %r" % payload)


def test_parse_cmd():
    assert commands.parse(b'{"id":"c-17","cmd":"sample","args":{}}') == ("c-17", "sample", {})
    assert commands.parse(b'{"id":"c-1","cmd":"ping"}') == ("c-1", "ping", {})
    _refused(b"{nope", "malformed JSON")
    _refused(b"[1]", "expected a JSON object")
    e = _refused(b'{"id":"c-2","cmd":"exec","args":{}}', "unknown command")
    assert e.id == "c-2"
    _refused(b'{"id":"c-3","cmd":"set","args":[1]}', "args must be an object")
    _refused(b"", "payload too large (2048 > 512 bytes)", 2048)
    _refused(b"\xff\xfe", "malformed JSON")


def test_alarm_event_names():
    assert node.alarm_event_name("water_level_cm", True) == "water_high"
    assert node.alarm_event_name("water_level_cm", False) == "water_normal"
    assert node.alarm_event_name("pm2_5_ugm3", True) == "pm2_5_high"

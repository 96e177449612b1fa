"""Hypothesis against the firmware on the MicroPython unix port (issue 14): the MQTT packet
reader fed whatever a hostile broker may send, and the command handler fed whatever a client
with write access to `cmd` may publish. Hypothesis makes the cases here, on CPython; the unix port
runs them in batches (tests/unix/fuzz_*.py) and says OK or BAD for each."""
import json
import os
import subprocess
import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
UNIX = ROOT / "tests" / "unix"
MICROPYTHON = str(Path(sys.executable).with_name("micropython"))
FUZZ = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def run_unix(script, lines, tmp):
    p = tmp / "cases.txt"
    p.write_text("".join(x + "\n" for x in lines))
    r = subprocess.run([MICROPYTHON, str(UNIX / script), str(p)], cwd=str(UNIX), capture_output=True, text=True,
                       timeout=300, env=dict(os.environ, CITYNODE_TMP=str(tmp)))
    out = r.stdout.splitlines()
    assert out and out[-1] == "DONE", (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    bad = [x for x in out if x.startswith("BAD")]
    assert not bad and len(out) == len(lines) + 1, (bad[:5], lines[:3])
    return out[:-1]


# --- the packet reader ---------------------------------------------------------------------------

def varlen(n):
    out = bytearray()
    while True:
        d, n = n & 0x7F, n >> 7
        out.append(d | (0x80 if n else 0))
        if not n:
            return bytes(out)


topics = st.one_of(st.text(min_size=0, max_size=20).map(lambda t: t.encode("utf-8", "surrogatepass")),
                   st.binary(max_size=20))


@st.composite
def publish(draw):
    qos = draw(st.integers(0, 3))
    first = 0x30 | qos << 1 | draw(st.integers(0, 1)) | draw(st.sampled_from([0, 8]))
    topic = draw(topics)
    body = len(topic).to_bytes(2, "big") + topic
    if qos:
        body += draw(st.integers(0, 65535)).to_bytes(2, "big")
    body += draw(st.binary(max_size=100))
    n = len(body) + draw(st.sampled_from([0, 0, 0, -1, 1, -3, 200]))
    return bytes([first]) + varlen(max(n, 0)) + body


@st.composite
def control(draw):
    first = draw(st.sampled_from([0x20, 0x40, 0x90, 0xD0, 0xB0, 0x00, 0xF0, 0x50, 0x62, 0x70])) | draw(st.integers(0, 15))
    body = draw(st.binary(max_size=8))
    n = len(body) + draw(st.sampled_from([0, 0, 1, -1]))
    return bytes([first & 0xFF]) + varlen(max(n, 0)) + body


packet = st.one_of(publish(), control(), st.binary(min_size=1, max_size=30),
                   st.just(b"\x30\xff\xff\xff\xff\x01"), st.just(b"\x30\xff\xff\xff\x7f"))


@st.composite
def session(draw):
    data = b"".join(draw(st.lists(packet, min_size=1, max_size=4)))
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(data) - 1)), max_size=3))))
    parts, last = [], 0
    for c in cuts + [len(data)]:
        if c > last:
            parts.append(data[last:c])
            last = c
    return "/".join(p.hex() for p in parts)


@FUZZ
@given(st.lists(session(), min_size=20, max_size=40))
def test_the_packet_reader_ends_a_session_on_any_bytes(tmp_path_factory, cases):
    out = run_unix("fuzz_reader.py", cases, tmp_path_factory.mktemp("fz"))
    assert all(x.split()[2] in ("eof", "malformed", "unexpected") for x in out), out[:5]


def test_the_reader_fuzz_harness_sees_a_broken_session(tmp_path):
    # The harness itself: a valid PUBLISH then EOF is "eof"; a bad UTF-8 topic is "malformed".
    ok = b"\x30\x05\x00\x01ahi".hex()
    bad = b"\x30\x05\x00\x02\xff\xfex".hex()
    assert run_unix("fuzz_reader.py", [ok, bad], tmp_path) == ["OK 0 eof", "OK 1 malformed"]


# --- the command handler -------------------------------------------------------------------------

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70), st.floats(allow_nan=False),
              st.text(max_size=30)),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=12)
keys = st.sampled_from(["interval_s", "alarm_interval_s", "mqtt.keepalive_s", "site.name", "node_id", "mqtt.host",
                        "mqtt.password", "wifi.ssid", "", "interval_s.x"])
values = st.one_of(json_values, st.sampled_from([0, -1, 0.5, 1e-400, 1, 86400, 86401, 1e308, "\ud800", "a\x00b",
                                                  "x" * 300, "Jl. Siliwangi"]))


@st.composite
def command(draw):
    name = draw(st.sampled_from(["ping", "sample", "get_config", "set", "reboot", "format", ""]) | st.text(max_size=8))
    args = draw(st.one_of(st.fixed_dictionaries({"key": keys, "value": values}), json_values))
    d = {"id": draw(st.one_of(st.text(max_size=12), st.integers(), st.none(), json_values)), "cmd": name, "args": args}
    text = json.dumps(d)
    if draw(st.booleans()):
        return text.encode("utf-8", "surrogatepass")
    return draw(st.sampled_from([text.encode("utf-8", "surrogatepass")[:40], text.encode() + b"x" * 600]))


message = st.tuples(st.one_of(command(), command(), st.binary(max_size=80)), st.booleans())


@FUZZ
@given(st.lists(st.lists(message, min_size=1, max_size=8), min_size=5, max_size=10))
def test_every_command_gets_one_answer_and_nothing_breaks_the_node(tmp_path_factory, batches):
    run_unix("fuzz_commands.py", [json.dumps([[p.hex(), r] for p, r in b]) for b in batches],
             tmp_path_factory.mktemp("fz"))


def test_the_command_fuzz_harness_counts_replies(tmp_path):
    ping = json.dumps({"id": "a", "cmd": "ping"}).encode().hex()
    boot = json.dumps({"id": "b", "cmd": "reboot"}).encode().hex()
    assert run_unix("fuzz_commands.py", [json.dumps([[ping, False], [boot, True], [ping, False]])], tmp_path) == ["OK 0"]

"""firmware/mqtt.py's packet functions on CPython: they must import there, and round-trip."""
import sys
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "firmware"))
import mqtt  # noqa: E402


@given(st.integers(0, 268435455))
def test_varlen_round_trip(n):
    b = mqtt.encode_varlen(n)
    assert 1 <= len(b) <= 4
    assert len(b) == 1 + (n > 127) + (n > 16383) + (n > 2097151)
    assert mqtt.decode_varlen(b + b"tail") == (n, len(b))


@given(st.binary(min_size=0, max_size=6))
def test_decode_varlen_never_reads_past_4_bytes(data):
    try:
        n, off = mqtt.decode_varlen(data)
    except mqtt.MQTTError as e:
        assert e.args[0] in ("malformed", "incomplete")
        return
    assert 1 <= off <= 4
    assert all(b & 0x80 for b in data[:off - 1]) and not data[off - 1] & 0x80
    assert n == sum((b & 0x7F) << 7 * i for i, b in enumerate(data[:off]))


@given(st.text(min_size=1, max_size=40), st.integers(0, 20000), st.integers(0, 1),
       st.booleans(), st.booleans(), st.integers(1, 65535))
def test_publish_header_decodes(topic, plen, qos, retain, dup, pid):
    t = topic.encode()
    buf = bytearray(len(t) + 9)
    n = mqtt.put_publish(buf, t, plen, qos, retain, dup, pid)
    assert buf[0] == 0x30 | dup << 3 | qos << 1 | retain
    rl, o = mqtt.decode_varlen(buf, 1)
    assert rl == n - o + plen                      # the header's rest plus the payload
    assert int.from_bytes(buf[o:o + 2], "big") == len(t) and bytes(buf[o + 2:o + 2 + len(t)]) == t
    if qos:
        assert int.from_bytes(buf[n - 2:n], "big") == pid


def test_password_needs_user():
    with pytest.raises(ValueError):
        mqtt.connect_packet("c", password="x")

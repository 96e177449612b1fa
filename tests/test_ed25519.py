"""Issue 15: firmware/ed25519.py verifies what RFC 8032 and the `cryptography` library sign, on
CPython and on the MicroPython unix port, and refuses every signature with a bit flipped."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives import serialization

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "firmware"))
import ed25519  # noqa: E402

MICROPYTHON = str(Path(sys.executable).with_name("micropython"))

# RFC 8032, section 7.1: TEST 1, 2 and 3 (public key, message, signature).
RFC = [
    ("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"),
    ("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"),
    ("fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", "af82",
     "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a"),
]
# RFC 8032's secret keys for the same tests: `cryptography` must sign them to the same bytes.
RFC_SECRETS = ["9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
               "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
               "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7"]

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PUB = KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@pytest.mark.parametrize("pub,msg,sig", RFC)
def test_rfc8032_vectors(pub, msg, sig):
    assert ed25519.verify(bytes.fromhex(pub), bytes.fromhex(msg), bytes.fromhex(sig))


def test_the_vectors_are_what_cryptography_signs():
    for (pub, msg, sig), sk in zip(RFC, RFC_SECRETS):
        k = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(sk))
        assert k.sign(bytes.fromhex(msg)).hex() == sig
        assert k.public_key().public_bytes(serialization.Encoding.Raw,
                                           serialization.PublicFormat.Raw).hex() == pub


def test_plain_sha512_matches_hashlib():
    import hashlib
    for n in (0, 1, 3, 111, 112, 127, 128, 129, 239, 240, 1000):
        data = bytes((i * 7 + n) & 0xFF for i in range(n))
        assert ed25519.sha512_plain(data) == hashlib.sha512(data).digest(), n


@settings(max_examples=60, deadline=None)
@given(msg=st.binary(max_size=200), bit=st.integers(min_value=0, max_value=64 * 8 + 32 * 8 - 1))
def test_cryptography_signatures_verify_and_any_flipped_bit_fails(msg, bit):
    sig = KEY.sign(msg)
    assert ed25519.verify(PUB, msg, sig)
    sig2, pub2 = bytearray(sig), bytearray(PUB)
    if bit < 512:
        sig2[bit // 8] ^= 1 << (bit % 8)
    else:
        pub2[(bit - 512) // 8] ^= 1 << (bit % 8)
    assert not ed25519.verify(bytes(pub2), msg, bytes(sig2))


@settings(max_examples=40, deadline=None)
@given(msg=st.binary(min_size=1, max_size=200), data=st.data())
def test_a_flipped_bit_in_the_message_fails(msg, data):
    sig = KEY.sign(msg)
    bit = data.draw(st.integers(min_value=0, max_value=len(msg) * 8 - 1))
    m2 = bytearray(msg)
    m2[bit // 8] ^= 1 << (bit % 8)
    assert not ed25519.verify(PUB, bytes(m2), sig)


def test_malformed_input_is_false_not_an_exception():
    sig = KEY.sign(b"x")
    assert not ed25519.verify(PUB[:31], b"x", sig)
    assert not ed25519.verify(PUB, b"x", sig[:63])
    assert not ed25519.verify(b"\xff" * 32, b"x", sig)           # y >= p: not a point
    s_big = sig[:32] + (int.from_bytes(sig[32:], "little") + ed25519._L).to_bytes(32, "little")
    assert not ed25519.verify(PUB, b"x", s_big)                 # S + L: malleated, refused


def test_micropython_verifies_the_same_and_refuses_the_same(tmp_path):
    cases = [[p, m, s, True] for p, m, s in RFC]
    for i in range(8):
        msg = bytes((i * 31 + j) & 0xFF for j in range(i * 13))
        sig = bytearray(KEY.sign(msg))
        cases.append([PUB.hex(), msg.hex(), sig.hex(), True])
        sig[(i * 9) % 64] ^= 1 << (i % 8)
        cases.append([PUB.hex(), msg.hex(), sig.hex(), False])
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    script = ("import sys,json,binascii\nsys.path.insert(0,%r)\nimport ed25519\n"
              "u=binascii.unhexlify\nfor p,m,s,ok in json.load(open(%r)):\n"
              " print(int(ed25519.verify(u(p),u(m),u(s))==ok))\n"
              "print(binascii.hexlify(ed25519.sha512(b'abc')).decode())\n"
              % (str(ROOT / "firmware"), str(tmp_path / "cases.json")))
    p = subprocess.run([MICROPYTHON, "-c", script], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.split()
    assert lines[:-1] == ["1"] * len(cases)
    import hashlib
    assert lines[-1] == hashlib.sha512(b"abc").hexdigest()

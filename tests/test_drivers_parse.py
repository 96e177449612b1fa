"""The drivers' pure functions on CPython: datasheet frames, bad frames, fuzzing, round trips,
the BME280 compensation against the datasheet's worked example and an independent
implementation of its floating-point formulas, and the ultrasonic burst statistics."""
import struct
import sys
from array import array
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "firmware"))

import config  # noqa: E402
from drivers import _stats, _uart, a02yyuw, bme280, hcsr04, mq, pms5003, sds011  # noqa: E402

FAST = settings(max_examples=150, deadline=None)


# --- PMS5003 -------------------------------------------------------------------------------

# Built from the datasheet's layout ("Transport protocol - active mode"):
#   42 4D | frame length 00 1C (= 2x13 + 2 = 28)
#   data1-3  CF=1 PM1.0 / PM2.5 / PM10:     00 0C  00 12  00 15   (12, 18, 21)
#   data4-6  atmospheric PM1.0 / 2.5 / 10:  00 0B  00 11  00 15   (11, 17, 21)
#   data7-12 counts > 0.3 / 0.5 / 1.0 / 2.5 / 5 / 10 µm per 0.1 L: 03 90  01 1C  00 40  00 0A  00 04  00 02
#   data13   reserved: 97 00
#   check    sum of bytes 0-29: 171 (header) + 100 (PM words) + 256 (counts) + 151 (0x97) = 678 = 02 A6
PMS = bytes.fromhex("424d001c" "000c00120015" "000b00110015" "0390011c0040000a00040002" "9700" "02a6")


def pms_build(words):
    # An independent builder: struct, not the driver's code.
    body = b"\x42\x4d" + struct.pack(">H13H", 28, *words)
    return body + struct.pack(">H", sum(body) & 0xFFFF)


def test_pms5003_datasheet_frame():
    assert pms5003.parse(PMS) == {"cf1_pm1_0": 12, "cf1_pm2_5": 18, "cf1_pm10": 21,
                                  "pm1_0": 11, "pm2_5": 17, "pm10": 21}
    assert pms5003.parse(PMS + b"\x42\x4d") == pms5003.parse(PMS)    # bytes after 32 ignored


@pytest.mark.parametrize("mutate, why", [
    (lambda f: b"\x42\x4e" + f[2:], "bad header"),
    (lambda f: b"\x00" + f[1:], "bad header"),
    (lambda f: f[:3] + b"\x14" + f[4:], "bad length"),
    (lambda f: f[:12] + bytes([f[12] ^ 1]) + f[13:], "bad checksum"),
    (lambda f: f[:30] + b"\x02\xa7", "bad checksum"),
    (lambda f: f[:31], "short frame"),
    (lambda f: b"", "short frame"),
])
def test_pms5003_bad_frames(mutate, why):
    with pytest.raises(ValueError, match="pms5003: " + why):
        pms5003.parse(mutate(PMS))


def test_pms5003_commands_match_appendix_b():
    # 42 4D CMD DATAH DATAL LRCH LRCL, LRC = sum of the first five bytes
    assert bytes(pms5003.command(0xE1, 0)) == bytes.fromhex("424de100000170")   # passive mode
    assert bytes(pms5003.command(0xE2, 0)) == bytes.fromhex("424de200000171")   # read (passive)
    assert bytes(pms5003.command(0xE4, 0)) == bytes.fromhex("424de400000173")   # sleep
    assert bytes(pms5003.command(0xE4, 1)) == bytes.fromhex("424de400010174")   # wake-up


@FAST
@given(st.lists(st.integers(0, 0xFFFF), min_size=13, max_size=13))
def test_pms5003_round_trip(words):
    d = pms5003.parse(pms_build(words))
    assert (d["cf1_pm1_0"], d["cf1_pm2_5"], d["cf1_pm10"], d["pm1_0"], d["pm2_5"], d["pm10"]) == tuple(words[:6])


# --- SDS011 --------------------------------------------------------------------------------

# The protocol document's own example: AA C0 D4 04 3A 0A A1 60 1D AB
#   PM2.5 = 0x04D4 = 1236 -> 123.6; PM10 = 0x0A3A = 2618 -> 261.8
#   check = D4+04+3A+0A+A1+60 = 0x21D -> 1D
SDS = bytes.fromhex("aac0d4043a0aa1601dab")


def test_sds011_datasheet_frame():
    assert sds011.parse(SDS) == {"pm2_5": 123.6, "pm10": 261.8}


@pytest.mark.parametrize("frame, why", [
    (b"\xab" + SDS[1:], "bad header"),
    (SDS[:1] + b"\xc5" + SDS[2:], "bad header"),        # a command reply, not data
    (SDS[:9] + b"\xaa", "bad tail"),
    (SDS[:8] + b"\x1e" + SDS[9:], "bad checksum"),
    (SDS[:9], "short frame"),
])
def test_sds011_bad_frames(frame, why):
    with pytest.raises(ValueError, match="sds011: " + why):
        sds011.parse(frame)


def test_sds011_commands_match_the_protocol():
    # Protocol V1.3 examples: data1..13, device id FF FF, check = low byte of data1..15
    tail = bytes(10) + b"\xff\xff"
    assert bytes(sds011.command(6, 1, 0)) == b"\xaa\xb4\x06\x01\x00" + tail + b"\x05\xab"   # sleep
    assert bytes(sds011.command(6, 1, 1)) == b"\xaa\xb4\x06\x01\x01" + tail + b"\x06\xab"   # work
    assert bytes(sds011.command(2, 1, 1)) == b"\xaa\xb4\x02\x01\x01" + tail + b"\x02\xab"   # query mode
    assert bytes(sds011.command(4)) == b"\xaa\xb4\x04\x00\x00" + tail + b"\x02\xab"         # query data


@FAST
@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.binary(min_size=2, max_size=2))
def test_sds011_round_trip(pm25, pm10, dev):
    data = struct.pack("<HH", pm25, pm10) + dev
    frame = b"\xaa\xc0" + data + bytes([sum(data) & 0xFF, 0xAB])
    assert sds011.parse(frame) == {"pm2_5": pm25 / 10, "pm10": pm10 / 10}


# --- A02YYUW -------------------------------------------------------------------------------

def test_a02yyuw_datasheet_frame():
    # FF 07 A1 A7: 0x07A1 = 1953 mm; check = (FF + 07 + A1) & FF = 0x1A7 & FF = A7
    assert a02yyuw.parse(b"\xff\x07\xa1\xa7") == 1953
    with pytest.raises(ValueError, match="a02yyuw: bad checksum"):
        a02yyuw.parse(b"\xff\x07\xa1\xa8")
    with pytest.raises(ValueError, match="a02yyuw: bad header"):
        a02yyuw.parse(b"\xfe\x07\xa1\xa6")
    with pytest.raises(ValueError, match="a02yyuw: short frame"):
        a02yyuw.parse(b"\xff\x07\xa1")


@FAST
@given(st.integers(0, 0xFFFF))
def test_a02yyuw_round_trip(mm):
    h, l = mm >> 8, mm & 0xFF
    assert a02yyuw.parse(bytes([0xFF, h, l, (0xFF + h + l) & 0xFF])) == mm


# --- every parser: random bytes raise nothing but ValueError --------------------------------

@FAST
@given(st.binary(max_size=40), st.sampled_from([pms5003.parse, sds011.parse, a02yyuw.parse]))
def test_random_bytes_only_value_error(data, parse):
    try:
        parse(data)
    except ValueError:
        pass


@FAST
@given(st.binary(max_size=40))
def test_random_bytearray_and_memoryview(data):
    for parse in (pms5003.parse, sds011.parse, a02yyuw.parse):
        for obj in (bytearray(data), memoryview(data)):
            try:
                parse(obj)
            except ValueError:
                pass


# --- re-synchronisation (the Link the serial drivers share; pure, so it runs here too) -----

class ChunkUart:
    def __init__(self, data, chunks):
        self.data, self.chunks, self.i, self.k = bytes(data), chunks or [1], 0, 0

    def readinto(self, buf):
        n = min(len(buf), self.chunks[self.k % len(self.chunks)], len(self.data) - self.i)
        self.k += 1
        if n <= 0:
            return None
        buf[:n] = self.data[self.i:self.i + n]
        self.i += n
        return n


def frames_from(mod, size, data, chunks):
    link = _uart.Link(ChunkUart(data, chunks), size, mod._head)
    out = []
    for _ in range(len(data) + 2):
        if link.poll():
            if mod.check(link.buf):
                link.resync()
            else:
                out.append(bytes(link.buf))
                link.clear()
    return out


@FAST
@given(st.binary(max_size=64), st.lists(st.integers(0, 0xFFFF), min_size=13, max_size=13),
       st.lists(st.integers(1, 40), min_size=1, max_size=5))
def test_pms5003_resyncs_after_garbage(garbage, words, chunks):
    frame = pms_build(words)
    got = frames_from(pms5003, 32, garbage + frame + frame[:7] + frame, chunks)
    assert got[-2:] == [frame, frame]


@FAST
@given(st.binary(max_size=40), st.integers(0, 0xFFFF), st.lists(st.integers(1, 12), min_size=1, max_size=5))
def test_sds011_resyncs_after_garbage(garbage, pm, chunks):
    data = struct.pack("<HH", pm, pm) + b"\xa1\x60"
    frame = b"\xaa\xc0" + data + bytes([sum(data) & 0xFF, 0xAB])
    got = frames_from(sds011, 10, garbage + frame + frame[:4] + frame, chunks)
    assert got[-2:] == [frame, frame]


@FAST
@given(st.binary(max_size=16), st.integers(0, 0xFFFF), st.lists(st.integers(1, 5), min_size=1, max_size=5))
def test_a02yyuw_resyncs_after_garbage(garbage, mm, chunks):
    h, l = mm >> 8, mm & 0xFF
    frame = bytes([0xFF, h, l, (0xFF + h + l) & 0xFF])
    # Whatever the garbage, the last two of three back-to-back frames come out whole.
    got = frames_from(a02yyuw, 4, garbage + frame * 3, chunks)
    assert got[-2:] == [frame, frame]


# --- HC-SR04 -------------------------------------------------------------------------------

def test_hcsr04_speed_of_sound():
    assert round(hcsr04.speed_of_sound(20.0), 1) == 343.4          # 331.3 + 0.606 * 20 = 343.42
    assert hcsr04.speed_of_sound(0.0) == 331.3
    assert hcsr04.echo_to_cm(5824) == pytest.approx(100.0, abs=0.01)   # 5824 µs * 343.42 m/s / 2
    assert hcsr04.echo_to_cm(5824, 35.0) > hcsr04.echo_to_cm(5824, 0.0) * 1.06


@FAST
@given(st.floats(1, 1000), st.floats(-40, 85))
def test_hcsr04_echo_round_trip(cm, t):
    assert hcsr04.echo_to_cm(hcsr04.cm_to_echo(cm, t), t) == pytest.approx(cm)


# --- MQ ------------------------------------------------------------------------------------

def test_mq_ppm_and_rs():
    assert mq.ppm(1.0, 110.47, -2.862) == 110.47
    assert mq.ppm(2.0, 100.0, -2.0) == 25.0
    assert mq.rs_kohm(2.5, 5.0, 10.0) == 10.0          # half of Vc: Rs = RL
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError):
            mq.ppm(bad, 1.0, -1.0)
    for v in (0.0, 5.0, 6.0):
        with pytest.raises(ValueError):
            mq.rs_kohm(v, 5.0, 10.0)


def test_mq_curves_match_config_gases():
    mq_types = sorted(t for t, (mod, _) in config.SENSORS.items() if mod == "mq")
    assert sorted(mq.CURVES) == mq_types == sorted(config.MQ_GASES) == sorted(mq.CLEAN_AIR)
    for t in mq_types:
        assert set(mq.CURVES[t]) == set(config.MQ_GASES[t]), t
        for a, b in mq.CURVES[t].values():
            assert a > 0 and b < 0          # every curve falls: more gas, lower Rs


def test_mq2_smoke_curve_passes_its_source_point():
    a, b = mq.CURVES["mq2"]["smoke"]
    assert mq.ppm(3.39, a, b) == pytest.approx(200, rel=0.01)


# --- BME280 --------------------------------------------------------------------------------

# The BMP280 datasheet's worked example (section 3.12; the BME280 uses the same T and P
# formulas): dig_T1..T3, dig_P1..P9, adc_T = 519888, adc_P = 415148 -> t_fine 128422,
# T = 25.08 °C, p = 100653.27 Pa (double precision). H words: typical values of a real chip.
EX = (27504, 26435, -1000, 36477, -10685, 3024, 2855, 140, -7, 15500, -14600, 6000, 75, 362, 0, 324, 50, 30)


def double_formulas(adc_t, adc_p, adc_h, c):
    # The datasheet's "compensation formulas in double precision floating point" (8.1),
    # written here independently of the driver's integer code.
    T1, T2, T3, P1, P2, P3, P4, P5, P6, P7, P8, P9, H1, H2, H3, H4, H5, H6 = c
    v1 = (adc_t / 16384.0 - T1 / 1024.0) * T2
    v2 = (adc_t / 131072.0 - T1 / 8192.0) ** 2 * T3
    t_fine = v1 + v2
    v1 = t_fine / 2.0 - 64000.0
    v2 = v1 * v1 * P6 / 32768.0 + v1 * P5 * 2.0
    v2 = v2 / 4.0 + P4 * 65536.0
    v1 = (P3 * v1 * v1 / 524288.0 + P2 * v1) / 524288.0
    v1 = (1.0 + v1 / 32768.0) * P1
    p = (1048576.0 - adc_p - v2 / 4096.0) * 6250.0 / v1
    p = p + (P9 * p * p / 2147483648.0 + p * P8 / 32768.0 + P7) / 16.0
    h = t_fine - 76800.0
    h = (adc_h - (H4 * 64.0 + H5 / 16384.0 * h)) * (H2 / 65536.0 * (1.0 + H6 / 67108864.0 * h * (1.0 + H3 / 67108864.0 * h)))
    h = h * (1.0 - H1 * h / 524288.0)
    return t_fine / 5120.0, p / 100, min(100.0, max(0.0, h))


def test_bme280_datasheet_example():
    t, p, h = bme280.compensate(519888, 415148, 30000, EX)
    assert t == 25.08
    assert p == pytest.approx(1006.5327, abs=0.0005)       # 100653.27 Pa
    assert bme280.compensate(519888, 415148, None, EX)[2] is None


@FAST
@given(st.integers(380000, 620000), st.integers(250000, 480000), st.integers(15000, 50000))
def test_bme280_integer_matches_double_formulas(adc_t, adc_p, adc_h):
    t, p, h = bme280.compensate(adc_t, adc_p, adc_h, EX)
    dt, dp, dh = double_formulas(adc_t, adc_p, adc_h, EX)
    assert abs(t - dt) <= 0.01
    assert abs(p - dp) <= 0.01          # hPa: 1 Pa
    assert abs(h - dh) <= 0.02


def test_bme280_calibration_registers():
    # Table 16: 0x88.. little-endian dig_T1 (u16), T2, T3 (s16), dig_P1 (u16), P2..P9 (s16),
    # 0xA0 unused, 0xA1 dig_H1; 0xE1 dig_H2 (s16), 0xE3 dig_H3, 0xE4/0xE5[3:0] dig_H4 (s12),
    # 0xE5[7:4]/0xE6 dig_H5 (s12), 0xE7 dig_H6 (s8).
    tp = struct.pack("<Hhh H8h", *EX[:12]) + b"\x00" + bytes([EX[12]])
    h4, h5 = -300, -7                                      # negative 12-bit values too
    e1 = struct.pack("<h", 362) + bytes([0, (h4 >> 4) & 0xFF, (h4 & 0xF) | ((h5 & 0xF) << 4), (h5 >> 4) & 0xFF]) + struct.pack("b", -30)
    assert bme280.calib_from(tp, e1) == EX[:13] + (362, 0, h4, h5, -30)
    # data 0xF7..0xFE: press msb lsb xlsb[7:4], temp msb lsb xlsb[7:4], hum msb lsb
    d = bytes([0x65, 0x5A, 0xC0, 0x7E, 0xED, 0x00, 0x75, 0x30])
    assert bme280.raw_from(d) == (519888, 415148, 30000)


def test_bme280_bad_calibration_is_value_error():
    with pytest.raises(ValueError):
        bme280.compensate(519888, 415148, 30000, (0,) * 18)


# --- burst statistics ----------------------------------------------------------------------

def test_stats_median_and_reject_spikes():
    a = array("i", [5824, 5830, 1500, 5818, 9000, 5826, 5822, 0])
    assert _stats.median(array("i", a), 7) == 5824
    assert _stats.median(array("i", [1, 2, 3, 10]), 4) == 2.5
    kept = _stats.reject(a, 7, 3.0, 10, array("i", [0] * 8))
    assert kept == 5 and sorted(a[:kept]) == [5818, 5822, 5824, 5826, 5830]
    assert _stats.mean(a, kept) == 5824.0


def test_stats_reject_floor_when_mad_is_zero():
    a = array("i", [100, 100, 100, 101, 100, 140, 100])
    kept = _stats.reject(a, 7, 3.0, 2, array("i", [0] * 7))   # MAD = 0: the floor keeps 101
    assert sorted(a[:kept]) == [100, 100, 100, 100, 100, 101]


@FAST
@given(st.lists(st.integers(0, 60000), min_size=1, max_size=31), st.floats(0.5, 20), st.integers(0, 100))
def test_stats_reject_properties(xs, k, floor):
    a = array("i", xs)
    kept = _stats.reject(a, len(xs), k, floor, array("i", [0] * len(xs)))
    med = sorted(xs)[(len(xs) - 1) // 2] / 2 + sorted(xs)[len(xs) // 2] / 2
    mad = sorted(abs(x - med) for x in xs)
    mad = mad[(len(xs) - 1) // 2] / 2 + mad[len(xs) // 2] / 2
    lim = max(k * mad, floor)
    want = sorted(x for x in xs if abs(x - med) <= lim)
    assert sorted(a[:kept]) == want
    if k >= 1:
        assert kept >= (len(xs) + 1) // 2        # at least half lie within one MAD


def test_stats_trimmed_mean_and_level():
    a = array("H", [8, 10, 80, 9])
    assert _stats.trimmed_mean(a, 0, 1, 4) == 9.5
    assert _stats.trimmed_mean(a, 0, 1, 2) == 9.0
    assert _stats.trimmed_mean(a, 1, 2, 2) == 9.5               # every 2nd from index 1: 10, 9
    assert _stats.level_cm(300.0, 176.6, 0.0) == pytest.approx(123.4)
    assert _stats.level_cm(300.0, 320.0, 0.0) == 0.0
    assert _stats.level_cm(300.0, 200.0, -5.0) == 95.0

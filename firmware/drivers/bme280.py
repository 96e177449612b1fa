"""Bosch BME280 temperature, pressure and humidity on I2C, in forced mode.

Forced mode with x1 oversampling and the filter off: the datasheet's recommended setting for
weather monitoring (BST-BME280-DS002, 3.5.1); one conversion per reading, then the chip sleeps
(0.1 µA), and it does not heat itself the way a continuously running sensor does.
Registers: id 0xD0 (= 0x60), reset 0xE0, ctrl_hum 0xF2, status 0xF3 (bit 3 measuring),
ctrl_meas 0xF4, config 0xF5, data 0xF7-0xFE (press msb/lsb/xlsb, temp msb/lsb/xlsb, hum msb/lsb),
calibration 0x88-0xA1 and 0xE1-0xE7 (table 16). Compensation: the datasheet's integer formulas
(section 8.2: BME280_compensate_T_int32, _P_int64, bme280_compensate_H_int32), exact on a port
whose floats are single precision.

Known lies and what this driver does: a BMP280 (id 0x58, no humidity) sold as a BME280 is
`not_found`, not a humidity of 0; a conversion that was skipped reads 0x80000 and is `timeout`;
values outside the chip's operating range (-40..85 °C, 300..1100 hPa) are `out_of_range`.
An absent chip NACKs (OSError ENODEV) -> `not_found`, and the chip id and calibration are read
again on the next reading, so a replaced sensor is picked up.

Blocking: each I2C transfer at 100 kHz is under 1 ms (calibration once: about 4 ms); the
conversion (9.3 ms at most, datasheet 9.1) is awaited. A reading takes about 12 ms.

    s = bme280.Sensor(conf, hw)        # conf: {"i2c": 0, "sda": 21, "scl": 22, "address": 0x76}
    await s.read(values)               # values["air_temp_c"], values["pressure_hpa"], values["rh_pct"]
    bme280.compensate(519888, 415148, 30000, calib)   # pure: (25.08, 1006.53, ...)
"""
import asyncio
import struct

from drivers import SensorError

try:
    from micropython import const
except ImportError:
    const = lambda x: x  # noqa: E731

_CHIP_ID = const(0x60)
_REG_CALIB_TP = const(0x88)    # 26 bytes: dig_T1..dig_P9, 0xA0 unused, dig_H1 at 0xA1
_REG_ID = const(0xD0)
_REG_CALIB_H = const(0xE1)     # 7 bytes: dig_H2..dig_H6
_REG_CTRL_HUM = const(0xF2)
_REG_STATUS = const(0xF3)
_REG_CTRL_MEAS = const(0xF4)
_REG_CONFIG = const(0xF5)
_REG_DATA = const(0xF7)
_OSRS_H1 = const(0x01)
_MEAS_FORCED_X1 = const(0x25)  # osrs_t = x1 (001), osrs_p = x1 (001), mode = forced (01)
_MEASURING = const(0x08)
_SKIPPED = const(0x80000)      # data register value of a skipped conversion
_CONV_MS = const(10)


def calib_from(tp, h):
    """The 18 calibration words (dig_T1..T3, dig_P1..P9, dig_H1..H6) from the 26 bytes at 0x88
    and the 7 bytes at 0xE1 (datasheet table 16: little-endian words; dig_H4/H5 are 12-bit
    values sharing 0xE5)."""
    h4 = (h[3] << 4) | (h[4] & 0x0F)
    h5 = (h[5] << 4) | (h[4] >> 4)
    return (struct.unpack_from("<HhhHhhhhhhhh", tp) + (tp[25],) + struct.unpack_from("<hB", h)
            + (h4 - 4096 if h4 > 2047 else h4, h5 - 4096 if h5 > 2047 else h5) + struct.unpack_from("b", h, 6))


def raw_from(d):
    """(raw_t, raw_p, raw_h) from the 8 data bytes at 0xF7 (20, 20 and 16 bits)."""
    return ((d[3] << 12) | (d[4] << 4) | (d[5] >> 4),
            (d[0] << 12) | (d[1] << 4) | (d[2] >> 4),
            (d[6] << 8) | d[7])


def _tdiv(a, b):
    # C's integer division truncates towards zero; Python's // floors.
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def compensate(raw_t, raw_p, raw_h, calib):
    """(temp_c, pressure_hpa, rh_pct) from raw ADC values by the datasheet's integer formulas.
    raw_h may be None (a BMP280 has no humidity); rh_pct is then None. ValueError for a
    calibration that makes the pressure formula divide by zero (an all-zero calibration area)."""
    T1, T2, T3, P1, P2, P3, P4, P5, P6, P7, P8, P9, H1, H2, H3, H4, H5, H6 = calib
    # BME280_compensate_T_int32: t_fine carries the temperature into P and H.
    v1 = (((raw_t >> 3) - (T1 << 1)) * T2) >> 11
    d = (raw_t >> 4) - T1
    v2 = (((d * d) >> 12) * T3) >> 14
    t_fine = v1 + v2
    t = (t_fine * 5 + 128) >> 8                          # 0.01 °C
    # BME280_compensate_P_int64: Pa in Q24.8.
    v1 = t_fine - 128000
    v2 = v1 * v1 * P6
    v2 = v2 + ((v1 * P5) << 17)
    v2 = v2 + (P4 << 35)
    v1 = ((v1 * v1 * P3) >> 8) + ((v1 * P2) << 12)
    v1 = (((1 << 47) + v1) * P1) >> 33
    if v1 == 0:
        raise ValueError("bme280: bad calibration (division by zero)")
    p = 1048576 - raw_p
    p = _tdiv(((p << 31) - v2) * 3125, v1)
    v1 = (P9 * (p >> 13) * (p >> 13)) >> 25
    v2 = (P8 * p) >> 19
    p = ((p + v1 + v2) >> 8) + (P7 << 4)
    if raw_h is None:
        return t / 100, p / 25600, None
    # bme280_compensate_H_int32: %RH in Q22.10.
    x = t_fine - 76800
    x = ((((raw_h << 14) - (H4 << 20) - (H5 * x)) + 16384) >> 15) * \
        (((((((x * H6) >> 10) * (((x * H3) >> 11) + 32768)) >> 10) + 2097152) * H2 + 8192) >> 14)
    x = x - (((((x >> 15) * (x >> 15)) >> 7) * H1) >> 4)
    x = 0 if x < 0 else 419430400 if x > 419430400 else x
    return t / 100, p / 25600, (x >> 12) / 1024


class Sensor:
    warmup_ms = 0

    def __init__(self, conf, hw):
        self._i2c = hw.i2c(conf["i2c"], conf["sda"], conf["scl"])
        self._addr = conf["address"]
        self._b1 = bytearray(1)
        self._data = bytearray(8)
        self._calib = None

    def _put(self, reg, v):
        self._b1[0] = v
        self._i2c.writeto_mem(self._addr, reg, self._b1)

    def _get(self, reg):
        self._i2c.readfrom_mem_into(self._addr, reg, self._b1)
        return self._b1[0]

    def _probe(self):
        if self._get(_REG_ID) != _CHIP_ID:
            raise SensorError("not_found")
        tp = bytearray(26)
        h = bytearray(7)
        self._i2c.readfrom_mem_into(self._addr, _REG_CALIB_TP, tp)
        self._i2c.readfrom_mem_into(self._addr, _REG_CALIB_H, h)
        self._put(_REG_CONFIG, 0)              # filter off, 3-wire SPI off (written in sleep mode)
        self._calib = calib_from(tp, h)

    async def read(self, values):
        try:
            if self._calib is None:
                self._probe()
            self._put(_REG_CTRL_HUM, _OSRS_H1)      # takes effect with the ctrl_meas write (5.4.3)
            self._put(_REG_CTRL_MEAS, _MEAS_FORCED_X1)
            await asyncio.sleep_ms(_CONV_MS)
            n = 0
            while self._get(_REG_STATUS) & _MEASURING:
                n += 1
                if n > 5:
                    raise SensorError("timeout")
                await asyncio.sleep_ms(2)
            self._i2c.readfrom_mem_into(self._addr, _REG_DATA, self._data)
        except OSError:
            self._calib = None                        # re-probe next time: it may be replaced
            raise SensorError("not_found")
        rt, rp, rh = raw_from(self._data)
        if rt == _SKIPPED or rp == _SKIPPED:
            raise SensorError("timeout")
        t, p, h = compensate(rt, rp, rh, self._calib)
        if not (-40 <= t <= 85 and 300 <= p <= 1100):
            raise SensorError("out_of_range")
        values["air_temp_c"] = round(t, 2)
        values["pressure_hpa"] = round(p, 2)
        if h is not None:           # None only from a chip without humidity, refused in _probe
            values["rh_pct"] = round(h, 2)

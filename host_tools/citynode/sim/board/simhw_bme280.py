"""The sim board's I2C bus, with a BME280 on it: its registers, forced conversions, its NACK.

simhw.SimPeripherals.i2c() hands out its I2c when a driver opens an I2C bus. The chip answers at
`bme280_address` (0x76 unless the scenario says otherwise) with the id, the calibration words
and, 9 ms after a forced-mode write, the raw ADC words whose datasheet compensation gives the
simulated air; a reset (0xB6 to 0xE0) restores the power-on registers. Unplugged, every
transfer raises OSError(19) (ENODEV), as the ESP32 port does on a NACK.

    i2c = simhw_bme280.I2c(sim)                  # sim: the simhw.SimPeripherals
    i2c.readfrom_mem_into(0x76, 0xD0, buf)       # buf[0] == 0x60, the chip id
"""
import time

try:
    from micropython import const
except ImportError:
    const = lambda x: x  # noqa: E731

_MEAS_MS = const(9)            # forced conversion at x1 oversampling (datasheet 9.1)
# The calibration area: the BMP280 datasheet's worked example for T and P (section 3.12) and
# typical humidity words, as register bytes at 0x88..0xA1 and 0xE1..0xE7.
_CAL_TP = const(b"pkCg\x18\xfc}\x8eC\xd6\xd0\x0b'\x0b\x8c\x00\xf9\xff\x8c<\xf8\xc6p\x17\x00K")
_CAL_H = const(b"j\x01\x00\x14$\x03\x1e")


class I2c:
    def __init__(self, sim):
        self._sim = sim
        self._r = bytearray(256)
        self._done = None            # ticks_ms when the running conversion ends
        # the node's own driver does the datasheet's arithmetic (imported from its flash, once
        # a driver opens the bus)
        from drivers import bme280
        self._bme = bme280
        self._cal = bme280.calib_from(_CAL_TP, _CAL_H)
        self._raw = [519888, 415148, 30000]     # raw_t, raw_p, raw_h: the last conversion's
        self._reset()

    def _reset(self):
        r = self._r
        for i in range(256):
            r[i] = 0
        r[0xD0] = 0x60
        r[0x88:0x88 + 26] = _CAL_TP
        r[0xE1:0xE1 + 7] = _CAL_H
        for i in (0xF7, 0xFA, 0xFD):
            r[i] = 0x80                                  # data reset values: "skipped"

    def _dev(self, addr):
        if addr != self._sim.sc.get("bme280_address", 0x76) or self._sim.gone("bme280"):
            raise OSError(19)
        if self._done is not None and time.ticks_diff(time.ticks_ms(), self._done) >= 0:
            self._done = None
            self._convert()

    def readfrom_mem_into(self, addr, reg, buf):
        self._dev(addr)
        r = self._r
        for i in range(len(buf)):
            buf[i] = r[(reg + i) & 0xFF]
        if reg <= 0xF3 < reg + len(buf):
            buf[0xF3 - reg] = 0x08 if self._done is not None else 0   # status: measuring

    def writeto_mem(self, addr, reg, buf):
        self._dev(addr)
        for i in range(len(buf)):
            a = (reg + i) & 0xFF
            v = buf[i]
            if a == 0xE0:
                if v == 0xB6:
                    self._reset()
            elif a in (0xF2, 0xF4, 0xF5):
                self._r[a] = v
                if a == 0xF4 and v & 3 in (1, 2):      # forced mode: one conversion, then sleep
                    self._done = time.ticks_add(time.ticks_ms(), _MEAS_MS)

    def _convert(self):
        # Raw ADC words such that the datasheet compensation gives the world's values. The air
        # drifts slowly, so secant steps from the last conversion's words find them in a few
        # compensations (a bisection of each 20-bit word took 60, and 18 KB of garbage).
        w = self._sim.world()
        r = self._r
        meas, hum = r[0xF4], r[0xF2] & 7
        r[0xF4] = meas & 0xFC                          # back to sleep mode
        raw = self._raw
        for i in range(3):                             # t first: t_fine carries it into p and h
            want = w[(1, 3, 2)[i]]
            top = (1 << 16 if i == 2 else 1 << 20) - 1
            x0 = raw[i]
            g0 = self._bme.compensate(raw[0], raw[1], raw[2], self._cal)[i] - want
            x1 = x0 + 64 if x0 < top // 2 else x0 - 64
            for _ in range(8):
                raw[i] = x1
                g1 = self._bme.compensate(raw[0], raw[1], raw[2], self._cal)[i] - want
                if g1 == g0:
                    break                              # flat: humidity clipped at 0 or 100 %
                x = x1 - int(g1 * (x1 - x0) / (g1 - g0))
                x0, g0, x1 = x1, g1, 0 if x < 0 else top if x > top else x
                if x1 == x0:
                    break
            raw[i] = x1
        rt, rp, rh = raw[0], raw[1], raw[2]
        if not meas >> 5:
            rt = 0x80000                               # osrs_t = 0: skipped
        if not (meas >> 2) & 7:
            rp = 0x80000
        if not hum:
            rh = 0x8000
        r[0xF7], r[0xF8], r[0xF9] = rp >> 12, (rp >> 4) & 0xFF, (rp & 15) << 4
        r[0xFA], r[0xFB], r[0xFC] = rt >> 12, (rt >> 4) & 0xFF, (rt & 15) << 4
        r[0xFD], r[0xFE] = rh >> 8, rh & 0xFF

"""Simulated peripherals for the `sim` board: the MicroPython unix port has no Pin/UART/I2C/ADC.

Each bus object produces what the real chip puts on the wire, so the real drivers run end to
end: UARTs emit PMS5003 / SDS011 / A02YYUW frames at the chip's rate and answer the drivers'
command frames; the I2C bus holds a BME280's registers; HC-SR04 trig/echo pins are
`machine.PinBase` objects, so `machine.time_pulse_us` measures a real pulse as wide as the
simulated round trip; ADCs give the voltage of an MQ divider. A UART does not know what is
wired to it until the driver writes: `42 4D ...` makes it a PMS5003, `AA B4 ...` an SDS011, and
until then it streams A02YYUW frames (that sensor never writes).

The world follows a scenario, read from `sim.json` in the current directory if present (or
passed as a dict); every key is optional:

    {"seed": 1,                  # random seed (noise, spikes)
     "time_scale": 1.0,          # simulated seconds per real second (60: a day in 24 minutes)
     "start_h": 8.0,             # hour of the day when the node starts
     "missing": ["pm"],          # unplugged: "water" "pm" "gas" "air", or a type: "hcsr04" "a02yyuw"
                                 #   "pms5003" "sds011" "mq" "bme280" "dht22"
     "water": {"distance_cm": 250.0, "noise_cm": 0.3},   # sensor-to-water distance at rest
     "rain": {"start_s": 20, "duration_s": 120, "rise_cm": 150},  # rises during the rain, then recedes
     "spikes": 0.05,             # chance that a ping or A02 frame sees a corner reflection
     "air": {"temp_c": 27.0, "temp_amp": 4.0, "rh_pct": 75.0, "rh_amp": 15.0, "pressure_hpa": 1009.0},
     "pm": {"pm2_5": 35.0, "amp": 0.5},                  # daily cycle peaking at 07:00
     "gas": {"rs_kohm": 60.0, "amp": 0.2, "rl_kohm": 10.0, "vc_v": 5.0, "divider": 1.0},
     "bme280_address": 118}

Unplugged sensors: the UART gives no bytes, the echo never rises, the I2C raises OSError(19)
(ENODEV, what the ESP32 port raises on a NACK), the ADC reads a few mV of noise, the DHT22's
measure() raises OSError(110) (ETIMEDOUT). The system part of the sim board (reset, deepsleep,
WDT) is not here: board.py subclasses SimPeripherals.

    hw = simhw.SimPeripherals(profile)              # profile: boards/sim.json
    uart = hw.uart(2, rx=16, tx=17, baudrate=9600)   # a PMS5003 once the driver writes to it
    hw.world()                                       # the simulated truth now (for tests)
"""
import json
import math
import random
import time

import machine

try:
    from micropython import const
except ImportError:
    const = lambda x: x  # noqa: E731

_ECHO_LAT_US = const(450)      # HC-SR04: the 8-cycle 40 kHz burst goes out before ECHO rises
_A02_MS = const(100)           # A02YYUW: one frame every 100 ms
_PM_MS = const(1000)           # PMS5003 / SDS011 in active mode: about one frame a second
_Q = const(96)                 # simulated UART receive buffer: older frames are dropped
_ENODEV = const(19)
_ETIMEDOUT = const(110)
_MEAS_MS = const(9)            # BME280 forced conversion at x1 oversampling (datasheet 9.1)
# The BME280's calibration area: the BMP280 datasheet's worked example for T and P (section 3.12)
# and typical humidity words, as register bytes at 0x88..0xA1 and 0xE1..0xE7.
_CAL_TP = b"pkCg\x18\xfc}\x8eC\xd6\xd0\x0b'\x0b\x8c\x00\xf9\xff\x8c<\xf8\xc6p\x17\x00K"
_CAL_H = b"j\x01\x00\x14$\x03\x1e"
_KINDS = {"hcsr04": "water", "a02yyuw": "water", "pms5003": "pm", "sds011": "pm", "mq": "gas",
          "bme280": "air", "dht22": "air"}


def _load():
    try:
        with open("sim.json") as f:
            return json.load(f)
    except OSError:
        return {}


def _cos_day(h, peak_h):
    return math.cos(2 * math.pi * (h - peak_h) / 24)


class SimPeripherals:
    def __init__(self, profile, scenario=None):
        self.profile = profile
        sc = _load() if scenario is None else scenario
        self.sc = sc
        random.seed(sc.get("seed", 1))
        self._scale = sc.get("time_scale", 1.0)
        self._last = time.ticks_ms()
        self._s = 0.0
        self._echo_at = None           # ticks_us when the current echo rises, None: no echo
        self._echo_us = 0
        self._armed = False
        self._bme = None

    # --- the simulated world -----------------------------------------------------------------

    def _get(self, sect, key, default):
        d = self.sc.get(sect)
        return d.get(key, default) if isinstance(d, dict) else default

    def gone(self, typ):
        m = self.sc.get("missing", ())
        return typ in m or _KINDS[typ] in m

    def now_s(self):
        t = time.ticks_ms()
        self._s += time.ticks_diff(t, self._last) * self._scale / 1000
        self._last = t
        return self._s

    def _hour(self, s):
        return (self.sc.get("start_h", 8.0) + s / 3600) % 24

    def rise_cm(self, s):
        """How far the water stands above its rest level at world second s."""
        r = self.sc.get("rain")
        if not r:
            return 0.0
        x = s - r.get("start_s", 20)
        dur = r.get("duration_s", 120)
        if x <= 0:
            return 0.0
        if x < dur:   # smooth rise while it rains
            return r.get("rise_cm", 150) * math.sin(math.pi / 2 * x / dur) ** 2
        return r.get("rise_cm", 150) * math.exp(-(x - dur) / dur)    # then the river recedes

    def world(self):
        """The truth now: (distance_cm, temp_c, rh_pct, pressure_hpa, pm2_5, rs_kohm)."""
        s = self.now_s()
        h = self._hour(s)
        d = self._get("water", "distance_cm", 250.0) - self.rise_cm(s)
        g = self._get
        day = _cos_day(h, 15)          # warmest at 15:00, most humid at dawn
        return (d if d > 5 else 5.0,
                g("air", "temp_c", 27.0) + g("air", "temp_amp", 4.0) * day,
                g("air", "rh_pct", 75.0) - g("air", "rh_amp", 15.0) * day,
                g("air", "pressure_hpa", 1009.0) + 0.6 * math.cos(2 * math.pi * (h - 10) / 12),  # tide
                max(0.0, g("pm", "pm2_5", 35.0) * (1 + g("pm", "amp", 0.5) * _cos_day(h, 7))),
                g("gas", "rs_kohm", 60.0) * (1 - g("gas", "amp", 0.2) * _cos_day(h, 8)))

    def _range_cm(self):
        # One ping or frame: the water, a little noise, and now and then a corner reflection.
        d = self.world()[0] + random.uniform(-1, 1) * self._get("water", "noise_cm", 0.3)
        if random.random() < self.sc.get("spikes", 0.0):
            d = random.uniform(20, d)
        return d

    # --- what board.Esp32 offers -------------------------------------------------------------

    def pin_out(self, n, value=0):
        return _Pin(self, value)

    def pin(self, n):
        return _Pin(self, 0)

    def pin_in(self, n, pull=None):
        return _Echo(self)

    def uart(self, uid, rx, tx, baudrate=9600):
        return _Uart(self, baudrate)

    def i2c(self, bus, sda, scl, freq=100000):
        return _I2c(self)

    def adc(self, n):
        return _Adc(self)

    def time_pulse_us(self, pin, level, timeout_us):
        return machine.time_pulse_us(pin, level, timeout_us)

    def dht22(self, n):
        return _Dht(self)

    def _ping(self, width_us):
        # A trigger pulse ended: schedule the echo of this ping (none when unplugged).
        if not 5 <= width_us < 1000 or self.gone("hcsr04"):
            self._echo_at = None
            return
        d = self._range_cm()
        c = 331.3 + 0.606 * self.world()[1]      # the air's real temperature sets the echo time
        self._echo_us = int(d * 20000 / c)
        self._echo_at = time.ticks_add(time.ticks_us(), _ECHO_LAT_US)
        self._armed = True


class _Pin(machine.PinBase):
    # An output pin; a short high pulse on it is an HC-SR04 trigger.
    def __init__(self, sim, v):
        self._sim = sim
        self._v = 1 if v else 0
        self._up = 0

    def value(self, v=None):
        if v is None:
            return self._v
        v = 1 if v else 0
        if v and not self._v:
            self._up = time.ticks_us()
        elif self._v and not v:
            self._sim._ping(time.ticks_diff(time.ticks_us(), self._up))
        self._v = v


class _Echo(machine.PinBase):
    # HC-SR04 ECHO: high for the round-trip time, starting shortly after the trigger.
    def __init__(self, sim):
        self._sim = sim

    def value(self, v=None):
        s = self._sim
        if s._echo_at is None:
            return 0
        now = time.ticks_us()
        dt = time.ticks_diff(now, s._echo_at)
        if dt < 0:
            return 0
        if s._armed:
            # The echo starts when it is first seen: a host that was slow to look (a GC, the OS
            # scheduler; an ESP32 polls in a tight loop) must not measure it from its middle.
            s._armed = False
            s._echo_at = now
            dt = 0
        return 1 if dt < s._echo_us else 0


class _Uart:
    def __init__(self, sim, baud):
        self._sim = sim
        self._baud = baud
        self._q = bytearray(_Q)
        self._n = 0
        self._t = 0                  # ticks_ms when the first queued byte started on the wire
        self._f = bytearray(32)
        self.chip = "a02yyuw"        # until the driver speaks: A02YYUW never writes
        self._awake = True
        self._passive = False        # PMS5003 and SDS011 power up in active mode
        self._next = time.ticks_ms()

    def _pump(self):
        # Unsolicited frames: the A02YYUW stream, or a PMS/SDS in active mode.
        if self._sim.gone(self.chip) or not self._awake or (self.chip != "a02yyuw" and self._passive):
            self._next = time.ticks_ms()
            return
        now = time.ticks_ms()
        period = _A02_MS if self.chip == "a02yyuw" else _PM_MS
        if time.ticks_diff(now, self._next) > 3 * period:
            self._next = now         # nobody listened for a while: no backlog beyond the buffer
        while time.ticks_diff(now, self._next) >= 0:
            self._frame()
            self._next = time.ticks_add(self._next, period)

    def _frame(self):
        f = self._f
        if self.chip == "a02yyuw":
            mm = int(self._sim._range_cm() * 10)
            self._emit(4, 0xFF, mm >> 8, mm & 0xFF)
            return
        pm = self._sim.world()[4] * random.uniform(0.9, 1.1)
        if self.chip == "sds011":
            a, b = min(int(pm * 10), 9999), min(int(pm * 16), 9999)   # 0.1 µg/m³, scale ends at 999.9
            self._emit(10, 0xAA, 0xC0, a & 0xFF, a >> 8, b & 0xFF, b >> 8, 0xA1, 0x60)
            return
        for i in range(32):
            f[i] = 0
        f[0], f[1], f[3], f[28] = 0x42, 0x4D, 28, 0x97    # length 28; version 0x97, error 0
        for i in range(9):
            # CF=1 PM1.0/2.5/10 (reading higher in dense air), atmospheric, counts > 0.3..2.5 µm
            v = int(pm * (0.75, 1, 1.6, 0.75, 1, 1.6, 600, 180, 40)[i])
            if i < 3 and v > 30:
                v += v // 8
            f[4 + 2 * i], f[5 + 2 * i] = (v >> 8) & 0xFF, v & 0xFF
        self._emit(32)

    def _emit(self, n, *head):
        # Copy head into the frame, then put the check where each protocol has it, and queue it.
        f = self._f
        for i in range(len(head)):
            f[i] = head[i]
        s = 0
        if f[0] == 0xAA:                  # SDS011: low byte of data bytes 2-7, then AB
            for i in range(2, 8):
                s += f[i]
            f[8], f[9] = s & 0xFF, 0xAB
        else:                             # A02YYUW: low byte of the sum; PMS: 16-bit sum of all before
            for i in range(n - (1 if n == 4 else 2)):
                s += f[i]
            if n == 4:
                f[3] = s & 0xFF
            else:
                f[n - 2], f[n - 1] = (s >> 8) & 0xFF, s & 0xFF
        if self._n + n > _Q:
            return                        # receive buffer full: the frame is lost, as on a real UART
        if not self._n:
            self._t = time.ticks_ms()
        self._q[self._n:self._n + n] = f[:n]
        self._n += n

    def write(self, buf):
        n = len(buf)
        if n >= 7 and buf[0] == 0x42 and buf[1] == 0x4D:
            self.chip = "pms5003"
            if (buf[5] << 8 | buf[6]) != buf[0] + buf[1] + buf[2] + buf[3] + buf[4] or self._sim.gone(self.chip):
                return n
            cmd, d = buf[2], buf[4]
            if cmd == 0xE4 and d == 1:
                self._awake = True                      # wake-up: no answer
            elif not self._awake:
                pass                                    # asleep: deaf to the rest
            elif cmd == 0xE2:
                if self._passive:
                    self._frame()
            elif cmd in (0xE1, 0xE4):
                if cmd == 0xE1:
                    self._passive = d == 0
                else:
                    self._awake = False
                self._emit(8, 0x42, 0x4D, 0, 4, cmd, d)
        elif n >= 19 and buf[0] == 0xAA and buf[1] == 0xB4 and buf[18] == 0xAB:
            self.chip = "sds011"
            s = 0
            for i in range(2, 17):
                s += buf[i]
            if s & 0xFF != buf[17] or self._sim.gone(self.chip):
                return n
            cmd, st, v = buf[2], buf[3], buf[4]
            if not self._awake and not (cmd == 6 and st == 1 and v == 1):
                return n                                # asleep: only "work" is heard
            if cmd == 4:
                self._frame()
                return n
            if cmd == 6 and st:
                self._awake = v == 1
            elif cmd == 2 and st:
                self._passive = v == 1
            self._emit(10, 0xAA, 0xC5, cmd, st, v, 0, 0xA1, 0x60)
        return n

    def _ready(self):
        self._pump()
        if not self._n:
            return 0
        k = time.ticks_diff(time.ticks_ms(), self._t) * self._baud // 10000   # 10 bits a byte
        return k if k < self._n else self._n

    def any(self):
        return self._ready()

    def readinto(self, buf, nbytes=-1):
        k = self._ready()
        m = len(buf) if nbytes < 0 else nbytes
        if k > m:
            k = m
        if not k:
            return None
        q = self._q
        for i in range(k):
            buf[i] = q[i]
        for i in range(k, self._n):
            q[i - k] = q[i]
        self._n -= k
        self._t = time.ticks_add(self._t, k * 10000 // self._baud)
        return k

    def read(self, n=-1):
        b = bytearray(self._n if n < 0 else n)
        k = self.readinto(b)
        return bytes(b[:k]) if k else None


class _I2c:
    def __init__(self, sim):
        self._sim = sim
        self._r = bytearray(256)
        self._done = None            # ticks_ms when the running conversion ends
        self._reset()

    def _reset(self):
        r = self._r
        for i in range(256):
            r[i] = 0
        r[0xD0] = 0x60
        r[0x88:0x88 + 26] = _CAL_TP
        r[0xE1:0xE1 + 7] = _CAL_H
        r[0xF7:0xFF] = b"\x80\x00\x00\x80\x00\x00\x80\x00"   # reset values: "skipped"

    def _dev(self, addr):
        if addr != self._sim.sc.get("bme280_address", 0x76) or self._sim.gone("bme280"):
            raise OSError(_ENODEV)
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

    def readfrom_mem(self, addr, reg, n):
        b = bytearray(n)
        self.readfrom_mem_into(addr, reg, b)
        return bytes(b)

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
        # Raw ADC words such that the datasheet compensation gives the world's values.
        from drivers import bme280
        if self._sim._bme is None:
            self._sim._bme = bme280.calib_from(_CAL_TP, _CAL_H)
        cal = self._sim._bme
        w = self._sim.world()
        r = self._r
        meas, hum = r[0xF4], r[0xF2] & 7
        r[0xF4] = meas & 0xFC                          # back to sleep mode
        raw = [400000, 400000, 30000]                 # raw_t, raw_p, raw_h
        for i, top, sign in ((0, 1 << 20, 1), (1, 1 << 20, -1), (2, 1 << 16, 1)):
            # The raw word whose compensated value is closest to the world's (monotonic in it).
            lo, hi = 0, top - 1
            while lo < hi:
                raw[i] = (lo + hi) // 2
                if (bme280.compensate(raw[0], raw[1], raw[2], cal)[i] - w[(1, 3, 2)[i]]) * sign < 0:
                    lo = raw[i] + 1
                else:
                    hi = raw[i]
            raw[i] = lo
        rt, rp, rh = raw
        if not meas >> 5:
            rt = 0x80000                               # osrs_t = 0: skipped
        if not (meas >> 2) & 7:
            rp = 0x80000
        if not hum:
            rh = 0x8000
        r[0xF7], r[0xF8], r[0xF9] = rp >> 12, (rp >> 4) & 0xFF, (rp & 15) << 4
        r[0xFA], r[0xFB], r[0xFC] = rt >> 12, (rt >> 4) & 0xFF, (rt & 15) << 4
        r[0xFD], r[0xFE] = rh >> 8, rh & 0xFF


class _Adc:
    # An MQ module's AOUT: V = Vc·RL/(RL+Rs), through the divider, clipped where the ESP32 ADC is flat.
    def __init__(self, sim):
        self._sim = sim

    def atten(self, a):
        pass

    def read_uv(self):
        s = self._sim
        noise = random.randint(0, 5000)
        if s.gone("mq"):
            return noise
        rs = s.world()[5]
        rl = s._get("gas", "rl_kohm", 10.0)
        v = s._get("gas", "vc_v", 5.0) * rl / (rl + rs) / s._get("gas", "divider", 1.0)
        uv = int(v * 1000000) + noise - 2500
        return 3200000 if uv > 3200000 else uv if uv > 0 else 0

    def read_u16(self):
        return self.read_uv() * 64 // 3223


class _Dht:
    def __init__(self, sim):
        self._sim = sim
        self._t = self._h = 0.0

    def measure(self):
        if self._sim.gone("dht22"):
            raise OSError(_ETIMEDOUT)
        w = self._sim.world()
        self._t, self._h = round(w[1], 1), round(w[2], 1)   # the DHT22 resolves 0.1

    def temperature(self):
        return self._t

    def humidity(self):
        return self._h

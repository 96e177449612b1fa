"""Simulated peripherals for the `sim` board: the MicroPython unix port has no Pin/UART/I2C/ADC.

Each bus object produces what the real chip puts on the wire, so the real drivers run end to
end: HC-SR04 trig/echo pins are `machine.PinBase` objects, so `machine.time_pulse_us` measures
a real pulse as wide as the simulated round trip; ADCs give the voltage of an MQ divider; the
DHT22 object measures the simulated air. UARTs (PMS5003, SDS011, A02YYUW frames: simhw_uart.py)
and the I2C bus (a BME280's registers: simhw_bme280.py) are modules of their own. The virtual
node's bootstrap loads all three from the host before it mounts the flash (they are its hardware,
never files on its flash), with the board profile in PROFILES.

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
     "gas": {"rs_kohm": 60.0, "amp": 0.2, "rl_kohm": 10.0, "vc_v": 5.0, "divider": 1.0,
             "adc_top_uv": 3200000},    # what read_uv says at full scale (an ESP32's varies by module)
     "dht22_checksum": 0.0,      # chance a DHT22 transfer fails its checksum (ESP32: Exception)
     "bme280_address": 118}

One river, several gauges: `distance_cm` is seen by the highest-mounted ranging sensor of the
node's config.json (read beside sim.json); a sensor mounted lower sees the same water nearer by
the difference of the `mount_height_cm`s, so every gauge reports the same level. A scenario
passed as a dict reads no config.json: every ranging sensor then sees `distance_cm`.

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
PROFILES = {}                  # board name -> profile: boards/sim.json, set by the bootstrap
_WORLD_MS = const(250)
_KINDS = {"hcsr04": "water", "a02yyuw": "water", "pms5003": "pm", "sds011": "pm", "mq": "gas",
          "bme280": "air", "dht22": "air"}


def _load(name):
    try:
        with open(name) as f:
            return json.load(f)
    except OSError:
        return {}


def _nearer(cfg):
    # {type: cm} for the ranging sensors mounted below the highest one (see the module doc).
    m = {}
    for s in cfg.get("sensors", ()):
        if s.get("type") in ("hcsr04", "a02yyuw") and s["type"] not in m:
            m[s["type"]] = s.get("mount_height_cm", 0)
    top = max(m.values()) if m else 0
    for t in m:
        m[t] = top - m[t]
    return m


def _cos_day(h, peak_h):
    return math.cos(2 * math.pi * (h - peak_h) / 24)


class SimPeripherals:
    def __init__(self, profile, scenario=None):
        self._near = {}
        if scenario is None:
            scenario = _load("sim.json")
            self._near = _nearer(_load("config.json"))
        self.sc = scenario
        random.seed(scenario.get("seed", 1))
        self._scale = scenario.get("time_scale", 1.0)
        self._s = 0.0                  # world seconds since the start
        self._w = None                 # world() and the ticks_ms it was worked out at
        self._wt = time.ticks_ms()
        self._hc = EchoPulse()

    # --- the simulated world -----------------------------------------------------------------

    def _get(self, sect, key, default):
        d = self.sc.get(sect)
        return d.get(key, default) if isinstance(d, dict) else default

    def gone(self, typ):
        m = self.sc.get("missing", ())
        return typ in m or _KINDS[typ] in m

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
        # Worked out at most every _WORLD_MS: the world drifts over seconds, and an ADC burst or
        # an echo busy-wait asks thousands of times. Each working-out leaves ~1.3 KB of floats
        # behind on the unix port: every 20 ms, that was 20 KB of garbage in a 300 ms cycle.
        t = time.ticks_ms()
        if self._w is not None and time.ticks_diff(t, self._wt) < _WORLD_MS:
            return self._w
        self._s += time.ticks_diff(t, self._wt) * self._scale / 1000     # world seconds
        self._wt = t
        s = self._s
        h = (self.sc.get("start_h", 8.0) + s / 3600) % 24
        d = self._get("water", "distance_cm", 250.0) - self.rise_cm(s)
        g = self._get
        day = _cos_day(h, 15)          # warmest at 15:00, most humid at dawn
        self._w = (d if d > 5 else 5.0,
                   g("air", "temp_c", 27.0) + g("air", "temp_amp", 4.0) * day,
                   g("air", "rh_pct", 75.0) - g("air", "rh_amp", 15.0) * day,
                   g("air", "pressure_hpa", 1009.0) + 0.6 * math.cos(2 * math.pi * (h - 10) / 12),  # tide
                   max(0.0, g("pm", "pm2_5", 35.0) * (1 + g("pm", "amp", 0.5) * _cos_day(h, 7))),
                   g("gas", "rs_kohm", 60.0) * (1 - g("gas", "amp", 0.2) * _cos_day(h, 8)))
        return self._w

    def range_cm(self, typ):
        """What one ping or frame of a `typ` ranging sensor sees: the water, a little noise, and
        now and then a corner reflection."""
        d = self.world()[0] - self._near.get(typ, 0)
        d = (d if d > 5 else 5.0) + random.uniform(-1, 1) * self._get("water", "noise_cm", 0.3)
        if random.random() < self.sc.get("spikes", 0.0):
            d = random.uniform(20, d)
        return d

    # --- what esp32hw.Esp32 offers -------------------------------------------------------------

    def pin_out(self, n, value=0):
        return _Pin(self, 1 if value else 0)

    pin = pin_out

    def pin_in(self, n, pull=None):
        return _Pin(self, None)

    def uart(self, uid, rx, tx, baudrate=9600):
        from simhw_uart import Uart
        return Uart(self, baudrate)

    def i2c(self, bus, sda, scl, freq=100000):
        from simhw_bme280 import I2c
        return I2c(self)

    def adc(self, n):
        return _Adc(self)

    time_pulse_us = staticmethod(machine.time_pulse_us)

    def dht22(self, n):
        return _Dht(self)

    def _ping(self, width_us):
        # A trigger pulse ended: schedule the echo of this ping (none when unplugged). A pulse
        # is 10 µs on a board; on the unix port the OS now and then stretches the driver's
        # sleep_us(10) past a millisecond (3.3 ms seen), and the module would still range.
        if not 5 <= width_us < 50000 or self.gone("hcsr04"):
            self._hc.start(None)
            return
        d = self.range_cm("hcsr04")
        c = 331.3 + 0.606 * self.world()[1]      # the air's real temperature sets the echo time
        self._hc.start(int(d * 20000 / c), _ECHO_LAT_US)

    def _echo(self):
        return self._hc.level()


class EchoPulse:
    """An HC-SR04's ECHO line: after a ping, high for the round trip (µs), `latency_us` after the
    trigger (the 8-cycle 40 kHz burst goes out first). The one model of it: the driver tests'
    scripted echo (tests/unix/fakebus.py) drives this too.

        e = EchoPulse(); e.start(1750, 450); e.level()   # 0 ... 1 for 1,750 µs ... 0
    """

    def __init__(self):
        self.at = None           # ticks_us when the echo rises; None: no echo coming
        self.width = 0
        self.armed = False

    def start(self, width_us, latency_us=0):
        """A ping went out: echo width_us wide (None: no echo, the module is gone)."""
        if width_us is None:
            self.at = None
            return
        self.width = width_us
        self.at = time.ticks_add(time.ticks_us(), latency_us)
        self.armed = True

    def level(self):
        if self.at is None:
            return 0
        now = time.ticks_us()
        dt = time.ticks_diff(now, self.at)
        if dt < 0:
            return 0
        if self.armed:
            # The echo starts when it is first seen: a host that was slow to look (a GC, the OS
            # scheduler; an ESP32 polls in a tight loop) must not measure it from its middle.
            self.armed = False
            self.at = now
            dt = 0
        return 1 if dt < self.width else 0


class _Pin(machine.PinBase):
    # An HC-SR04's TRIG (an output: a short high pulse is a ping) or ECHO (v None: an input).
    def __init__(self, sim, v):
        self._sim = sim
        self._v = v
        self._up = 0

    def value(self, v=None):
        if self._v is None:
            return self._sim._echo()
        if v is None:
            return self._v
        v = 1 if v else 0
        if v and not self._v:
            self._up = time.ticks_us()
        elif self._v and not v:
            self._sim._ping(time.ticks_diff(time.ticks_us(), self._up))
        self._v = v


class _Adc:
    # An MQ module's AOUT: V = Vc·RL/(RL+Rs), through the divider, clipped where the ESP32 ADC is flat.
    def __init__(self, sim):
        self._sim = sim
        self._w = None               # the world the voltage below was worked out for
        self._uv = 0

    def _in_uv(self):
        s = self._sim
        noise = random.randint(0, 5000)
        if s.gone("mq"):
            return noise
        w = s.world()
        if w is not self._w:
            self._w = w
            rl = s._get("gas", "rl_kohm", 10.0)
            self._uv = int(s._get("gas", "vc_v", 5.0) * rl / (rl + w[5]) / s._get("gas", "divider", 1.0) * 1000000)
        uv = self._uv + noise - 2500
        return uv if uv > 0 else 0

    def read_uv(self):
        top = self._sim._get("gas", "adc_top_uv", 3200000)
        uv = self._in_uv()
        return top if uv > top else uv

    def read_u16(self):
        # 12 bits scaled to 16 (4095 -> 65535), flat from the calibrated top up
        top = self._sim._get("gas", "adc_top_uv", 3200000)
        uv = self._in_uv()
        if uv >= top:
            return 65535
        c = (uv >> 4) * 4095 // (top >> 4)      # small ints on a 32-bit port
        return (c << 4) | (c >> 8)


class _Dht:
    def __init__(self, sim):
        self._sim = sim
        self._t = self._h = 0.0

    def measure(self):
        if self._sim.gone("dht22"):
            raise OSError(110)          # ETIMEDOUT: nothing answered the start pulse
        if random.random() < self._sim.sc.get("dht22_checksum", 0.0):
            raise Exception("checksum error")   # what the ESP32's frozen dht.py raises
        w = self._sim.world()
        self._t, self._h = round(w[1], 1), round(w[2], 1)   # the DHT22 resolves 0.1

    def temperature(self):
        return self._t

    def humidity(self):
        return self._h

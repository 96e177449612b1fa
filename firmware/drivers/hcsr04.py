"""HC-SR04 (and JSN-SR04T / AJ-SR04M in trigger/echo mode) ultrasonic water level.

A 10 µs high pulse on TRIG starts a ping; ECHO then goes high for the round-trip time of the
sound (HC-SR04 datasheet, "Timing diagram"). Distance = echo time x speed of sound / 2, with
the speed of sound c = 331.3 + 0.606·T m/s; T is the node's `air_temp_c` this cycle when an air
sensor gave one, else the configured `temp_c` (at 0 °C vs 35 °C the same echo differs by 6 %).

Known lies and what this driver does: corner reflections and rain drops make short spikes, and
a missed echo makes a long one, so each cycle takes `samples` pings at least 60 ms apart (the
datasheet's measurement cycle, so an old echo cannot answer a new ping), rejects those further
than k·MAD (`mad_k`) from the median and averages the rest; the count kept is returned for the
telemetry. Echoes shorter than the blind zone (`min_range_cm`) or longer than `max_range_cm`
are `out_of_range`, not numbers. No echo at all (unplugged, nothing in front) is `timeout`.

Blocking: `time_pulse_us` busy-waits, at most 2 x timeout per ping (waiting for the echo to
start, then for it to end), timeout = 1.1 x the echo time of max_range_cm at T + 1 ms: 26.6 ms
per phase for 400 cm at 20 °C, so the loop is held at most 53 ms per ping; between pings the
driver awaits. A cycle stops as soon as a majority of valid pings has become impossible, so an
unplugged sensor gives `timeout` after (samples // 2 + 1) pings: 4 x 60 ms for 7 samples.

    s = hcsr04.Sensor(conf, hw)        # conf: {"trig": 5, "echo": 18, "mount_height_cm": 300.0, ...}
    kept = await s.read(values)        # values["water_level_cm"] = 123.4, values["distance_cm"] = 176.6
    hcsr04.echo_to_cm(5824, 20.0)      # pure: 100.0 cm
"""
import asyncio
import time
from array import array

from drivers import SensorError
from drivers import _stats

try:
    from micropython import const
except ImportError:
    const = lambda x: x  # noqa: E731

_PING_MS = const(60)       # datasheet: "we suggest to use over 60ms measurement cycle"
_TRIG_US = const(10)
_FLOOR_CM = const(1.0)     # MAD floor: never reject a ping within 1 cm of the median
_NO_ECHO = const(-2)       # time_pulse_us: the echo never started
_TOO_LONG = const(-1)      # time_pulse_us: the echo lasted longer than the timeout


def speed_of_sound(temp_c=20.0):
    """Speed of sound in air in m/s (linear in temperature, good to 0.1 % from -40 to 60 °C)."""
    return 331.3 + 0.606 * temp_c


def echo_to_cm(echo_us, temp_c=20.0):
    """Distance in cm from a round-trip echo time in µs: echo_us x c / 2, c in cm/µs = m/s / 1e4."""
    return echo_us * speed_of_sound(temp_c) / 20000


def cm_to_echo(cm, temp_c=20.0):
    """The round-trip echo time in µs for a distance in cm (the inverse of echo_to_cm)."""
    return cm * 20000 / speed_of_sound(temp_c)


class Sensor:
    warmup_ms = 0

    def __init__(self, conf, hw):
        self.conf = conf
        self.samples = conf["samples"]
        self._hw = hw
        self._trig = hw.pin_out(conf["trig"])
        self._echo = hw.pin_in(conf["echo"])
        self._us = array("i", [0] * self.samples)
        self._tmp = array("i", [0] * self.samples)

    async def read(self, values):
        c = self.conf
        t = values.get("air_temp_c")
        if t is None:
            t = c["temp_c"]
        lo = int(cm_to_echo(c["min_range_cm"], t))
        hi = int(cm_to_echo(c["max_range_cm"], t))
        timeout = hi + hi // 10 + 1000
        n = self.samples
        need = (n + 1) // 2
        us = self._us
        trig = self._trig
        echo = self._echo
        hw = self._hw
        got = none = oor = 0
        for i in range(n):
            if i:
                await asyncio.sleep_ms(_PING_MS)
            trig.value(1)
            time.sleep_us(_TRIG_US)
            trig.value(0)
            e = hw.time_pulse_us(echo, 1, timeout)
            if e == _NO_ECHO:
                none += 1
            elif e < lo or e > hi:          # includes _TOO_LONG: beyond range, not a number
                oor += 1
            else:
                us[got] = e
                got += 1
            if none + oor > n - need:
                break                        # a majority is out of reach: do not hold the cycle
        if got < need:
            raise SensorError("timeout" if none > oor else "out_of_range")
        floor = int(cm_to_echo(_FLOOR_CM, t)) + 1
        kept = _stats.reject(us, got, c["mad_k"], floor, self._tmp)
        dist = echo_to_cm(_stats.mean(us, kept), t)
        values["distance_cm"] = round(dist, 1)
        values["water_level_cm"] = round(_stats.level_cm(c["mount_height_cm"], dist, c["offset_cm"]), 1)
        return kept

"""DHT22 / AM2302 temperature and humidity on one GPIO, through the port's `dht` module.

The board hands over a `dht.DHT22` (hw.dht22(pin)); its measure() bit-bangs one transfer
(start pulse, 40 bits, checksum) and raises OSError: ETIMEDOUT when nothing answers. A bad
checksum is OSError EIO on some ports, and on an ESP32 a plain Exception("checksum error") from
the frozen `dht` module (micropython-lib's dht.py): both are `checksum`.

Known lies and what this driver does: the AM2302 datasheet allows one conversion every 2 s and
a faster read returns stale or corrupt data, so within 2 s of the last good conversion the driver
re-publishes it instead of polling the chip; the chip must be left alone for 1 s after power-up
("unstable status"), so a first reading within 1 s of the driver's start awaits the rest of that
second. Values outside the
datasheet's range (-40..80 °C, 0..100 %RH) are `out_of_range`.

Blocking: measure() holds the loop for the whole transfer, about 25 ms (the 18 ms start pulse of
MicroPython's dht driver plus ~5 ms of bits); it cannot be split.

    s = dht22.Sensor(conf, hw)         # conf: {"pin": 4}
    await s.read(values)               # values["air_temp_c"] = 27.1, values["rh_pct"] = 71.0
"""
import asyncio
import time

from drivers import SensorError

try:
    from micropython import const
except ImportError:
    const = lambda x: x  # noqa: E731

_MIN_GAP_MS = const(2000)
_POWER_UP_MS = const(1000)


class Sensor:
    warmup_ms = 0

    def __init__(self, conf, hw):
        self._d = hw.dht22(conf["pin"])
        self._t0 = time.ticks_ms()
        self._last = None           # ticks_ms of the last good conversion
        self._t = self._h = 0.0

    async def read(self, values):
        now = time.ticks_ms()
        if self._last is None:
            wait = _POWER_UP_MS - time.ticks_diff(now, self._t0)
            if wait > 0:
                await asyncio.sleep_ms(wait)
                now = time.ticks_ms()
        if self._last is None or time.ticks_diff(now, self._last) >= _MIN_GAP_MS:
            try:
                self._d.measure()
            except OSError as e:
                raise SensorError("checksum" if e.args and e.args[0] == 5 else "timeout")
            except Exception as e:
                if e.args and e.args[0] == "checksum error":
                    raise SensorError("checksum")
                raise
            t = self._d.temperature()
            h = self._d.humidity()
            if not (-40 <= t <= 80 and 0 <= h <= 100):
                raise SensorError("out_of_range")
            self._t, self._h, self._last = t, h, now
        values["air_temp_c"] = self._t
        values["rh_pct"] = self._h

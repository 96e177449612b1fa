"""Nova Fitness SDS011 particulate sensor on a UART, in query mode.

Data frame (Laser Dust Sensor Control Protocol V1.3): 10 bytes `AA C0 PM25L PM25H PM10L PM10H
ID1 ID2 SUM AB`, SUM = low byte of the sum of the six data bytes, PM = word / 10 µg/m³.
Commands are 19 bytes `AA B4 data1..data15 SUM AB` with SUM = low byte of the sum of data1..15
(data14, data15 = device id, FF FF for "any"): data1 = 2 reporting mode (data2 = 1 set,
data3 = 1 query), 4 query data, 6 sleep/work (data2 = 1 set, data3 = 0 sleep / 1 work). Replies
to settings are `AA C5 ...` frames, which the frame finder skips.

Known lies: like the PMS, the first ~30 s after the fan starts are unreliable -> `warming_up`,
and the laser's life (about 8,000 h) is spent only when it runs, so the node sleeps it between
cycles. A sleeping SDS011 may miss the first command that wakes it, so wake() sends "work" twice.
Readings above 999.9 µg/m³ are the end of the scale, not a value -> `out_of_range`.

Worst case the loop is held: the bytes the UART has buffered (rxbuf 256) are parsed between two
awaits, 2 µs a byte on the unix port (estimated 5-10 ms for 256 bytes on an ESP32). Unplugged:
`timeout` after 1.2 s (_polled.query).

    s = sds011.Sensor(conf, hw)        # conf: {"uart": 2, "rx": 16, "tx": 17, "warmup_s": 30, "frames": 5}
    await s.read(values)               # values["pm10_ugm3"] = 20.5
    sds011.parse(frame)                # pure: {"pm2_5": 123.6, "pm10": 261.8}, ValueError when bad
"""
import asyncio
import time

from drivers import SensorError
from drivers._stats import trimmed_mean
from drivers._polled import Polled, query

try:
    from micropython import const
except ImportError:
    const = lambda x: x  # noqa: E731

_FRAME = const(10)
_HEAD = const(0xAA)
_DATA = const(0xC0)
_TAIL = const(0xAB)
_CMD = const(0xB4)
_SET_MODE = const(2)
_QUERY = const(4)
_SLEEP_WORK = const(6)
_MAX = const(9999)         # 999.9 µg/m³: the top of the scale, in the frame's tenths
_WHY = const(("", "bad header", "bad tail", "bad checksum", "short frame"))


def check(frame):
    """0 when `frame` is a valid data frame, else 1 header, 2 tail, 3 checksum, 4 short."""
    if len(frame) < _FRAME:
        return 4
    if frame[0] != _HEAD or frame[1] != _DATA:
        return 1
    if frame[9] != _TAIL:
        return 2
    s = 0
    for i in range(2, 8):
        s += frame[i]
    if s & 0xFF != frame[8]:
        return 3
    return 0


def decode(frame, out, i=0):
    """PM2.5 and PM10 of a checked frame, in tenths of µg/m³ (the frame's own unit), into
    out[i], out[i+1]. Allocates nothing: the driver's hot path and parse() share it."""
    out[i] = frame[2] | (frame[3] << 8)
    out[i + 1] = frame[4] | (frame[5] << 8)


def parse(frame):
    """One 10-byte data frame -> {"pm2_5", "pm10"} in µg/m³ (floats); ValueError when bad."""
    why = check(frame)
    if why:
        raise ValueError("sds011: " + _WHY[why])
    t = [0, 0]
    decode(frame, t)
    return {"pm2_5": t[0] / 10, "pm10": t[1] / 10}


def command(data1, data2=0, data3=0, out=None):
    """The 19-byte command frame with device id FF FF (all sensors on the line)."""
    b = out if out is not None else bytearray(19)
    for i in range(19):
        b[i] = 0
    b[0] = _HEAD
    b[1] = _CMD
    b[2] = data1
    b[3] = data2
    b[4] = data3
    b[15] = 0xFF
    b[16] = 0xFF
    b[17] = (data1 + data2 + data3 + 0xFF + 0xFF) & 0xFF
    b[18] = _TAIL
    return b


# Only data frames: the AA C5 replies to settings are skipped (and a bad tail fails check()).
_head = b"\xaa\xc0"


class Sensor(Polled):
    def __init__(self, conf, hw):
        Polled.__init__(self, conf, hw, _FRAME, _head, 19, 2)   # PM2.5, PM10 per frame
        self._moded = False
        self._big = 0

    def _send(self, data1, data2=0, data3=0):
        self._link.uart.write(command(data1, data2, data3, self._cmd))

    def _request(self):
        self._send(_QUERY)

    def _take(self, frame):
        i = 2 * self._got
        decode(frame, self._pm, i)
        if self._pm[i] > _MAX or self._pm[i + 1] > _MAX:
            self._big += 1          # the end of the scale, not a value: overwritten by the next
            return
        self._got += 1

    async def wake(self):
        self._send(_SLEEP_WORK, 1, 1)
        await asyncio.sleep_ms(50)
        self._send(_SLEEP_WORK, 1, 1)
        self._asleep = False
        self._moded = False
        self._woke = time.ticks_ms()

    async def sleep(self):
        self._send(_SLEEP_WORK, 1, 0)
        self._asleep = True

    async def read(self, values):
        await self._ready()
        link = self._link
        if not self._moded:
            self._send(_SET_MODE, 1, 1)    # query mode: no unsolicited frames between readings
            self._moded = True
        pm = self._pm
        self._big = 0
        try:
            bad = await query(link, self.frames, self.gap_ms, self._request, check, self._take)
        except SensorError:
            self._moded = False            # it may have been swapped or power-cycled: set the mode again
            raise
        got, big = self._got, self._big
        if not got:
            raise SensorError("out_of_range" if big else "checksum" if bad or link.seen else "timeout")
        values["pm2_5_ugm3"] = round(trimmed_mean(pm, 0, 2, got) / 10, 1)
        values["pm10_ugm3"] = round(trimmed_mean(pm, 1, 2, got) / 10, 1)

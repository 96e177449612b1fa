"""DFRobot A02YYUW (and JSN-SR04T / AJ-SR04M in serial mode) ultrasonic distance on a UART.

Frame (A02YYUW datasheet, UART output): 4 bytes `FF H L SUM` at 9600 8N1, distance = H*256+L mm,
SUM = low byte of FF + H + L. With its RX pin floating the module sends a processed value about
every 100 ms; it compensates the speed of sound itself, so the node's air temperature is not used.

Known lies and what this driver does: echoes from walls, rain and foam make single wrong
frames, so `samples` frames are taken, the ones further than k·MAD (`mad_k`) from the median
are rejected and the rest averaged (the count kept is returned for telemetry); `0xFF` is also
a legal data byte, so a bad checksum re-synchronises from the next `FF` rather than trusting the
first one seen; frames in the blind zone (< min_range_cm) or beyond max_range_cm are
`out_of_range`, not numbers. Stale frames buffered since the last reading are flushed first.

Worst case the loop is held: the bytes the UART has buffered (rxbuf 256) are parsed between two
awaits, 2 µs a byte on the unix port (estimated 5-10 ms for 256 bytes on an ESP32). Unplugged:
`timeout` after `_FIRST_MS` (0.5 s); a reading never takes longer than 0.5 s + samples x 0.3 s,
and stops early once a majority of valid frames is out of reach.

    s = a02yyuw.Sensor(conf, hw)       # conf: {"uart": 1, "rx": 4, "tx": 23, "mount_height_cm": 300, ...}
    kept = await s.read(values)        # values["water_level_cm"], values["distance_cm"]
    a02yyuw.parse(b"\\xff\\x07\\xa1\\xa7")   # pure: 1953 (mm), ValueError when bad
"""
import asyncio
import time
from array import array

from drivers import SensorError
from drivers import _stats
from drivers._uart import Link

try:
    from micropython import const
except ImportError:
    const = lambda x: x  # noqa: E731

_FRAME = const(4)
_HEAD = const(0xFF)
_FIRST_MS = const(500)     # a live module has sent ~5 frames by then
_PER_MS = const(300)       # per frame asked for: 100 ms nominal, up to 300 ms in processed mode
_POLL_MS = const(20)
_FLOOR_MM = const(10)      # MAD floor: never reject a frame within 1 cm of the median


def check(frame):
    """0 when valid, 1 bad header, 3 bad checksum, 4 short (allocates nothing)."""
    if len(frame) < _FRAME:
        return 4
    if frame[0] != _HEAD:
        return 1
    if (frame[0] + frame[1] + frame[2]) & 0xFF != frame[3]:
        return 3
    return 0


def decode(frame):
    """The distance in mm (int) of a checked frame: what the driver and parse() both use."""
    return (frame[1] << 8) | frame[2]


def parse(frame):
    """One 4-byte frame -> distance in mm (int); ValueError("a02yyuw: bad checksum") etc."""
    why = check(frame)
    if why:
        raise ValueError("a02yyuw: " + ("", "bad header", "", "bad checksum", "short frame")[why])
    return decode(frame)


_head = b"\xff"


class Sensor:
    warmup_ms = 0

    def __init__(self, conf, hw):
        self.conf = conf
        self.samples = conf["samples"]
        self._link = Link(hw.uart(conf["uart"], conf["rx"], conf["tx"], 9600), _FRAME, _head)
        self._mm = array("i", [0] * self.samples)
        self._tmp = array("i", [0] * self.samples)
        self._lo = int(conf["min_range_cm"] * 10)
        self._hi = int(conf["max_range_cm"] * 10)

    async def read(self, values):
        c = self.conf
        link = self._link
        link.flush()
        n = self.samples
        need = (n + 1) // 2
        mm = self._mm
        got = oor = 0
        t0 = time.ticks_ms()
        end = _FIRST_MS + n * _PER_MS
        while got < n:
            while link.next(check):
                d = decode(link.buf)
                link.clear()
                if self._lo <= d <= self._hi:
                    mm[got] = d
                    got += 1
                    if got == n:
                        break
                else:
                    oor += 1
            if got == n:
                break
            el = time.ticks_diff(time.ticks_ms(), t0)
            if (el >= _FIRST_MS and not link.seen) or el >= end or oor > n - need or \
                    link.bad > 2 * n or (got < need and link.seen > 64 * n):
                break                       # unplugged, out of time, a majority out of reach, babble
            await asyncio.sleep_ms(_POLL_MS)
        if got < need:
            if not link.seen:
                raise SensorError("timeout")
            raise SensorError("out_of_range" if oor > link.bad else "checksum")
        kept = _stats.reject(mm, got, c["mad_k"], _FLOOR_MM, self._tmp)
        dist = _stats.mean(mm, kept) / 10
        values["distance_cm"] = round(dist, 1)
        values["water_level_cm"] = round(_stats.level_cm(c["mount_height_cm"], dist, c["offset_cm"]), 1)
        return kept

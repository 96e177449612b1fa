"""Plantower PMS5003 / PMS7003 / PMSA003 particulate sensor on a UART, in passive mode.

Frame (PMS5003 datasheet, "Transport protocol - active mode"): 32 bytes, start `42 4D`, frame
length 28 (2x13 data + 2), thirteen big-endian words, and a 16-bit check = sum of bytes 0-29.
Words 1-3 are PM1.0/2.5/10 at "CF=1, standard particle", words 4-6 under atmospheric environment
(what we publish), 7-12 particle counts, 13 reserved. Commands (appendix B) are 7 bytes
`42 4D CMD DATAH DATAL LRCH LRCL`: E1 00/01 passive/active mode, E2 read in passive mode,
E4 00/01 sleep/wake-up.

Known lies and what this driver does: the first ~30 s after wake-up are not stable (datasheet:
"stable data should be got at least 30 seconds after the sensor wakeup") -> `warming_up`; the
laser and fan wear out (the laser lasts about 8,000 h of running), so the node sleeps it between cycles when the
interval allows (`warmup_ms`, wake/sleep); a single frame can carry a spike, so `frames` frames
1 s apart are averaged as a trimmed mean (min and max dropped when more than two).

Worst case the loop is held: the bytes the UART has buffered (rxbuf 256) are parsed between two
awaits, 2 µs a byte on the unix port (estimated 5-10 ms for 256 bytes on an ESP32). A reading
takes about (frames - 1) s; unplugged (no byte at all) it gives `timeout` after at most
1.2 s (_polled.query); bytes that never form a valid frame give `checksum` within frames x 2.2 s.

    s = pms5003.Sensor(conf, hw)       # conf: {"uart": 2, "rx": 16, "tx": 17, "warmup_s": 30, "frames": 5}
    await s.read(values)               # values["pm2_5_ugm3"] = 12.3
    pms5003.parse(frame)["pm2_5"]      # pure: 32 bytes -> dict, ValueError when bad
"""
import time

from drivers import SensorError
from drivers._stats import trimmed_mean
from drivers._polled import Polled, query

try:
    from micropython import const
except ImportError:
    const = lambda x: x  # noqa: E731  (CPython: the pure functions are tested there)

_FRAME = const(32)
_LEN = const(28)           # frame length field: 13 words + check word
_CMD_MODE = const(0xE1)
_CMD_READ = const(0xE2)
_CMD_SLEEP = const(0xE4)
_BAD_HEADER = const(1)
_BAD_LENGTH = const(2)
_BAD_CHECKSUM = const(3)
_SHORT = const(4)
_WHY = const(("", "bad header", "bad length", "bad checksum", "short frame"))


def _word(f, i):
    return (f[i] << 8) | f[i + 1]


def check(frame):
    """0 when `frame` is a valid data frame, else one of the _BAD_* codes (allocates nothing)."""
    if len(frame) < _FRAME:
        return _SHORT
    if frame[0] != 0x42 or frame[1] != 0x4D:
        return _BAD_HEADER
    if _word(frame, 2) != _LEN:
        return _BAD_LENGTH
    s = 0
    for i in range(30):
        s += frame[i]
    if s & 0xFFFF != _word(frame, 30):
        return _BAD_CHECKSUM
    return 0


def decode(frame, out, i=0):
    """The atmospheric PM1.0, PM2.5, PM10 (µg/m³, what the node publishes) of a checked frame
    into out[i:i+3]. Allocates nothing: the driver's hot path and parse() share it."""
    for k in range(3):
        out[i + k] = _word(frame, 10 + 2 * k)


def _cf1(frame, out):
    for k in range(3):
        out[k] = _word(frame, 4 + 2 * k)


def parse(frame):
    """One 32-byte frame -> {"pm1_0", "pm2_5", "pm10" (atmospheric), "cf1_pm1_0", "cf1_pm2_5",
    "cf1_pm10"} in µg/m³; ValueError("pms5003: bad checksum") etc. when it is not a valid frame.
    Bytes after the 32nd are ignored."""
    why = check(frame)
    if why:
        raise ValueError("pms5003: " + _WHY[why])
    atm, cf1 = [0, 0, 0], [0, 0, 0]
    decode(frame, atm)
    _cf1(frame, cf1)
    return {"cf1_pm1_0": cf1[0], "cf1_pm2_5": cf1[1], "cf1_pm10": cf1[2],
            "pm1_0": atm[0], "pm2_5": atm[1], "pm10": atm[2]}


def command(cmd, data, out=None):
    """The 7-byte command frame `42 4D cmd 00 data LRC` (LRC = 16-bit sum of the first five)."""
    b = out if out is not None else bytearray(7)
    b[0] = 0x42
    b[1] = 0x4D
    b[2] = cmd
    b[3] = 0
    b[4] = data
    s = 0x42 + 0x4D + cmd + data
    b[5] = (s >> 8) & 0xFF
    b[6] = s & 0xFF
    return b


# Every data frame starts 42 4D and a length of 28 (this also skips the 8-byte command replies).
_head = b"\x42\x4d\x00\x1c"


class Sensor(Polled):
    def __init__(self, conf, hw):
        Polled.__init__(self, conf, hw, _FRAME, _head, 7, 3)   # atmospheric PM1.0, 2.5, 10 per frame

    def _send(self, cmd, data):
        self._link.uart.write(command(cmd, data, self._cmd))

    def _request(self):
        self._send(_CMD_READ, 0)

    def _take(self, frame):
        decode(frame, self._pm, 3 * self._got)
        self._got += 1

    async def wake(self):
        self._send(_CMD_SLEEP, 1)
        self._asleep = False
        self._woke = time.ticks_ms()

    async def sleep(self):
        self._send(_CMD_SLEEP, 0)
        self._asleep = True

    async def read(self, values):
        await self._ready()
        link = self._link
        self._send(_CMD_MODE, 0)      # passive; the PMS may have come back from wake-up in active mode
        bad = await query(link, self.frames, self.gap_ms, self._request, check, self._take)
        got = self._got
        pm = self._pm
        if not got:
            raise SensorError("checksum" if bad or link.seen else "timeout")
        values["pm1_0_ugm3"] = round(trimmed_mean(pm, 0, 3, got), 1)
        values["pm2_5_ugm3"] = round(trimmed_mean(pm, 1, 3, got), 1)
        values["pm10_ugm3"] = round(trimmed_mean(pm, 2, 3, got), 1)

"""PM sensors in query mode (PMS5003, SDS011): they are asked for each frame and the driver
waits for it. `query()` is that loop and `Polled` the state both keep (warm-up after a wake, a
buffer of PM words per frame), written once for both; a02yyuw, which only listens, does not load it.

    bad = await query(link, 5, 1000, request, check, take)   # take(frame) for each good frame
"""
import asyncio
import time
from array import array

from drivers import SensorError
from drivers._uart import Link

try:
    from micropython import const
except ImportError:
    const = lambda x: x  # noqa: E731

_WAIT_MS = const(1200)     # answer to a request: 32 bytes at 9600 baud take 33 ms; be generous
_POLL_MS = const(20)


async def query(link, n, gap_ms, request, check, take):
    """n frames, gap_ms apart: request() asks for one, the bytes that come within _WAIT_MS are
    cut into frames, check(frame) judges one (non-zero: a bad frame, drop a byte and look on)
    and take(frame) decodes and keeps a good one. Returns how many bad frames were seen; raises
    SensorError("timeout") when not one byte came after a request (unplugged, or asleep for good).
    Allocates nothing per frame."""
    for k in range(n):
        if k:
            await asyncio.sleep_ms(gap_ms)
        request()
        t0 = time.ticks_ms()
        while True:
            if link.next(check):
                take(link.buf)
                link.clear()
                break
            if time.ticks_diff(time.ticks_ms(), t0) >= _WAIT_MS:
                break
            await asyncio.sleep_ms(_POLL_MS)
        if not link.seen:
            raise SensorError("timeout")
    return link.bad


class Polled:
    """What a query-mode PM sensor driver (PMS5003, SDS011) keeps: the link, a command buffer,
    `words` PM words per frame, and when its fan last woke (readings before warm-up are refused)."""
    gap_ms = 1000          # between frames of one reading: both refresh once a second (tests shorten it)

    def __init__(self, conf, hw, size, head, cmd_len, words):
        self.frames = conf["frames"]
        self.warmup_ms = conf["warmup_s"] * 1000
        self._link = Link(hw.uart(conf["uart"], conf["rx"], conf["tx"], 9600), size, head)
        self._cmd = bytearray(cmd_len)
        self._pm = array("H", [0] * (words * self.frames))
        self._woke = time.ticks_ms()      # powered with the board: warm-up starts now
        self._asleep = False
        self._got = 0

    async def wake(self):
        """Each sensor's own: its wake-up command (pms5003, sds011)."""
        raise NotImplementedError

    async def _ready(self):
        """Before a reading: awake (a `sample` outside the node's schedule wakes it for next
        time), warmed up, the UART's stale bytes dropped."""
        if self._asleep:
            await self.wake()
        if time.ticks_diff(time.ticks_ms(), self._woke) < self.warmup_ms:
            raise SensorError("warming_up")
        self._link.flush()
        self._got = 0

"""Fixed-size frames out of a UART byte stream: re-synchronising, and allocation-free.

The drivers of serial sensors (pms5003, sds011, a02yyuw) share this: bytes are pulled with
`readinto` into a preallocated chunk and fed one at a time into the frame buffer, which must
start with the chip's `head` bytes (its start marker). A byte that breaks the head, or a frame
the driver rejects (checksum), drops one byte and re-checks what is left, so a frame that
starts inside garbage or inside a corrupted frame is still found.

    link = _uart.Link(uart, 4, b"\\xff")      # 4-byte frames that start with FF
    if link.poll(): ok = not check(link.buf)  # a full candidate frame sits in link.buf
    link.clear() if ok else link.resync()

Sensors in query mode (PMS5003, SDS011) ask for each frame and wait for it: `query()` is that loop,
and `Polled` the rest they share (warm-up after a wake, a buffer of PM words per frame).
"""
import asyncio
import time
from array import array

from drivers import SensorError

try:
    from micropython import const
except ImportError:
    const = lambda x: x  # noqa: E731

_WAIT_MS = const(1200)     # answer to a request: 32 bytes at 9600 baud take 33 ms; be generous
_POLL_MS = const(20)


async def query(link, n, gap_ms, request, parse, take):
    """n frames, gap_ms apart: request() asks for one, the bytes that come within _WAIT_MS are
    cut into frames, parse(frame) decodes one (ValueError: a bad frame, drop a byte and look on)
    and take(value) keeps it. Returns how many bad frames were seen; raises SensorError("timeout")
    when not one byte came after a request (unplugged, or asleep for good)."""
    for k in range(n):
        if k:
            await asyncio.sleep_ms(gap_ms)
        request()
        t0 = time.ticks_ms()
        while True:
            v = link.next(parse)
            if v is not None:
                take(v)
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

    async def _ready(self):
        """Before a reading: awake (a `sample` outside the node's schedule wakes it for next
        time), warmed up, the UART's stale bytes dropped."""
        if self._asleep:
            await self.wake()
        if time.ticks_diff(time.ticks_ms(), self._woke) < self.warmup_ms:
            raise SensorError("warming_up")
        self._link.flush()
        self._got = 0


class Link:
    def __init__(self, uart, size, head, chunk=32):
        self.uart = uart
        self.buf = bytearray(size)
        self.n = 0                  # bytes of the candidate frame in buf
        self.seen = 0               # bytes received since the last flush(): "no bytes" = unplugged
        self.bad = 0                # frames the driver's parse() refused since the last flush()
        self._head = head
        self._rx = bytearray(chunk)
        self._ri = self._rn = 0

    def flush(self, most=1024):
        """Drop what the UART has buffered (stale frames from before this reading), at most `most`
        bytes so that a babbling line cannot hold the loop, and start counting bytes anew."""
        self.n = self._ri = self._rn = self.seen = self.bad = 0
        while most > 0:
            r = self.uart.readinto(self._rx)
            if not r:
                break
            most -= r

    def clear(self):
        self.n = 0

    def poll(self):
        """Feed the bytes available now; True as soon as buf holds a full candidate frame
        (the rest stays queued for the next call), False when the UART has run dry."""
        buf = self.buf
        head = self._head
        while True:
            if self._ri >= self._rn:
                r = self.uart.readinto(self._rx)
                if not r:
                    return False
                self._rn = r
                self._ri = 0
                self.seen += r
            n = self.n
            buf[n] = self._rx[self._ri]
            self._ri += 1
            self.n = n + 1
            if n < len(head) and buf[n] != head[n]:
                self.resync()
            elif n + 1 == len(buf):
                return True

    def next(self, parse):
        """The next frame that parse(frame) accepts, decoded, or None once the UART has run dry.
        A frame it refuses (ValueError) is counted in `bad` and the search goes on inside it."""
        while self.poll():
            try:
                v = parse(self.buf)
            except ValueError:
                self.bad += 1
                self.resync()
                continue
            self.clear()
            return v
        return None

    def resync(self):
        """The frame in buf is bad: drop its first byte, then more until what is left starts
        like a frame again."""
        buf = self.buf
        head = self._head
        while self.n:
            n = self.n - 1
            for i in range(n):
                buf[i] = buf[i + 1]
            self.n = n
            k = 0
            while k < n and k < len(head) and buf[k] == head[k]:
                k += 1
            if k == n or k == len(head):
                return

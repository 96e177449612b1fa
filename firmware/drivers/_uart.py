"""Fixed-size frames out of a UART byte stream: re-synchronising, and allocation-free.

The drivers of serial sensors (pms5003, sds011, a02yyuw) share this: bytes are pulled with
`readinto` into a preallocated chunk, fed one at a time into the frame buffer, and every prefix
is checked by the driver's plain function `head(buf, n) -> bool`. A bad prefix, or a frame the
driver rejects (checksum), drops one byte and re-checks what is left, so a frame that starts
inside garbage or inside a corrupted frame is still found.

    link = _uart.Link(uart, 32, _head)          # _head(buf, n): is buf[:n] a plausible start?
    if link.poll(): ok = _valid(link.buf)        # a full candidate frame sits in link.buf
    link.resync() if not ok else link.clear()
"""


class Link:
    def __init__(self, uart, size, head, chunk=32):
        self.uart = uart
        self.buf = bytearray(size)
        self.n = 0                  # bytes of the candidate frame in buf
        self.seen = 0               # bytes received since the last clear_stats(): "no bytes" = unplugged
        self._head = head
        self._rx = bytearray(chunk)
        self._ri = 0
        self._rn = 0

    def clear_stats(self):
        self.seen = 0

    def flush(self, most=1024):
        """Drop what the UART has buffered (stale frames from before this reading), at most `most`
        bytes so that a babbling line cannot hold the loop."""
        self.n = self._ri = self._rn = 0
        rx = self._rx
        while most > 0:
            r = self.uart.readinto(rx)
            if not r:
                break
            most -= r

    def clear(self):
        self.n = 0

    def poll(self):
        """Feed the bytes available now; True as soon as buf holds a full candidate frame
        (the rest stays queued for the next call), False when the UART has run dry."""
        buf = self.buf
        size = len(buf)
        head = self._head
        while True:
            if self._ri >= self._rn:
                r = self.uart.readinto(self._rx)
                if not r:
                    return False
                self._rn = r
                self._ri = 0
                self.seen += r
            buf[self.n] = self._rx[self._ri]
            self._ri += 1
            self.n += 1
            if not head(buf, self.n):
                self._drop()
            elif self.n == size:
                return True

    def resync(self):
        """The frame in buf was bad: look for the next frame start inside it."""
        self._drop()

    def _drop(self):
        # Drop buf[0], then shorten until every prefix of what is left passes `head` again.
        buf = self.buf
        head = self._head
        while True:
            n = self.n - 1
            for i in range(n):
                buf[i] = buf[i + 1]
            self.n = n
            k = 1
            while k <= n and head(buf, k):
                k += 1
            if k > n:
                return

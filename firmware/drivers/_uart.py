"""Fixed-size frames out of a UART byte stream: re-synchronising, and allocation-free.

The drivers of serial sensors (pms5003, sds011, a02yyuw) share this: bytes are pulled with
`readinto` into a preallocated chunk and fed one at a time into the frame buffer, which must
start with the chip's `head` bytes (its start marker). A byte that breaks the head, or a frame
the driver rejects (checksum), drops one byte and re-checks what is left, so a frame that
starts inside garbage or inside a corrupted frame is still found.

    link = _uart.Link(uart, 4, b"\\xff")      # 4-byte frames that start with FF
    if link.poll(): ok = not check(link.buf)  # a full candidate frame sits in link.buf
    link.clear() if ok else link.resync()
"""


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

    def next(self, check):
        """True once buf holds a frame that check(frame) passes (0): decode it, then clear();
        False once the UART has run dry. A frame it refuses is counted in `bad`, and the search
        goes on inside it. The driver's parse() is check() then the same decoding."""
        while self.poll():
            if check(self.buf):
                self.bad += 1
                self.resync()
                continue
            return True
        return False

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

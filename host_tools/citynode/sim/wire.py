"""UART pacing: the virtual node's serial face moves bytes no faster than a real USB UART would.

    w = Wire(115200 / 10)         # bytes per second
    k = w.ready(now, pending)     # how many may go now; then w.sent(k, pending - k)
"""
import os


class Wire:
    """One direction of a UART at `rate` bytes/s: bytes leave one after another, each 1/rate s,
    and a byte counts as arrived when its last bit has. An idle line banks nothing."""

    def __init__(self, rate):
        self.rate = rate
        self.head = 0.0       # when the byte now at the head of the queue started
        self.busy = False

    def ready(self, now, pending):
        """How many of the pending bytes are across by now."""
        if not self.rate:
            return pending
        if not self.busy:
            self.busy = True
            self.head = max(self.head, now)
        return min(pending, int((now - self.head) * self.rate))

    def sent(self, k, left):
        if self.rate:
            self.head += k / self.rate
            self.busy = left > 0

    def wait(self, now, pending):
        """Seconds until a few ms worth (or all) of the pending bytes are across."""
        if not self.rate:
            return 0.0
        return max(0.0, self.head + min(pending, max(1, self.rate * 0.003)) / self.rate - now)


def send_paced(node, fd, buf, wire, now):
    """Write what of `buf` the wire has carried by `now` to the client's fd (counted in
    node.wire); seconds to wait before more can go (1.0 when nothing is left)."""
    k = wire.ready(now, len(buf))
    if k > 0:
        try:
            w = os.write(fd, buf[:k])
        except BlockingIOError:
            w = 0
        except OSError:
            w = 0
            node._connected = False
        del buf[:w]
        wire.sent(w, len(buf))
        node.wire["from_node"] += w
    return wire.wait(now, len(buf)) if buf else 1.0

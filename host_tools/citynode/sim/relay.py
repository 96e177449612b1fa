"""The byte relay between one MicroPython process and the client on the virtual node's serial
port (or the output callback without one): paced like a UART, with the bootstrap's in-band marks
taken out, a Ctrl-C delivered only when it is safe, and the unix port's exits turned into a
board's soft reboots by the supervisor (node.py).

    event, code = Pump(node, master_fd, raw_restart=False).run()
"""
import os
import select
import signal
import sys
import time

from . import ptys
from .bootstrap import _MARK, _MARK_END, FRIENDLY_BANNER, RAW_BANNER
from .rom import SYNC_START
from .wire import send_paced


def _partial(buf, pat):
    """Length of the longest suffix of buf that is a proper prefix of pat."""
    for k in range(min(len(pat) - 1, len(buf)), 0, -1):
        if buf.endswith(pat[:k]):
            return k
    return 0


class Pump:
    """Moves bytes between one MicroPython process and the client (serial) or the output
    callback, until the process has exited. Returns (event, exit code): event is "exit:N" when
    the bootstrap asked for a restart, "raw" when the process ended in the raw REPL, "loader"
    when the client sent esptool's SYNC (the process is killed; loader_pending holds the bytes)."""

    LIMIT = 4096

    def __init__(self, node, m, raw_restart):
        self.n = node
        self.m = m
        self.a = node._master
        self.raw = False
        self.hold = True                    # client input waits until the node can take it
        self.await_prompt = False
        self.cc_since = None                # when a Ctrl-C started waiting for a safe moment
        self.suppress = raw_restart         # after the bootstrap, until the raw REPL banner
        self.raw_restart = raw_restart
        self.sup = b""
        self.scan = b""
        self.tail = b""
        self.line = b""
        self.cr = False                     # the last byte sent to the client was a \r
        self.inject = bytearray()
        self.to_node = node._to_node
        self.to_client = node._to_client
        self.event = None
        self.main_running = False
        self.up, self.down = node._up, node._down
        self.next_hup_check = 0.0
        self.loader_pending = b""

    @property
    def connected(self):
        return self.n._connected

    @connected.setter
    def connected(self, v):
        self.n._connected = v

    # output from the node ------------------------------------------------------------------

    def from_node(self, data):
        buf = self.scan + data
        while True:
            i = buf.find(_MARK)
            if i < 0:
                k = _partial(buf, _MARK)
                self.emit(buf[:len(buf) - k])
                self.scan = buf[len(buf) - k:]
                return
            j = buf.find(_MARK_END, i)
            if j < 0:
                self.emit(buf[:i])
                self.scan = buf[i:]
                if len(self.scan) > 64:   # not one of ours after all
                    self.emit(self.scan)
                    self.scan = b""
                return
            self.emit(buf[:i])
            self.mark(buf[i + len(_MARK):j].decode("ascii", "replace"))
            buf = buf[j + len(_MARK_END):]

    def mark(self, what):
        if what == "run":
            self.main_running = True
            self.hold = False
        elif what == "repl":
            # Between the end of the bootstrap and the REPL's first prompt the unix port has
            # SIGINT at its default action while the terminal still raises it: a Ctrl-C byte
            # then would kill the process. Input waits for the prompt.
            self.main_running = False
            self.hold = True
            if self.raw_restart:
                self.inject += b"\x01"
            else:
                self.await_prompt = True
        elif what.startswith("exit:"):
            self.event = what
            self.n._reap_group(signal.SIGKILL)

    def emit(self, seg):
        if not seg:
            return
        if self.suppress:
            s = self.sup + seg
            i = s.find(RAW_BANNER)
            if i < 0:
                self.sup = s[-(len(RAW_BANNER) - 1):]
                return
            self.suppress = False
            self.hold = False
            self.raw = True
            seg = s[i:]
        t = self.tail + seg
        if self.await_prompt and b">>> " in t:
            self.await_prompt = False
            self.hold = False
        r, f = t.rfind(RAW_BANNER), t.rfind(FRIENDLY_BANNER)
        if r >= 0 or f >= 0:
            self.raw = r > f
            if f > r:
                self.main_running = False
        self.tail = t[-40:]
        if self.n.serial:
            if self.connected:
                self.to_client += self.crlf(seg)
        elif not self.n._stop.is_set():   # not the KeyboardInterrupt of a deliberate stop
            self.lines(seg)

    def crlf(self, seg):
        """A board's REPL ends lines with \r\n (MicroPython's cooked stdout); the unix port's
        with \n alone. What already has its \r keeps it, across pieces too."""
        out = seg.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        if self.cr and seg[:1] == b"\n":
            out = out[1:]
        self.cr = seg[-1:] == b"\r"
        return out

    def lines(self, seg, final=False):
        self.line += seg
        parts = self.line.split(b"\n")
        self.line = parts.pop()
        if final and self.line:
            parts.append(self.line)
            self.line = b""
        out = self.n.output
        for p in parts:
            text = self.n.prefix + p.rstrip(b"\r").decode("utf-8", "replace")
            try:
                if out:
                    out(text)
                else:
                    sys.stdout.write(text + "\n")
                    sys.stdout.flush()
            except OSError:   # stdout has gone (a closed pipe): nobody to run for
                self.n._stop.set()
                return

    # the loop ----------------------------------------------------------------------------------

    def write_node(self, buf, k, now):
        """Write up to k bytes of buf to the node; how many went. A Ctrl-C goes only while the
        process is parked in a system call: the unix port raises KeyboardInterrupt straight from
        its SIGINT handler (a longjmp), and one that lands while the interpreter holds its GC or
        qstr lock (compiling, allocating) leaves the lock taken and the process deadlocked on
        its next allocation. A board raises it at the next bytecode instead; this is as close."""
        chunk = bytes(buf[:k])
        if chunk[:1] == b"\x03":
            if self.cc_since is None:
                self.cc_since = now
            if not ptys.parked(self.n.pid) and now - self.cc_since < 2.0:
                return 0
            self.cc_since = None
            if self.raw and not ptys.reading_stdin(self.n.pid):
                # Code run from the raw REPL: a board's UART sees the Ctrl-C at once, but the unix
                # port reads no input while it runs (raw mode, no ISIG): raise it as a signal.
                try:
                    os.kill(self.n.pid, signal.SIGINT)
                except OSError:
                    pass
            i = chunk.find(b"\x03", 1)
        else:
            i = chunk.find(b"\x03")
        if i > 0:
            chunk = chunk[:i]
        try:
            return os.write(self.m, chunk)
        except OSError:
            return 0

    def check_client(self, now):
        if self.a is None or now < self.next_hup_check:
            return
        self.next_hup_check = now + 0.01
        hup = ptys.hung_up(self.a)
        if hup and self.connected:
            self.drain_client()     # what the client wrote before it closed still arrives
            self.to_client.clear()
        self.connected = not hup

    def check_sync(self):
        """esptool's SYNC (a SLIP frame) reaches the node: it resets into its ROM loader."""
        i = self.to_node.find(SYNC_START)
        if i < 0 or self.event:
            return
        self.loader_pending = bytes(self.to_node[i:])
        self.to_node.clear()
        self.to_client.clear()
        self.event = "loader"
        self.n._reap_group(signal.SIGKILL)

    def drain_client(self):
        while len(self.to_node) < self.LIMIT:
            try:
                d = os.read(self.a, self.LIMIT)
            except OSError:
                return
            if not d:
                return
            self.to_node += d

    def run(self):
        n, m = self.n, self.m
        stop_phase, stop_deadline = 0, 0.0
        alive, last_words = True, None
        while alive or (self.to_client and self.connected):
            now = time.monotonic()
            if not alive:
                # the last words (e.g. "OK\r\n" of a Ctrl-D in the raw REPL) still go out
                last_words = last_words or now + 2.0
                if now > last_words:
                    break
            self.check_client(now)
            if n._stop.is_set() and alive:
                if stop_phase == 0:
                    stop_phase, stop_deadline = 1, now + 1.5
                    if self.main_running:
                        self.inject += b"\x03"   # let the firmware stop itself first
                    else:
                        stop_deadline = now
                if stop_phase == 1 and (now >= stop_deadline or not self.main_running):
                    stop_phase, stop_deadline = 2, now + 1.0
                    n._reap_group(signal.SIGTERM)
                if stop_phase == 2 and now >= stop_deadline:
                    stop_phase = 3
                    n._reap_group(signal.SIGKILL)
            if not alive and stop_phase:
                break
            timeout = 0.01 if self.a is not None else 0.1
            # to the node: injected bytes, then the client's (at the wire's pace)
            if alive and self.inject:
                del self.inject[:self.write_node(self.inject, len(self.inject), now)]
                if self.inject:
                    timeout = min(timeout, 0.001)
            if alive and self.to_node and not self.hold and not self.inject:
                k = self.up.ready(now, len(self.to_node))
                if k > 0:
                    w = self.write_node(self.to_node, k, now)
                    if w == 0 and self.cc_since is not None:
                        timeout = min(timeout, 0.001)
                    del self.to_node[:w]
                    self.up.sent(w, len(self.to_node))
                    n.wire["to_node"] += w
                if self.to_node:
                    timeout = min(timeout, self.up.wait(now, len(self.to_node)))
            # to the client
            if self.to_client and not self.connected:
                self.to_client.clear()
            if self.to_client:
                timeout = min(timeout, send_paced(n, self.a, self.to_client, self.down, now))
            rd = []
            if alive and len(self.to_client) < self.LIMIT:
                rd.append(m)
            if self.connected and len(self.to_node) < self.LIMIT:
                rd.append(self.a)
            if stop_phase:
                timeout = min(timeout, 0.02)
            # select, not poll: microsecond timeouts, so pacing adds no millisecond ticks
            for fd in select.select(rd, [], [], timeout)[0]:
                if fd == m:
                    try:
                        d = os.read(m, 4096)
                    except BlockingIOError:
                        continue
                    except OSError:
                        d = b""
                    if not d:
                        alive = False
                        continue
                    self.from_node(d)
                elif fd == self.a:
                    try:
                        d = os.read(self.a, self.LIMIT - len(self.to_node))
                    except BlockingIOError:
                        continue
                    except OSError:   # EIO: the client has closed the port
                        d = b""
                    if d and self.event == "loader":
                        self.loader_pending += d   # the loader's, once it listens
                    elif d:
                        self.to_node += d
                        self.check_sync()
                    else:
                        self.connected = False
                        self.to_client.clear()
            if not alive and not self.n.serial:
                break
        if self.scan:
            self.emit(self.scan)
            self.scan = b""
        if not n.serial:
            self.lines(b"", final=True)
        code = n._wait_pid(n.pid, 3.0)
        if code is None:
            n._reap_group(signal.SIGKILL)
            code = n._wait_pid(n.pid, 3.0)
        if self.event is None and n.serial and self.raw:
            self.event = "raw"
        return self.event, code

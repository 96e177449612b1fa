"""A node's log over USB: the `citynode: ...` lines its firmware prints on the serial console,
read as they come, without a byte sent to the node (main.py keeps running); and, on request,
the lines it kept in RAM since it booted (main.py's RING), read from the REPL.

    from citynode import logs
    for ts, line in logs.follow("/dev/ttyUSB0", seconds=60):
        print(ts, line)
    kept = logs.since_boot("/dev/ttyUSB0")     # [(unix time, "link: lost"), ...]; soft-resets the node

Opening the port never resets the node: DTR and RTS are released in the order that keeps an ESP32
board's auto-reset circuit from pulling EN low (it resets the chip when DTR is low and RTS high).
"""
import errno
import time

from . import transport
from .errors import CheckFailed, Unreachable

TICKS_PERIOD = 1 << 30   # MicroPython's ticks_ms wrap
_RING = ("import time\nprint(time.ticks_ms())\ntry:\n for l in RING:print(l)\n"
         "except NameError:print('NORING')\n")


def since_boot(port, timeout=5.0):
    """The lines the node kept since it booted, oldest first, as (host time, text). Reading them
    interrupts main.py: the node is soft-reset back to work afterwards (a new boot)."""
    with transport.Device(port, timeout) as dev:
        out = dev.exec(_RING).decode("utf-8", "replace").splitlines()
        dev.soft_reset()
    if not out or not out[0].strip().isdigit():
        raise CheckFailed("%s: unexpected answer from the node: %r" % (port, out[:2]))
    if "NORING" in out:
        raise CheckFailed("%s: this firmware keeps no log lines (deploy a newer one)" % port)
    now_ticks, now = int(out[0]), time.time()
    kept = []
    for ln in out[1:]:
        t, _, text = ln.partition(" ")
        if t.isdigit():
            ago = ((now_ticks - int(t)) % TICKS_PERIOD) / 1000.0
            kept.append((now - ago, text))
    return kept


def open_passive(port):
    """The serial port opened without resetting the node and without a byte written."""
    why = transport.diagnose(port)
    if why:
        raise Unreachable(why)
    import serial
    try:
        s = serial.Serial(port, 115200, timeout=0.2)
        # Opened with both lines asserted, as the kernel does: EN and IO0 stay high. Released
        # RTS first: (DTR, RTS) goes (1,1) -> (1,0) -> (0,0) and never through (0,1), the state
        # in which an ESP32 board's auto-reset circuit pulls EN low.
    except (OSError, serial.SerialException) as e:
        raise Unreachable("%s: %s" % (port, e))
    try:
        s.rts = False
        s.dtr = False
    except OSError as e:
        if e.errno not in (errno.ENOTTY, errno.EINVAL):   # a pty (a virtual node) has no modem lines
            s.close()
            raise Unreachable("%s: %s" % (port, e))
    return s


def follow(port, seconds=None):
    """(host time, line) for every line the node prints, as it comes; for `seconds`, or until the
    caller stops."""
    s = open_passive(port)
    end = None if seconds is None else time.monotonic() + seconds
    buf = b""
    try:
        while end is None or time.monotonic() < end:
            try:
                d = s.read(256)
            except OSError as e:
                raise Unreachable("%s: the port went away (%s)" % (port, e))
            if not d:
                continue
            buf += d
            while b"\n" in buf:
                ln, buf = buf.split(b"\n", 1)
                text = ln.rstrip(b"\r").decode("utf-8", "replace")
                if not text.strip():
                    continue
                yield time.time(), text
    finally:
        s.close()

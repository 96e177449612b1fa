"""Talking to a node over USB serial (or a virtual node's pseudo-terminal) through mpremote's
SerialTransport: its raw REPL, raw-paste mode and soft reset. Every failure becomes one line:
errors.Unreachable (exit 3) when the node cannot be reached or stops answering,
errors.CheckFailed (exit 1) when code run on the node raised.

    with transport.Device("/dev/ttyUSB0") as dev:
        print(dev.exec("import sys; print(sys.implementation._mpy)"))
        dev.soft_reset()
"""
import contextlib
import errno
import fcntl
import io
import os
import signal
import sys
import threading
import time

from .errors import CheckFailed, Unreachable

RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"


# --- Ctrl-C -------------------------------------------------------------------------------------
# An interrupted command must not strand a node in the raw REPL. on_sigint (installed by the CLI
# while a command runs) marks the interrupt before raising KeyboardInterrupt; every Device closed
# while it propagates first puts its node back to work and says in what state it left it.
_INT = {"hit": False, "busy": False, "deferred": False, "reports": []}


def on_sigint(signum, frame):
    # putting a node back, a step that must finish whole, or a Ctrl-C already on its way out:
    # another one waits, so that every node is put back and said (each bounded by its timeout)
    if _INT["busy"] or _INT["hit"]:
        _INT["deferred"] = True
        return
    _INT["hit"] = True
    raise KeyboardInterrupt


def interrupted():
    """A Ctrl-C is on its way out: leave the node to Device.close(), which stops what runs on it
    first (a soft reset alone would wait behind the code still running)."""
    return _INT["hit"]


def clear_interrupt():
    _INT.update(hit=False, busy=False, deferred=False, reports=[])


def interrupt_reports():
    """[(port or node, what the node holds, how it was left or "")] since the interrupt."""
    return list(_INT["reports"])


def report_interrupt(name, held, left=""):
    """Say what a node holds after the interrupt, for a node no Device talks to (ota push)."""
    _INT["reports"].append((name, held, left))


@contextlib.contextmanager
def whole():
    """A step a Ctrl-C must not cut in two (renaming the firmware into place): the interrupt
    waits until the step is done. Only where on_sigint is the handler, in the main thread."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is not on_sigint:
        yield
        return
    _INT["busy"] = True
    try:
        yield
    finally:
        _INT["busy"] = False
        if _INT["deferred"]:
            _INT["deferred"] = False
            _INT["hit"] = True
            raise KeyboardInterrupt


def _last_line(text):
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "error"


def diagnose(port):
    """Why a port cannot be opened, in words a technician can act on."""
    if not os.path.exists(port):
        return "%s: no such port (is the board plugged in? see `citynode ports`)" % port
    try:
        fd = os.open(port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except PermissionError:
        return "%s: permission denied (add yourself to the dialout group)" % port
    except OSError as e:
        if e.errno == errno.EBUSY:
            return "%s: port is busy (another program has it open)" % port
        return "%s: cannot open: %s" % (port, e.strerror or e)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
    except OSError:
        return "%s: port is busy (another program has it open)" % port
    finally:
        os.close(fd)
    return None


def _mpremote_package():
    # mpremote/__init__.py only looks up the package's version, through importlib.metadata,
    # which costs ~80 ms on every command; the transport needs none of it. Register the package
    # without running it and look the version up if someone asks for it.
    if "mpremote" in sys.modules:
        return
    import importlib.util
    spec = importlib.util.find_spec("mpremote")
    if spec is None or not spec.submodule_search_locations:
        return
    pkg = importlib.util.module_from_spec(spec)

    def __getattr__(name):
        if name == "__version__":
            from importlib.metadata import version
            pkg.__version__ = version("mpremote")
            return pkg.__version__
        raise AttributeError(name)

    pkg.__getattr__ = __getattr__
    sys.modules["mpremote"] = pkg


class Device:
    """One open connection to a node. `timeout` bounds how long the node may stay silent."""

    def __init__(self, port, timeout=5.0, held=None):
        if not port:
            raise Unreachable("no port given")
        self.port = port
        self.timeout = timeout
        self.t = None
        self.in_raw = False
        # What the node holds if we stop now, by what changed: whatever renames a file into place
        # records it (holds()); `held` carries it over from an earlier Device on the same node.
        self.held = dict(held or {})
        # Temporary files a write has put on the node and not yet renamed into place: an interrupt
        # removes them.
        self.leftovers = set()
        self.runs = True    # False while the node has no firmware to run, None while unknown (deploy)

    @property
    def state(self):
        """What the node holds, in words: "unchanged", "new firmware in place, new config.json in place"."""
        return ", ".join(self.held.values()) or "unchanged"

    def holds(self, what, words):
        """The node now holds `words` as its `what` (the firmware, a file)."""
        self.held[what] = words

    # --- connection ---------------------------------------------------------------------------

    def open(self):
        _mpremote_package()
        try:
            from mpremote.transport import TransportError
            from mpremote.transport_serial import SerialTransport
        except ImportError as e:  # pragma: no cover - a broken install
            raise Unreachable("mpremote is not installed: %s" % e)
        self._TransportError = TransportError
        why = diagnose(self.port)
        if why:
            raise Unreachable(why)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                self.t = SerialTransport(self.port, baudrate=115200, timeout=min(1.0, self.timeout))
        except TransportError:
            raise Unreachable(diagnose(self.port) or "%s: cannot open the port" % self.port)
        except OSError as e:
            raise Unreachable("%s: %s" % (self.port, e))
        return self

    def close(self):
        if self.t is not None and _INT["hit"]:
            self._after_interrupt()
        if self.t is not None:
            try:
                self.t.close()
            except Exception:
                pass
            self.t = None

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        self.close()

    @contextlib.contextmanager
    def _errors(self, what):
        # mpremote prints what it received when it gives up; we say it in one line instead.
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                yield
        except (Unreachable, CheckFailed):
            raise
        except self._TransportError as e:
            if hasattr(e, "error_output"):
                raise CheckFailed("%s: the node raised %s" % (self.port, _last_line(e.error_output)))
            msg = str(e) or "no answer"
            if "raw repl" in msg:
                msg = "no answer from the REPL within %g s (is MicroPython running? is the " \
                      "firmware blocking Ctrl-C?)" % self.timeout
            raise Unreachable("%s: %s while %s" % (self.port, msg, what))
        except Exception as e:  # pyserial errors, a short read in mpremote's raw-paste code
            if isinstance(e, OSError) and os.path.exists(self.port) is False:
                raise Unreachable("%s: the port went away while %s" % (self.port, what))
            raise Unreachable("%s: %s while %s" % (self.port, _last_line(e) or type(e).__name__, what))

    # --- REPL -----------------------------------------------------------------------------------

    def raw(self):
        """Interrupt whatever runs (Ctrl-C) and enter the raw REPL, without a soft reset."""
        if self.in_raw:
            return
        with self._errors("entering the raw REPL"):
            self.t.enter_raw_repl(soft_reset=False, timeout_overall=self.timeout)
        self.in_raw = True

    def exec(self, code, timeout=None):
        """Run code on the node; its printed output (bytes)."""
        if _INT["hit"] and threading.current_thread() is not threading.main_thread():
            # A Ctrl-C reaches the main thread only: a worker (provision's) stops at its next call.
            raise KeyboardInterrupt
        self.raw()
        with self._errors("running code on the node"):
            out, err = self.t.exec_raw(code, timeout=timeout or max(10, self.timeout))
        if err:
            raise CheckFailed("%s: the node raised %s" % (self.port, _last_line(err.decode("utf-8", "replace"))))
        return out

    def soft_reset(self, wait=True):
        """Soft reboot from the friendly REPL, so boot.py and main.py run as at power-on."""
        with self._errors("soft-resetting the node"):
            if self.in_raw:
                self.t.exit_raw_repl()
                self.in_raw = False
            self.t.serial.write(b"\x04")
            if wait:
                data = self.t.read_until(1, b"soft reboot\r\n", timeout=self.timeout,
                                         timeout_overall=self.timeout)
                if not data.endswith(b"soft reboot\r\n"):
                    raise Unreachable("%s: the node did not confirm the soft reset" % self.port)

    def _after_interrupt(self):
        """Stop whatever runs on the node (a raw-paste transfer, a probe), and soft-reset it back
        into main.py; record the outcome for the CLI's one line."""
        _INT["busy"] = True
        ok = False
        try:
            t = self.t
            with self._errors("putting the node back to work"):
                try:
                    t.serial.reset_output_buffer()   # what we had not sent yet stays unsent
                except Exception:
                    pass
                t.serial.write(b"\r\x03\x03")      # ends a raw paste (KeyboardInterrupt on the node)
                time.sleep(0.2)
            self.in_raw = False
            self.timeout = min(self.timeout, 5.0)
            self.raw()
            if self.leftovers:
                try:
                    t.exec_raw("import os\nfor n in %r:\n try:os.remove(n)\n except OSError:pass\n"
                               % (tuple(sorted(self.leftovers)),), timeout=self.timeout)
                    self.leftovers.clear()
                except Exception:
                    pass    # a temporary file left over is harmless: the next write replaces it
            self.soft_reset()
            ok = True
        except Exception:
            ok = False
        finally:
            _INT["busy"] = False
            _INT["deferred"] = False
        left = "the node did not answer: reset it (citynode reset, or its EN button)" if not ok else \
            "node soft-reset" if self.runs is None else \
            "node back at work (soft reset)" if self.runs else "node soft-reset (nothing to run yet)"
        _INT["reports"].append((self.port, self.state, left))

    def hard_reset(self):
        """Reset the chip. A board through its auto-reset circuit (RTS drives EN low, DTR held
        released so IO0 stays high and it boots the firmware): works even when the firmware
        hangs. A virtual node (a pty, no modem lines) through machine.reset() on its REPL."""
        from .flash import is_virtual
        if not is_virtual(self.port):
            with self._errors("resetting the chip"):
                s = self.t.serial
                s.dtr = False
                s.rts = True
                time.sleep(0.1)
                s.rts = False
            self.in_raw = False
            return "EN pulled low by RTS"
        self.raw()
        with self._errors("resetting the chip"):
            self.t.exec_raw_no_follow("import board\nboard.reset()\n")
        self.in_raw = False
        return "machine.reset() on the node"

    def leave(self):
        """Back to the friendly REPL without a reset (the state a technician expects)."""
        if self.in_raw and self.t is not None:
            with self._errors("leaving the raw REPL"):
                self.t.exit_raw_repl()
            self.in_raw = False


def connect(port, timeout=5.0):
    return Device(port, timeout).open()


def wait_port(port, timeout):
    """Wait until a port exists (a board re-enumerating after a reset)."""
    end = time.monotonic() + timeout
    while not os.path.exists(port):
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True

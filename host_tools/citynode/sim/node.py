"""The virtual node: the real firmware on the MicroPython unix port, supervised like a board.

    from citynode.sim import SimNode
    node = SimNode("/tmp/flash", broker="127.0.0.1:1883", serial=True).start()
    print(node.port)        # /dev/pts/7: mpremote and every citynode command can use it
    node.stop()

A flash directory is the node's flash root. Each MicroPython process runs on its own
pseudo-terminal (its controlling terminal, so a Ctrl-C byte interrupts main.py as on a board),
with a bootstrap that mounts the flash directory at "/" and runs boot.py and main.py. The
supervisor restarts the process when the firmware asks for a reset (exit codes below), and with
serial=True relays a second pseudo-terminal, the node's "USB port", to it: paced to baud/10
bytes/s, counting the bytes on the wire, and turning the unix port's exits into a board's soft
reboots.

Firmware exit codes on the sim: 77 machine.reset(), 78 deep sleep (sleep time in ms written to
.deepsleep_ms), 79 watchdog. The next process gets CITYNODE_RESET=soft/deepsleep/wdt.
"""
import ctypes
import json
import os
import select
import shutil
import signal
import sys
import termios
import threading
import time
import tty
from pathlib import Path

EXIT_RESET, EXIT_DEEPSLEEP, EXIT_WDT = 77, 78, 79
RESTARTS = {EXIT_RESET: "soft", EXIT_DEEPSLEEP: "deepsleep", EXIT_WDT: "wdt"}

RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"
FRIENDLY_BANNER = b'Type "help()" for more information.'
SOFT_REBOOT = b"MPY: soft reboot\r\n"
# The bootstrap talks to the supervisor in-band with APC escape sequences (terminals ignore them);
# the relay strips them from what the client sees.
_MARK, _MARK_END = b"\x1b_cn:", b"\x1b\\"

# Runs in MicroPython (-c). Everything lives inside _cn() so that the REPL's namespace holds only
# what boot.py and main.py defined, as on a board.
_BOOT = r"""
def _cn():
    import vfs, os, sys
    vfs.mount(vfs.VfsPosix(os.getenv('CITYNODE_FLASH')), '/')
    os.chdir('/')
    sys.path[:] = ['', '.frozen', '/lib']
    serial = os.getenv('CITYNODE_SERIAL') == '1'
    def mark(s):
        sys.stdout.write('\x1b_cn:' + s + '\x1b\\')
    def run(f):
        try:
            src = open(f).read()
        except OSError:
            return
        if f == 'main.py':
            mark('run')
        try:
            exec(compile(src, f, 'exec'), globals())
        except SystemExit as e:
            c = e.args[0] if e.args else 0
            if not serial:
                raise
            if c in (77, 78, 79):
                # -i would swallow the exit and start the REPL: the supervisor ends us instead.
                mark('exit:%d' % c)
                import time
                while True:
                    time.sleep(1)
        except BaseException as e:
            if not serial:
                raise
            sys.print_exception(e)
    run('boot.py')
    if os.getenv('CITYNODE_MAIN') == '1':
        run('main.py')
    if serial:
        mark('repl')
_cn()
del _cn
"""


def micropython():
    """The unix port's executable: CITYNODE_MICROPYTHON, the venv's, or the one on PATH."""
    p = os.environ.get("CITYNODE_MICROPYTHON")
    if p:
        return p
    here = Path(sys.executable).with_name("micropython")
    if here.exists():
        return str(here)
    return shutil.which("micropython") or str(here)


def registry_dir():
    """Where running virtual nodes leave one JSON file each (read by `citynode ports`)."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and os.path.isdir(base):
        return Path(base) / "citynode"
    return Path("/tmp") / ("citynode-%d" % os.getuid())


def running():
    """The virtual nodes that are running now, as registered; stale entries are removed."""
    out = []
    d = registry_dir()
    for p in sorted(d.glob("sim-*.json")) if d.is_dir() else ():
        try:
            info = json.loads(p.read_text())
            os.kill(info["pid"], 0)
        except (OSError, ValueError, KeyError, TypeError):
            try:
                p.unlink()
            except OSError:
                pass
            continue
        if os.path.exists(info.get("port") or ""):
            out.append(info)
    return out


def install_firmware(flash, root=None):
    """Put the firmware sources on a flash directory, as a factory-flashed board has them."""
    from .deploy import firmware_files
    flash = Path(flash)
    for rel, src in firmware_files(root):
        dst = flash / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)


def _node_id(flash):
    try:
        v = json.loads((Path(flash) / "config.json").read_text()).get("node_id")
        return v if isinstance(v, str) else None
    except (OSError, ValueError, AttributeError):
        return None


def _libc_pdeathsig():
    # The child dies with the thread that forked it, so a supervisor that is killed leaves no
    # MicroPython process behind.
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
        return lambda: prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return lambda: None


class _Wire:
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


def _set_raw(fd, isig=False):
    tty.setraw(fd)
    if isig:
        # A board turns a Ctrl-C byte into KeyboardInterrupt while a program runs; the unix port
        # does it through SIGINT, so the line discipline must raise it. The REPL switches ISIG
        # off itself while it reads a line.
        a = termios.tcgetattr(fd)
        a[3] |= termios.ISIG
        a[6][termios.VINTR] = 3
        termios.tcsetattr(fd, termios.TCSANOW, a)


_FUTEX = {"x86_64": "202", "aarch64": "98", "armv7l": "240", "i686": "240"}.get(os.uname().machine)


def _parked(pid):
    """True when the process sleeps in a system call (not a futex): no interpreter lock held."""
    try:
        with open("/proc/%d/syscall" % pid) as f:
            nr = f.read().split(None, 1)[0]
    except (OSError, IndexError):
        return True   # nothing to go by (no /proc): deliver at once
    return nr.isdigit() and nr != _FUTEX


def _partial(buf, pat):
    """Length of the longest suffix of buf that is a proper prefix of pat."""
    for k in range(min(len(pat) - 1, len(buf)), 0, -1):
        if buf.endswith(pat[:k]):
            return k
    return 0


class SimNode:
    """One virtual node. start() returns once the first MicroPython process runs.

    serial: serve the REPL on a pseudo-terminal (.port) instead of printing the firmware's output.
    output: called with each output line (str) when serial is False; default prints to stdout,
            prefixed with `prefix`.
    """

    def __init__(self, flash, broker=None, config=None, scenario=None, serial=False, baud=None,
                 heapsize=None, empty=False, prefix="", output=None, env=None, register=True,
                 firmware_root=None):
        self.flash = Path(flash).resolve()
        self.broker = broker
        self.config = config
        self.scenario = scenario
        self.serial = serial
        self.baud = baud
        self.heapsize = heapsize
        self.empty = empty
        self.prefix = prefix
        self.output = output
        self.extra_env = dict(env or {})
        self.register = register
        self.firmware_root = firmware_root
        self.port = None
        self.pid = None
        self.returncode = None
        self.resets = []          # reset cause of every process started, in order
        self.wire = {"to_node": 0, "from_node": 0}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._kill = False
        self._started = threading.Event()
        self._done = threading.Event()
        self._thread = None
        self._reg = None
        self._master = None       # client side of the serial face
        self._error = None
        # bytes on their way, kept across restarts of the process
        self._to_node = bytearray()
        self._to_client = bytearray()
        self._connected = False
        rate = baud / 10.0 if serial and baud else None
        self._up, self._down = _Wire(rate), _Wire(rate)

    # --- public -----------------------------------------------------------------------------

    @property
    def node_id(self):
        return _node_id(self.flash)

    def prepare(self):
        """Lay out the flash directory: firmware if it has none, config and scenario if given."""
        self.flash.mkdir(parents=True, exist_ok=True)
        if not self.empty and not (self.flash / "main.py").exists():
            install_firmware(self.flash, self.firmware_root)
        if self.config:
            shutil.copyfile(self.config, self.flash / "config.json")
        if self.scenario:
            shutil.copyfile(self.scenario, self.flash / "sim.json")

    def start(self, timeout=10.0):
        self.prepare()
        if self.serial:
            m, s = os.openpty()
            _set_raw(s)
            self.port = os.ttyname(s)
            os.close(s)   # the client opens it; until then the master reports a hang-up
            os.set_blocking(m, False)
            self._master = m
        self._thread = threading.Thread(target=self._supervise, name="sim-%s" % self.flash.name,
                                        daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise RuntimeError("virtual node did not start")
        if self._error:
            raise self._error
        if self.serial and self.register:
            self._register()
        return self

    def stop(self, timeout=5.0):
        """Stop cleanly: Ctrl-C to a running main.py, then SIGTERM, then SIGKILL to its group."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout)
            if self._thread.is_alive():
                self._reap_group(signal.SIGKILL)
        self._cleanup()
        return self.returncode

    def kill(self):
        """A power cut: the MicroPython process group is killed at once and not restarted."""
        self._kill = True
        self._reap_group(signal.SIGKILL)
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        self._cleanup()

    def wait(self, timeout=None):
        """Wait until the node has ended for good (non-serial: the firmware exited); its code."""
        self._done.wait(timeout)
        return self.returncode

    @property
    def alive(self):
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # --- registry ---------------------------------------------------------------------------

    def _register(self):
        d = registry_dir()
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._reg = d / ("sim-%d-%s.json" % (os.getpid(), self.port.rsplit("/", 1)[-1]))
        info = {"port": self.port, "flash": str(self.flash), "node_id": self.node_id,
                "pid": os.getpid(), "baud": self.baud, "started": int(time.time())}
        tmp = self._reg.with_suffix(".tmp")
        tmp.write_text(json.dumps(info))
        os.replace(tmp, self._reg)

    def _cleanup(self):
        if self._reg:
            try:
                self._reg.unlink()
            except OSError:
                pass
            self._reg = None
        if self._master is not None:
            try:
                os.close(self._master)
            except OSError:
                pass
            self._master = None

    # --- the process ------------------------------------------------------------------------

    def _spawn(self, reset, run_main):
        m, s = os.openpty()
        _set_raw(s, isig=True)
        env = dict(os.environ)
        env.update(self.extra_env)
        env.update(CITYNODE_FLASH=str(self.flash), CITYNODE_RESET=reset,
                   CITYNODE_MAIN="1" if run_main else "0", CITYNODE_SERIAL="1" if self.serial else "0")
        if self.broker:
            env["CITYNODE_BROKER"] = self.broker
        exe = micropython()
        argv = [exe]
        if self.heapsize:
            argv += ["-X", "heapsize=%s" % self.heapsize]
        if self.serial:
            argv.append("-i")   # the REPL after main.py, as a board
        argv += ["-c", _BOOT]
        deathsig = _libc_pdeathsig()
        # Until it execs, a forked child holds a copy of every fd this process has open, with
        # their locks: in-process (tests), the client's own locked port. Return only once the
        # exec has closed them (the pipe's write end goes with it), so a client that sees this
        # process start finds the port free again.
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: only system calls until exec
            try:
                os.close(m)
                os.close(r)
                os.login_tty(s)   # new session, the pty as controlling terminal, fds 0-2
                deathsig()
                os.execve(exe, argv, env)
            finally:
                os._exit(127)
        os.close(w)
        os.read(r, 1)   # b"": the child has exec'd (or died)
        os.close(r)
        os.close(s)
        os.set_blocking(m, False)
        with self._lock:
            self.pid = pid
        self.resets.append(reset)
        return m

    def _reap_group(self, sig):
        pid = self.pid
        if pid:
            try:
                os.killpg(pid, sig)
            except OSError:
                pass

    def _wait_pid(self, pid, timeout):
        end = time.monotonic() + timeout
        while True:
            try:
                p, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                return None
            if p:
                return os.waitstatus_to_exitcode(status)
            if time.monotonic() > end:
                return None
            time.sleep(0.005)

    def _log(self, msg):
        sys.stderr.write("sim%s: %s\n" % ((" " + self.prefix.strip(" []:")) if self.prefix else "", msg))
        sys.stderr.flush()

    # --- supervisor -------------------------------------------------------------------------

    def _supervise(self):
        reset, run_main, raw = "power", True, False
        try:
            while True:
                try:
                    m = self._spawn(reset, run_main)
                except OSError as e:
                    self._error = RuntimeError("cannot start MicroPython: %s" % e)
                    self._started.set()
                    return
                self._started.set()
                try:
                    event, code = _Pump(self, m, raw_restart=raw).run()
                except Exception as e:  # a bug of ours must not leave the process running
                    self._reap_group(signal.SIGKILL)
                    self._wait_pid(self.pid, 3.0)
                    self._log("supervisor failed: %r" % e)
                    self.returncode = 1
                    return
                finally:
                    os.close(m)
                if self._stop.is_set() or self._kill:
                    self.returncode = code
                    return
                if event is None and code in RESTARTS:
                    event = "exit:%d" % code
                if event and event.startswith("exit:"):
                    n = int(event[5:])
                    reset, run_main, raw = RESTARTS[n], True, False
                    if n == EXIT_DEEPSLEEP:
                        if not self._deep_sleep():
                            return
                    elif not self.serial:
                        self._log("reset (%s)" % reset)
                    continue
                if self.serial:
                    # The unix port exits on Ctrl-D (or when it gives up); a board soft-reboots,
                    # and comes back into the raw REPL without main.py if it was in it.
                    raw = event == "raw"
                    reset, run_main = "soft", not raw
                    if self._connected:
                        self._to_client += SOFT_REBOOT
                    continue
                self.returncode = code
                if code:
                    self._log("firmware exited with code %s" % code)
                return
        finally:
            self._done.set()

    def _deep_sleep(self):
        p = self.flash / ".deepsleep_ms"
        try:
            ms = int(p.read_text().strip())
            p.unlink()
        except (OSError, ValueError):
            ms = 0
        if not self.serial:
            self._log("deep sleep %d ms" % ms)
        end = time.monotonic() + ms / 1000.0
        while not self._stop.is_set():
            left = end - time.monotonic()
            if left <= 0:
                return True
            self._stop.wait(min(left, 0.05))
            self._to_node.clear()     # a sleeping board hears nothing on its serial port
            if self._master is not None:
                try:
                    while os.read(self._master, 4096):
                        pass
                except OSError:
                    pass
        return False


class _Pump:
    """Moves bytes between one MicroPython process and the client (serial) or the output
    callback, until the process has exited. Returns (event, exit code): event is "exit:N" when
    the bootstrap asked for a restart, "raw" when the process ended in the raw REPL."""

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
        self.inject = bytearray()
        self.to_node = node._to_node
        self.to_client = node._to_client
        self.event = None
        self.main_running = False
        self.up, self.down = node._up, node._down
        self.next_hup_check = 0.0

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
                self.to_client += seg
        elif not self.n._stop.is_set():   # not the KeyboardInterrupt of a deliberate stop
            self.lines(seg)

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
            if not _parked(self.n.pid) and now - self.cc_since < 2.0:
                return 0
            self.cc_since = None
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
        p = select.poll()
        p.register(self.a, select.POLLIN)
        ev = p.poll(0)
        hup = bool(ev and ev[0][1] & (select.POLLHUP | select.POLLERR))
        if hup and self.connected:
            self.drain_client()     # what the client wrote before it closed still arrives
            self.to_client.clear()
        self.connected = not hup

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
                k = self.down.ready(now, len(self.to_client))
                if k > 0:
                    try:
                        w = os.write(self.a, self.to_client[:k])
                    except BlockingIOError:
                        w = 0
                    except OSError:
                        w = 0
                        self.connected = False
                    del self.to_client[:w]
                    self.down.sent(w, len(self.to_client))
                    n.wire["from_node"] += w
                if self.to_client:
                    timeout = min(timeout, self.down.wait(now, len(self.to_client)))
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
                    if d:
                        self.to_node += d
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


# --- several nodes, in the foreground ----------------------------------------------------------

def _suffixed(node_id, k):
    s = "-%d" % k
    return node_id[:32 - len(s)] + s


def fleet(flash, count=1, config=None, **kw):
    """SimNodes for `citynode sim`: one on `flash`, or `count` on flash/node-1 .. flash/node-N.
    With a config and several nodes, node K gets the config's node_id with "-K" appended."""
    flash = Path(flash)
    if count == 1:
        return [SimNode(flash, config=config, **kw)]
    cfg = None
    if config:
        cfg = json.loads(Path(config).read_text())
    nodes = []
    lock = threading.Lock()

    def printer(text):
        with lock:
            sys.stdout.write(text + "\n")
            sys.stdout.flush()

    for k in range(1, count + 1):
        d = flash / ("node-%d" % k)
        d.mkdir(parents=True, exist_ok=True)
        if isinstance(cfg, dict):
            c = dict(cfg)
            if isinstance(c.get("node_id"), str):
                c["node_id"] = _suffixed(c["node_id"], k)
            (d / "config.json").write_text(json.dumps(c, indent=1))
        nid = _node_id(d) or "node-%d" % k
        kw.setdefault("output", printer)
        nodes.append(SimNode(d, prefix="[%s] " % nid, **kw))
    return nodes


def serve(nodes, ready=None):
    """Start the nodes, call ready(nodes), and run until they end or SIGINT/SIGTERM arrives.
    Returns the exit code: 0 after a signal, else the first non-zero code of a node."""
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    started = []
    try:
        for n in nodes:
            started.append(n.start())
        if ready:
            ready(nodes)
        while not stop.is_set() and any(n.alive for n in nodes):
            stop.wait(0.1)
    finally:
        for n in started:
            n._stop.set()
        for n in started:
            n.stop()
        for s, h in old.items():
            signal.signal(s, h)
    if stop.is_set():
        return 0
    return next((n.returncode for n in nodes if n.returncode), 0)

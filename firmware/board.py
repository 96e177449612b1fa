"""The board layer: pins and buses by number, made from a board profile (boards/<name>.json),
and the system around them: reset cause, uptime since power-up, watchdog, Wi-Fi, clock.

On an ESP32 it makes machine.Pin/UART/I2C/ADC; on the unix port (the virtual node) it hands out
the simulated peripherals of simhw.py, which the virtual node loads from the host (they are never on
a board's flash), producing the same bytes, pulses and ADC counts. Drivers get these objects and
never import machine themselves; main.py asks the board for Wi-Fi, clock and watchdog.

    import board
    raw, cfg, profile = board.load()  # config.json, validated against boards/<name>.json
    hw = board.open(profile)
    uart = hw.uart(2, rx=16, tx=17, baudrate=9600)
"""
import sys

import persist

SIM = sys.platform not in ("esp32",)

# Reset causes, as docs/contract.md names them.
RESETS = ("power", "hard", "wdt", "deepsleep", "soft", "unknown")
# Where the running firmware's files are: "" (the flash root, as deployed over USB) or the slot
# of a version installed over the air ("fw/a/"); main.py sets it. Profiles come from there.
FW = ""


def profile(name, root=""):
    """The parsed boards/<name>.json on the flash (under `root`), or None. The virtual node's own
    board comes with its simulator, not on the flash."""
    if not isinstance(name, str):
        return None
    path = "%sboards/%s.json" % (FW, name)
    p = persist.read_json(root + path)
    if p is None and SIM:
        try:
            import simhw
            p = simhw.PROFILES.get(name)
        except ImportError:
            pass
    return p


def load(path="config.json"):
    """(raw config, validated config, board profile); raises ValueError/ConfigError with a
    one-line reason. Loads the validator: callers that keep running drop it afterwards."""
    import config
    import os
    try:
        size = os.stat(path)[6]
    except OSError:
        size = 0
    if size > config.MAX_BYTES:  # refused before json.load could run the heap out (MemoryError)
        raise ValueError("%s: %d bytes, at most %d" % (path, size, config.MAX_BYTES))
    raw = persist.read_json(path)
    if raw is None:
        raise ValueError("%s: missing" % path)
    if not isinstance(raw, dict):
        raise ValueError("%s: not a JSON object" % path)
    name = raw.get("board")
    prof = profile(name, path[:path.rfind("/") + 1])
    if prof is None:
        raise ValueError("board: no profile boards/%s.json on this node" % name)
    return raw, config.validate(raw, prof), prof


class Esp32:
    def __init__(self, profile):
        import machine
        self.m = machine  # the profile's pins are the config's business (config.py checks them)

    def pin_out(self, n, value=0):
        return self.m.Pin(n, self.m.Pin.OUT, value=value)

    def pin_in(self, n, pull=None):
        Pin = self.m.Pin
        return Pin(n, Pin.IN) if pull is None else Pin(n, Pin.IN, pull)

    def pin(self, n):
        return self.m.Pin(n)

    def uart(self, uid, rx, tx, baudrate=9600):
        return self.m.UART(uid, baudrate=baudrate, rx=rx, tx=tx, timeout=0, rxbuf=256)

    def i2c(self, bus, sda, scl, freq=100000):
        return self.m.I2C(bus, sda=self.m.Pin(sda), scl=self.m.Pin(scl), freq=freq)

    def adc(self, n):
        a = self.m.ADC(self.m.Pin(n))
        a.atten(self.m.ADC.ATTN_11DB)  # full 0-3.3 V range (ESP32 TRM, SAR ADC)
        return a

    def time_pulse_us(self, pin, level, timeout_us):
        return self.m.time_pulse_us(pin, level, timeout_us)

    def dht22(self, n):
        import dht
        return dht.DHT22(self.m.Pin(n))

    def reset_cause(self):
        m = self.m
        return {m.PWRON_RESET: "power", m.HARD_RESET: "hard", m.WDT_RESET: "wdt",
                m.DEEPSLEEP_RESET: "deepsleep", m.SOFT_RESET: "soft"}.get(m.reset_cause(), "unknown")

    def reset(self):
        self.m.reset()

    def chip_info(self):
        """What `citynode info` shows of the board: chip, MAC (the base MAC, which is what
        machine.unique_id() is on an ESP32), flash size."""
        import os
        import esp
        return {"chip": os.uname().machine, "mac": ":".join("%02x" % b for b in self.m.unique_id()),
                "flash_size": esp.flash_size(), "reset": self.reset_cause()}

    def uptime_ms(self):
        # ms since the chip started: the ESP32's ticks come from esp_timer, which a soft reset
        # (Ctrl-D, every citynode command) does not restart; a hard reset, a watchdog or a
        # deep-sleep wake does. They wrap after 2**30 ms (12.4 days): a small ticks may be a
        # wrap, and the node's own uptime, kept in RTC memory each cycle, says how long it has
        # been up at least.
        import time
        # a tick here is what it counts on an ESP32, ms since the chip started (the stubs keep
        # ticks opaque, for ticks_diff)
        return max(time.ticks_ms(), self.kept_uptime_s() * 1000)  # pyright: ignore[reportArgumentType]

    # Uptime that outlives ticks_ms's wrap (2^30 ms, 12.4 days) and a soft reset: the node keeps
    # its wrap-safe uptime in RTC memory, which a power loss clears (as it cools an MQ heater)
    # and a reset or deep sleep keeps. probe.py reads it to tell a warm heater from a cold one.
    def keep_uptime(self, up_s):
        self.m.RTC().memory(str(up_s).encode())

    def kept_uptime_s(self):
        try:
            return int(self.m.RTC().memory() or 0)
        except ValueError:
            return 0

    def deepsleep(self, ms):
        self.m.deepsleep(ms)

    def wdt(self, timeout_ms):
        return self.m.WDT(timeout=timeout_ms)

    def safe_pin_low(self, n):
        return self.m.Pin(n, self.m.Pin.IN, self.m.Pin.PULL_UP).value() == 0

    def wifi(self, cfg):
        import wifi
        return wifi.Wifi(cfg["wifi"]["ssid"], cfg["wifi"]["password"])

    def clock(self):
        import clock
        return clock.Clock(synced=False)

    def clock_tasks(self, clk, cfg, log):
        """What keeps the clock right while the node runs."""
        return (clk.ntp_loop(cfg["ntp_host"], log),)

    def watchdog(self, timeout_ms):
        return self.wdt(timeout_ms)

    def broker(self):
        return None   # the config's


class SimSystem:
    """What the virtual node's supervisor (citynode sim) does for a board's system functions:
    exit codes ask it to restart us, CITYNODE_RESET tells us why we were started."""

    def reset_cause(self):
        import os
        c = os.getenv("CITYNODE_RESET") or "power"
        return c if c in RESETS else "unknown"

    def reset(self):
        sys.exit(77)

    def chip_info(self):
        # A MAC of our own (locally administered, from the flash directory), the flash
        # directory's file system size as the flash size.
        import os
        import hashlib
        d = os.getenv("CITYNODE_FLASH") or ""
        h = hashlib.sha256(d.encode()).digest()
        try:
            st = os.statvfs("")
            size = st[1] * st[2]
        except OSError:
            size = None
        return {"chip": "virtual node (MicroPython unix port, %s)" % getattr(sys.implementation, "_machine", sys.platform),
                "mac": ":".join("%02x" % b for b in bytes([2]) + h[:5]), "flash_size": size,
                "reset": self.reset_cause()}

    def uptime_ms(self):
        # The supervisor sets CITYNODE_POWERON_MS when it starts the chip (power-on, reset,
        # watchdog, deep-sleep wake) and keeps it across soft reboots, as an ESP32's timer.
        import os
        import time
        t = os.getenv("CITYNODE_POWERON_MS")
        return time.time_ns() // 1000000 - int(t) if t else None

    def keep_uptime(self, up_s):
        self.kept = up_s    # the unix port's ticks count from the host's boot: nothing to keep

    def kept_uptime_s(self):
        return getattr(self, "kept", 0)

    def deepsleep(self, ms):
        with __import__("builtins").open(".deepsleep_ms", "w") as f:
            f.write(str(int(ms)))
        sys.exit(78)

    def wdt(self, timeout_ms):
        return SimWDT(timeout_ms)

    def safe_pin_low(self, n):
        import os
        return os.getenv("CITYNODE_SAFE_PIN") == "low"

    def wifi(self, cfg):
        return None   # the host's network is up

    def clock(self):
        # The host's clock is synchronised; with an NTP server to ask (CITYNODE_NTP) the node
        # starts unsynced, as a board does, and its clock task syncs it.
        import clock
        import os
        return clock.Clock(synced=not os.getenv("CITYNODE_NTP"))

    def clock_tasks(self, clk, cfg, log):
        import os
        return (clk.ntp_loop(cfg["ntp_host"], log),) if os.getenv("CITYNODE_NTP") else ()

    def watchdog(self, timeout_ms):
        return None   # the supervisor is the virtual node's watchdog

    def broker(self):
        """(host, port) the supervisor points this node at (a test broker), without touching
        config.json; None: the config's."""
        import os
        hp = os.getenv("CITYNODE_BROKER")
        if not hp:
            return None
        h, p = hp.rsplit(":", 1)
        return h, int(p)


class SimWDT:
    """Counts feeds; the unix port has no hardware watchdog to arm."""

    def __init__(self, timeout_ms):
        self.timeout_ms = timeout_ms
        self.feeds = 0

    def feed(self):
        self.feeds += 1


def reset():
    """A hard reset of the chip, as machine.reset() (citynode reset --hard on a virtual node)."""
    (SimSystem() if SIM else Esp32(None)).reset()


def chip_info():
    """Chip, MAC, flash size and last reset cause, without opening any peripheral."""
    return (SimSystem() if SIM else Esp32(None)).chip_info()


class _SimBare(SimSystem):
    """A flash without the simulated peripherals: a board with no sensors."""

    def __init__(self, profile):
        pass


def open(profile):
    if not SIM:
        return Esp32(profile)
    try:
        import simhw
    except ImportError:
        return _SimBare(profile)

    class Sim(SimSystem, simhw.SimPeripherals):
        pass
    return Sim(profile)

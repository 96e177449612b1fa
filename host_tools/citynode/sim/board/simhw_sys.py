"""The virtual node's system functions (board.open on the unix port): what the supervisor
(citynode sim) does for a board's reset, reset cause, watchdog, deep sleep, clock and broker.
Exit codes ask it to restart us; CITYNODE_RESET tells us why we were started. A board's
counterpart is firmware/esp32hw.py. Loaded from the host with the rest of the simulated board
(simhw.py: the peripherals), never on a node's flash; the virtual ESP32 freezes it.
"""
import sys


class SimSystem:
    """What the virtual node's supervisor (citynode sim) does for a board's system functions:
    exit codes ask it to restart us, CITYNODE_RESET tells us why we were started."""

    def reset_cause(self):
        import os
        import board   # the node's, from its flash: not importable when this module is loaded
        c = os.getenv("CITYNODE_RESET") or "power"
        return c if c in board.RESETS else "unknown"

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


def open(profile):
    import simhw   # beside this module: the virtual node loads both from the host at boot

    class Sim(SimSystem, simhw.SimPeripherals):
        pass
    return Sim(profile)

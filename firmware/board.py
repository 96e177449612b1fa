"""The board layer: pins and buses by number, made from a board profile (boards/<name>.json).

On an ESP32 it makes machine.Pin/UART/I2C/ADC; on the unix port (the `sim` board) it hands out
the simulated peripherals of simhw.py, which produce the same bytes, pulses and ADC counts.
Drivers get these objects and never import machine themselves.

    import board
    hw = board.open(profile)          # profile: parsed boards/<name>.json
    uart = hw.uart(2, rx=16, tx=17, baudrate=9600)
"""
import sys

SIM = sys.platform not in ("esp32",)

# Reset causes, as CONTRACT.md names them.
RESETS = ("power", "hard", "wdt", "deepsleep", "soft", "unknown")


class Esp32:
    def __init__(self, profile):
        import machine
        self.m = machine  # the profile's pins are the config's business (config.py checks them)

    def pin_out(self, n, value=0):
        return self.m.Pin(n, self.m.Pin.OUT, value=value)

    def pin_in(self, n, pull=None):
        return self.m.Pin(n, self.m.Pin.IN, pull)

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

    def deepsleep(self, ms):
        self.m.deepsleep(ms)

    def wdt(self, timeout_ms):
        return self.m.WDT(timeout=timeout_ms)

    def safe_pin_low(self, n):
        return self.m.Pin(n, self.m.Pin.IN, self.m.Pin.PULL_UP).value() == 0


class SimSystem:
    """What the virtual node's supervisor (citynode sim) does for a board's system functions:
    exit codes ask it to restart us, CITYNODE_RESET tells us why we were started."""

    def reset_cause(self):
        import os
        c = os.getenv("CITYNODE_RESET") or "power"
        return c if c in RESETS else "unknown"

    def reset(self):
        sys.exit(77)

    def deepsleep(self, ms):
        with __import__("builtins").open(".deepsleep_ms", "w") as f:
            f.write(str(int(ms)))
        sys.exit(78)

    def wdt(self, timeout_ms):
        return SimWDT(timeout_ms)

    def safe_pin_low(self, n):
        import os
        return os.getenv("CITYNODE_SAFE_PIN") == "low"


class SimWDT:
    """Counts feeds; the unix port has no hardware watchdog to arm."""

    def __init__(self, timeout_ms):
        self.timeout_ms = timeout_ms
        self.feeds = 0

    def feed(self):
        self.feeds += 1


def open(profile):
    if SIM:
        try:
            import simhw
            base = simhw.SimPeripherals
        except ImportError:  # a flash without the simulated peripherals: no sensors
            base = None
        if base is None:
            class Sim(SimSystem):
                def __init__(self, profile):
                    pass
        else:
            class Sim(SimSystem, base):
                pass
        return Sim(profile)
    return Esp32(profile)

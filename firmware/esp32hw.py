"""The ESP32's board object (board.open on a board): pins and buses by number, made with machine,
and the system around them: reset cause, uptime since power-up, RTC memory, deep sleep, watchdog,
Wi-Fi, clock. The virtual node's counterpart is simhw_sys.py, in the simulator.
"""


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

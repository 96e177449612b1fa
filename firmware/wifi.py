"""The Wi-Fi seam of an ESP32 (network.WLAN): the only module that touches the radio. The link
calls ensure() before each connection attempt; the field test's probe calls report().

    w = wifi.Wifi("pemkot-iot", "secret")
    await w.ensure()                   # raises OSError("wifi: ...") after timeout_ms
    w.report()                         # {"ssid": ..., "connected": True, "rssi": -61, ...}
"""
import asyncio
import time

import network


class Wifi:
    def __init__(self, ssid, password):
        self.ssid, self.password = ssid, password
        self.wlan = network.WLAN(network.STA_IF)
        self.wlan.active(True)

    async def ensure(self, timeout_ms=20000):
        if self.wlan.isconnected():
            return
        self.wlan.connect(self.ssid, self.password)
        t0 = time.ticks_ms()
        while not self.wlan.isconnected():
            if time.ticks_diff(time.ticks_ms(), t0) > timeout_ms:
                self.wlan.disconnect()
                raise OSError("wifi: no connection to %r (status %s)" % (self.ssid, self.wlan.status()))
            await asyncio.sleep_ms(250)

    def report(self, timeout_ms=15000):
        """Connect if need be (blocking, for the probe) and say how it went."""
        w = self.wlan
        d = {"ssid": self.ssid, "was_connected": w.isconnected()}
        t0 = time.ticks_ms()
        try:
            asyncio.run(self.ensure(timeout_ms))
        except OSError:
            pass
        st = w.status()
        d["connected"] = w.isconnected()
        d["status"] = [k for k in dir(network) if k.startswith("STAT_") and getattr(network, k) == st] or [st]
        if d["connected"]:
            d["connect_ms"] = time.ticks_diff(time.ticks_ms(), t0)
            d["rssi"] = w.status("rssi")
            d["ip"] = w.ifconfig()[0]
        return d

"""Wall-clock time for `ts`: Unix seconds once the clock is known, else None (docs/contract.md).

    c = clock.Clock(synced=False)
    await c.ntp_loop("pool.ntp.org")   # ESP32 only: retries until it works, then hourly
    c.now()                            # 1764390000 or None
"""
import asyncio
import time

# Ports whose epoch is 2000-01-01 (older ESP32 builds) need this added to get Unix time.
_EPOCH = 946684800 if time.gmtime(0)[0] == 2000 else 0


class Clock:
    def __init__(self, synced=False):
        self.synced = synced

    def now(self):
        return int(time.time()) + _EPOCH if self.synced else None

    async def ntp_loop(self, host, log=print):
        import ntptime
        ntptime.host = host
        delay = 2000
        while True:
            try:
                ntptime.settime()  # blocks up to ntptime.timeout (1 s) on a lost packet
                if not self.synced:
                    log("clock: set from %s" % host)
                self.synced = True
                delay = 3600000
            except Exception as e:
                log("clock: %s: %r; retry in %d s" % (host, e, delay // 1000))
                delay = min(delay * 2, 300000) if not self.synced else 3600000
            await asyncio.sleep_ms(delay)

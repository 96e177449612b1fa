"""The connectivity layer: Wi-Fi (through a seam) -> TCP/TLS -> MQTT session, kept up for ever.

The MQTT client assumes a working stream; this layer owns reconnects, exponential backoff with
full jitter, the will, the subscription to `cmd` and the retained birth message.

    l = link.Link("broker.example", 1883, False, "wl-01", will=(status, b'{"state":"offline"}', 1, True),
                  subs=(cmd_topic,), birth=(status, birth_payload), on_message=handle)
    asyncio.create_task(l.run())
    await l.up.wait(); await l.client.publish(topic, payload, 1)
"""
import asyncio
import random

import mqtt

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

BACKOFF_MIN_MS = const(1000)
BACKOFF_MAX_MS = const(300000)
# A broker that refuses us (bad password, not authorised) will refuse again: at most ~4 tries a
# minute, so a misconfigured fleet cannot storm the city's broker.
REFUSED_MIN_MS = const(15000)


def backoff_ms(attempt, refused=False, cap_ms=BACKOFF_MAX_MS):
    """Full jitter: uniform in [floor, min(cap, base * 2**attempt)]."""
    hi = BACKOFF_MIN_MS << min(attempt, 12)
    if hi > cap_ms:
        hi = cap_ms
    lo = REFUSED_MIN_MS if refused else 0
    if hi < lo:
        hi = lo
    return lo + int(random.random() * (hi - lo)) if hi > lo else lo


async def open_stream(host, port, tls):
    ctx = None
    if tls:
        import ssl
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.verify_mode = ssl.CERT_NONE  # the city's CA is not known yet: encrypted, not verified
    s = (await asyncio.open_connection(host, port, ssl=ctx) if ctx else await asyncio.open_connection(host, port))[0]
    try:
        # Nagle holds back small QoS 1 publishes for up to 40 ms each; nearly 2x the rate with
        # 8 in flight over a real round trip (bench_mqtt).
        s.s.setsockopt(6, 1, 1)  # IPPROTO_TCP, TCP_NODELAY
    except (AttributeError, OSError):
        pass
    return s


class Link:
    def __init__(self, host, port, tls, client_id, user=None, password=None, keepalive=60, will=None,
                 subs=(), birth=None, on_message=None, wifi=None, log=print, opener=open_stream,
                 backoff_max_ms=BACKOFF_MAX_MS):
        self.host, self.port, self.tls = host, port, tls
        self.client_id = client_id
        self.user, self.password, self.keepalive = user, password, keepalive
        self.will, self.subs, self.birth = will, subs, birth
        self.on_message = on_message
        self.wifi = wifi
        self.log = log
        self.opener = opener
        self.backoff_max_ms = backoff_max_ms
        self.client = None     # the client while a session is up, else None
        self._c = None
        self.up = asyncio.Event()
        self.last_error = None

    async def _session(self):
        if self.wifi is not None:
            await self.wifi.ensure()
        stream = await self.opener(self.host, self.port, self.tls)
        c = self._c
        if c is None:
            # One client for every session: its buffers are allocated once, at the first
            # connection, not again on each reconnect, when a long-running heap is fragmented
            # and an outage has filled it with held readings.
            c = self._c = mqtt.MQTTClient(self.client_id, self.user, self.password, self.keepalive, self.will)
            c.on_message = self.on_message
        try:
            await c.connect(stream)
            for t in self.subs:
                await c.subscribe(t, 1)
            if self.birth:
                await c.publish(self.birth[0], self.birth[1], 1, True)
        except BaseException:
            c.close()
            raise
        return c

    async def run(self):
        fails = 0
        while True:
            try:
                c = await self._session()
            except Exception as e:
                msg = str(e) or e.__class__.__name__
                refused = msg.startswith("refused")
                self.last_error = msg
                fails += 1
                d = backoff_ms(fails - 1, refused, self.backoff_max_ms)
                self.log("link: %s:%d %s; retry in %d ms" % (self.host, self.port, msg, d))
                await asyncio.sleep_ms(d)
                continue
            fails = 0
            self.client = c
            self.up.set()
            self.log("link: connected to %s:%d" % (self.host, self.port))
            await c.dead.wait()
            self.up.clear()
            self.client = None
            c.close()
            self.last_error = "link lost"
            self.log("link: lost")
            await asyncio.sleep_ms(backoff_ms(0))

    async def stop(self, last=None):
        """A clean stop: publish `last` (topic, payload) retained, then DISCONNECT (no will)."""
        c = self.client
        if c is None:
            return
        try:
            if last:
                await c.publish(last[0], last[1], 1, True, 3000)
            await c.disconnect()
        except Exception:
            c.close()

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
import time

import mqtt

try:
    from micropython import const
except ImportError:
    const = lambda x: x  # noqa: E731

BACKOFF_MIN_MS = const(1000)
BACKOFF_MAX_MS = const(300000)
# A broker that refuses us (bad password, not authorised, a certificate we do not trust) will
# refuse again: at most ~4 tries a minute, so a misconfigured fleet cannot storm the city's broker.
REFUSED_MIN_MS = const(15000)
# A session the broker ends (EOF, no DISCONNECT: MQTT 3.1.1 has no reason code) sooner than this
# after it began, when the broker then lets us straight back in, is a client id taken over:
# another client uses our node_id.
KICK_MS = const(20000)


def backoff_ms(attempt, refused=False, cap_ms=BACKOFF_MAX_MS):
    """Full jitter: uniform in [floor, min(cap, base * 2**attempt)]."""
    hi = BACKOFF_MIN_MS << min(attempt, 12)
    if hi > cap_ms:
        hi = cap_ms
    lo = REFUSED_MIN_MS if refused else 0
    if hi < lo:
        hi = lo
    return lo + int(random.random() * (hi - lo)) if hi > lo else lo


CONNECT_MS = const(10000)  # TCP connect: lwIP would retry a SYN for minutes
_POLL_MS = const(20)
_addrs = {}  # (host, port) -> getaddrinfo's first entry


async def open_stream(host, port, tls, timeout_ms=CONNECT_MS, getaddrinfo=None):
    """A stream to the broker, connected within timeout_ms or OSError; `tls` is None for plain
    MQTT, else the options tlsconn takes (imported only then: a node without TLS never loads it)."""
    import select
    import socket
    from errno import EINPROGRESS
    key = (host, port)
    ai = _addrs.get(key)
    if ai is None:
        # getaddrinfo blocks every task while DNS answers (asyncio has no resolver; lwIP retries
        # for seconds): once per broker, not on every reconnect. A failed connect forgets it.
        ai = _addrs[key] = (getaddrinfo or socket.getaddrinfo)(host, port, 0, socket.SOCK_STREAM)[0]
    s = socket.socket(ai[0], ai[1], ai[2])
    try:
        # Nagle holds back small QoS 1 publishes for up to 40 ms each; nearly 2x the rate with
        # 8 in flight over a real round trip (bench_mqtt). Set on the TCP socket itself, before
        # TLS wraps it: a TLS socket has no setsockopt.
        s.setsockopt(6, 1, 1)  # IPPROTO_TCP, TCP_NODELAY (Linux and lwIP alike)
    except OSError:
        pass
    s.setblocking(False)
    try:
        try:
            s.connect(ai[-1])
        except OSError as e:
            if e.errno != EINPROGRESS:
                raise
        p = select.poll()
        p.register(s, select.POLLOUT)
        t0 = time.ticks_ms()
        while True:
            ev = p.poll(0)
            if ev:  # writable: connected; with an error or hang-up: refused
                if ev[0][1] & (select.POLLERR | select.POLLHUP):
                    raise OSError("connect refused")
                break
            if time.ticks_diff(time.ticks_ms(), t0) >= timeout_ms:
                raise OSError("connect timeout")
            await asyncio.sleep_ms(_POLL_MS)
        if tls:
            # The handshake runs on the first write (asyncio's way): our CONNECT is encrypted and
            # sent only once tlsconn's checks have passed.
            import tlsconn
            s = tlsconn.context(tls).wrap_socket(s, server_hostname=host, do_handshake_on_connect=False)
            s.setblocking(False)
    except BaseException:
        s.close()
        _addrs.pop(key, None)
        raise
    return asyncio.StreamReader(s)


class Link:
    def __init__(self, host, port, tls, client_id, user=None, password=None, keepalive=60, will=None,
                 subs=(), birth=None, on_message=None, wifi=None, log=print, opener=open_stream,
                 backoff_max_ms=BACKOFF_MAX_MS, ack_timeout_ms=10000, clean=True):
        # tls: None/False, or {"ca", "pin_sha256", "cert", "key", "insecure"} (tlsconn.py).
        # on_message(topic, payload, size, retained).
        self.host, self.port, self.tls = host, port, tls
        self.subs, self.birth = subs, birth
        self.wifi = wifi
        self.log = log
        self.opener = opener
        self.backoff_max_ms = backoff_max_ms
        # clean=False: the broker keeps our session (the QoS 1 subscription to cmd and what
        # arrives for it) while we are away: a deep-sleeping node gets its commands at its wake.
        self.client = None     # the client while a session is up, else None
        # One client for every session, made now: its buffers (~1.3 KB, two of them over 512 B)
        # are allocated while the heap is still whole, not at the first connection, when the
        # node's modules and data have fragmented it, nor again on each reconnect.
        c = self._c = mqtt.MQTTClient(client_id, user, password, keepalive, will, clean=clean,
                                      ack_timeout_ms=ack_timeout_ms)
        if on_message is not None:
            c.on_message = lambda t, p, n: on_message(t, p, n, c.retained)
        self.up = asyncio.Event()
        self.last_error = None

    async def _session(self):
        if self.wifi is not None:
            await self.wifi.ensure()
        stream = await self.opener(self.host, self.port, self.tls)
        c = self._c
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
        kicked = 0   # sessions in a row that the broker ended (EOF) soon after it began
        insecure = self.tls and self.tls.get("insecure")
        while True:
            if insecure:
                self.log("link: WARNING: TLS without verification (mqtt.tls_insecure): whoever answers "
                         "at %s:%d gets the password" % (self.host, self.port))
            try:
                c = await self._session()
            except Exception as e:
                msg = str(e) or e.__class__.__name__
                if self.tls:
                    import tlsconn
                    msg = tlsconn.why(self.tls, getattr(e, "cause", e)) or msg
                refused = msg.startswith("refused") or msg.startswith("TLS")
                self.last_error = msg
                fails += 1
                kicked = 0  # the broker went away: that, not another client, closed the session
                d = backoff_ms(fails - 1, refused, self.backoff_max_ms)
                self.log("link: %s:%d %s; retry in %d ms" % (self.host, self.port, msg, d))
                await asyncio.sleep_ms(d)
                continue
            fails = 0
            self.client = c
            self.up.set()
            self.log("link: connected to %s:%d%s" % (self.host, self.port, " (TLS)" if self.tls else ""))
            if kicked:
                # Closed right after it began, and taken back at once: MQTT 3.1.1 has no reason
                # code, but this is what a broker does when another client connects with our id.
                self.log("link: another client is using this node_id? the broker closed our session soon "
                         "after it began and let us straight back in (%d in a row)" % kicked)
            t_up = time.ticks_ms()
            await c.dead.wait()
            self.up.clear()
            self.client = None
            c.close()
            self.last_error = "link lost: %s" % c.reason
            held = time.ticks_diff(time.ticks_ms(), t_up)
            kicked = kicked + 1 if c.reason == "eof" and held < KICK_MS else 0
            self.log("link: lost (%s after %d ms)" % (c.reason, held))
            # Two clients with one id take turns throwing each other out: from the second time,
            # slow down like a refusal, so that the pair does not storm the broker.
            await asyncio.sleep_ms(backoff_ms(max(kicked - 1, 0), kicked > 1, self.backoff_max_ms))

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

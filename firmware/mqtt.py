"""An asyncio MQTT 3.1.1 client for MicroPython: QoS 0 and 1, will, keepalive, one stream.

The stream comes in (what asyncio.open_connection returns); reconnecting is the caller's job.

    c = MQTTClient("wl-01", keepalive=60, will=("city/wl-01/status", b'{"state":"offline"}', 1, True))
    await c.connect((await asyncio.open_connection(host, 1883))[0])
    await c.publish("city/wl-01/telemetry", b"{...}", qos=1)   # returns on PUBACK

The packet encoders and decoders are plain functions that also import on CPython.
"""
import asyncio

try:
    from micropython import const
except ImportError:
    const = lambda x: x  # noqa: E731

# time.ticks_*: MicroPython's. On CPython only the pure packet functions below are meant to run.
import time

_CONNECT = const(0x10)
_CONNACK = const(0x20)
_PUBLISH = const(0x30)
_PUBACK = const(0x40)
_SUBSCRIBE = const(0x82)  # MQTT-3.8.1-1: flags 0010
_SUBACK = const(0x90)
_PINGREQ = b"\xc0\x00"
_PINGRESP = const(0xD0)
_DISCONNECT = b"\xe0\x00"

_TICK_MS = const(100)  # granularity of the ping schedule and of PUBACK timeouts
_TRIES = const(3)      # sends of one QoS 1 PUBLISH (the first + resends with DUP)
# Slot states; a state >= 0 is the acknowledgement (0 for PUBACK, the SUBACK return code).
_WAIT = const(-1)
_TIMEOUT = const(-2)
_CLOSED = const(-3)

# CONNACK return codes 1..5, MQTT 3.1.1 table 3.1.
_REFUSED = ("protocol version", "identifier rejected", "server unavailable",
            "bad user name or password", "not authorised")


class MQTTError(Exception):
    cause = None    # what closed the session, when it was closed (_closed)


def _closed(cause):
    # "closed", keeping what closed it (a TLS handshake's verdict, a socket error) for the caller.
    e = MQTTError("closed")
    e.cause = cause
    return e


def encode_varlen(n):
    """Remaining Length as the spec's variable-byte integer (1-4 bytes), MQTT 3.1.1 2.2.3."""
    b = bytearray(4)
    return bytes(b[:put_varlen(b, 0, n)])


def put_varlen(buf, off, n):
    if n < 0 or n > 268435455:
        raise ValueError("remaining length")
    while True:
        d = n & 0x7F
        n >>= 7
        buf[off] = d | 0x80 if n else d
        off += 1
        if not n:
            return off


def decode_varlen(buf, off=0, end=-1):
    """-> (value, offset after it), reading buf[off:end]. A continuation bit on the 4th byte is
    malformed; MQTTError("incomplete") when the bytes end before the number does."""
    if end < 0:
        end = len(buf)
    n = 0
    for i in range(4):
        if off >= end:
            raise MQTTError("incomplete")
        b = buf[off]
        off += 1
        n |= (b & 0x7F) << (7 * i)
        if not b & 0x80:
            return n, off
    raise MQTTError("malformed")


def _b(s):
    return s.encode() if isinstance(s, str) else s


def _put_field(ba, s):
    s = _b(s)
    ba.append(len(s) >> 8)
    ba.append(len(s) & 0xFF)
    ba.extend(s)


def connect_packet(client_id, user=None, password=None, keepalive=60, will=None, clean=True):
    """The whole CONNECT packet (3.1): built once per connection, so plain bytes."""
    flags = 0x02 if clean else 0
    if will:
        if will[2] not in (0, 1, 2):
            raise ValueError("will qos")
        flags |= 0x04 | will[2] << 3 | (0x20 if will[3] else 0)
    if user is not None:
        flags |= 0x80
    if password is not None:
        if user is None:  # MQTT-3.1.2-22
            raise ValueError("password without user")
        flags |= 0x40
    v = bytearray(b"\x00\x04MQTT\x04")
    v.append(flags)
    v.append(keepalive >> 8)
    v.append(keepalive & 0xFF)
    _put_field(v, client_id)
    if will:
        _put_field(v, will[0])
        _put_field(v, will[1])
    if user is not None:
        _put_field(v, user)
    if password is not None:
        _put_field(v, password)
    return bytes([_CONNECT]) + encode_varlen(len(v)) + v


def put_publish(buf, topic, plen, qos=0, retain=False, dup=False, pid=0):
    """Fixed header, topic and packet id of a PUBLISH (3.3) into buf; the payload (plen bytes)
    is sent after it. Returns the header's length."""
    buf[0] = _PUBLISH | (0x08 if dup else 0) | qos << 1 | (1 if retain else 0)
    n = 2 + len(topic) + plen + (2 if qos else 0)
    o = put_varlen(buf, 1, n)
    buf[o] = len(topic) >> 8
    buf[o + 1] = len(topic) & 0xFF
    o += 2
    buf[o:o + len(topic)] = topic
    o += len(topic)
    if qos:
        buf[o] = pid >> 8
        buf[o + 1] = pid & 0xFF
        o += 2
    return o


def subscribe_packet(pid, topic, qos=1):
    """SUBSCRIBE (3.8) for one topic filter."""
    topic = _b(topic)
    v = bytearray((pid >> 8, pid & 0xFF))
    _put_field(v, topic)
    v.append(qos)
    return bytes([_SUBSCRIBE]) + encode_varlen(len(v)) + v


async def _shut(s):
    # MicroPython's Stream.close() is a no-op: wait_closed() is what closes the socket.
    s.close()
    try:
        await s.wait_closed()
    except Exception:
        pass


class MQTTClient:
    def __init__(self, client_id, user=None, password=None, keepalive=60, will=None, clean=True,
                 max_payload=512, inflight=8, ack_timeout_ms=10000, on_message=None):
        if will and will[2] > 1:
            raise ValueError("will qos")
        self.client_id, self.user, self.password = client_id, user, password
        self.keepalive, self.will, self.clean = keepalive, will, clean
        self.max_payload = max_payload
        # A QoS 1 PUBLISH is sent _TRIES times, ack_timeout_ms apart; with no PUBACK after the
        # last, the broker is not hearing us: the session is dropped (the link reconnects).
        self.ack_timeout_ms = ack_timeout_ms
        self.on_message = on_message  # handler(topic, payload, size); `retained` is set while it runs
        self.retained = False
        self.connected = False
        self.session_present = False
        self.dead = asyncio.Event()
        self.reason = None  # why the last link ended: "no PINGRESP", "eof", "malformed", ...
        self._s = None
        self._tasks = ()
        # Preallocated. Reads land in _ib and are parsed in place between _p and _e, so one
        # socket read can serve several small packets; an outgoing PUBLISH is assembled in _ob.
        self._ib = bytearray(max(max_payload, 128))
        self._imv = memoryview(self._ib)
        self._p = self._e = self._t = self._n = 0
        self._ob = bytearray(max_payload + 80)  # a larger publish gets a buffer of its own (_stage)
        self._omv = memoryview(self._ob)
        self._pa = bytearray(4)
        self._pa[0], self._pa[1] = _PUBACK, 2
        # One writer at a time: Stream.drain() is not reentrant. A flag and an Event, because
        # `async with asyncio.Lock()` allocates ~0.5 KB on every use.
        self._wbusy = False
        self._widle = asyncio.Event()
        # In-flight slots (QoS 1 PUBLISH and SUBSCRIBE), matched by packet id; pid 0 = free.
        self._pid = [0] * inflight
        self._st = [0] * inflight
        self._dl = [time.ticks_ms()] * inflight   # deadlines: ticks, read only while a slot waits
        self._ev = [asyncio.Event() for _ in range(inflight)]
        self._free = asyncio.Event()
        self._last_pid = 0
        self._ping_out = False
        self._ping_t = time.ticks_ms()
        self._pong = asyncio.Event()   # a PINGRESP came (ping())

    # --- link ------------------------------------------------------------------------------

    async def connect(self, stream, timeout_ms=10000):
        if self._s is not None:
            self.close()
        self.dead.clear()
        self.reason = None
        self._s = stream
        self._p = self._e = 0
        try:
            await asyncio.wait_for_ms(self._handshake(), timeout_ms)
        except Exception as e:
            self._s = None
            await _shut(stream)
            if isinstance(e, MQTTError):
                raise
            if isinstance(e, asyncio.TimeoutError):
                raise MQTTError("timeout")
            raise _closed(e)
        self.connected = True
        self._ping_out = False
        self._ping_t = time.ticks_ms()
        self._tasks = (asyncio.create_task(self._reader()), asyncio.create_task(self._ticker()))

    async def _handshake(self):
        await self._send(connect_packet(self.client_id, self.user, self.password, self.keepalive,
                                        self.will, self.clean))
        t, n = await self._head()
        if t != _CONNACK or n != 2:
            raise MQTTError("malformed")
        await self._need(2)
        p = self._p
        self._p += 2
        rc = self._ib[p + 1]
        if rc:
            raise MQTTError("refused: " + (_REFUSED[rc - 1] if rc <= 5 else "code %d" % rc))
        self.session_present = bool(self._ib[p] & 1)

    async def disconnect(self):
        """A clean stop: DISCONNECT, so the broker discards the will. Does not set `dead`."""
        if self._s is None:
            return
        try:
            await asyncio.wait_for_ms(self._send(_DISCONNECT), 2000)
        except Exception:
            pass
        s = self._end("disconnected")
        if s is not None:
            await _shut(s)

    def close(self):
        """Drop the link without DISCONNECT: the broker publishes the will. Sets `dead`."""
        self._fail("closed")

    def _fail(self, reason):
        s = self._end(reason)
        if s is not None:
            asyncio.create_task(_shut(s))
            self.dead.set()

    def _end(self, reason):
        s = self._s
        if s is None:
            return None
        self._s = None
        self.connected = False
        self.reason = reason
        cur = asyncio.current_task()
        for t in self._tasks:
            if t is not cur:
                t.cancel()
        self._tasks = ()
        for i in range(len(self._pid)):
            if self._pid[i]:
                self._st[i] = _CLOSED
                self._ev[i].set()
        self._free.set()
        return s

    # --- writing -----------------------------------------------------------------------------

    async def _send(self, pkt):
        while self._wbusy:
            self._widle.clear()
            await self._widle.wait()
        self._wbusy = True
        await self._flush(pkt)

    async def _flush(self, pkt):
        """Writes pkt and drains; the caller has set _wbusy, this clears it."""
        try:
            s = self._s
            if s is None:
                raise MQTTError("closed")
            s.write(pkt)  # copies what the socket did not take: the buffers are free again
            await s.drain()
        except OSError as e:
            if self.connected:
                self._fail("socket error")
            raise _closed(e)
        finally:
            self._wbusy = False
            self._widle.set()

    def _stage(self, topic, payload, qos, retain, dup, pid):
        """A PUBLISH in _ob, header and payload together: as two writes, Nagle's algorithm would
        hold the payload until the broker's delayed ACK of the header, ~40 ms per publish."""
        n = len(topic) + len(payload) + 9  # fixed header 5, topic length 2, packet id 2
        b, mv = self._ob, self._omv
        if n > len(b):
            # Larger than max_payload (a get_config reply): a buffer of its own, free once sent,
            # rather than _ob grown for good.
            b = bytearray(n)
            mv = memoryview(b)
        n = put_publish(b, topic, len(payload), qos, retain, dup, pid)
        b[n:n + len(payload)] = payload
        return mv[:n + len(payload)]

    def _slot(self):
        """A free in-flight slot with a fresh packet id, or -1."""
        for i in range(len(self._pid)):
            if not self._pid[i]:
                p = self._last_pid
                while True:
                    p = p % 65535 + 1
                    if p not in self._pid:
                        break
                self._last_pid = self._pid[i] = p
                return i
        return -1

    async def _take(self):
        while True:
            if self._s is None:
                raise MQTTError("closed")
            i = self._slot()
            if i >= 0:
                return i
            self._free.clear()
            await self._free.wait()

    def _arm(self, i, timeout_ms):
        # The ticker turns a passed deadline into _TIMEOUT: a wait_for per publish costs ~1 KB.
        self._st[i] = _WAIT
        self._dl[i] = time.ticks_add(time.ticks_ms(), timeout_ms)
        self._ev[i].clear()

    def _release(self, i):
        self._pid[i] = 0
        self._free.set()

    async def publish(self, topic, payload, qos=0, retain=False, timeout_ms=None):
        if timeout_ms is None:
            timeout_ms = self.ack_timeout_ms
        topic = _b(topic)
        payload = _b(payload)  # str or bytes-like
        if qos > 1:
            raise ValueError("qos")
        if self._s is None:
            raise MQTTError("closed")
        i = -1
        if qos:
            i = self._slot()  # a free slot now costs nothing; awaiting _take() makes a coroutine
            if i < 0:
                i = await self._take()
        try:
            for k in range(_TRIES):
                if qos:
                    self._arm(i, timeout_ms)
                while self._wbusy:  # _send() inlined: _ob may only be filled by the writer
                    self._widle.clear()
                    await self._widle.wait()
                self._wbusy = True
                try:
                    pkt = self._stage(topic, payload, qos, retain, k > 0, self._pid[i] if qos else 0)
                except Exception:  # a bad argument: give the writer back
                    self._wbusy = False
                    self._widle.set()
                    raise
                await self._flush(pkt)
                if not qos:
                    return
                await self._ev[i].wait()
                if self._st[i] >= 0:
                    return
                if self._st[i] == _CLOSED:
                    raise MQTTError("closed")
            # Every resend went unanswered: a broker that takes our bytes but does not act on
            # them (overloaded, half-broken, or a middlebox). A new session may fare better.
            self._fail("no PUBACK")
            raise MQTTError("no PUBACK")
        finally:
            if qos:
                self._release(i)

    async def subscribe(self, topic, qos=1, timeout_ms=10000):
        """Returns the granted QoS; MQTTError("refused: subscribe") on 0x80."""
        if qos not in (0, 1):
            raise ValueError("qos")
        i = await self._take()
        try:
            self._arm(i, timeout_ms)
            await self._send(subscribe_packet(self._pid[i], topic, qos))
            await self._ev[i].wait()
            rc = self._st[i]
            if rc < 0:
                raise MQTTError("closed" if rc == _CLOSED else "timeout")
            if rc & 0x80:
                raise MQTTError("refused: subscribe")
            return rc
        finally:
            self._release(i)

    async def ping(self):
        """One round trip: PINGREQ, then wait for the PINGRESP. Everything the broker sent before
        it has been handed to on_message by then (one reader, in order). Bound it with wait_for."""
        self._pong.clear()
        await self._send(_PINGREQ)
        await self._pong.wait()

    # --- tasks -------------------------------------------------------------------------------

    async def _ticker(self):
        half = self.keepalive * 500
        while True:
            await asyncio.sleep_ms(_TICK_MS)
            now = time.ticks_ms()
            for i in range(len(self._pid)):
                if self._pid[i] and self._st[i] == _WAIT and time.ticks_diff(now, self._dl[i]) >= 0:
                    self._st[i] = _TIMEOUT
                    self._ev[i].set()
            if not half:
                continue
            late = time.ticks_diff(now, self._ping_t) - half
            if self._ping_out:
                if late >= 0:  # keepalive/2 after the PINGREQ and nothing came back
                    self._fail("no PINGRESP")
                    return
            elif late >= 0:
                # Never await the network here: a stalled socket must not stall the watchdog.
                # With no writer busy nobody is in drain(), so a bare write() cannot interleave.
                s = self._s
                if s is None:       # closed under us: the session is over
                    return
                if not self._wbusy:
                    try:
                        s.write(_PINGREQ)
                    except OSError:
                        self._fail("socket error")
                        return
                    self._ping_out = True
                    self._ping_t = now
                elif late >= half:
                    self._fail("write stalled")
                    return

    async def _reader(self):
        try:
            while True:
                while not self._hdr():
                    await self._need(self._e - self._p + 1)
                t, n = self._t, self._n
                self._ping_out = False  # any packet shows the broker is alive
                k = t & 0xF0
                if k == _PUBLISH:
                    await self._on_publish(t, n)
                    continue
                if k == _PUBACK or k == _SUBACK:
                    if (k == _PUBACK and n != 2) or n > len(self._ib) or (k == _SUBACK and n < 3):
                        raise MQTTError("malformed")
                    if self._e - self._p < n:
                        await self._need(n)
                    p = self._p
                    self._ack((self._ib[p] << 8) | self._ib[p + 1], self._ib[p + 2] if k == _SUBACK else 0)
                    self._p += n
                elif k == _PINGRESP and n == 0:
                    self._pong.set()
                else:
                    raise MQTTError("unexpected packet" if k != _PINGRESP else "malformed")
        except MQTTError as e:
            self._fail(e.args[0])
        except OSError:
            self._fail("socket error")
        except Exception:
            # Bytes the spec does not allow (a topic that is not UTF-8, ...): the stream cannot be
            # trusted to be in step any more. Never an exception left in a task.
            self._fail("malformed")

    def _ack(self, pid, rc):
        for i in range(len(self._pid)):
            if self._pid[i] == pid:
                self._st[i] = rc
                self._ev[i].set()
                return

    async def _on_publish(self, t, n):
        qos = (t >> 1) & 3
        if qos > 1:  # we subscribe at QoS 0/1 only, so the broker may not send QoS 2 (3.8.4)
            raise MQTTError("malformed")
        await self._need(2)
        tl = (self._ib[self._p] << 8) | self._ib[self._p + 1]
        self._p += 2
        size = n - 2 - tl - (2 if qos else 0)
        if size < 0 or not tl:
            raise MQTTError("malformed")
        topic = None
        if tl <= len(self._ib):
            await self._need(tl)
            topic = str(self._imv[self._p:self._p + tl], "utf-8")  # UnicodeError: malformed
            self._p += tl
            if "+" in topic or "#" in topic or "\x00" in topic:  # MQTT-3.3.2-2, 1.5.3
                raise MQTTError("malformed")
        else:  # a topic longer than our buffer: acknowledge it but deliver nothing
            await self._skip(tl)
        pid = 0
        if qos:
            await self._need(2)
            pid = (self._ib[self._p] << 8) | self._ib[self._p + 1]
            self._p += 2
            if not pid:  # MQTT-2.3.1-1
                raise MQTTError("malformed")
        if size <= self.max_payload:
            await self._need(size)
            payload = bytes(self._imv[self._p:self._p + size])
            self._p += size
        else:  # read and drop, so the stream stays in step; the node answers "payload too large"
            await self._skip(size)
            payload = b""
        cb = self.on_message
        self.retained = bool(t & 1)  # for the handler: a retained message is an old one
        if cb is not None and topic is not None:
            try:
                r = cb(topic, payload, size)
                if r is not None and hasattr(r, "send"):
                    # A task, not an await: a handler that publishes at QoS 1 needs this reader
                    # to receive its PUBACK.
                    asyncio.create_task(r)
            except Exception as e:
                import sys
                sys.print_exception(e)
        if qos:
            self._pa[2] = pid >> 8
            self._pa[3] = pid & 0xFF
            await self._send(self._pa)

    # --- reading -----------------------------------------------------------------------------

    async def _need(self, n):
        """Until n unparsed bytes are in _ib[_p:_e] (n <= len(_ib)), however the stream splits them."""
        ib = self._ib
        while self._e - self._p < n:
            if self._p == self._e:
                self._p = self._e = 0
            elif self._p + n > len(ib):
                # Rare: a packet straddles the end of the buffer. The copy avoids an overlapping
                # slice assignment.
                k = self._e - self._p
                ib[:k] = bytes(self._imv[self._p:self._e])
                self._p, self._e = 0, k
            s = self._s
            if s is None:
                raise OSError("not connected")
            k = await s.readinto(self._imv[self._e:])
            if k is None:
                continue
            if not k:
                raise MQTTError("eof")
            self._e += k

    async def _skip(self, n):
        while True:
            k = min(n, self._e - self._p)
            self._p += k
            n -= k
            if not n:
                return
            await self._need(min(n, len(self._ib)))

    async def _head(self):
        """Fixed header (2.2): (first byte, Remaining Length)."""
        while not self._hdr():
            await self._need(self._e - self._p + 1)
        return self._t, self._n

    def _hdr(self):
        # Sync, so that a header already in the buffer costs no coroutine.
        p = self._p
        if self._e - p < 2:
            return False
        try:
            self._n, self._p = decode_varlen(self._ib, p + 1, self._e)
        except MQTTError as e:
            if e.args[0] != "incomplete":
                raise
            return False
        self._t = self._ib[p]
        return True

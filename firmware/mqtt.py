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

try:
    from time import ticks_ms, ticks_diff, ticks_add
except ImportError:  # CPython: only the pure packet functions below are meant to run there
    ticks_ms = ticks_diff = ticks_add = None

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
    pass


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


def decode_varlen(buf, off=0):
    """-> (value, offset after it). A continuation bit on the 4th byte is malformed."""
    n = 0
    for i in range(4):
        if off >= len(buf):
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


def publish_header_size(topic, qos):
    return 5 + 2 + len(topic) + (2 if qos else 0)


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


def puback_packet(pid):
    return bytes((_PUBACK, 2, pid >> 8, pid & 0xFF))


async def _shut(s):
    # MicroPython's Stream.close() is a no-op: wait_closed() is what closes the socket.
    s.close()
    try:
        await s.wait_closed()
    except Exception:
        pass


class MQTTClient:
    def __init__(self, client_id, user=None, password=None, keepalive=60, will=None, clean=True,
                 max_payload=512, inflight=8):
        if will and will[2] > 1:
            raise ValueError("will qos")
        self.client_id, self.user, self.password = client_id, user, password
        self.keepalive, self.will, self.clean = keepalive, will, clean
        self.max_payload = max_payload
        self.on_message = None
        self.connected = False
        self.session_present = False
        self.dead = asyncio.Event()
        self.reason = None  # why the last link ended: "no PINGRESP", "eof", "malformed", ...
        self._s = None
        self._lock = asyncio.Lock()  # one writer at a time: Stream.drain() is not reentrant
        self._tasks = ()
        # Preallocated: incoming packets are read into _ib (topic, then payload); outgoing
        # PUBLISH headers are built in _ob and the payload is written from the caller's bytes.
        self._ib = bytearray(max(max_payload, 64))
        self._imv = memoryview(self._ib)
        self._ob = bytearray(80)
        self._omv = memoryview(self._ob)
        self._pa = bytearray(4)
        self._pa[0], self._pa[1] = _PUBACK, 2
        # In-flight slots (QoS 1 PUBLISH and SUBSCRIBE), matched by packet id; pid 0 = free.
        self._pid = [0] * inflight
        self._st = [0] * inflight
        self._dl = [0] * inflight
        self._ev = [asyncio.Event() for _ in range(inflight)]
        self._free = asyncio.Event()
        self._last_pid = 0
        self._ping_out = False
        self._ping_t = 0

    # --- link ------------------------------------------------------------------------------

    async def connect(self, stream, timeout_ms=10000):
        if self._s is not None:
            self.close()
        self.dead.clear()
        self.reason = None
        self._s = stream
        try:
            await asyncio.wait_for_ms(self._handshake(), timeout_ms)
        except Exception as e:
            self._s = None
            await _shut(stream)
            if isinstance(e, MQTTError):
                raise
            if isinstance(e, asyncio.TimeoutError):
                raise MQTTError("timeout")
            raise MQTTError("closed")
        self.connected = True
        self._ping_out = False
        self._ping_t = ticks_ms()
        self._tasks = (asyncio.create_task(self._reader()), asyncio.create_task(self._ticker()))

    async def _handshake(self):
        await self._send(connect_packet(self.client_id, self.user, self.password, self.keepalive,
                                        self.will, self.clean))
        t, n = await self._head()
        if t != _CONNACK or n != 2:
            raise MQTTError("malformed")
        await self._readn(2)
        rc = self._ib[1]
        if rc:
            raise MQTTError("refused: " + (_REFUSED[rc - 1] if rc <= 5 else "code %d" % rc))
        self.session_present = bool(self._ib[0] & 1)

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

    async def _send(self, a, b=None):
        async with self._lock:
            await self._out(a, b)

    async def _out(self, a, b=None):
        s = self._s
        if s is None:
            raise MQTTError("closed")
        try:
            s.write(a)  # copies what the socket did not take, so buffers may be reused at once
            if b:
                s.write(b)
            await s.drain()
        except OSError:
            if self.connected:
                self._fail("socket error")
            raise MQTTError("closed")

    async def _send_publish(self, topic, payload, qos, retain, dup, pid):
        async with self._lock:
            if publish_header_size(topic, qos) > len(self._ob):
                self._ob = bytearray(publish_header_size(topic, qos))
                self._omv = memoryview(self._ob)
            n = put_publish(self._ob, topic, len(payload), qos, retain, dup, pid)
            await self._out(self._omv[:n], payload)

    async def _take(self):
        """A free in-flight slot with a fresh packet id; waits while all are busy."""
        while True:
            if self._s is None:
                raise MQTTError("closed")
            for i in range(len(self._pid)):
                if not self._pid[i]:
                    p = self._last_pid
                    while True:
                        p = p % 65535 + 1
                        if p not in self._pid:
                            break
                    self._last_pid = self._pid[i] = p
                    return i
            self._free.clear()
            await self._free.wait()

    def _release(self, i):
        self._pid[i] = 0
        self._free.set()

    async def _await_ack(self, i):
        # The ticker turns a passed deadline into _TIMEOUT; a wait_for per publish would cost ~1 KB.
        await self._ev[i].wait()
        st = self._st[i]
        if st == _CLOSED:
            raise MQTTError("closed")
        return st

    def _arm(self, i, timeout_ms):
        self._st[i] = _WAIT
        self._dl[i] = ticks_add(ticks_ms(), timeout_ms)
        self._ev[i].clear()

    async def publish(self, topic, payload, qos=0, retain=False, timeout_ms=10000):
        topic = _b(topic)
        payload = _b(payload)
        if self._s is None:
            raise MQTTError("closed")
        if not qos:
            await self._send_publish(topic, payload, 0, retain, False, 0)
            return
        if qos != 1:
            raise ValueError("qos")
        i = await self._take()
        try:
            for k in range(_TRIES):
                self._arm(i, timeout_ms)
                await self._send_publish(topic, payload, 1, retain, k > 0, self._pid[i])
                if await self._await_ack(i) >= 0:
                    return
            raise MQTTError("timeout")
        finally:
            self._release(i)

    async def subscribe(self, topic, qos=1, timeout_ms=10000):
        """Returns the granted QoS; MQTTError("refused: subscribe") on 0x80."""
        if qos not in (0, 1):
            raise ValueError("qos")
        i = await self._take()
        try:
            self._arm(i, timeout_ms)
            await self._send(subscribe_packet(self._pid[i], topic, qos))
            rc = await self._await_ack(i)
            if rc < 0:
                raise MQTTError("timeout")
            if rc & 0x80:
                raise MQTTError("refused: subscribe")
            return rc
        finally:
            self._release(i)

    # --- tasks -------------------------------------------------------------------------------

    async def _ticker(self):
        half = self.keepalive * 500
        while True:
            await asyncio.sleep_ms(_TICK_MS)
            now = ticks_ms()
            for i in range(len(self._pid)):
                if self._pid[i] and self._st[i] == _WAIT and ticks_diff(now, self._dl[i]) >= 0:
                    self._st[i] = _TIMEOUT
                    self._ev[i].set()
            if not half:
                continue
            late = ticks_diff(now, self._ping_t) - half
            if self._ping_out:
                if late >= 0:  # keepalive/2 after the PINGREQ and nothing came back
                    self._fail("no PINGRESP")
                    return
            elif late >= 0:
                # Never await the network here: a stalled socket must not stall the watchdog.
                # With the lock free nobody is in drain(), so a bare write() cannot interleave.
                if not self._lock.locked():
                    try:
                        self._s.write(_PINGREQ)
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
                t, n = await self._head()
                self._ping_out = False  # any packet shows the broker is alive
                k = t & 0xF0
                if k == _PUBLISH:
                    await self._on_publish(t, n)
                elif k == _PUBACK or k == _SUBACK:
                    if n < 2 or n > len(self._ib) or (k == _SUBACK and n < 3):
                        raise MQTTError("malformed")
                    await self._readn(n)
                    self._ack((self._ib[0] << 8) | self._ib[1], self._ib[2] if k == _SUBACK else 0)
                elif k == _PINGRESP:
                    await self._skip(n)
                else:
                    raise MQTTError("unexpected packet")
        except MQTTError as e:
            self._fail(e.args[0])
        except OSError:
            self._fail("socket error")

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
        await self._readn(2)
        tl = (self._ib[0] << 8) | self._ib[1]
        size = n - 2 - tl - (2 if qos else 0)
        if size < 0:
            raise MQTTError("malformed")
        topic = None
        if tl <= len(self._ib):
            await self._readn(tl)
            topic = str(self._imv[:tl], "utf-8")
        else:  # a topic longer than our buffer: acknowledge it but deliver nothing
            await self._skip(tl)
        pid = 0
        if qos:
            await self._readn(2)
            pid = (self._ib[0] << 8) | self._ib[1]
        if size <= self.max_payload:
            await self._readn(size)
            payload = bytes(self._imv[:size])
        else:  # read and drop, so the stream stays in step; the node answers "payload too large"
            await self._skip(size)
            payload = b""
        cb = self.on_message
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

    async def _readn(self, n):
        """Exactly n bytes into _ib[0:n], however the stream splits them."""
        mv = self._imv
        o = 0
        while o < n:
            k = await self._s.readinto(mv[o:n])
            if k is None:
                continue
            if not k:
                raise MQTTError("eof")
            o += k

    async def _skip(self, n):
        while n:
            k = min(n, len(self._ib))
            await self._readn(k)
            n -= k

    async def _head(self):
        """Fixed header: (first byte, Remaining Length), read byte by byte (2.2)."""
        await self._readn(1)
        t = self._ib[0]
        n = 0
        for i in range(4):
            await self._readn(1)
            b = self._ib[0]
            n |= (b & 0x7F) << (7 * i)
            if not b & 0x80:
                return t, n
        raise MQTTError("malformed")

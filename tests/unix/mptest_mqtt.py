# firmware/mqtt.py on the unix port: the wire format byte by byte against a fake stream, with
# the arithmetic in the comments (MQTT 3.1.1 section numbers in brackets).
import asyncio
import time

from mqtt import (MQTTClient, MQTTError, connect_packet, decode_varlen, encode_varlen,
                  put_publish, subscribe_packet)

CONNACK_OK = b"\x20\x02\x00\x00"


class FakeStream:
    """What asyncio.open_connection gives on MicroPython, minus the socket: each feed() chunk is
    handed out by readinto() as a separate read, so a test decides where reads split."""

    def __init__(self):
        self.out = bytearray()
        self.chunks = []
        self.eof = False
        self.closed = False
        self._ev = asyncio.Event()

    def feed(self, data, step=0):
        step = step or len(data)
        for i in range(0, len(data), step):
            self.chunks.append(bytes(data[i:i + step]))
        self._ev.set()

    def end(self):
        self.eof = True
        self._ev.set()

    async def readinto(self, buf):
        while not self.chunks:
            if self.eof or self.closed:
                return 0
            self._ev.clear()
            await self._ev.wait()
        c = self.chunks[0]
        n = min(len(c), len(buf))
        buf[:n] = c[:n]
        if n == len(c):
            self.chunks.pop(0)
        else:
            self.chunks[0] = c[n:]
        return n

    def write(self, b):
        if self.closed:
            raise OSError(9)
        self.out.extend(b)

    async def drain(self):
        await asyncio.sleep_ms(0)

    def close(self):
        self.closed = True
        self._ev.set()

    async def wait_closed(self):
        self.close()

    def take(self):
        r = bytes(self.out)
        self.out = bytearray()
        return r


async def until(pred, ms=1000, what="condition"):
    t0 = time.ticks_ms()
    while not pred():
        if time.ticks_diff(time.ticks_ms(), t0) > ms:
            raise AssertionError("timed out waiting for " + what)
        await asyncio.sleep_ms(5)


async def up(**kw):
    c = MQTTClient(kw.pop("client_id", "c"), **kw)
    s = FakeStream()
    s.feed(CONNACK_OK)
    await c.connect(s)
    s.take()
    return c, s


def raises(reason):
    class Check:
        def __enter__(self):
            return self

        def __exit__(self, typ, e, tb):
            assert typ is MQTTError, "expected MQTTError(%r), got %r" % (reason, e)
            assert e.args[0] == reason, "expected %r, got %r" % (reason, e.args[0])
            return True
    return Check()


async def araises(aw, reason):
    try:
        await aw
    except MQTTError as e:
        assert e.args[0] == reason, "expected %r, got %r" % (reason, e.args[0])
        return
    raise AssertionError("no MQTTError(%r)" % reason)


# --- pure encoders and decoders ----------------------------------------------------------------

def test_varlen_edges():
    # [2.2.3] 7 bits a byte, least significant first, top bit = "more follows"
    assert encode_varlen(0) == b"\x00"
    assert encode_varlen(127) == b"\x7f"              # largest 1-byte value
    assert encode_varlen(128) == b"\x80\x01"          # 128 = 0 + 1*128
    assert encode_varlen(16383) == b"\xff\x7f"        # 16383 = 127 + 127*128
    assert encode_varlen(16384) == b"\x80\x80\x01"    # 16384 = 1*128^2
    assert encode_varlen(2097151) == b"\xff\xff\x7f"
    assert encode_varlen(2097152) == b"\x80\x80\x80\x01"
    assert encode_varlen(268435455) == b"\xff\xff\xff\x7f"   # the maximum, 4 bytes
    for n in (0, 1, 127, 128, 129, 16383, 16384, 2097151, 2097152, 268435455):
        assert decode_varlen(encode_varlen(n)) == (n, len(encode_varlen(n)))
    assert decode_varlen(b"\x30\x80\x01\x00", 1) == (128, 3)   # offset into a packet
    try:
        encode_varlen(268435456)
        raise AssertionError("encoded more than 4 bytes")
    except ValueError:
        pass


def test_varlen_malformed():
    with raises("malformed"):   # a continuation bit on the 4th byte means a 5th: not allowed
        decode_varlen(b"\xff\xff\xff\xff\x01")
    with raises("malformed"):
        decode_varlen(b"\x80\x80\x80\x80")
    with raises("incomplete"):
        decode_varlen(b"\x80\x80")


def test_connect_packet_full():
    will = ("city/wl-01/status", b'{"state":"offline"}', 1, True)
    p = connect_packet("wl-01", "wl-01", "s3cret", 60, will, True)
    # variable header [3.1.2]: 00 04 "MQTT", level 4, flags, keepalive 00 3c = 10 bytes
    # flags = user 0x80 | password 0x40 | will retain 0x20 | will QoS 1 << 3 (0x08)
    #         | will 0x04 | clean 0x02 = 0xee
    # payload: client id 2+5, will topic 2+17, will message 2+19, user 2+5, password 2+6 = 62
    # Remaining Length = 10 + 62 = 72 -> VBI 0x48
    assert p == (b"\x10\x48" + b"\x00\x04MQTT\x04\xee\x00\x3c"
                 + b"\x00\x05wl-01"
                 + b"\x00\x11city/wl-01/status"
                 + b'\x00\x13{"state":"offline"}'
                 + b"\x00\x05wl-01"
                 + b"\x00\x06s3cret"), p


def test_connect_packet_minimal():
    # no will, no user, keepalive 300 = 0x012c, clean session off -> flags 0x00
    # Remaining Length = 10 + (2 + 1) = 13 -> 0x0d
    assert connect_packet("c", keepalive=300, clean=False) == b"\x10\x0d\x00\x04MQTT\x04\x00\x01\x2c\x00\x01c"
    # QoS 0 will, not retained: flags = will 0x04 | clean 0x02 = 0x06
    # Remaining Length = 10 + 3 + (2 + 1) + (2 + 1) = 19 -> 0x13
    assert connect_packet("c", keepalive=0, will=("w", b"x", 0, False)) == \
        b"\x10\x13\x00\x04MQTT\x04\x06\x00\x00\x00\x01c\x00\x01w\x00\x01x"
    try:
        connect_packet("c", password="p")   # [MQTT-3.1.2-22] password needs a user name
        raise AssertionError("password without user accepted")
    except ValueError:
        pass


def test_put_publish_header():
    b = bytearray(16)
    # QoS 1, retain, DUP: 0x30 | 0x08 | 1 << 1 | 1 = 0x3b
    # Remaining Length = 2 + len("a/b") 3 + packet id 2 + payload 5 = 12 -> 0x0c
    n = put_publish(b, b"a/b", 5, qos=1, retain=True, dup=True, pid=0x1234)
    assert bytes(b[:n]) == b"\x3b\x0c\x00\x03a/b\x12\x34", bytes(b[:n])
    # QoS 0 has no packet id: Remaining Length = 2 + 1 + 0 = 3
    n = put_publish(b, b"t", 0)
    assert bytes(b[:n]) == b"\x30\x03\x00\x01t"


def test_subscribe_packet():
    # [3.8] flags must be 0010 -> 0x82; Remaining Length = pid 2 + (2 + 10) + QoS 1 = 15 -> 0x0f
    assert subscribe_packet(1, "city/n/cmd", 1) == b"\x82\x0f\x00\x01\x00\x0acity/n/cmd\x01"


# --- the client against a fake stream ----------------------------------------------------------

async def test_connect_sends_connect_and_reads_connack():
    will = ("city/wl-01/status", b'{"state":"offline"}', 1, True)
    c = MQTTClient("wl-01", "wl-01", "s3cret", keepalive=60, will=will)
    s = FakeStream()
    s.feed(b"\x20\x02\x01\x00")   # CONNACK, session present, accepted
    await c.connect(s)
    assert s.take() == connect_packet("wl-01", "wl-01", "s3cret", 60, will, True)
    assert c.connected and c.session_present and not c.dead.is_set()
    await c.disconnect()


async def test_connack_refused_code_5():
    c = MQTTClient("c")
    s = FakeStream()
    s.feed(b"\x20\x02\x00\x05")   # return code 5 [3.2.2.3]
    await araises(c.connect(s), "refused: not authorised")
    assert s.closed and not c.connected
    s = FakeStream()
    s.feed(b"\x20\x02\x00\x04")
    await araises(c.connect(s), "refused: bad user name or password")
    c.close()   # harmless after a failed connect (link.py does this)


async def test_connect_timeout():
    c = MQTTClient("c")
    s = FakeStream()   # never answers
    t0 = time.ticks_ms()
    await araises(c.connect(s, timeout_ms=100), "timeout")
    assert 90 <= time.ticks_diff(time.ticks_ms(), t0) < 500
    assert s.closed and not c.dead.is_set()


async def test_publish_remaining_length_edges():
    c, s = await up()
    # topic "t": Remaining Length = 2 + 1 + payload (QoS 0, no packet id)
    for plen, vbi in ((124, b"\x7f"),              # 3 + 124 = 127 -> 0x7f
                      (125, b"\x80\x01"),          # 3 + 125 = 128 -> 0x80 0x01
                      (16380, b"\xff\x7f"),        # 3 + 16380 = 16383 -> 0xff 0x7f
                      (16381, b"\x80\x80\x01")):   # 3 + 16381 = 16384 -> 0x80 0x80 0x01
        payload = bytes(range(256)) * (plen // 256) + bytes(plen % 256)
        await c.publish("t", payload)
        assert s.take() == b"\x30" + vbi + b"\x00\x01t" + payload, plen
    await c.disconnect()


async def test_a_publish_larger_than_the_output_buffer_does_not_keep_a_larger_one():
    # A get_config reply can pass max_payload: it is put together in a buffer of its own, and
    # the client's standing output buffer stays the size it was made.
    c, s = await up(max_payload=64)
    ob = c._ob
    size = len(ob)
    for plen in (size - 9, size + 300):
        payload = bytes(plen)
        await c.publish("t", payload)
        assert s.take()[-plen:] == payload
    assert c._ob is ob and len(c._ob) == size
    await c.disconnect()


async def test_receive_remaining_length_edges():
    got = []
    c, s = await up(max_payload=16384)
    c.on_message = lambda t, p, n: got.append((t, p, n))
    for plen, vbi in ((124, b"\x7f"), (125, b"\x80\x01"), (16380, b"\xff\x7f"), (16381, b"\x80\x80\x01")):
        payload = bytes((i * 7) & 0xFF for i in range(plen))
        s.feed(b"\x30" + vbi + b"\x00\x01t" + payload, 1000)
        await until(lambda: len(got) == 1, what="message of %d" % plen)
        assert got.pop() == ("t", payload, plen)
    assert c.connected
    await c.disconnect()


async def test_publish_split_across_reads():
    got = []
    c, s = await up()
    c.on_message = lambda t, p, n: got.append((t, p, n))
    # QoS 1 PUBLISH from the broker: 0x30 | 1 << 1 = 0x32
    # Remaining Length = 2 + len("city/n/cmd") 10 + packet id 2 + len('{"cmd":"ping"}') 14 = 28 -> 0x1c
    pkt = b"\x32\x1c\x00\x0acity/n/cmd\x12\x34" + b'{"cmd":"ping"}'
    assert len(pkt) == 2 + 28
    s.feed(pkt[:3])   # first read ends inside the topic length
    await asyncio.sleep_ms(20)
    assert got == [] and s.out == b""
    s.feed(pkt[3:])
    await until(lambda: len(got) == 1)
    assert got[0] == ("city/n/cmd", b'{"cmd":"ping"}', 14)
    await until(lambda: len(s.out) == 4)
    assert s.take() == b"\x40\x02\x12\x34"   # PUBACK with the same packet id
    # and the same packet again with every byte a read of its own
    s.feed(pkt, 1)
    await until(lambda: len(got) == 2)
    assert got[1] == got[0]
    await until(lambda: len(s.out) == 4)
    assert s.take() == b"\x40\x02\x12\x34"
    await c.disconnect()


async def test_qos1_two_in_flight_acked_out_of_order():
    c, s = await up()
    done = []

    async def pub(topic, payload):
        await c.publish(topic, payload, qos=1)
        done.append(topic)

    t1 = asyncio.create_task(pub("a", b"1"))
    t2 = asyncio.create_task(pub("b", b"2"))
    await until(lambda: len(s.out) == 16)
    # Remaining Length = 2 + 1 + packet id 2 + 1 = 6; packet ids 1 and 2
    assert s.take() == b"\x32\x06\x00\x01a\x00\x011" + b"\x32\x06\x00\x01b\x00\x022"
    s.feed(b"\x40\x02\x00\x02")   # PUBACK for the second first
    await until(lambda: done == ["b"])
    await asyncio.sleep_ms(20)
    assert done == ["b"]           # the first still waits for its own id
    s.feed(b"\x40\x02\x00\x01")
    await until(lambda: done == ["b", "a"])
    await t1
    await t2
    assert s.out == b""            # nothing resent
    await c.disconnect()


async def test_inflight_limit():
    c, s = await up(inflight=2)
    ts = [asyncio.create_task(c.publish("a", b"%d" % i, 1)) for i in range(3)]
    await asyncio.sleep_ms(30)
    assert s.take() == b"\x32\x06\x00\x01a\x00\x010" + b"\x32\x06\x00\x01a\x00\x021"   # third waits
    s.feed(b"\x40\x02\x00\x01")
    await until(lambda: len(s.out) == 8)
    assert s.take() == b"\x32\x06\x00\x01a\x00\x032"   # takes the freed slot, next packet id
    s.feed(b"\x40\x02\x00\x02\x40\x02\x00\x03")
    for t in ts:
        await t
    await c.disconnect()


async def test_resend_with_dup_after_timeout():
    c, s = await up()
    t0 = time.ticks_ms()
    t = asyncio.create_task(c.publish("a", b"1", qos=1, timeout_ms=150))
    await asyncio.sleep_ms(100)
    assert s.take() == b"\x32\x06\x00\x01a\x00\x011"      # once, no resend yet
    await until(lambda: len(s.out) == 8, 500, "resend")
    assert time.ticks_diff(time.ticks_ms(), t0) >= 150
    # same packet id, DUP set: 0x32 | 0x08 = 0x3a [3.3.1.1]
    assert s.take() == b"\x3a\x06\x00\x01a\x00\x011"
    s.feed(b"\x40\x02\x00\x01")
    await t
    # never acked: first send + 2 resends, then the broker is not hearing us: the session ends
    # (issue 14), so that the link layer reconnects; the caller keeps its record.
    t0 = time.ticks_ms()
    await araises(c.publish("a", b"2", qos=1, timeout_ms=100), "no PUBACK")
    assert 300 <= time.ticks_diff(time.ticks_ms(), t0) < 900
    assert s.take() == b"\x32\x06\x00\x01a\x00\x022" + b"\x3a\x06\x00\x01a\x00\x022" * 2
    assert c.dead.is_set() and c.reason == "no PUBACK" and not c.connected
    await asyncio.sleep_ms(5)
    assert s.closed


async def test_ping_returns_after_what_the_broker_sent_before_its_pingresp():
    # A deep-sleep wake ends its command window with one round trip: whatever the broker sent
    # ahead of the PINGRESP (a command kept for the node) has reached on_message by then.
    got = []
    c, s = await up()
    c.on_message = lambda t, p, n: got.append(bytes(p))
    t = asyncio.create_task(c.ping())
    await until(lambda: s.out, 500, "PINGREQ")
    assert s.take() == b"\xc0\x00" and not t.done()
    s.feed(b"\x30\x05\x00\x01c" + b"hi" + b"\xd0\x00")   # a QoS 0 PUBLISH, then the PINGRESP
    await asyncio.wait_for_ms(t, 500)
    assert got == [b"hi"]
    # a broker that never answers: the caller's bound ends it, and the link stays up
    try:
        await asyncio.wait_for_ms(c.ping(), 100)
    except asyncio.TimeoutError:
        pass
    else:
        raise AssertionError("a ping with no PINGRESP returned")
    assert c.connected
    await c.disconnect()


async def test_keepalive_ping_and_dead_link():
    c, s = await up(keepalive=2)    # PINGREQ every 1 s, PINGRESP due within 1 s
    t0 = time.ticks_ms()
    await asyncio.sleep_ms(800)
    assert s.out == b""
    await until(lambda: s.out, 600, "first PINGREQ")
    assert s.take() == b"\xc0\x00"
    assert time.ticks_diff(time.ticks_ms(), t0) >= 1000
    s.feed(b"\xd0\x00")             # PINGRESP
    await until(lambda: s.out, 1300, "second PINGREQ")
    assert s.take() == b"\xc0\x00"
    pending = asyncio.create_task(c.publish("a", b"1", 1))
    await until(lambda: time.ticks_diff(time.ticks_ms(), t0) >= 2900, 3000)
    assert not c.dead.is_set() and c.connected   # 2 pings at >= 1 s and >= 2 s: dead at >= 3 s
    await araises(pending, "closed")             # failed when the link is declared dead
    assert time.ticks_diff(time.ticks_ms(), t0) < 3600
    assert c.dead.is_set() and c.reason == "no PINGRESP" and not c.connected
    await asyncio.sleep_ms(10)
    assert s.closed
    await araises(c.publish("a", b"2", 1), "closed")


async def test_subscribe_suback_and_refusal():
    c, s = await up()
    t = asyncio.create_task(c.subscribe("city/n/cmd", 1))
    await until(lambda: s.out)
    assert s.take() == b"\x82\x0f\x00\x01\x00\x0acity/n/cmd\x01"
    s.feed(b"\x90\x03\x00\x01\x01")   # SUBACK, packet id 1, granted QoS 1
    assert await t == 1
    t = asyncio.create_task(c.subscribe("x/#", 0))
    await until(lambda: s.out)
    # Remaining Length = 2 + (2 + 3) + 1 = 8
    assert s.take() == b"\x82\x08\x00\x02\x00\x03x/#\x00"
    s.feed(b"\x90\x03\x00\x02\x80")   # 0x80 = failure [3.9.3]
    await araises(t, "refused: subscribe")
    assert c.connected
    await c.disconnect()


async def test_oversize_incoming_publish_is_dropped_and_reported():
    got = []
    c, s = await up(max_payload=16)
    c.on_message = lambda t, p, n: got.append((t, p, n))
    # QoS 1, topic "t", packet id 7, 40-byte payload: Remaining Length = 2 + 1 + 2 + 40 = 45 -> 0x2d
    s.feed(b"\x32\x2d\x00\x01t\x00\x07" + b"x" * 40, 7)
    await until(lambda: got)
    assert got.pop() == ("t", b"", 40)
    await until(lambda: s.out)
    assert s.take() == b"\x40\x02\x00\x07"
    # the stream stayed in step: the next message arrives whole
    s.feed(b"\x30\x05\x00\x01thi")    # Remaining Length = 2 + 1 + 2 = 5
    await until(lambda: got)
    assert got.pop() == ("t", b"hi", 2)
    assert c.connected
    await c.publish("t", b"ok")
    await c.disconnect()


async def test_malformed_remaining_length_kills_link():
    c, s = await up()
    pending = asyncio.create_task(c.publish("a", b"1", 1))
    await until(lambda: s.out)
    s.feed(b"\x30\xff\xff\xff\xff\x01")   # a 5th length byte
    await araises(pending, "closed")
    assert c.dead.is_set() and c.reason == "malformed"
    await asyncio.sleep_ms(5)
    assert s.closed


async def test_eof_is_dead_link():
    c, s = await up()
    s.end()
    await until(c.dead.is_set)
    assert c.reason == "eof" and not c.connected


async def test_async_handler_can_publish_qos1():
    c, s = await up()
    replies = []

    async def handler(topic, payload, size):
        await c.publish("r", payload, 1)   # needs the reader free to receive its PUBACK
        replies.append(payload)

    c.on_message = handler
    s.feed(b"\x30\x05\x00\x01cab")   # topic "c", payload "ab": Remaining Length = 2 + 1 + 2 = 5
    await until(lambda: len(s.out) == 9)
    assert s.take() == b"\x32\x07\x00\x01r\x00\x01ab"   # Remaining Length = 2 + 1 + 2 + 2 = 7
    s.feed(b"\x40\x02\x00\x01")
    await until(lambda: replies == [b"ab"])
    await c.disconnect()


async def test_disconnect_is_clean():
    c, s = await up()
    await c.disconnect()
    assert s.take() == b"\xe0\x00"
    assert s.closed and not c.connected and not c.dead.is_set()
    assert c.reason == "disconnected"


async def test_close_drops_link_without_disconnect():
    c, s = await up()
    pending = asyncio.create_task(c.publish("a", b"1", 1))
    await until(lambda: s.out)
    s.take()
    c.close()
    await araises(pending, "closed")
    await asyncio.sleep_ms(5)
    assert s.closed and c.dead.is_set() and s.out == b""
    # the same client connects again on a new stream
    s2 = FakeStream()
    s2.feed(CONNACK_OK)
    await c.connect(s2)
    assert c.connected and not c.dead.is_set()
    await c.disconnect()


async def test_bad_payload_does_not_block_the_writer():
    c, s = await up()
    try:
        await c.publish("a", 12345, 1)
        raise AssertionError("an int payload was accepted")
    except TypeError:
        pass
    await c.publish("a", b"ok")   # would hang if the failed publish had kept the writer
    assert s.take() == b"\x30\x05\x00\x01aok"   # Remaining Length = 2 + 1 + 2 = 5
    t = asyncio.create_task(c.publish("a", b"1", 1))   # and its slot was given back
    await until(lambda: s.out)
    assert s.take() == b"\x32\x06\x00\x01a\x00\x021"   # packet id 2: id 1 went to the failed one
    s.feed(b"\x40\x02\x00\x02")
    await t
    await c.disconnect()


async def test_many_packets_per_read_and_one_straddling_the_buffer_end():
    got = []
    c, s = await up(max_payload=16)   # receive buffer: max(16, 128) = 128 bytes
    c.on_message = lambda t, p, n: got.append((t, p, n))
    t1 = asyncio.create_task(c.publish("a", b"1", 1))
    t2 = asyncio.create_task(c.publish("a", b"2", 1))
    await until(lambda: len(s.out) == 16)
    s.take()
    # One read: PUBACK 2, PUBACK 1, then 57 PINGRESPs -> 4 + 4 + 114 = 122 bytes, then a QoS 0
    # PUBLISH "t"/16 bytes: Remaining Length = 2 + 1 + 16 = 19, 21 bytes in all. Its first 6
    # bytes fill the buffer to its end (128): header 2, topic 3, and 1 payload byte, which has
    # to move to the front before the other 15 are read behind it.
    pub = b"\x30\x13\x00\x01t" + b"0123456789abcdef"
    s.feed(b"\x40\x02\x00\x02\x40\x02\x00\x01" + b"\xd0\x00" * 57 + pub)
    await t1
    await t2
    await until(lambda: got)
    assert got == [("t", b"0123456789abcdef", 16)]
    s.feed(pub * 3)   # and three in one read
    await until(lambda: len(got) == 4)
    assert c.connected
    await c.disconnect()


async def test_stalled_write_is_a_dead_link():
    class Stuck(FakeStream):
        # A broker that stopped reading: the socket's send buffer is full and drain() waits
        # until the socket is closed, which wakes it with EBADF as on the unix port.
        stall = False

        async def drain(self):
            while self.stall and not self.closed:
                self._ev.clear()
                await self._ev.wait()
            if self.closed:
                raise OSError(9)

    c = MQTTClient("c", keepalive=2)   # PINGREQ due at 1 s
    s = Stuck()
    s.feed(CONNACK_OK)
    await c.connect(s)
    s.take()
    s.stall = True
    t0 = time.ticks_ms()
    await araises(c.publish("a", b"x" * 100), "closed")   # stuck in drain until the link ends
    took = time.ticks_diff(time.ticks_ms(), t0)
    # the ping could not go out while the writer held the socket; keepalive/2 after it was due
    # the watchdog gave up: at 1 s + 1 s
    assert 1900 <= took < 2600, took
    assert c.reason == "write stalled" and c.dead.is_set() and s.closed
    assert b"\xc0\x00" not in s.out


async def test_link_reuses_one_client_and_its_buffers_across_sessions():
    # A reconnect after an outage allocates no new client: its buffers were made once, when
    # the heap was young, not on a heap that days of running and an outage have fragmented.
    import link
    streams = []

    async def opener(host, port, tls):
        s = FakeStream()
        k = 2 * len(streams)   # packet ids: SUBSCRIBE k+1, the birth k+2 (one counter for ever)
        s.feed(CONNACK_OK + bytes((0x90, 3, 0, k + 1, 1)))
        streams.append(s)
        return s

    async def ack_birth(i):
        # the broker's PUBACK, once the retained birth (QoS 1: 0x33) has been sent
        await until(lambda: len(streams) > i and b"\x33\x08\x00\x02st" in streams[i].out, what="birth %d" % i)
        streams[i].feed(bytes((0x40, 2, 0, 2 * i + 2)))

    lk = link.Link("broker", 1883, False, "n-1", keepalive=60, will=("st", b"off", 1, True),
                   subs=("cmd",), birth=("st", b"on"), opener=opener, log=lambda m: None)
    t = asyncio.create_task(lk.run())
    await ack_birth(0)
    await until(lk.up.is_set, what="the first session")
    c, ib, ob = lk.client, lk.client._ib, lk.client._ob
    streams[0].end()   # the broker goes away
    await until(lambda: not lk.up.is_set(), what="the link seen down")
    await ack_birth(1)   # backoff after a loss: <= 1 s
    await until(lk.up.is_set, what="the second session")
    assert len(streams) == 2 and lk.client is c and c._ib is ib and c._ob is ob
    assert streams[1].out[0] == 0x10 and b"\x82" in streams[1].out
    t.cancel()
    c.close()


# --- issue 14: a broker that misbehaves ----------------------------------------------------------

def _unretrieved():
    # Task exceptions nobody retrieved end up in the loop's exception handler: catch them.
    seen = []
    asyncio.get_event_loop().set_exception_handler(lambda loop, ctx: seen.append(ctx))
    return seen


async def test_malformed_packets_from_the_broker_drop_the_link_at_once():
    cases = (
        b"\x30\x05\x00\x02\xff\xfex",            # topic not UTF-8
        b"\x30\x04\x00\x00ab",                  # empty topic [4.7.3]
        b"\x30\x05\x00\x02a#x",                 # a wildcard in a PUBLISH topic [3.3.2-2]
        b"\x30\x05\x00\x02a\x00x",              # U+0000 in a topic [1.5.3]
        b"\x32\x05\x00\x01a\x00\x00",           # QoS 1 with packet id 0 [2.3.1-1]
        b"\x30\x02\x00\x09",                    # topic longer than the packet
        b"\x40\x03\x00\x01\x00",                # PUBACK of 3 bytes
        b"\xd0\x01\x00",                        # PINGRESP with a body
        b"\x36\x05\x00\x01ax\x00\x01",          # QoS 3
        b"\x20\x02\x00\x00",                    # a second CONNACK
    )
    for bad in cases:
        seen = _unretrieved()
        got = []
        c, s = await up()
        c.on_message = lambda t, p, n: got.append(t)
        s.feed(bad)
        await until(c.dead.is_set, 500, "dead link after %r" % bad)
        assert c.reason in ("malformed", "unexpected packet"), (bad, c.reason)
        await asyncio.sleep_ms(5)
        assert s.closed and not got and not seen, (bad, got, seen)


def _accepting(streams, want_tls=None):
    # A broker that accepts every connection (CONNACK 0); the streams, in order.
    async def opener(host, port, tls):
        assert tls == want_tls, tls
        s = FakeStream()
        s.feed(CONNACK_OK)
        streams.append(s)
        return s
    return opener


async def test_a_broker_that_never_acknowledges_gets_a_new_session():
    # Issue 14: 72 publishes, 48 resends in 90 s and never a reconnect. Now the last resend
    # without PUBACK ends the session, and the link layer opens a new one.
    import link
    streams = []
    opener = _accepting(streams)
    logs = []
    lk = link.Link("broker", 1883, None, "n-1", keepalive=60, opener=opener, log=logs.append, ack_timeout_ms=100)
    t = asyncio.create_task(lk.run())
    await until(lk.up.is_set, what="the first session")
    t0 = time.ticks_ms()
    await araises(lk.client.publish("t", b"1", 1), "no PUBACK")
    assert 300 <= time.ticks_diff(time.ticks_ms(), t0) < 900
    await until(lambda: len(streams) == 2 and lk.up.is_set(), 2000, "a second session")
    assert any(m.startswith("link: lost (no PUBACK after") for m in logs), logs
    t.cancel()
    lk.client.close()


async def test_a_client_id_taken_over_is_logged_as_such():
    import link
    streams = []
    opener = _accepting(streams)
    logs = []
    lk = link.Link("broker", 1883, None, "n-1", keepalive=60, opener=opener, log=logs.append)
    t = asyncio.create_task(lk.run())
    await until(lk.up.is_set, what="the first session")
    streams[0].end()     # the broker closes us right after CONNACK: another client took our id
    await until(lambda: any("another client is using this node_id" in m for m in logs), 1000, "the log line")
    t.cancel()
    if lk.client:
        lk.client.close()


async def test_tls_insecure_is_logged_at_every_connect():
    import link
    streams = []
    opener = _accepting(streams, {"insecure": True})
    logs = []
    lk = link.Link("broker", 8883, {"insecure": True}, "n-1", opener=opener, log=logs.append)
    t = asyncio.create_task(lk.run())
    await until(lk.up.is_set, what="the first session")
    lk.client._fail("socket error")
    await until(lambda: len(streams) == 2 and lk.up.is_set(), 2000, "a second session")
    warn = [m for m in logs if m.startswith("link: WARNING: TLS without verification")]
    assert len(warn) == 2, logs
    t.cancel()
    lk.client.close()

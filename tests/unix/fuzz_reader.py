# The MQTT packet reader under fuzz (tests/test_fuzz_unix.py feeds it from hypothesis):
#   micropython fuzz_reader.py CASES   (one case a line: hex of the broker's bytes, "/" where a read splits)
# For each case: a session is up, the broker's bytes arrive, then EOF. The reader must end the
# session with a reason and nothing else: no exception left in a task, no handler called with a
# topic that is not text, the parse position inside its buffer. Prints "OK n reason" or "BAD n why".
import asyncio
import sys

sys.path.insert(0, "../../firmware")  # run from tests/unix, as the runner is

from mptest_mqtt import CONNACK_OK, FakeStream
from mqtt import MQTTClient

REASONS = ("eof", "malformed", "unexpected packet", "closed", "no PINGRESP")


async def one(n, chunks):
    seen = []
    asyncio.get_event_loop().set_exception_handler(lambda loop, ctx: seen.append(ctx))
    c = MQTTClient("fz", keepalive=0, max_payload=64)
    got = []
    bad = []

    def handler(topic, payload, size):
        if not isinstance(topic, str) or len(payload) > 64 or size < len(payload):
            bad.append((topic, payload, size))
        got.append(topic)

    c.on_message = handler
    s = FakeStream()
    s.feed(CONNACK_OK)
    await c.connect(s)
    for ch in chunks:
        s.feed(ch)
    s.end()
    for _ in range(400):
        if c.dead.is_set():
            break
        await asyncio.sleep_ms(1)
    await asyncio.sleep_ms(2)
    if not c.dead.is_set():
        return "BAD %d still up after EOF" % n
    if c.reason not in REASONS:
        return "BAD %d reason %r" % (n, c.reason)
    if seen or bad:
        return "BAD %d %r %r" % (n, seen, bad)
    if not 0 <= c._p <= c._e <= len(c._ib):
        return "BAD %d positions %d %d" % (n, c._p, c._e)
    return "OK %d %s" % (n, c.reason)


def main():
    n = 0
    with open(sys.argv[1]) as f:
        for line in f:
            chunks = [bytes.fromhex(x) for x in line.strip().split("/")]
            print(asyncio.run(one(n, chunks)))
            n += 1
    print("DONE")


main()

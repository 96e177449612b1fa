# The node's command handler under fuzz (tests/test_fuzz_unix.py feeds it from hypothesis):
#   micropython fuzz_commands.py CASES   (one batch a line: JSON [[hex payload, retained], ...])
# Each batch goes to a fresh node as the link would hand it over; then the commander runs. Every
# message must get exactly one reply (a JSON object with id and ok), nothing may reset the node,
# and the config on its flash must still validate, with its interval at least 1 s.
import asyncio
import json
import sys

sys.path.insert(0, "../../firmware")  # run from tests/unix, as the runner is

import board
import config
import mptest_node as T
from binascii import crc32


class HW:
    resets = 0

    def reset(self):
        HW.resets += 1


async def batch(n, msgs):
    T._fresh()
    node = T._node(T._cfg(), T.FakeOutbox())
    if n % 2 == 0:
        # As board.load() leaves it: `set` takes the path that checks only its key (cfgkeys.py);
        # odd batches take the one that validates the whole file.
        with open(T._TMP + "/config.json", "rb") as f:
            board.CRC = crc32(f.read())
    node.hw = HW()
    c = T.FakeClient()
    node.link.client = c
    node.link.up.set()
    for p, retained in msgs:
        node._on_message(node.t_cmd, p, len(p), retained)
    t = asyncio.create_task(node.commands.task())
    for _ in range(3000):
        if len(c.sent) >= len(msgs) and node.commands.idle():
            break
        await asyncio.sleep_ms(1)
    await asyncio.sleep_ms(5)
    t.cancel()
    sys.modules["config"] = config
    if len(c.sent) != len(msgs):
        return "BAD %d %d replies to %d messages" % (n, len(c.sent), len(msgs))
    for topic, payload, qos in c.sent:
        d = json.loads(payload)
        if topic != node.t_reply or qos != 1 or not isinstance(d, dict) or "id" not in d or d.get("ok") not in (True, False):
            return "BAD %d reply %r" % (n, payload)
    if HW.resets:
        return "BAD %d the node was reset" % n
    with open(T._TMP + "/config.json") as f:
        v = config.validate(json.load(f), T._profile())
    board.CRC = None
    if v["interval_s"] < 1 or node.cfg["interval_s"] < 1:
        return "BAD %d interval %r" % (n, v["interval_s"])
    if json.loads(json.dumps(node.cfg)) != v:   # the running config is the file's, validated
        return "BAD %d running config %r, file %r" % (n, node.cfg, v)
    return "OK %d" % n


def main():
    n = 0
    with open(sys.argv[1]) as f:
        for line in f:
            msgs = [(bytes.fromhex(h), r) for h, r in json.loads(line)]
            try:
                print(asyncio.run(batch(n, msgs)))
            except Exception as e:
                print("BAD %d %r" % (n, e))
            n += 1
    print("DONE")


main()

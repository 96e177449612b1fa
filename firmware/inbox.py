"""The node's command inbox: all of the commands that stays in RAM between two commands.

A message on `cmd` is queued here (a retained one, or one past a full queue, is kept as its id
only, to be refused); the inbox's task then loads commands.py and cmdguard.py, which run and
answer everything queued, and drops them again when the queue is empty. On a node that runs
its modules from .mpy files that keeps their bytecode (about 7 KB) out of the standing heap.

    box = inbox.Inbox(node)            # node.link delivers to box.on_message
    asyncio.create_task(box.task())
"""
import asyncio
import gc
import json
import sys

try:
    from micropython import const
except ImportError:
    const = lambda x: x  # noqa: E731

MAX_CMD = const(512)      # docs/contract.md: larger command payloads are refused
_QUEUE = const(4)
_REFUSE_QUEUE = const(16)  # ids of commands waiting for a "busy" / "retained" answer
# What a command loads and the inbox drops when it is done (config: `get_config`, `set`)
_ON_DEMAND = ("commands", "cmdguard", "config")


def cmd_id(payload, size=None):
    """The id of a command payload, for an answer that does not run it; None if it has none or
    is not a command (commands.parse gives the reason when it runs)."""
    if (len(payload) if size is None else size) > MAX_CMD:
        return None
    try:
        d = json.loads(payload)
    except (ValueError, UnicodeError):
        return None
    cid = d.get("id") if isinstance(d, dict) else None
    return cid if isinstance(cid, (str, int)) else None


async def _serve(box):
    import commands
    await commands.serve(box)


class Inbox:
    def __init__(self, node):
        self.node = node
        self.queue = []           # (payload bytes, size), at most _QUEUE
        self.refused = []         # (id, retained?), at most _REFUSE_QUEUE: refused as such or busy
        self.unanswered = 0       # dropped unanswered past both (a flood): logged
        self.memo = [[], None, None]  # cmdguard's memory (replays, rate limits): outlives the module
        self.ev = asyncio.Event()
        self.busy = False         # a command is being run or answered

    def idle(self):
        return not self.queue and not self.refused and not self.busy

    def on_message(self, topic, payload, size, retained=False):
        if retained or len(self.queue) >= _QUEUE:
            # Answered, never run. A retained command is an old one that the broker hands out on
            # every subscription (a reboot on every reconnect); a full queue says so instead of
            # dropping silently. Only the id is kept, and only so many: a flood costs bounded RAM.
            if len(self.refused) < _REFUSE_QUEUE:
                self.refused.append((cmd_id(payload, size), retained))
            else:
                self.unanswered += 1
            self.ev.set()
            return
        self.queue.append((bytes(payload), size))
        self.ev.set()

    async def task(self):
        while True:
            self.node.beat("commands")
            if self.queue or self.refused or self.unanswered:
                try:
                    await _serve(self)
                finally:
                    self.busy = False
                    self.drop()
                continue
            try:
                await asyncio.wait_for_ms(self.ev.wait(), 1000)
            except asyncio.TimeoutError:
                pass
            self.ev.clear()

    def drop(self):
        for name in _ON_DEMAND:
            sys.modules.pop(name, None)
        gc.collect()

    async def run(self, cmd, args):
        """Run one command: (result, coroutine function to run after the reply) or raises."""
        import commands
        return await commands.run(self, cmd, args)

    async def reply(self, payload):
        import commands
        await commands.reply(self, payload)

"""The node's command inbox: all of the commands that stays in RAM between two commands.

A message on `cmd` is queued here (a retained one, or one past a full queue, is kept as its id
only, and refused from here); the inbox's task then loads commands.py and cmdguard.py, which
run and answer everything queued, and drops them again when the queue is empty. On a node that
runs its modules from .mpy files that keeps their bytecode (about 7 KB) out of the standing
heap. When they cannot be loaded (no memory in a fragmented heap), what is queued is answered
as failed and the node goes on.

    box = inbox.Inbox(node)            # node.link delivers to box.on_message
    asyncio.create_task(box.task())
"""
import asyncio
import gc
import json
import sys

import telemetry

try:
    from micropython import const
except ImportError:
    const = lambda x: x  # noqa: E731

MAX_CMD = const(512)      # docs/contract.md: larger command payloads are refused
_QUEUE = const(4)
_REFUSE_QUEUE = const(16)  # ids of commands waiting for a "busy" / "retained" answer
_REPLY_WAIT_MS = const(10000)  # for a link that is down when a command's answer is ready
RETAINED = "retained commands are not obeyed"
BUSY = "busy"
# What a command loads and the inbox drops when it is done (config: `get_config`, `set`)
_ON_DEMAND = ("commands", "cmdguard", "cfgkeys", "config")


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
        self.refused = []         # (id, reason), at most _REFUSE_QUEUE
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
                self.refused.append((cmd_id(payload, size), RETAINED if retained else BUSY))
            else:
                self.unanswered += 1
            self.ev.set()
            return
        self.queue.append((bytes(payload), size))
        self.ev.set()

    async def task(self):
        n = self.node
        while True:
            n.beat("commands")
            if self.refused:
                cid, why = self.refused.pop(0)
                self.busy = True
                await self.reply(telemetry.reply(cid, False, None, why))
                self.busy = False
                continue
            if self.unanswered:
                n.log("cmd: %d commands dropped unanswered (flood)" % self.unanswered)
                self.unanswered = 0
            if self.queue:
                await self._run_queued()
                continue
            try:
                await asyncio.wait_for_ms(self.ev.wait(), 1000)
            except asyncio.TimeoutError:
                pass
            self.ev.clear()

    async def _run_queued(self):
        for _ in range(2):      # a second try after a collection: the heap may just be cut up
            try:
                await _serve(self)
                return
            except Exception as e:   # commands.py could not be loaded (MemoryError), ...
                err = e
            finally:
                self.busy = False
                self.drop()
        self.node.log("cmd: cannot run commands: %r; %d answered as failed" % (err, len(self.queue)))
        while self.queue:
            payload, size = self.queue.pop(0)
            self.busy = True
            await self.reply(telemetry.reply(cmd_id(payload, size), False, None, "failed: %s" % (err,)))
            self.busy = False

    def drop(self):
        for name in _ON_DEMAND:
            sys.modules.pop(name, None)
        gc.collect()

    async def run(self, cmd, args):
        """Run one command: (result, coroutine function to run after the reply) or raises."""
        import commands
        return await commands.run(self, cmd, args)

    async def reply(self, payload):
        # The command came over the link, so it is usually up; if it dropped meanwhile (a sample
        # takes seconds), wait for the next session rather than lose the answer: twice, bounded.
        n = self.node
        link = n.link
        for _ in range(2):
            n.beat("commands")    # each try: up to 10 s for the link, 3 sends for the PUBACK
            try:
                await asyncio.wait_for_ms(link.up.wait(), _REPLY_WAIT_MS)
                await link.client.publish(n.t_reply, payload, 1)
                return
            except Exception as e:
                err = e
        n.log("reply lost: %r" % (err,))

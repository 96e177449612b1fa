"""Commands over MQTT (docs/contract.md, "Commands"): parsed, queued, run one at a time, answered on
`reply`. Pure parsing (parse) runs on CPython too; the host and the fuzz tests use it.

    c = commands.Commander(node)       # node.link delivers to c.on_message
    asyncio.create_task(c.task())      # runs them, one at a time
    commands.parse(b'{"id":"c-1","cmd":"ping"}')    # -> ("c-1", "ping", {})
"""
import asyncio
import json

import cmdguard

try:
    from micropython import const
except ImportError:
    const = lambda x: x  # noqa: E731

MAX_CMD = 512  # docs/contract.md: larger command payloads are refused
NAMES = ("ping", "sample", "get_config", "set", "reboot")
_QUEUE = const(4)
_REFUSE_QUEUE = const(16)  # ids of commands waiting for a "busy" / "retained" answer
_REPLY_WAIT_MS = const(10000)  # for a link that is down when a command's answer is ready


class CommandError(ValueError):
    """A command refused before it ran; args[0] is the reason, `id` the command's id if known."""

    def __init__(self, reason, cid=None):
        super().__init__(reason)
        self.id = cid


def parse(payload, size=None):
    """(id, cmd, args) or CommandError with a short reason."""
    if size is None:
        size = len(payload)
    if size > MAX_CMD:
        raise CommandError("payload too large (%d > %d bytes)" % (size, MAX_CMD))
    try:
        d = json.loads(payload)
    except (ValueError, UnicodeError):
        raise CommandError("malformed JSON")
    if not isinstance(d, dict):
        raise CommandError("expected a JSON object")
    cid = d.get("id")
    if cid is not None and not isinstance(cid, (str, int)):
        raise CommandError("id must be a string", None)
    cmd = d.get("cmd")
    if cmd not in NAMES:
        raise CommandError("unknown command", cid)
    args = d.get("args", {})
    if not isinstance(args, dict):
        raise CommandError("args must be an object", cid)
    return cid, cmd, args


def cmd_id(payload, size=None):
    """The id of a command payload, for an answer that does not run it; None if it has none."""
    try:
        return parse(payload, size)[0]
    except CommandError as e:
        return e.id


def _config():
    # The validator is ~20 KB of bytecode on the unix port: loaded for the rare get_config/set,
    # then dropped again after the reply.
    import config
    return config


def _unload(name):
    import gc
    import sys
    sys.modules.pop(name, None)
    gc.collect()


class Commander:
    def __init__(self, node):
        self.node = node
        self._q = []
        self._refuse = []
        self.unanswered = 0
        self.guard = cmdguard.Guard()
        self._ev = asyncio.Event()
        self.busy = False        # a command is being run or answered

    def idle(self):
        return not self._q and not self._refuse and not self.busy

    def on_message(self, topic, payload, size, retained=False):
        if retained or len(self._q) >= _QUEUE:
            # Answered, never run. A retained command is an old one that the broker hands out on
            # every subscription (a reboot on every reconnect); a full queue says so instead of
            # dropping silently. Only the id is kept, and only so many: a flood costs bounded RAM.
            if len(self._refuse) < _REFUSE_QUEUE:
                self._refuse.append((cmd_id(payload, size), cmdguard.RETAINED if retained else cmdguard.BUSY))
            else:
                self.unanswered += 1
            self._ev.set()
            return
        self._q.append((bytes(payload), size))
        self._ev.set()

    async def task(self):
        n = self.node
        import telemetry
        while True:
            n.beat("commands")
            if self._refuse:
                cid, why = self._refuse.pop(0)
                await self.reply(telemetry.reply(cid, False, None, why))
                continue
            if self.unanswered:
                n.log("cmd: %d commands dropped unanswered (flood)" % self.unanswered)
                self.unanswered = 0
            if not self._q:
                try:
                    await asyncio.wait_for_ms(self._ev.wait(), 1000)
                except asyncio.TimeoutError:
                    pass
                self._ev.clear()
                continue
            payload, size = self._q.pop(0)
            self.busy = True
            cid, ok, res, err, after = None, False, None, None, None
            try:
                cid, cmd, args = parse(payload, size)
                first = self.guard.answered(cid)
                if first is not None:  # a replay, or QoS 1 delivering twice: not run again
                    await self.reply(first)
                    self.busy = False
                    continue
                up = n.up_s()
                # uptime, not ticks_ms: ticks wrap every 2^30 ms on an ESP32 and a negative
                # difference would never refill the `set` bucket
                why = self.guard.refuse(cmd, up * 1000, up)
                if why:
                    raise CommandError(why, cid)
                res, after = await self.run(cmd, args)
                ok = True
            except CommandError as e:
                if e.id is not None or cid is None:
                    cid = e.id
                err = str(e)
            except ValueError as e:  # config.ConfigError from `set`
                err = str(e)
            except Exception as e:
                err = "failed: %s" % e
            out = telemetry.reply(cid, ok, res, err)
            self.guard.note(cid, out)
            await self.reply(out)
            _unload("config")
            self.busy = False
            if after:
                await after()

    async def reply(self, payload):
        # The command came over the link, so it is usually up; if it dropped meanwhile (a sample
        # takes seconds), wait for the next session rather than lose the answer: twice, bounded.
        link = self.node.link
        for _ in range(2):
            self.node.beat("commands")    # each try: up to 10 s for the link, 3 sends for the PUBACK
            try:
                await asyncio.wait_for_ms(link.up.wait(), _REPLY_WAIT_MS)
                await link.client.publish(self.node.t_reply, payload, 1)
                return
            except Exception as e:
                err = e
        self.node.log("reply lost: %r" % (err,))

    async def run(self, cmd, args):
        """Run one command; (result, coroutine function to run after the reply) or raises."""
        n = self.node
        if cmd == "ping":
            import gc
            from version import VERSION
            return {"up": n.up_s(), "fw": VERSION, "boot": n.boot, "seq": n.seq,
                    "mem_free": gc.mem_free(), "held": n.pending()}, None
        if cmd == "sample":
            r = await n.cycle()
            return {"seq": r["seq"], "values": r["values"], "errors": r["errors"]}, None
        if cmd == "get_config":
            return _config().masked(n.cfg), None
        if cmd == "set":
            key, value = args.get("key"), args.get("value")
            if not isinstance(key, str) or "value" not in args:
                raise CommandError("set needs args {\"key\": ..., \"value\": ...}")
            import board
            import persist
            path = n.cfg_path
            raw, new_cfg = _config().set_key(persist.read_json(path), key, value,
                                             board.profile(n.cfg["board"], path[:path.rfind("/") + 1]))
            persist.write_json(path, raw)
            n.cfg = new_cfg
            n.wake()
            return {"key": key, "value": value}, None
        if cmd == "reboot":
            return {"rebooting": True}, n.reboot
        raise CommandError("unknown command")

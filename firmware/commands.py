"""Commands over MQTT (docs/contract.md, "Commands"): parsed, run one at a time, answered on
`reply`. The node's inbox (inbox.py) queues them, loads this module to run them and drops it
again. Pure parsing (parse) runs on CPython too; the host and the fuzz tests use it.

    await commands.serve(box)          # run and answer what the inbox holds
    commands.parse(b'{"id":"c-1","cmd":"ping"}')    # -> ("c-1", "ping", {})
"""
import json

import cmdguard
from inbox import MAX_CMD

NAMES = ("ping", "sample", "get_config", "set", "reboot")


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


def _set(n, key, value):
    # The config as written, with one key changed. A file that is the one validated at boot (or
    # by the last `set`: board.CRC) needs only the key's rule (cfgkeys); one changed on the flash
    # since is validated whole, with config.py (~14 KB of heap from .mpy, dropped with this
    # module when the inbox is empty: inbox.Inbox.drop). A CRC guards against a file edited by
    # hand, not an attacker: whoever can write the flash can replace main.py as well.
    import json
    from binascii import crc32

    import board
    import cfgkeys
    import persist
    path = n.cfg_path
    data = persist.read_bytes(path, cfgkeys.MAX_BYTES)
    if data is None:
        raise CommandError("%s: missing or over %d bytes" % (path, cfgkeys.MAX_BYTES))
    known = board.CRC is not None and crc32(data) == board.CRC
    raw = json.loads(data)
    data = None   # not kept while the config is checked and the new bytes are made
    cfg = None
    if known:
        why = cfgkeys.check(key, value)
        if why:
            raise CommandError("%s: %s" % (key, why) if key else why)   # config.ConfigError's form
        cfgkeys.put(raw, key, value)
    else:
        import config
        raw, cfg = config.set_key(raw, key, value, board.profile(n.cfg["board"], path[:path.rfind("/") + 1]))
    data = json.dumps(raw).encode()
    if len(data) > cfgkeys.MAX_BYTES:   # the next boot would refuse it: safe mode
        raise CommandError("%s would be %d bytes, at most %d" % (path, len(data), cfgkeys.MAX_BYTES))
    crc = crc32(data)
    # Until the running config follows the file, no file is known: if anything fails between
    # (MemoryError), the next `set` validates the file whole and replaces n.cfg.
    board.CRC = None
    persist.write_bytes(path, data)
    if cfg is None:
        cfgkeys.put(n.cfg, key, value)
    else:
        n.cfg = cfg
    board.CRC = crc


async def serve(box):
    """Run and answer the commands the inbox (inbox.Inbox) has queued, one at a time, until none is
    left (the inbox answers the refused ones itself)."""
    n = box.node
    import telemetry
    while box.queue:
        n.beat("commands")
        payload, size = box.queue.pop(0)
        box.busy = True
        cid, ok, res, err, after = None, False, None, None, None
        try:
            cid, cmd, args = parse(payload, size)
            first = cmdguard.answered(box.memo, cid)
            if first is not None:  # a replay, or QoS 1 delivering twice: not run again
                await box.reply(first)
                box.busy = False
                continue
            up = n.up_s()
            # uptime, not ticks_ms: ticks wrap every 2^30 ms on an ESP32 and a negative
            # difference would never refill the `set` bucket
            why = cmdguard.refuse(box.memo, cmd, up * 1000, up)
            if why:
                raise CommandError(why, cid)
            res, after = await box.run(cmd, args)
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
        cmdguard.note(box.memo, cid, out)
        await box.reply(out)
        box.busy = False
        if after:
            await after()


async def run(box, cmd, args):
    """Run one command; (result, coroutine function to run after the reply) or raises."""
    n = box.node
    if cmd == "ping":
        import gc
        from version import VERSION
        return {"up": n.up_s(), "fw": VERSION, "boot": n.boot, "seq": n.seq,
                "mem_free": gc.mem_free(), "held": n.pending()}, None
    if cmd == "sample":
        r = await n.cycle()
        return {"seq": r["seq"], "values": r["values"], "errors": r["errors"]}, None
    if cmd == "get_config":
        import cfgkeys
        return cfgkeys.masked(n.cfg), None
    if cmd == "set":
        key, value = args.get("key"), args.get("value")
        if not isinstance(key, str) or "value" not in args:
            raise CommandError("set needs args {\"key\": ..., \"value\": ...}")
        _set(n, key, value)
        n.wake()
        return {"key": key, "value": value}, None
    if cmd == "reboot":
        return {"rebooting": True}, n.reboot
    raise CommandError("unknown command")

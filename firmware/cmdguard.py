"""What stands between the `cmd` topic and the node's commands: replays and floods.

Pure (no I/O): runs on MicroPython and CPython.
    g = cmdguard.Guard()
    prev = g.answered("c-17")          # the first reply to an id seen lately, or None
    why = g.refuse("reboot", now_ms, up_s)   # None, or why this command may not run now
    g.note("c-17", reply_bytes)
"""
try:
    from micropython import const
except ImportError:
    const = lambda x: x  # noqa: E731

REMEMBER = const(8)       # command ids whose replies are kept
KEEP_BYTES = const(384)   # a longer reply is remembered as a short notice (RAM)
REBOOT_AFTER_S = const(60)  # no remote reboot in the first minute after a boot: no reboot loops
SET_BURST = const(5)      # `set`: 5 at once, then one per SET_EVERY_MS
SET_EVERY_MS = const(12000)

RETAINED = "retained commands are not obeyed"
BUSY = "busy"


class Guard:
    def __init__(self):
        self._ids = []      # [(id, reply bytes)], oldest first
        self._set_tokens = SET_BURST
        self._set_t = None

    def answered(self, cid):
        """The reply first sent for this id, if it is one of the last REMEMBER; None otherwise
        (and for a command without an id, which cannot be told from a new one)."""
        if cid is None:
            return None
        for k, r in self._ids:
            if k == cid:
                return r
        return None

    def note(self, cid, reply):
        if cid is None:
            return
        if len(reply) > KEEP_BYTES:
            import json
            reply = json.dumps({"id": cid, "ok": False, "error": "duplicate id: answered before"}).encode()
        self._ids.append((cid, bytes(reply)))
        if len(self._ids) > REMEMBER:
            self._ids.pop(0)

    def refuse(self, cmd, now_ms, up_s):
        """None when `cmd` may run now, else the reason (a command is then answered, not run)."""
        if cmd == "reboot" and up_s < REBOOT_AFTER_S:
            return "rate limited: no reboot within %d s of a boot (up %d s)" % (REBOOT_AFTER_S, up_s)
        if cmd == "set":
            if self._set_t is None:
                self._set_t = now_ms
            gained = (now_ms - self._set_t) // SET_EVERY_MS   # now_ms: the node's uptime, never wraps
            if gained > 0:
                self._set_tokens = min(SET_BURST, self._set_tokens + gained)
                self._set_t += gained * SET_EVERY_MS
            if self._set_tokens <= 0:
                return "rate limited: at most %d set commands, then one per %d s" % (SET_BURST, SET_EVERY_MS // 1000)
            if self._set_tokens == SET_BURST:
                self._set_t = now_ms  # a full bucket starts its refill clock afresh
            self._set_tokens -= 1
        return None

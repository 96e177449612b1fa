"""What stands between the `cmd` topic and the node's commands: replays and floods.

Pure (no I/O): runs on MicroPython and CPython. Its memory is a list the caller keeps (the node's
inbox), so that this module can be loaded with a command and dropped after it, like commands.py:
    memo = [[], None, None]                  # kept by the caller between commands
    prev = cmdguard.answered(memo, "c-17")   # the first reply to an id seen lately, or None
    why = cmdguard.refuse(memo, "reboot", now_ms, up_s)   # None, or why it may not run now
    cmdguard.note(memo, "c-17", reply_bytes)
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

_IDS = const(0)     # memo[0]: [(id, reply bytes)], oldest first
_TOKENS = const(1)  # memo[1]: `set` commands that may run now (None before the first)
_T = const(2)       # memo[2]: the uptime (ms) the bucket last refilled at (None before the first)


def answered(memo, cid):
    """The reply first sent for this id, if it is one of the last REMEMBER; None otherwise
    (and for a command without an id, which cannot be told from a new one)."""
    if cid is None:
        return None
    for k, r in memo[_IDS]:
        if k == cid:
            return r
    return None


def note(memo, cid, reply):
    if cid is None:
        return
    if len(reply) > KEEP_BYTES:
        import json
        reply = json.dumps({"id": cid, "ok": False, "error": "duplicate id: answered before"}).encode()
    ids = memo[_IDS]
    ids.append((cid, bytes(reply)))
    if len(ids) > REMEMBER:
        ids.pop(0)


def refuse(memo, cmd, now_ms, up_s):
    """None when `cmd` may run now, else the reason (a command is then answered, not run)."""
    if cmd == "reboot" and up_s < REBOOT_AFTER_S:
        return "rate limited: no reboot within %d s of a boot (up %d s)" % (REBOOT_AFTER_S, up_s)
    if cmd == "set":
        if memo[_T] is None:
            memo[_T], memo[_TOKENS] = now_ms, SET_BURST
        gained = (now_ms - memo[_T]) // SET_EVERY_MS   # now_ms: the node's uptime, never wraps
        if gained > 0:
            memo[_TOKENS] = min(SET_BURST, memo[_TOKENS] + gained)
            memo[_T] += gained * SET_EVERY_MS
        if memo[_TOKENS] <= 0:
            return "rate limited: at most %d set commands, then one per %d s" % (SET_BURST, SET_EVERY_MS // 1000)
        if memo[_TOKENS] == SET_BURST:
            memo[_T] = now_ms  # a full bucket starts its refill clock afresh
        memo[_TOKENS] -= 1
    return None

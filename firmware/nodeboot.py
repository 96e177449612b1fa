"""What a node does once per boot, loaded for it and dropped after (node.Node.run), and the
whole of a deep-sleep wake (node.Node.run_once): on a node that runs from .mpy files, their
code (about 2 KB) is not in the heap while the node cycles.
"""
import asyncio
import time

import persist
import telemetry

try:
    from micropython import const
except ImportError:
    const = lambda x: x  # noqa: E731

_CMD_GRACE_MS = const(500)   # deep sleep: how long a wake listens for commands kept at the broker
_LAST_CRASH = "crash.last.json"


def reports(n):
    """The crash of the last boot, and what main.py's first stage or the bootloader did to an
    update (a rollback, a whole image's first boot), as events."""
    report_crash(n)
    ota_boot(n)


def report_crash(n, path="crash.json", name="crash"):
    rec = persist.read_json(path)
    if rec is not None:
        n.event(name, rec)
        if name == "crash":
            import os
            try:   # reported: kept as the last crash (citynode info shows it) until the next one
                os.rename(path, path[:path.rfind("/") + 1] + _LAST_CRASH)
                return
            except OSError:
                pass
        persist.remove(path)


def ota_boot(n):
    # What main.py's first stage found (a failed trial rolled back), and after a whole-image
    # update whether this is its trial or the bootloader went back (ota_image.json).
    report_crash(n, "ota_rollback.json", "ota_rollback")
    if persist.read_json("ota_image.json") is not None:
        import ota
        ota.image_boot(n)


async def run_once(n, budget_ms, extra, sync_ms):
    """Deep-sleep mode: one cycle, deliver what is stored and answer the commands that waited
    at the broker, within the budget; then say "asleep" (retained) and when we should wake.
    `extra`: tasks that run meanwhile (NTP: a wake starts with an unsynced clock, and a
    reading without a time would say `ts: null`); with them the cycle waits up to sync_ms
    for a clock."""
    reports(n)
    lt = asyncio.create_task(n.link.run())
    ct = asyncio.create_task(n.commands.task())
    xt = [asyncio.create_task(c) for c in extra]
    t0 = time.ticks_ms()
    while xt and n.ts() is None and time.ticks_diff(time.ticks_ms(), t0) < sync_ms:
        await asyncio.sleep_ms(50)
    await n.cycle()
    end = time.ticks_add(time.ticks_ms(), budget_ms)
    while n.pending() and time.ticks_diff(end, time.ticks_ms()) > 0:
        if n.link.up.is_set():
            try:
                if not await n._drain_once(n.link.client):
                    break
            except Exception:
                n._rewind()
                await asyncio.sleep_ms(200)
        else:
            await asyncio.sleep_ms(100)
    if n.trial and n.link.up.is_set():
        import ota
        ota.commit_trial(n)   # a deep-sleep node's trial ends with its first session
    c = n.link.client
    if c is not None:
        # Commands kept for us come when the session resumes, before the broker reads what we
        # send next: one round trip (a ping answered) has them in the inbox. A broker that
        # hands them over later has _CMD_GRACE_MS; a command that misses it stays queued at
        # the broker for the next wake (QoS 1, a persistent session): later, never lost.
        try:
            await asyncio.wait_for_ms(c.ping(), _CMD_GRACE_MS)
        except Exception:
            pass
        # then answer every one before sleeping
        while not n.commands.idle() and time.ticks_diff(end, time.ticks_ms()) > 0:
            await asyncio.sleep_ms(50)
    await n.link.stop((n.t_status, telemetry.asleep(int(n.cfg["interval_s"]), n.ts())))
    lt.cancel()
    ct.cancel()
    for t in xt:
        t.cancel()
    n.flush()

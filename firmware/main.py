# main.py: the composition root, the same file on an ESP32 and on the virtual node. It asks the
# board (board.py) for its peripherals, Wi-Fi, clock and watchdog, and builds the node from them.
#
# It is also the first stage of every boot: the copy at the flash root (written by `citynode
# deploy`) reads fw.json, which an over-the-air update writes (ota.py, docs/ota.md), and runs the
# version it names from its own directory instead, or rolls a failed trial back. An OTA version's
# own main.py is run with FWDIR set, and skips this part.
import sys


def _stage1():
    # Builtin modules only: nothing of the root firmware may be in sys.modules when another
    # version runs, or it would run with a mix of both.
    import json
    import os

    def rd(p):
        try:
            with open(p) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def wr(p, o):
        with open(p + ".tmp", "w") as f:
            f.write(json.dumps(o))
        os.rename(p + ".tmp", p)

    p = rd("fw.json")
    if not isinstance(p, dict):
        return "", False
    run, trial = p.get("run") or "", bool(p.get("trial"))
    if trial and p.get("tries"):
        # The trial booted before and never committed: it crashed, the watchdog reset it, it
        # found no broker in time, or the power went. The previous version runs again.
        crash, fail = rd("crash.json"), rd("ota.fail")
        if crash is not None:
            why = "crash"
        elif isinstance(fail, dict):
            why = fail.get("reason", "failed")
        else:
            why = "watchdog" if _reset_cause() == "wdt" else "reset"
        wr("ota_rollback.json", {"reason": why, "crash": crash, "version": p.get("version"),
                                 "running": p.get("from")})
        run, trial = p.get("prev") or "", False
        wr("fw.json", {"run": run, "prev": "", "trial": False, "version": p.get("from")})
        for f in ("crash.json", "ota.fail"):
            try:
                os.remove(f)
            except OSError:
                pass
    elif trial:
        p["tries"] = 1
        wr("fw.json", p)
    try:
        if run:
            os.stat(run + "main.py")
    except OSError:
        return "", False
    return run, trial


def _reset_cause():
    if sys.platform == "esp32":
        import machine
        return "wdt" if machine.reset_cause() == machine.WDT_RESET else "other"
    import os
    return os.getenv("CITYNODE_RESET") or "power"


def _run_version(d, trial):
    sys.path[:] = [d[:-1] if p in ("", "/") else p for p in sys.path]
    try:
        with open(d + "main.py") as f:
            src = f.read()
        exec(compile(src, d + "main.py", "exec"), {"__name__": "__main__", "FWDIR": d, "TRIAL": trial})
    except Exception as e:
        # It failed before its own crash handler was set up (an import, a syntax error): a
        # crash all the same, so a trial rolls back on the next boot.
        import io
        import json
        buf = io.StringIO()
        # The ESP32 stubs' StringIO has no methods (MicroPython's has write and getvalue).
        sys.print_exception(e, buf)  # pyright: ignore[reportArgumentType]
        with open("crash.json", "w") as f:
            f.write(json.dumps({"up": 0, "error": repr(e)[:120],
                                "trace": buf.getvalue()[-400:]}))  # pyright: ignore[reportAttributeAccessIssue]
        print("citynode: %s failed to start: %r; resetting" % (d, e))
        _reset()


def _reset():
    if sys.platform == "esp32":
        import machine
        machine.reset()
    sys.exit(77)  # the virtual node's reset


_ran_other = False
if "FWDIR" not in globals():
    FWDIR, TRIAL = _stage1()
    if FWDIR:
        _ran_other = True
        _run_version(FWDIR, TRIAL)   # returns only if that version's main() does (safe pin)

import asyncio  # noqa: E402
import time  # noqa: E402

import board  # noqa: E402
import persist  # noqa: E402

board.FW = FWDIR   # this firmware's board profiles are in its own directory

# Not "outbox": MicroPython would import a directory of that name in place of outbox.py.
OUTBOX_DIR = "outbox.d"


# The last lines logged in this boot, in RAM ("<ticks_ms> <text>"): `citynode logs --since-boot`
# reads them from the REPL. RAM, not a flash file: a broker outage logs every retry, and the lines
# are read over the same USB cable that shows them live anyway. 16 lines: ~2 KB on the unix port.
LOG_KEEP = 16
RING = []


def log(msg):
    print("citynode:", msg)
    RING.append("%d %s" % (time.ticks_ms(), msg))
    if len(RING) > LOG_KEEP:
        RING.pop(0)


def safe_mode(err):
    # A missing or invalid config never crash-loops the node: say why at intervals, keep the
    # REPL reachable (Ctrl-C), and go on as soon as `citynode config push` has fixed it.
    while True:
        log("safe mode: %s (fix with: citynode config push)" % err)
        time.sleep(10)
        try:
            return board.load()
        except Exception as e:
            err = str(e)


def unload(*names):
    import gc
    for name in names:
        sys.modules.pop(name, None)
    gc.collect()


def seed_random():
    # Without a seed every virtual node would draw the same backoff sequence: a reconnect storm.
    import os
    import random
    try:
        random.seed(int.from_bytes(os.urandom(4), "little"))
    except (AttributeError, OSError):
        pass


def main():
    seed_random()
    try:
        raw, cfg, profile = board.load()
    except Exception as e:
        if TRIAL:
            # A version on trial that refuses this node's config has failed its trial: safe mode
            # would wait for a visit with a cable, and no watchdog runs there. Back to the last.
            persist.write_json("ota.fail", {"reason": "config", "error": str(e)[:120]})
            log("trial: this version refuses the config (%s); back to the previous one" % e)
            _reset()
        raw, cfg, profile = safe_mode(str(e))
    # validated: the node runs without the validator's ~14 KB in RAM, nor cfgkeys (what
    # get_config and set need: loaded again for them)
    unload("config", "cfgkeys")
    import node
    hw = board.open(profile)
    pin = cfg.get("safe_pin", profile.get("safe_pin"))
    if pin is not None and hw.safe_pin_low(pin):
        log("safe pin GPIO%d held low: main.py skipped" % pin)
        return
    del raw, profile  # the node keeps only the validated config (set reads the rest from flash)
    reset = hw.reset_cause()
    deep = cfg["power"]["deep_sleep"]
    rtc = persist.read_json("rtc.json") if deep and reset == "deepsleep" else None
    boot = rtc["boot"] if rtc else persist.next_boot()
    clk = hw.clock()
    if rtc and rtc.get("synced"):
        clk.synced = True   # an ESP32's RTC keeps counting through deep sleep: still set after the wake
    ob_err = None
    try:
        import outbox
        ob = outbox.Outbox(OUTBOX_DIR, cfg["outbox_kb"])
    except Exception as e:
        ob, ob_err = None, "outbox: %s" % e
        log("%s: publishing live only" % ob_err)
    n = node.Node(cfg, hw, boot, reset, ob, hw.wifi(cfg), clk.now, log, broker=hw.broker(), trial=TRIAL)
    n.store_error = ob_err
    if rtc:
        n.seq = rtc["seq"]
    log("node %s boot %d (%s) fw %s%s%s" % (cfg["node_id"], boot, reset, node.FW, " in " + FWDIR if FWDIR else "",
                                           " (trial)" if TRIAL else ""))
    try:
        extra = hw.clock_tasks(clk, cfg, log)
        if deep:
            asyncio.run(n.run_once(extra=extra))
            persist.write_json("rtc.json", {"boot": boot, "seq": n.seq, "synced": clk.synced})
            hw.deepsleep(int(n.cfg["interval_s"] * 1000))   # `set` may have changed it
        else:
            asyncio.run(n.run(hw.watchdog(node.WDT_MS), extra))
    except Exception as e:
        # An uncaught error in any task: keep a crash record for the next boot, then reset.
        import io
        buf = io.StringIO()
        # The ESP32 stubs' StringIO has no methods (MicroPython's has write and getvalue).
        sys.print_exception(e, buf)  # pyright: ignore[reportArgumentType]
        persist.write_json("crash.json", {"boot": boot, "up": n.up_s(), "error": repr(e)[:120],
                                          "trace": buf.getvalue()[-400:]})  # pyright: ignore[reportAttributeAccessIssue]
        log("crash: %r; resetting" % e)
        time.sleep(1)
        hw.reset()


if not _ran_other:
    main()

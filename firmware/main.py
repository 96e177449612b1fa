# main.py: the composition root, the same file on an ESP32 and on the virtual node. It asks the
# board (board.py) for its peripherals, Wi-Fi, clock and watchdog, and builds the node from them.
import asyncio
import sys
import time

import board
import persist

# Not "outbox": MicroPython would import a directory of that name in place of outbox.py.
OUTBOX_DIR = "outbox.d"


def log(msg):
    print("citynode:", msg)


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


def unload(name):
    import gc
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
        raw, cfg, profile = safe_mode(str(e))
    unload("config")  # validated: the node runs without the validator's ~20 KB in RAM
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
    ob_err = None
    try:
        import outbox
        ob = outbox.Outbox(OUTBOX_DIR, cfg["outbox_kb"])
    except Exception as e:
        ob, ob_err = None, "outbox: %s" % e
        log("%s: publishing live only" % ob_err)
    n = node.Node(cfg, hw, boot, reset, ob, hw.wifi(cfg), clk.now, log, broker=hw.broker())
    n.store_error = ob_err
    if rtc:
        n.seq = rtc["seq"]
    log("node %s boot %d (%s) fw %s" % (cfg["node_id"], boot, reset, node.FW))
    try:
        extra = hw.clock_tasks(clk, cfg, log)
        if deep:
            asyncio.run(n.run_once())
            persist.write_json("rtc.json", {"boot": boot, "seq": n.seq})
            hw.deepsleep(int(cfg["interval_s"] * 1000))
        else:
            asyncio.run(n.run(hw.watchdog(node.WDT_MS), extra))
    except Exception as e:
        # An uncaught error in any task: keep a crash record for the next boot, then reset.
        import io
        buf = io.StringIO()
        sys.print_exception(e, buf)
        persist.write_json("crash.json", {"boot": boot, "up": n.up_s(), "error": repr(e)[:120],
                                          "trace": buf.getvalue()[-400:]})
        log("crash: %r; resetting" % e)
        time.sleep(1)
        hw.reset()


main()

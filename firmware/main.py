# main.py: the composition root, the same file on an ESP32 and on the virtual node.
# The only place that touches the radio (network.WLAN) and the clock source.
import asyncio
import sys
import time

import board
import persist

# Not "outbox": MicroPython would import a directory of that name in place of outbox.py.
OUTBOX_DIR = "outbox.d"


def log(msg):
    print("citynode:", msg)


def load():
    """(raw config, validated config, board profile); raises with a one-line reason."""
    raw = persist.read_json("config.json")
    if raw is None:
        raise ValueError("config.json: missing")
    if not isinstance(raw, dict):
        raise ValueError("config.json: not a JSON object")
    name = raw.get("board")
    profile = persist.read_json("boards/%s.json" % name) if isinstance(name, str) else None
    if profile is None:
        raise ValueError("board: no profile boards/%s.json on this node" % name)
    import config
    return raw, config.validate(raw, profile), profile


def safe_mode(err):
    # A missing or invalid config never crash-loops the node: say why at intervals, keep the
    # REPL reachable (Ctrl-C), and go on as soon as `citynode config push` has fixed it.
    while True:
        log("safe mode: %s (fix with: citynode config push)" % err)
        time.sleep(10)
        try:
            return load()
        except Exception as e:
            err = str(e)


class Wifi:
    """The Wi-Fi seam: the link layer calls ensure() before each connection attempt."""

    def __init__(self, ssid, password):
        import network
        self.ssid, self.password = ssid, password
        self.wlan = network.WLAN(network.STA_IF)
        self.wlan.active(True)

    async def ensure(self, timeout_ms=20000):
        if self.wlan.isconnected():
            return
        self.wlan.connect(self.ssid, self.password)
        t0 = time.ticks_ms()
        while not self.wlan.isconnected():
            if time.ticks_diff(time.ticks_ms(), t0) > timeout_ms:
                self.wlan.disconnect()
                raise OSError("wifi: no connection to %r (status %s)" % (self.ssid, self.wlan.status()))
            await asyncio.sleep_ms(250)


def broker_override():
    # The virtual node's supervisor points it at a test broker without touching config.json.
    import os
    hp = os.getenv("CITYNODE_BROKER") if board.SIM else None
    if not hp:
        return None
    h, p = hp.rsplit(":", 1)
    return h, int(p)


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
        raw, cfg, profile = load()
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
    import clock
    clk = clock.Clock(synced=board.SIM)  # the virtual node runs on the host's synchronised clock
    ob_err = None
    try:
        import outbox
        ob = outbox.Outbox(OUTBOX_DIR, cfg["outbox_kb"])
    except Exception as e:
        ob, ob_err = None, "outbox: %s" % e
        log("%s: publishing live only" % ob_err)
    wifi = None if board.SIM else Wifi(cfg["wifi"]["ssid"], cfg["wifi"]["password"])
    n = node.Node(cfg, hw, boot, reset, ob, wifi, clk.now, log, broker=broker_override())
    n.store_error = ob_err
    if rtc:
        n.seq = rtc["seq"]
    log("node %s boot %d (%s) fw %s" % (cfg["node_id"], boot, reset, node.FW))
    try:
        extra = () if board.SIM else (clk.ntp_loop(cfg["ntp_host"], log),)
        if deep:
            asyncio.run(n.run_once())
            persist.write_json("rtc.json", {"boot": boot, "seq": n.seq})
            hw.deepsleep(int(cfg["interval_s"] * 1000))
        else:
            asyncio.run(n.run(None if board.SIM else hw.wdt(node.WDT_MS), extra))
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

"""The virtual node's `machine`: the unix port's (PinBase, time_pulse_us, ...) and what a board's
also has that tools call from its REPL: `reset()` (mpremote `reset`; the supervisor restarts
the node, which then reports a hard reset, as an ESP32 does) and `unique_id()`.

    import machine
    machine.unique_id()       # 6 bytes, stable for this node's flash (an ESP32's: its MAC)
"""
import umachine   # the unix port's machine: this module extends it


def __getattr__(name):
    return getattr(umachine, name)


def reset():
    import os
    import sys
    if os.getenv("CITYNODE_SERIAL") == "1":
        # At the REPL the unix port would swallow the exit: tell the supervisor in-band (as the
        # bootstrap does for main.py) and wait to be ended and restarted.
        import time
        sys.stdout.write("\x1b_cn:exit:77\x1b\\")
        while True:
            time.sleep(1)
    sys.exit(77)        # the supervisor's code for machine.reset()


def unique_id():
    import hashlib
    import os
    return hashlib.sha256((os.getenv("CITYNODE_FLASH") or "").encode()).digest()[:6]

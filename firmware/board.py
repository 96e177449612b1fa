"""The board layer: pins and buses by number, made from a board profile (boards/<name>.json),
and the system around them: reset cause, uptime since power-up, watchdog, Wi-Fi, clock.

On an ESP32 open() gives an esp32hw.Esp32, which makes machine.Pin/UART/I2C/ADC; on the unix port
(the virtual node) it gives the simulated board of simhw_sys.py and simhw.py, which the virtual
node loads from the host (they are never on a board's flash), producing the same bytes, pulses
and ADC counts. Drivers get these objects and never import machine themselves; main.py asks the
board for Wi-Fi, clock and watchdog. Only the chip's own class is loaded: each is a module.

    import board
    raw, cfg, profile = board.load()  # config.json, validated against boards/<name>.json
    hw = board.open(profile)
    uart = hw.uart(2, rx=16, tx=17, baudrate=9600)
"""
import sys

import persist

SIM = sys.platform not in ("esp32",)

# Reset causes, as docs/contract.md names them.
RESETS = ("power", "hard", "wdt", "deepsleep", "soft", "unknown")
# Where the running firmware's files are: "" (the flash root, as deployed over USB) or the slot
# of a version installed over the air ("fw/a/"); main.py sets it. Profiles come from there.
FW = ""
# The CRC-32 of the config file as load() validated it (and as `set` last wrote it): a `set`
# on a file still equal to it checks only the key it changes (commands.py).
CRC = None


def profile(name, root=""):
    """The parsed boards/<name>.json on the flash (under `root`), or None. The virtual node's own
    board comes with its simulator, not on the flash."""
    if not isinstance(name, str):
        return None
    path = "%sboards/%s.json" % (FW, name)
    p = persist.read_json(root + path)
    if p is None and SIM:
        try:
            import simhw
            p = simhw.PROFILES.get(name)
        except ImportError:
            pass
    return p


def load(path="config.json"):
    """(raw config, validated config, board profile); raises ValueError/ConfigError with a
    one-line reason. Loads the validator: callers that keep running drop it afterwards."""
    global CRC
    import json
    import os
    from binascii import crc32

    import config
    from cfgkeys import MAX_BYTES
    data = persist.read_bytes(path, MAX_BYTES)   # a larger one is never read (MemoryError)
    if data is None:
        try:
            size = os.stat(path)[6]
        except OSError:
            raise ValueError("%s: missing" % path)
        raise ValueError("%s: %d bytes, at most %d" % (path, size, MAX_BYTES))
    crc = crc32(data)
    raw = json.loads(data)
    data = None   # not kept while it is validated
    if not isinstance(raw, dict):
        raise ValueError("%s: not a JSON object" % path)
    name = raw.get("board")
    prof = profile(name, path[:path.rfind("/") + 1])
    if prof is None:
        raise ValueError("board: no profile boards/%s.json on this node" % name)
    cfg = config.validate(raw, prof)
    CRC = crc
    return raw, cfg, prof


def _system():
    if SIM:
        import simhw_sys
        return simhw_sys.SimSystem()
    import esp32hw
    return esp32hw.Esp32(None)


def reset():
    """A hard reset of the chip, as machine.reset() (citynode reset --hard on a virtual node)."""
    _system().reset()


def chip_info():
    """Chip, MAC, flash size and last reset cause, without opening any peripheral."""
    return _system().chip_info()


def open(profile):
    if not SIM:
        import esp32hw
        return esp32hw.Esp32(profile)
    try:
        import simhw_sys
    except ImportError:   # a flash dir run without the simulated board (citynode sim puts it there)
        raise OSError("no simulated board (simhw_sys): run the node with citynode sim")
    return simhw_sys.open(profile)

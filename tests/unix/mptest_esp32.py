# The virtual ESP32 is what it claims: 32-bit, single-precision floats, and the firmware frozen in
# through firmware/manifest.py, every module a board runs. On the 64-bit port
# (CITYNODE_INTERP=unix) the same modules come from firmware/ as sources.
import os
import sys

ESP32 = os.getenv("CITYNODE_INTERP") == "esp32"
_HERE = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
FIRMWARE = _HERE + "/../../firmware"


def board_modules():
    mods = [n[:-3] for n in os.listdir(FIRMWARE)
            if n.endswith(".py") and n not in ("main.py", "manifest.py") and not n.startswith("sim")]
    mods += ["drivers." + n[:-3] for n in os.listdir(FIRMWARE + "/drivers") if n.endswith(".py")]
    return sorted(mods)


def test_word_size_and_floats():
    if ESP32:
        assert sys.maxsize == 2**31 - 1, sys.maxsize
        assert 1 / 3 == 0.33333334, 1 / 3             # single precision, as an ESP32's
        assert 16777216.0 + 1 == 16777216.0            # 2^24 + 1 is not a float32
    else:
        assert sys.maxsize > 2**31 and 16777216.0 + 1 == 16777217.0


def test_firmware_modules_frozen_on_the_esp32_only():
    mods = board_modules()
    assert "node" in mods and "drivers.bme280" in mods and "drivers" in [m.split(".")[0] for m in mods]
    for m in mods:
        try:
            mod = __import__(m, None, None, ("x",))
        except ImportError as e:    # wifi.py: the ESP32's network module (test_manifest checks it)
            assert "network" in str(e), (m, e)
            continue
        # a frozen module's __file__ is its path inside the image ("node.py"); a file's has a dir
        frozen = "/" not in mod.__file__ or mod.__file__.startswith("drivers/")
        assert frozen == ESP32, (m, mod.__file__)
    import asyncio
    assert not asyncio.__file__.startswith("/"), asyncio.__file__   # frozen on either port


def test_simulated_peripherals_stand_in_for_the_boards_rom():
    # The virtual ESP32 freezes simhw* beside the firmware (a board's peripherals are C in its
    # flash); firmware/manifest.py, what a real image freezes, never has them (test_manifest.py).
    import simhw
    assert ("/" not in simhw.__file__) == ESP32, simhw.__file__

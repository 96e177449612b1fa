# The frozen firmware: MicroPython's manifest (tools/manifestfile.py) of what a board runs.
#   make esp32-unix                          # the virtual ESP32 (32-bit unix port) freezes it
#   make firmware-image BOARD=ESP32_GENERIC  # a board's image: the port's manifest, then this
# Frozen modules keep their bytecode, qstrs and constants in flash, not in the GC heap.
# Not here: main.py (the board runs it from the filesystem, so a deploy can change the boot),
# this file, and the simulator (simhw*: the virtual node's peripherals, never a board's).
import os

include("$(MPY_DIR)/extmod/asyncio")

for _f in sorted(os.listdir(".")):
    if _f.endswith(".py") and _f not in ("main.py", "manifest.py") and not _f.startswith("sim"):
        module(_f)
package("drivers")

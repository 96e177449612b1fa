# Runs in a virtual node's flash dir on the unix port: what importing the node's modules costs
# in heap when their .mpy files sit in a ROMFS image (VfsRom, bytecode used in place, as an
# ESP32 with a ROMFS partition runs it) against the same files on the filesystem.
#   micropython romfs_cost_mp.py rom|fs IMAGE
import gc
import sys

MODS = ("board", "node", "outbox", "simhw", "simhw_uart", "simhw_bme280", "drivers", "drivers.hcsr04",
        "drivers.a02yyuw", "drivers.pms5003", "drivers.sds011", "drivers.mq", "drivers.bme280", "drivers.dht22")

if sys.argv[1] == "rom":
    import vfs
    # On a board the image is flash, mapped into the address space; here it has to be a bytes
    # object in the heap, allocated before the count starts, so it is not counted.
    img = open(sys.argv[2], "rb").read()
    vfs.mount(vfs.VfsRom(img), "/rom")
    sys.path.insert(0, "/rom")
else:
    sys.path.insert(0, ".")
gc.collect()
a = gc.mem_alloc()
for m in MODS:
    __import__(m)
gc.collect()
print(gc.mem_alloc() - a, sys.modules["node"].__file__)

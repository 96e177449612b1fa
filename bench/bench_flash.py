"""Flashing over a paced serial link: `citynode flash` (the pinned esptool, its stub protocol,
deflate) writing a 1.6 MB MicroPython-shaped image into a virtual node's ROM loader at 115200 and
460800 baud, beside the wire limit for the compressed bytes esptool sends.

    .venv/bin/python bench/bench_flash.py [--size 1600000] [--bauds 115200,460800]

Prints a markdown section. The node's UART is paced at 115200 baud (11,520 B/s each way) until
esptool's CHANGE_BAUDRATE, then at the new rate, as a USB-UART bridge would be. Bytes are counted
by the node's relay, on the wire. Seconds are wall-clock of flash.flash() (connect, stub upload,
write, MD5 verify, boot to the banner); the limit is compressed bytes / (baud / 10).
"""
import argparse
import os
import shutil
import sys
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "host_tools"))

from citynode import flash  # noqa: E402
from citynode.sim import rom as simrom  # noqa: E402
from citynode.sim import SimNode  # noqa: E402


def one(tmp, fw, baud):
    node = SimNode(tmp / ("node-%d" % baud), serial=True, baud=115200, register=False).start()
    try:
        w0 = dict(node.wire)
        t0 = time.monotonic()
        with open(os.devnull, "w") as devnull:
            r = flash.flash(node.port, str(fw), baud=baud, esptool_out=devnull)
        dt = time.monotonic() - t0
        return {"s": dt, "up": node.wire["to_node"] - w0["to_node"], "down": node.wire["from_node"] - w0["from_node"],
                "version": r["version"]}
    finally:
        node.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=1_600_000, help="image size in bytes")
    ap.add_argument("--bauds", default="115200,460800")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-flash-"))
    try:
        img = simrom.build_image("ESP32", app_size=a.size - 0xF000 - 0x100)
        fw = tmp / "ESP32_GENERIC-bench.bin"
        fw.write_bytes(img)
        comp = len(zlib.compress(img, 9))   # what esptool's write_flash sends (compress=True, level 9)
        print("## Flashing a virtual node (bench/bench_flash.py)\n")
        print("Image: %s bytes (bootloader, partition table, app with MicroPython's banner strings and "
              "code-like filler), %s bytes compressed (%.0f %%). Node UART paced at 115200 baud until "
              "esptool changes it.\n" % (format(len(img), ","), format(comp, ","), 100.0 * comp / len(img)))
        print("| baud | flash s | wire limit s (compressed / (baud/10)) | limit / actual | bytes host->node | bytes node->host |")
        print("|---|---|---|---|---|---|")
        for baud in [int(b) for b in a.bauds.split(",")]:
            r = one(tmp, fw, baud)
            limit = comp / (baud / 10.0)
            print("| %d | %.1f | %.1f | %.0f %% | %s | %s |" % (baud, r["s"], limit, 100.0 * limit / r["s"],
                                                               format(r["up"], ","), format(r["down"], ",")))
        print("\nThe rest of each run is connect + stub upload at 115200 (the stub's ~%s bytes), SLIP framing "
              "and the MD5 verify; the sim's own work (inflate, file writes) overlaps the wire." %
              "{:,}".format(_stub_bytes()))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _stub_bytes():
    try:
        from esptool.loader import StubFlasher
        from esptool.targets import CHIP_DEFS
        s = StubFlasher(CHIP_DEFS["esp32"])
        return len(s.text) + len(s.data or b"")
    except Exception:   # esptool's stub layout changed: the figure is only a remark
        return 0


if __name__ == "__main__":
    main()

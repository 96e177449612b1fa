"""Write a MicroPython image to an ESP32 with esptool's v5 library API, then wait for the banner.

    from citynode import flash
    r = flash.flash("/dev/ttyUSB0", "ESP32_GENERIC-v1.29.0.bin", erase=True)
    print(r["chip"], hex(r["offset"]), r["version"])     # ESP32 0x1000 v1.29.0

The image is checked against the chip that answered before anything is written: an S3 image
on a classic ESP32 boots nowhere, the bootloader offset differs between chip families, and an
image must fit the flash the chip reports. Without an image, the cached one for the detected chip
is used (images.py). A virtual node (a pseudo-terminal: no DTR/RTS) is reached without esptool's
reset dance: its ROM loader answers a SYNC, and RUN_USER_CODE boots it (docs/flash.md).
"""
import contextlib
import os
import re
import struct
import sys
import time
from pathlib import Path

from .errors import CheckFailed, Unreachable

ESP_IMAGE_MAGIC = 0xE9
# Common header (8 bytes) + extended header (16 bytes): "<BBBBHBHH4BB" after byte 8 in
# esptool's bin_image.ESP32FirmwareImage, so the chip id is the little-endian u16 at 12..13.
HEADER_LEN = 24

# chip name as esptool reports it -> (image chip id, where the merged MicroPython image goes).
# The ids and offsets are esptool's IMAGE_CHIP_ID and BOOTLOADER_FLASH_OFFSET; a test keeps
# this table in step with the installed esptool.
CHIPS = {
    "ESP32": (0, 0x1000),
    "ESP32-S2": (2, 0x1000),
    "ESP32-C3": (5, 0x0),
    "ESP32-S3": (9, 0x0),
    "ESP32-C6": (13, 0x0),
}
_NAME_BY_ID = {cid: name for name, (cid, _) in CHIPS.items()}

BANNER_RE = re.compile(rb"MicroPython ([^\s;,]+) on ([0-9-]+); ([^\r\n]+)")

HINT = "hold BOOT while you press EN (or plug in), and check that the cable carries data"
_RUN_USER_CODE = 0xD3


def is_virtual(port):
    """A pseudo-terminal: a virtual node (citynode sim --serial)."""
    return os.path.realpath(port).startswith("/dev/pts/")


def check_port(port):
    """Unreachable (exit 3) for a port that is not there: no BOOT hint, nothing to hold."""
    if not port.startswith(("rfc2217:", "socket:")) and not os.path.exists(port):
        raise Unreachable("%s: no such port" % port)


def fits(data, offset, flash_size, name="image"):
    """CheckFailed unless `data` written at `offset` ends inside a flash of `flash_size` bytes."""
    if flash_size and offset + len(data) > flash_size:
        raise CheckFailed("%s: %d bytes at 0x%x do not fit in the board's %d MB flash: nothing was written"
                          % (name, len(data), offset, flash_size >> 20))


def image_chip_id(data, name="image"):
    """The chip id in an ESP image header; CheckFailed if `data` is not an ESP image."""
    if len(data) < HEADER_LEN:
        raise CheckFailed("%s: %d bytes is too short for an ESP image" % (name, len(data)))
    if data[0] != ESP_IMAGE_MAGIC:
        raise CheckFailed("%s: not an ESP firmware image (first byte 0x%02X, expected 0x%02X)"
                          % (name, data[0], ESP_IMAGE_MAGIC))
    return struct.unpack_from("<H", data, 12)[0]


def chip_label(chip_id):
    return _NAME_BY_ID.get(chip_id, "chip id %d" % chip_id)


def offset_for(data, chip, name="image"):
    """Where `data` goes on `chip` (esptool's CHIP_NAME); CheckFailed if it is for another chip."""
    if chip not in CHIPS:
        raise CheckFailed("%s is not supported (supported: %s)" % (chip, ", ".join(CHIPS)))
    want, offset = CHIPS[chip]
    got = image_chip_id(data, name)
    if got != want:
        raise CheckFailed("%s is an %s image, but the board is an %s: nothing was written"
                          % (name, chip_label(got), chip))
    return offset


def read_image(path):
    p = Path(path)
    try:
        return p.read_bytes()
    except OSError as e:
        raise CheckFailed("cannot read %s: %s" % (path, e.strerror or e))


def flash(port, firmware=None, erase=False, baud=460800, banner_timeout=20.0, esptool_out=None, redirect=True):
    """Detect the chip on `port`, check `firmware` is for it and fits its flash, optionally erase,
    write it compressed at the chip's offset, verify its MD5, reset and wait for the banner.
    `firmware` None: the verified cached image for the detected chip (images.cached).
    esptool's own progress goes to `esptool_out` (stderr by default) so that stdout stays
    ours (redirect=False: the caller has already taken care of stdout, e.g. several flashes in
    threads). Returns {"port", "chip", "offset", "bytes", "erased", "version", "machine", "firmware"}."""
    from esptool import cmds
    from esptool.util import FatalError
    from serial import SerialException

    data = name = None
    if firmware is not None:
        data = read_image(firmware)
        name = Path(firmware).name
        image_chip_id(data, name)  # not an image at all: say so before touching the port
    check_port(port)
    virtual = is_virtual(port)
    out = esptool_out or sys.stderr
    banner = None
    with contextlib.redirect_stdout(out) if redirect else contextlib.nullcontext():
        try:
            esp = cmds.detect_chip(port, connect_attempts=3, connect_mode="no-reset" if virtual else "default-reset")
        except (FatalError, SerialException, OSError) as e:
            raise Unreachable("no ESP32 bootloader answered on %s (%s): %s"
                              % (port, _first_line(e), "is the virtual node running?" if virtual else HINT))
        try:
            chip = esp.CHIP_NAME
            if data is None:
                firmware = _cached_for(chip)
                data, name = read_image(firmware), Path(firmware).name
            offset = offset_for(data, chip, name)
            esp = cmds.run_stub(esp)
            if baud and baud > esp.ESP_ROM_BAUD:
                esp.change_baud(baud)
            cmds.attach_flash(esp)
            fits(data, offset, _flash_size(cmds, esp), name)
            if erase:
                cmds.erase_flash(esp)
            # write_flash checks the MD5 itself when it can; verify_flash makes that explicit
            # and fails loudly where write_flash would silently skip it.
            cmds.write_flash(esp, [(offset, data)], compress=True)
            cmds.verify_flash(esp, [(offset, data)])
            if virtual:
                # No RTS line to pull: ask the loader to run the application, and read the
                # banner on the port esptool has open (a pty drops what nobody reads).
                _run_virtual(esp)
                ser = esp._port
                ser.timeout = 0.1
                banner = wait_banner(port, timeout=banner_timeout, opener=lambda: ser)
            else:
                cmds.reset_chip(esp, "hard-reset")
        except (FatalError, SerialException) as e:
            raise Unreachable("flashing %s on %s failed: %s" % (name, port, _first_line(e)))
        except CheckFailed:
            if virtual:   # refused, nothing written: the node goes back to what it was running
                try:
                    _run_virtual(esp)
                except (FatalError, SerialException):
                    pass      # the refusal is what the caller needs to hear
            raise
        finally:
            _close(esp)
    if banner is None:
        banner = wait_banner(port, timeout=banner_timeout)
    return {"port": port, "chip": chip, "offset": offset, "bytes": len(data), "erased": bool(erase),
            "version": banner["version"], "machine": banner["machine"], "firmware": str(firmware)}


def _run_virtual(esp):
    """Leave a virtual node's loader for its application: RUN_USER_CODE to the stub, FLASH_END
    "run" to the ROM (esptool's `run`)."""
    if esp.IS_STUB:
        esp.command(_RUN_USER_CODE, wait_response=False)
    else:
        esp.run()


def _cached_for(chip):
    from . import images
    p = images.cached(chip)
    if p is None:
        boards = images.boards_for(chip)
        if not boards:
            raise CheckFailed("no MicroPython image is known for %s: name an image file" % chip, param="firmware")
        # what to run is the issue's own wording: the one line a technician without an image needs
        raise CheckFailed("no %s image in the cache (%s): run `citynode firmware download --board %s`,"
                          " or name an image file" % (chip, images.cache_dir(), boards[0]), param="firmware")
    return p


def _flash_size(cmds, esp):
    """The flash size the chip reports (JEDEC id), in bytes; None when it cannot be told."""
    try:
        size = cmds.detect_flash_size(esp)
    except Exception:  # an unknown flash chip: esptool itself goes on without a size
        return None
    if not size:
        return None
    from esptool.util import flash_size_bytes
    return flash_size_bytes(size)


def wait_banner(port, timeout=20.0, baud=115200, quiet_s=2.0, opener=None):
    """Wait for "MicroPython vX.Y.Z on DATE; MACHINE" on the serial port after a reset.

    A node that already runs our firmware never reaches the REPL by itself (main.py loops), so
    after `quiet_s` without a banner we interrupt it (Ctrl-C) and ask the friendly REPL for its
    banner (Ctrl-B); if we interrupted, Ctrl-D soft-resets so main.py runs again."""
    import serial

    opener = opener or (lambda: serial.Serial(port, baud, timeout=0.1))
    end = time.monotonic() + timeout
    ser = None
    while ser is None:
        try:
            ser = opener()
        except (serial.SerialException, OSError) as e:
            # Native-USB chips (S3, C3, C6) drop off the bus while they reset.
            if time.monotonic() > end:
                raise Unreachable("%s did not come back after the reset: %s" % (port, _first_line(e)))
            time.sleep(0.2)
    buf = b""
    poked = False
    quiet_end = time.monotonic() + quiet_s
    try:
        while time.monotonic() < end:
            chunk = ser.read(256)
            if chunk:
                buf = (buf + chunk)[-4096:]
                m = BANNER_RE.search(buf)
                if m:
                    if poked:
                        ser.write(b"\x04")
                    return {"version": m.group(1).decode(), "date": m.group(2).decode(),
                            "machine": m.group(3).decode(errors="replace").strip()}
            elif time.monotonic() > quiet_end:
                ser.write(b"\r\x03\x03\x02")
                poked = True
                quiet_end = time.monotonic() + quiet_s
    finally:
        ser.close()
    raise Unreachable("no MicroPython banner on %s within %.0f s: the image was written but does not"
                      " boot (wrong image for this board?)" % (port, timeout))


def _first_line(e):
    s = str(e).strip() or e.__class__.__name__
    return s.splitlines()[0]


def _close(esp):
    try:
        esp._port.close()
    except Exception:  # the port may already be gone after a USB re-enumeration
        pass

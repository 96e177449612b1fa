"""`citynode flash`: the image/chip checks on real image headers, the call into esptool at its
boundary, the silent-bootloader error against a real (silent) pty, and the banner wait against a
pty that behaves like a booting node. What needs a board is not here: see docs/commands/flash.md."""
import os
import pty
import struct
import threading
import time

import pytest
from click.testing import CliRunner

from citynode import flash
from citynode.cli import main
from citynode.errors import CheckFailed, Unreachable


def image(chip_id, segments=1, size=4096):
    """An ESP image the way esptool's bin_image writes one: common header (magic 0xE9, segment
    count, flash mode DIO, 4 MB @ 40 MHz, entry point) then the 16-byte extended header
    "<BBBBHBHH4BB": WP pin 0xEE, three SPI drive bytes, chip id, min rev, min/max rev full,
    4 reserved bytes, hash appended."""
    common = struct.pack("<BBBBI", 0xE9, segments, 2, 0x20, 0x40080000)
    ext = struct.pack("<BBBBHBHH4BB", 0xEE, 0, 0, 0, chip_id, 0, 0, 0xFFFF, 0, 0, 0, 0, 1)
    body = bytes((i * 7) & 0xFF for i in range(size - 24))
    return common + ext + body


def esptool_image(cls_name):
    """The same header written by esptool's own image class, as a cross-check of ours."""
    import esptool.bin_image as bi
    img = getattr(bi, cls_name)()
    img.entrypoint = 0x40080000
    img.segments = [bi.ELFSection(b".dram0.data", 0x3FFB0000, b"abcd" * 16, 0)]
    return img.save(None)


@pytest.mark.parametrize("chip,cid,offset", [("ESP32", 0, 0x1000), ("ESP32-S2", 2, 0x1000),
                                             ("ESP32-S3", 9, 0x0), ("ESP32-C3", 5, 0x0),
                                             ("ESP32-C6", 13, 0x0)])
def test_offset_by_chip(chip, cid, offset):
    assert flash.image_chip_id(image(cid)) == cid
    assert flash.offset_for(image(cid), chip) == offset


@pytest.mark.parametrize("cls,cid", [("ESP32FirmwareImage", 0), ("ESP32S2FirmwareImage", 2),
                                     ("ESP32S3FirmwareImage", 9), ("ESP32C3FirmwareImage", 5),
                                     ("ESP32C6FirmwareImage", 13)])
def test_header_written_by_esptool(cls, cid):
    assert flash.image_chip_id(esptool_image(cls)) == cid


def test_table_matches_installed_esptool():
    from esptool.targets import ROM_LIST
    by_name = {c.CHIP_NAME: c for c in ROM_LIST}
    for name, (cid, offset) in flash.CHIPS.items():
        assert by_name[name].IMAGE_CHIP_ID == cid, name
        assert by_name[name].BOOTLOADER_FLASH_OFFSET == offset, name


def test_wrong_chip_refused():
    with pytest.raises(CheckFailed, match="is an ESP32-S3 image, but the board is an ESP32: nothing was written"):
        flash.offset_for(image(9), "ESP32", "s3.bin")
    with pytest.raises(CheckFailed, match="chip id 12 image"):
        flash.offset_for(image(12), "ESP32-C3")
    with pytest.raises(CheckFailed, match="ESP32-H2 is not supported"):
        flash.offset_for(image(16), "ESP32-H2")


def test_not_an_image():
    with pytest.raises(CheckFailed, match="first byte 0x7F, expected 0xE9"):
        flash.image_chip_id(b"\x7fELF" + bytes(60))
    with pytest.raises(CheckFailed, match="too short"):
        flash.image_chip_id(b"\xe9\x01")


# --- the esptool boundary ----------------------------------------------------------------------

class FakeEsp:
    ESP_ROM_BAUD = 115200

    def __init__(self, chip, calls):
        self.CHIP_NAME = chip
        self.calls = calls
        self._port = self

    def change_baud(self, baud):
        self.calls.append(("change_baud", baud))

    def close(self):
        self.calls.append(("close",))


@pytest.fixture
def esptool_calls(monkeypatch):
    """Replace the esptool.cmds functions flash.py calls; record what they were given."""
    from esptool import cmds
    calls = []
    chip = {"name": "ESP32"}

    def detect_chip(port, **kw):
        calls.append(("detect_chip", port, kw))
        return FakeEsp(chip["name"], calls)

    def rec(name):
        def f(esp, *a, **kw):
            calls.append((name, a, kw))
            return esp
        return f

    monkeypatch.setattr(cmds, "detect_chip", detect_chip)
    monkeypatch.setattr(flash, "check_port", lambda port: None)   # /dev/ttyFAKE stands for a board
    for name in ("run_stub", "attach_flash", "erase_flash", "write_flash", "verify_flash", "reset_chip"):
        monkeypatch.setattr(cmds, name, rec(name))
    monkeypatch.setattr(flash, "wait_banner", lambda port, timeout: {
        "version": "v1.29.0", "date": "2026-06-01", "machine": "Generic ESP32 module with ESP32"})
    return calls, chip


def names(calls):
    return [c[0] for c in calls]


@pytest.mark.parametrize("chip,cid,offset", [("ESP32", 0, 0x1000), ("ESP32-S3", 9, 0x0)])
def test_flash_calls_esptool(tmp_path, esptool_calls, chip, cid, offset):
    calls, c = esptool_calls
    c["name"] = chip
    fw = tmp_path / "fw.bin"
    data = image(cid)
    fw.write_bytes(data)
    r = CliRunner().invoke(main, ["flash", "--port", "/dev/ttyFAKE", "--firmware", str(fw), "--erase"])
    assert r.exit_code == 0, r.output
    assert names(calls) == ["detect_chip", "run_stub", "change_baud", "attach_flash", "erase_flash",
                            "write_flash", "verify_flash", "reset_chip", "close"]
    assert calls[0][1] == "/dev/ttyFAKE"
    write = calls[names(calls).index("write_flash")]
    assert write[1] == ([(offset, data)],) and write[2] == {"compress": True}
    assert calls[names(calls).index("verify_flash")][1] == ([(offset, data)],)
    assert calls[names(calls).index("reset_chip")][1] == ("hard-reset",)
    assert calls[2] == ("change_baud", 460800)
    assert "%s at 0x%x" % (chip, offset) in r.output and "MicroPython v1.29.0" in r.output


def test_flash_without_erase_json(tmp_path, esptool_calls):
    calls, _ = esptool_calls
    fw = tmp_path / "fw.bin"
    fw.write_bytes(image(0))
    r = CliRunner().invoke(main, ["--json", "flash", "-p", "/dev/ttyFAKE", "--firmware", str(fw),
                                  "--baud", "115200"])
    assert r.exit_code == 0, r.output
    assert "erase_flash" not in names(calls) and "change_baud" not in names(calls)
    import json
    doc = json.loads(r.stdout.strip().splitlines()[-1])
    assert doc["offset"] == 0x1000 and doc["chip"] == "ESP32" and doc["erased"] is False


def test_wrong_image_writes_nothing(tmp_path, esptool_calls):
    calls, c = esptool_calls
    c["name"] = "ESP32"
    fw = tmp_path / "s3.bin"
    fw.write_bytes(image(9))
    r = CliRunner().invoke(main, ["flash", "-p", "/dev/ttyFAKE", "--firmware", str(fw), "--erase"])
    assert r.exit_code == 1
    assert "s3.bin is an ESP32-S3 image, but the board is an ESP32" in r.output
    assert names(calls) == ["detect_chip", "close"]


def test_not_an_image_never_opens_the_port(tmp_path, esptool_calls):
    calls, _ = esptool_calls
    fw = tmp_path / "fw.bin"
    fw.write_bytes(b"PK\x03\x04" + bytes(100))
    r = CliRunner().invoke(main, ["flash", "-p", "/dev/ttyFAKE", "--firmware", str(fw)])
    assert r.exit_code == 1 and "not an ESP firmware image" in r.output
    assert calls == []


def test_silent_bootloader_exit_3(tmp_path):
    """The real esptool against a pty nobody answers on: what a virtual node that is not running
    looks like from the host (a board not in download mode answers the same silence)."""
    master, slave = pty.openpty()
    try:
        fw = tmp_path / "fw.bin"
        fw.write_bytes(image(0))
        t = time.monotonic()
        r = CliRunner().invoke(main, ["flash", "-p", os.ttyname(slave), "--firmware", str(fw)])
        assert r.exit_code == 3, r.output
        line = [x for x in r.output.splitlines() if x.startswith("Error:")]
        assert len(line) == 1 and "no ESP32 bootloader answered on /dev/pts/" in line[0]
        assert "is the virtual node running?" in line[0]
        assert "Traceback" not in r.output
        assert time.monotonic() - t < 20
    finally:
        os.close(master)
        os.close(slave)


# --- waiting for the banner --------------------------------------------------------------------

BANNER = b"MicroPython v1.29.0 on 2026-06-01; Generic ESP32 module with ESP32\r\nType \"help()\" for more information.\r\n>>> "


def fake_node(master, busy, got):
    """Boot chatter, then either the banner (fresh firmware) or, like a node whose main.py
    loops, nothing until Ctrl-C + Ctrl-B; records what the host sent. It starts talking a moment
    after the host opened the port (pyserial drops what was buffered before the open)."""
    time.sleep(0.3)
    os.write(master, b"ets Jun  8 2016 00:22:57\r\nrst:0x1 (POWERON_RESET),boot:0x13\r\n")
    if not busy:
        os.write(master, BANNER)
    end = time.monotonic() + 10
    while time.monotonic() < end:
        try:
            b = os.read(master, 64)
        except OSError:
            return
        got.extend(b)
        if busy and b"\x02" in b:
            os.write(master, b"Traceback...\r\nKeyboardInterrupt: \r\n" + BANNER)
            busy = False
        if b"\x04" in b:
            return


@pytest.mark.parametrize("busy", [False, True])
def test_wait_banner(busy):
    master, slave = pty.openpty()
    got = bytearray()
    th = threading.Thread(target=fake_node, args=(master, busy, got), daemon=True)
    try:
        th.start()
        b = flash.wait_banner(os.ttyname(slave), timeout=8, quiet_s=0.5)
        assert b["version"] == "v1.29.0" and b["machine"] == "Generic ESP32 module with ESP32"
        th.join(2 if busy else 0.1)
        if busy:
            assert b"\x03" in got and b"\x02" in got and got.endswith(b"\x04")  # main.py restarted
        else:
            assert b"\x03" not in got
    finally:
        os.close(slave)
        os.close(master)


def test_banner_regex_unix_port_and_preview():
    m = flash.BANNER_RE.search(b"MicroPython v1.25.0-preview.123.gabcdef on 2025-01-01; ESP32S3 module with ESP32S3\r\n")
    assert m.group(1) == b"v1.25.0-preview.123.gabcdef"


def test_no_banner_exit_3():
    master, slave = pty.openpty()
    try:
        with pytest.raises(Unreachable, match="no MicroPython banner"):
            flash.wait_banner(os.ttyname(slave), timeout=1.0, quiet_s=0.3)
    finally:
        os.close(slave)
        os.close(master)

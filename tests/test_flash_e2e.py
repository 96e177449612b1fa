"""`citynode flash` end to end: the pinned esptool against a virtual node's ROM loader (sim/rom.py
behind the node's pseudo-terminal), and `citynode firmware` against a loopback HTTP mirror.
The images are made here (rom.build_image: bootloader, partition table, an app carrying
MicroPython's banner strings); see docs/flash.md for what has not run on a real board."""
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from citynode import images
from citynode.sim import loader as simloader
from citynode.sim import rom as simrom
from citynode.cli import main
from citynode.sim import SimNode
from helpers import wait_for

CITYNODE = str(Path(sys.executable).with_name("citynode"))


@pytest.fixture
def node(tmp_path):
    n = SimNode(tmp_path / "flash", serial=True, register=False).start()
    yield n
    n.stop()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "citynode" / "firmware"


def write(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def esptool(port, *args):
    return subprocess.run([sys.executable, "-m", "esptool", "--port", port, "--before", "no-reset",
                           "--after", "no-reset", *args], capture_output=True, text=True, timeout=120)


def flash_bytes(n, offset, size):
    with open(simloader.image_path(n.flash), "rb") as f:
        f.seek(offset)
        return f.read(size)


def test_flash_writes_boots_and_esptool_verifies(tmp_path, node):
    img = simrom.build_image("ESP32", version="v1.29.0", date="2026-06-01")
    fw = write(tmp_path, "ESP32_GENERIC-v1.29.0.bin", img)
    r = CliRunner().invoke(main, ["flash", "--port", node.port, "--firmware", str(fw)])
    assert r.exit_code == 0, r.output
    assert "%s: ESP32 at 0x1000 (%d bytes), MicroPython v1.29.0 on Generic ESP32 module with ESP32" \
        % (node.port, len(img)) in r.output
    assert flash_bytes(node, 0x1000, len(img)) == img
    assert node.boot_log[-1].ok and node.boot_log[-1].version == "v1.29.0"
    wait_for(lambda: node.resets[-1] == "hard", 10, what="the firmware to run again after the boot")
    # esptool's own verify-flash, by hand: the same file passes, another one fails
    ok = esptool(node.port, "verify-flash", "0x1000", str(fw))
    assert ok.returncode == 0 and "Verification successful (digest matched)" in ok.stdout, ok.stdout + ok.stderr
    other = write(tmp_path, "other.bin", simrom.build_image("ESP32", version="v1.28.0", seed=2))
    bad = esptool(node.port, "verify-flash", "0x1000", str(other))
    assert bad.returncode != 0 and "Verification failed" in bad.stdout + bad.stderr


def test_wrong_chip_and_too_big_write_nothing(tmp_path, node):
    s3 = write(tmp_path, "s3.bin", simrom.build_image("ESP32-S3"))
    r = CliRunner().invoke(main, ["flash", "--port", node.port, "--firmware", str(s3)])
    assert r.exit_code == 1 and "s3.bin is an ESP32-S3 image, but the board is an ESP32: nothing was written" in r.output
    # refused before the stub: the ROM's "run" puts the factory node back to work
    wait_for(lambda: node.resets[-1] == "hard", 10, what="the node to run its firmware again")
    big = bytearray(simrom.build_image("ESP32"))
    big += b"\x00" * ((4 << 20) - len(big))                   # 4 MB at 0x1000 ends past the flash
    fw = write(tmp_path, "big.bin", bytes(big))
    r = CliRunner().invoke(main, ["flash", "--port", node.port, "--firmware", str(fw)])
    assert r.exit_code == 1 and "do not fit in the board's 4 MB flash: nothing was written" in r.output
    wait_for(lambda: node.resets.count("hard") == 2, 10, what="the node to run its firmware again")
    assert not simloader.image_path(node.flash).exists()      # not a byte written, nor erased
    assert [b.ok for b in node.boot_log] == [True, True] and (node.flash / "main.py").exists()


def test_no_such_port_exit_3(tmp_path):
    fw = write(tmp_path, "fw.bin", simrom.build_image("ESP32"))
    r = CliRunner().invoke(main, ["flash", "--port", str(tmp_path / "ttyUSB7"), "--firmware", str(fw)])
    assert r.exit_code == 3
    assert r.output.strip() == "Error: %s: no such port" % (tmp_path / "ttyUSB7")


def test_s3_node_and_bad_image_stays_in_loader(tmp_path):
    n = SimNode(tmp_path / "s3", serial=True, register=False, chip="ESP32-S3").start()
    try:
        img = simrom.build_image("ESP32-S3", version="v1.29.0")
        fw = write(tmp_path, "s3.bin", img)
        r = CliRunner().invoke(main, ["--json", "flash", "--port", n.port, "--firmware", str(fw), "--baud", "115200"])
        assert r.exit_code == 0, r.output
        doc = json.loads(r.stdout.strip().splitlines()[-1])
        assert doc["chip"] == "ESP32-S3" and doc["offset"] == 0 and doc["version"] == "v1.29.0"
        assert flash_bytes(n, 0, len(img)) == img
        # not MicroPython: written by hand with esptool, then run: the board's bad-image words,
        # and the loader still answers
        junk = write(tmp_path, "junk.bin", b"\x00" * 8192)
        w = esptool(n.port, "write-flash", "0x0", str(junk))
        assert w.returncode == 0, w.stdout + w.stderr
        w = subprocess.run([sys.executable, "-m", "esptool", "--port", n.port, "--before", "no-reset",
                            "--after", "no-reset", "--no-stub", "run"], capture_output=True, text=True, timeout=60)
        assert w.returncode == 0, w.stdout + w.stderr
        wait_for(lambda: len(n.boot_log) == 2, 10, what="the second boot")
        assert n.boot_log[-1].text.endswith(b"invalid header: 0x00000000\r\n") and not n.boot_log[-1].ok
        assert esptool(n.port, "chip-id").returncode == 0
    finally:
        n.stop()


def test_cut_write_then_good_flash(tmp_path):
    """The node's process is killed while esptool writes; it comes back in its loader (the image
    does not boot), and the next flash works."""
    flash = tmp_path / "cut"
    img = simrom.build_image("ESP32", app_size=256 * 1024)
    fw = write(tmp_path, "fw.bin", img)

    def start():
        p = subprocess.Popen([CITYNODE, "sim", "--serial", "--baud", "115200", "--flash", str(flash)],
                             stdout=subprocess.PIPE, text=True, start_new_session=True)
        return p, p.stdout.readline().strip()

    p, port = start()
    try:
        w = subprocess.Popen([CITYNODE, "flash", "--port", port, "--firmware", str(fw), "--baud", "115200"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        image = simloader.image_path(flash)
        # mid-write: the bootloader is down, the app's end is not
        wait_for(lambda: image.exists() and flash_bytes_at(image, 0x1000, 1) == b"\xe9", 60, what="the write to start")
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(10)
        out, err = w.communicate(timeout=60)
        assert w.returncode == 3, out + err
        assert flash_bytes_at(image, 0x1000 + len(img) - 64, 64) != img[-64:]
        assert not simrom.boot(image, "ESP32").ok
        p, port = start()
        r = subprocess.run([CITYNODE, "flash", "--port", port, "--firmware", str(fw)], capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "MicroPython v1.29.0" in r.stdout
        assert flash_bytes_at(image, 0x1000, len(img)) == img
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(15)


def flash_bytes_at(path, offset, size):
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(size)


# --- images: the cache and the mirror ----------------------------------------------------------

def test_download_wrong_sha_refused_nothing_cached(mirror, cache):
    url = mirror.url
    img = simrom.build_image("ESP32")
    mirror.put("ESP32_GENERIC-v1.29.0.bin", img + b"tampered")
    good = hashlib.sha256(img).hexdigest()
    r = CliRunner().invoke(main, ["firmware", "download", "--mirror", url, "--sha256", good])
    assert r.exit_code == 1 and "refused, nothing kept" in r.output and good in r.output
    assert not cache.exists() or list(cache.iterdir()) == []
    # a row with no pinned hash and none given: refused before anything is fetched
    r = CliRunner().invoke(main, ["firmware", "download", "--mirror", url])
    assert r.exit_code == 1 and "no pinned SHA-256" in r.output


def test_download_then_flash_picks_the_cached_image(tmp_path, mirror, cache, node):
    url = mirror.url
    fw = tmp_path / "ESP32_GENERIC-v1.29.0.bin"
    r = CliRunner().invoke(main, ["flash", "--port", node.port])
    assert r.exit_code == 1
    assert "no ESP32 image in the cache (%s): run `citynode firmware download --board ESP32_GENERIC`" % cache in r.output
    img = simrom.build_image("ESP32", version="v1.29.0")
    mirror.put(fw.name, img)
    sha = hashlib.sha256(img).hexdigest()
    r = CliRunner().invoke(main, ["--json", "firmware", "download", "--board", "ESP32_GENERIC", "--mirror", url,
                                  "--sha256", sha])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["sha256"] == sha and (cache / fw.name).read_bytes() == img
    r = CliRunner().invoke(main, ["--json", "firmware", "list"])
    rows = {x["board"]: x for x in json.loads(r.stdout)["images"]}
    assert rows["ESP32_GENERIC"]["cached"] == str(cache / fw.name) and rows["ESP32_GENERIC_S3"]["cached"] is None
    r = CliRunner().invoke(main, ["--json", "flash", "--port", node.port])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout.strip().splitlines()[-1])
    assert doc["firmware"] == str(cache / fw.name) and doc["version"] == "v1.29.0"
    # a cached file that changed since it was checked is not used
    (cache / fw.name).write_bytes(img[:-1] + bytes([img[-1] ^ 0xFF]))
    assert images.cached("ESP32") is None


def test_change_baudrate_moves_the_pacing(tmp_path):
    """The node's UART pacing follows esptool's CHANGE_BAUDRATE, and a reset brings it back."""
    from esptool import cmds
    n = SimNode(tmp_path / "paced", serial=True, baud=115200, register=False).start()
    esp = None
    try:
        assert n._up.rate == n._down.rate == 11520
        esp = cmds.run_stub(cmds.detect_chip(n.port, connect_mode="no-reset"))
        esp.change_baud(460800)
        wait_for(lambda: n._up.rate == n._down.rate == 46080, 5, what="pacing at 460800")
        assert esp.read_reg(0x40001000) == 0x00F01D83        # still talking, at the new rate
        esp.command(simrom.RUN_USER_CODE, wait_response=False)
        wait_for(lambda: n._up.rate == n._down.rate == 11520, 5, what="pacing back at 115200")
        assert n.boot_log[-1].ok and n.boot_log[-1].version is None   # nothing written: the factory image
        wait_for(lambda: n.resets[-1] == "hard", 10, what="the firmware to run again")
    finally:
        if esp is not None:
            esp._port.close()
        n.stop()


def test_pinned_row_needs_no_hash_and_refuses_another(mirror, cache, monkeypatch):
    url = mirror.url
    img = simrom.build_image("ESP32-S3")
    sha = hashlib.sha256(img).hexdigest()
    row = images.BY_BOARD["ESP32_GENERIC_S3"]
    monkeypatch.setattr(row, "sha256", sha)
    monkeypatch.setattr(row, "size", len(img))
    mirror.put(row.file, img)
    r = CliRunner().invoke(main, ["firmware", "download", "--board", "ESP32_GENERIC_S3", "--sha256", "0" * 64,
                                  "--mirror", url])
    assert r.exit_code == 1 and "is not the pinned one" in r.output
    r = CliRunner().invoke(main, ["firmware", "download", "--board", "ESP32_GENERIC_S3", "--mirror", url])
    assert r.exit_code == 0, r.output
    assert "%s (%s bytes, SHA-256 %s verified)" % (cache / row.file, format(len(img), ","), sha) in r.output
    assert images.cached("ESP32-S3") == cache / row.file
    r = CliRunner().invoke(main, ["firmware", "download", "--board", "ESP32_GENERIC_S4"])
    assert r.exit_code == 2 and "unknown board ESP32_GENERIC_S4" in r.output


def test_flash_erase_takes_the_nodes_files(tmp_path, node):
    assert (node.flash / "main.py").exists()
    fw = write(tmp_path, "fw.bin", simrom.build_image("ESP32"))
    r = CliRunner().invoke(main, ["flash", "--port", node.port, "--firmware", str(fw), "--erase"])
    assert r.exit_code == 0, r.output
    assert "erased first" in r.output and list(node.flash.iterdir()) == []


def test_erase_never_empties_a_folder_that_is_not_a_node_flash(tmp_path):
    """`citynode sim --flash .` in a checkout, then an erase: the ROM's image is erased, the
    user's files are not."""
    work = tmp_path / "checkout"
    (work / ".git").mkdir(parents=True)
    (work / "notes.txt").write_text("mine")
    n = SimNode(work, serial=True, register=False).start()
    try:
        fw = write(tmp_path, "fw.bin", simrom.build_image("ESP32"))
        r = CliRunner().invoke(main, ["flash", "--port", n.port, "--firmware", str(fw), "--erase"])
        assert r.exit_code == 0, r.output
    finally:
        n.stop()
    assert (work / ".git").is_dir() and (work / "notes.txt").read_text() == "mine"
    assert not (tmp_path / "checkout.citynode-flash").exists()

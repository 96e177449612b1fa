"""The virtual ROM loader (sim/rom.py) byte by byte: framing, the ROM's and the stub's replies and
error codes, the flash image file, and what booting from it prints. No pty, no esptool here:
test_flash_e2e.py has esptool talking to it through a virtual node."""
import hashlib
import struct
import zlib

import pytest

from citynode.sim import rom as simrom


def req(op, data=b"", chk=0):
    # direction 0, command, length, checksum word, payload
    return simrom.slip(struct.pack("<BBHI", 0, op, len(data), chk) + data)


def replies(out):
    """[(op, val, body)] of the response frames in `out`."""
    r = []
    for f in simrom.SlipReader().feed(out):
        resp, op, n, val = struct.unpack_from("<BBHI", f)
        assert resp == 1 and n == len(f) - 8
        r.append((op, val, f[8:]))
    return r


def block(op, data, seq=0, chk=None):
    return req(op, struct.pack("<IIII", len(data), seq, 0, 0) + data,
               simrom.checksum(data) if chk is None else chk)


@pytest.fixture
def rom(tmp_path):
    return simrom.Loader(tmp_path / "flash.bin", chip="ESP32", mac=b"\x02\xce\x01\x02\x03\x04")


def stub(lo):
    """Upload a 'stub' the way esptool does and start it: MEM_BEGIN, MEM_DATA, MEM_END(entry)."""
    code = b"\x36\x41\x00" * 100
    out = lo.feed(req(simrom.MEM_BEGIN, struct.pack("<IIII", len(code), 1, 0x1800, 0x40080000)))
    out += lo.feed(block(simrom.MEM_DATA, code))
    out += lo.feed(req(simrom.MEM_END, struct.pack("<II", 0, 0x40080004)))
    frames = simrom.SlipReader().feed(out)
    assert frames[-1] == b"OHAI" and lo.stub
    return lo


def test_slip_escapes_and_split_frames():
    r = simrom.SlipReader()
    wire = simrom.slip(b"a\xc0b\xdbc")
    assert wire == b"\xc0a\xdb\xdcb\xdb\xddc\xc0"
    assert r.feed(wire[:4]) == [] and r.feed(wire[4:]) == [b"a\xc0b\xdbc"]
    assert r.feed(b"noise\xc0\xdb\x01x\xc0") == []          # bad escape: the frame is dropped


def test_sync_eight_replies_rom_then_stub(rom):
    sync = req(simrom.SYNC, b"\x07\x07\x12\x20" + b"\x55" * 32)
    assert sync.startswith(simrom.SYNC_START)
    r = replies(rom.feed(sync))
    assert len(r) == 8 and all(v != 0 for _, v, _ in r)    # the ROM: a non-zero value
    assert r[0][2] == b"\x00\x00\x00\x00"                    # ESP32 ROM: 4 status bytes
    stub(rom)
    r = replies(rom.feed(sync))
    assert len(r) == 8 and all(v == 0 for _, v, _ in r) and r[0][2] == b"\x00\x00"


def test_chip_detect_registers_and_mac(rom, tmp_path):
    (op, val, body), = replies(rom.feed(req(simrom.READ_REG, struct.pack("<I", 0x40001000))))
    assert val == 0x00F01D83 and body[:2] == b"\x00\x00"          # esptool's ESP32 MAGIC_VALUE
    # security info: the ESP32 ROM does not know the command (status 1, "invalid message" 0x05)
    (_, _, body), = replies(rom.feed(req(simrom.GET_SECURITY_INFO)))
    assert body[:2] == b"\x01\x05"
    words = {}
    for n in (1, 2):
        (_, words[n], _), = replies(rom.feed(req(simrom.READ_REG, struct.pack("<I", 0x3FF5A000 + 4 * n))))
    assert struct.pack(">II", words[2], words[1])[2:] == b"\x02\xce\x01\x02\x03\x04"
    s3 = simrom.Loader(tmp_path / "s3.bin", chip="ESP32-S3")
    (_, _, body), = replies(s3.feed(req(simrom.GET_SECURITY_INFO)))
    assert struct.unpack("<IBBBBBBBBII", body[:20])[9] == 9 and body[20:22] == b"\x00\x00"


def test_jedec_id_through_spi_registers(rom):
    base = 0x3FF42000
    w = lambda a, v: rom.feed(req(simrom.WRITE_REG, struct.pack("<IIII", a, v, 0xFFFFFFFF, 0)))
    w(base + 0x24, (7 << 28) | 0x9F)           # USR2: 8-bit command RDID
    w(base, 1 << 18)                           # CMD: USR
    (_, cmd, _), = replies(rom.feed(req(simrom.READ_REG, struct.pack("<I", base))))
    (_, w0, _), = replies(rom.feed(req(simrom.READ_REG, struct.pack("<I", base + 0x80))))
    assert cmd & (1 << 18) == 0
    assert w0 & 0xFF == 0xEF and (w0 >> 16) & 0xFF == 0x16      # Winbond, 2^22 bytes = 4 MB


def test_errors_bad_checksum_length_alignment(rom):
    data = b"\x11" * 1024
    rom.feed(req(simrom.FLASH_BEGIN, struct.pack("<IIII", 1024, 1, 1024, 0x10000)))
    (_, _, body), = replies(rom.feed(block(simrom.FLASH_DATA, data, chk=simrom.checksum(data) ^ 1)))
    assert body[:2] == b"\x01\x07"                                # ROM: invalid CRC
    short = req(simrom.FLASH_DATA, struct.pack("<IIII", 1024, 0, 0, 0) + data[:10], simrom.checksum(data))
    assert replies(rom.feed(short))[0][2][:2] == b"\x01\x05"       # length field disagrees
    (_, _, body), = replies(rom.feed(req(simrom.FLASH_BEGIN, struct.pack("<IIII", 1024, 1, 1024, 0x10001))))
    assert body[:2] == b"\x01\x05"                                # ROM: sector-aligned only
    assert replies(rom.feed(req(simrom.ERASE_FLASH)))[0][2][:2] == b"\x01\x05"   # stub only
    stub(rom)
    (_, _, body), = replies(rom.feed(req(simrom.ERASE_REGION, struct.pack("<II", 0x1001, 0x1000))))
    assert body == b"\x01\xc0"                                    # stub: bad data length
    rom.feed(req(simrom.FLASH_BEGIN, struct.pack("<IIIII", 1024, 1, 1024, 0x10000, 0)))
    assert replies(rom.feed(block(simrom.FLASH_DATA, data, chk=0)))[0][2] == b"\x01\xc1"
    assert rom.flash.read(0x10000, 4) == b"\xff" * 4             # nothing written by the refusals


def test_deflate_write_md5_and_read_flash(rom):
    stub(rom)
    image = bytes(range(256)) * 64 + b"tail"
    z = zlib.compress(image, 9)
    out = rom.feed(req(simrom.FLASH_DEFL_BEGIN, struct.pack("<IIIII", len(image), 2, 0x4000, 0x2000, 0)))
    half = len(z) // 2
    out += rom.feed(block(simrom.FLASH_DEFL_DATA, z[:half], 0) + block(simrom.FLASH_DEFL_DATA, z[half:], 1))
    out += rom.feed(req(simrom.FLASH_DEFL_END, struct.pack("<I", 1)))
    assert [b for _, _, b in replies(out)] == [b"\x00\x00"] * 4
    assert rom.flash.read(0x2000, len(image)) == image
    assert rom.flash.read(0x1FFF, 1) == b"\xff" and rom.reset is None     # FLASH_END "run": the stub stays
    (_, _, body), = replies(rom.feed(req(simrom.SPI_FLASH_MD5, struct.pack("<IIII", 0x2000, len(image), 0, 0))))
    assert body[:16] == hashlib.md5(image).digest()                        # stub: 16 raw bytes
    # READ_FLASH: ack, data frames within the in-flight window, the host acks, then the digest
    out = rom.feed(req(simrom.READ_FLASH, struct.pack("<IIII", 0x2000, 0x3000, 0x1000, 2)))
    frames = simrom.SlipReader().feed(out)
    assert len(frames) == 3 and frames[1] == image[:0x1000]
    frames = simrom.SlipReader().feed(rom.feed(simrom.slip(struct.pack("<I", 0x2000))))
    assert frames == [image[0x2000:0x3000]]
    frames = simrom.SlipReader().feed(rom.feed(simrom.slip(struct.pack("<I", 0x3000))))
    assert frames == [hashlib.md5(image[:0x3000]).digest()]


def test_deflate_too_much_data_and_inflate_error(rom):
    stub(rom)
    rom.feed(req(simrom.FLASH_DEFL_BEGIN, struct.pack("<IIIII", 100, 1, 0x4000, 0x2000, 0)))
    (_, _, body), = replies(rom.feed(block(simrom.FLASH_DEFL_DATA, zlib.compress(b"x" * 5000))))
    assert body == b"\x01\xc9"
    rom.feed(req(simrom.FLASH_DEFL_BEGIN, struct.pack("<IIIII", 100, 1, 0x4000, 0x2000, 0)))
    assert replies(rom.feed(block(simrom.FLASH_DEFL_DATA, b"not zlib")))[0][2] == b"\x01\xc7"


def test_baud_change_and_resets(rom):
    (_, _, body), = replies(rom.feed(req(simrom.CHANGE_BAUDRATE, struct.pack("<II", 460800, 0))))
    assert body[:2] == b"\x00\x00" and rom.baud == 460800
    rom.feed(req(simrom.FLASH_BEGIN, struct.pack("<IIII", 0, 0, 0x400, 0)))
    rom.feed(req(simrom.FLASH_END, struct.pack("<I", 1)))
    assert rom.reset == "boot"                      # the ROM's "run user code"
    lo = stub(simrom.Loader(rom.flash))
    lo.feed(req(simrom.FLASH_BEGIN, struct.pack("<IIIII", 0, 0, 0x4000, 0, 0)))
    lo.feed(req(simrom.FLASH_END, struct.pack("<I", 0)))
    assert lo.reset == "loader"                     # the stub's reboot: back into the ROM loader
    lo2 = stub(simrom.Loader(rom.flash))
    assert lo2.feed(req(simrom.RUN_USER_CODE)) == b"" and lo2.reset == "boot"


def test_erase_flash_calls_back(rom):
    gone = []
    rom.on_erase_all = lambda: gone.append(1)
    stub(rom)
    rom.flash.write(0x5000, b"data")
    assert replies(rom.feed(req(simrom.ERASE_FLASH)))[0][2] == b"\x00\x00"
    assert rom.flash.read(0x5000, 4) == b"\xff" * 4 and gone == [1]


# --- booting ---------------------------------------------------------------------------------

def flashed(tmp_path, chip, image, offset=None):
    c = simrom.CHIPS[chip]
    f = simrom.FlashImage(tmp_path / ("%s-%s.bin" % (chip, hashlib.md5(image).hexdigest())), c.flash_size)
    f.write(c.boot_offset if offset is None else offset, image)
    return f


@pytest.mark.parametrize("chip", ["ESP32", "ESP32-S3"])
def test_boot_micropython_banner_from_the_image(tmp_path, chip):
    img = simrom.build_image(chip, version="v1.29.0", date="2026-06-01")
    b = simrom.boot(flashed(tmp_path, chip, img), chip)
    assert b.ok and b.version == "v1.29.0" and b.date == "2026-06-01"
    assert b.machine == simrom.CHIPS[chip].machine
    assert b"MicroPython v1.29.0 on 2026-06-01; %s\r\n" % b.machine.encode() in b.text


def test_build_image_passes_esptools_own_checks(tmp_path):
    """esptool's image reader verifies our builder's checksum and SHA-256 (bootloader part)."""
    from esptool.bin_image import LoadFirmwareImage
    img = simrom.build_image("ESP32")
    p = tmp_path / "boot.bin"
    p.write_bytes(img[:0x7000].rstrip(b"\xff"))
    im = LoadFirmwareImage("esp32", str(p))
    assert im.calculate_checksum() == im.checksum and im.stored_digest == im.calc_digest


def test_boot_refuses_bad_images(tmp_path):
    fl = simrom.FlashImage(tmp_path / "blank.bin", 4 << 20)
    b = simrom.boot(fl, "ESP32")
    assert b.ok and b.version is None and not fl.path.exists()   # never written: the factory image
    fl.erase(0, 4 << 20)                                          # an erased chip
    b = simrom.boot(fl, "ESP32")
    assert not b.ok and b.text.endswith(b"invalid header: 0xffffffff\r\n")
    s3 = simrom.build_image("ESP32-S3")
    assert not simrom.boot(flashed(tmp_path, "ESP32", s3, 0x1000), "ESP32").ok
    img = bytearray(simrom.build_image("ESP32"))
    img[0x10000 - 0x1000 + 100] ^= 0xFF                     # one flipped bit in the app
    b = simrom.boot(flashed(tmp_path, "ESP32", bytes(img)), "ESP32")
    assert not b.ok and b"Checksum failed" in b.text and b"not bootable" in b.text
    other = simrom.build_image("ESP32", micropython=False)
    b = simrom.boot(flashed(tmp_path, "ESP32", other), "ESP32")
    assert not b.ok and b"not MicroPython" in b.text



def test_mem_begin_larger_than_a_chips_ram_is_refused_not_allocated(rom):
    """One frame on the pty must not make the host allocate gigabytes."""
    (_, _, body), = replies(rom.feed(req(simrom.MEM_BEGIN, struct.pack("<IIII", 0xFFFFFFF0, 1, 0xFFFFFFF0, 0x40080000))))
    assert body[0] == 1 and body[1] == simrom.ROM_INVALID_MSG, body
    assert not rom.ram

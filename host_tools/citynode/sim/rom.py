"""A virtual ESP32 ROM bootloader: the serial protocol esptool speaks, over bytes in, bytes out.

    rom = Loader("node.flash.bin", chip="ESP32")
    reply = rom.feed(slip_frames_from_esptool)       # bytes to send back, SLIP framed
    if rom.reset: print(boot("node.flash.bin", "ESP32").text)

No sockets, no pty, no threads: the virtual node's relay (loader.py) moves the bytes and paces them;
this module only answers. What esptool writes lands in a flash image file of the chip's size
(erased bytes are 0xFF), so a write that is cut short leaves what a board would have.

The protocol facts (commands, status codes, register addresses, efuse layout) come from reading
esptool 5.6.0's loader.py and targets/esp32*.py and Espressif's serial protocol notes. Two
personalities, as on a chip: the ROM loader (4 status bytes, stub-only commands refused) and, once
esptool has uploaded its flasher stub with MEM_BEGIN/MEM_DATA/MEM_END, the stub (an "OHAI" frame
first, then 2 status bytes, raw MD5, deflate with streaming erase, ERASE_*, READ_FLASH). The stub's
machine code is kept in the virtual RAM but never executed: its behaviour is this module's.
"""
import hashlib
import os
import re
import struct
import zlib
from pathlib import Path

SECTOR = 0x1000
_ESC, _END = 0xDB, 0xC0

# Commands (esptool's ESP_CMDS).
FLASH_BEGIN, FLASH_DATA, FLASH_END = 0x02, 0x03, 0x04
MEM_BEGIN, MEM_END, MEM_DATA = 0x05, 0x06, 0x07
SYNC, WRITE_REG, READ_REG = 0x08, 0x09, 0x0A
SPI_SET_PARAMS, SPI_ATTACH, READ_FLASH_SLOW, CHANGE_BAUDRATE = 0x0B, 0x0D, 0x0E, 0x0F
FLASH_DEFL_BEGIN, FLASH_DEFL_DATA, FLASH_DEFL_END, SPI_FLASH_MD5 = 0x10, 0x11, 0x12, 0x13
GET_SECURITY_INFO = 0x14
ERASE_FLASH, ERASE_REGION, READ_FLASH, RUN_USER_CODE = 0xD0, 0xD1, 0xD2, 0xD3
_STUB_ONLY = {ERASE_FLASH, ERASE_REGION, READ_FLASH, RUN_USER_CODE}

# ROM status codes (second status byte) ...
ROM_INVALID_MSG, ROM_FAILED, ROM_BAD_CRC, ROM_FLASH_WRITE, ROM_FLASH_READ, ROM_READ_LEN, ROM_DEFLATE = \
    0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B
# ... and the stub's.
STUB_BAD_DATA_LEN, STUB_BAD_CHECKSUM, STUB_BAD_BLOCKSIZE, STUB_INVALID_COMMAND = 0xC0, 0xC1, 0xC2, 0xC3
STUB_NOT_IN_FLASH_MODE, STUB_INFLATE_ERROR, STUB_NOT_ENOUGH_DATA, STUB_TOO_MUCH_DATA = 0xC6, 0xC7, 0xC8, 0xC9
STUB_NOT_IMPLEMENTED = 0xFF
_RAM_MAX = 520 * 1024


class Chip:
    """What the loader of one chip family answers: the facts esptool reads to tell chips apart."""

    def __init__(self, name, image_id, boot_offset, flash_size, magic, security_info, spi_base, spi_offs,
                 uart_clkdiv, efuse, mac_regs, machine):
        self.name, self.image_id, self.boot_offset, self.flash_size = name, image_id, boot_offset, flash_size
        self.magic = magic                      # value at 0x40001000, or None (chip id via security info)
        self.security_info = security_info      # GET_SECURITY_INFO supported
        self.spi_base = spi_base
        self.spi_usr, self.spi_usr2, self.spi_w0 = spi_offs
        self.uart_clkdiv = uart_clkdiv
        self.efuse = efuse                      # {address: value}
        self.mac_regs = mac_regs                # how the MAC is spread over two efuse words
        self.machine = machine                  # MicroPython's "<board> with <mcu>" for this chip


CHIP_DETECT_MAGIC_REG = 0x40001000
_MHZ40_CAL = {0x3FF5F06C: 1024 << 7, 0x3FF5A010: 100}   # RTCCALICFG1, efuse word 4 (CK8M): 40 MHz
CHIPS = {
    # ESP32 (rev 3: efuse word 3 bit 15, word 5 bit 20, APB_CTL_DATE bit 31); 4 MB flash.
    "ESP32": Chip("ESP32", 0, 0x1000, 4 << 20, 0x00F01D83, False, 0x3FF42000, (0x1C, 0x24, 0x80),
                  0x3FF40014, {0x3FF5A00C: 1 << 15, 0x3FF5A014: 1 << 20, 0x3FF6607C: 1 << 31, **_MHZ40_CAL},
                  ("esp32", 0x3FF5A004, 0x3FF5A008), "Generic ESP32 module with ESP32"),
    # ESP32-S3: chip id 9 from GET_SECURITY_INFO; 8 MB flash.
    "ESP32-S3": Chip("ESP32-S3", 9, 0x0, 8 << 20, 0x9, True, 0x60002000, (0x18, 0x20, 0x58),
                     0x60000014, {}, ("s3", 0x60007044, 0x60007048), "Generic ESP32S3 module with ESP32S3"),
}

_SPI_CMD_USR = 1 << 18
_RDID, _RDSR, _RDSR2, _RDSR3 = 0x9F, 0x05, 0x35, 0x15
_WINBOND = 0xEF


def slip(packet):
    return b"\xc0" + packet.replace(b"\xdb", b"\xdb\xdd").replace(b"\xc0", b"\xdb\xdc") + b"\xc0"


def checksum(data, state=0xEF):
    for b in data:
        state ^= b
    return state


class SlipReader:
    """Incremental SLIP decoder: feed bytes, get whole frames. Bytes outside frames are dropped;
    a frame with a bad escape is dropped whole (the ROM ignores it and esptool retries)."""

    def __init__(self):
        self.buf = None   # None: between frames
        self.esc = False
        self.bad = False

    def feed(self, data):
        out = []
        for b in data:
            if self.buf is None:
                if b == _END:
                    self.buf, self.esc, self.bad = bytearray(), False, False
                continue
            if self.esc:
                self.esc = False
                if b == 0xDC:
                    self.buf.append(_END)
                elif b == 0xDD:
                    self.buf.append(_ESC)
                else:
                    self.bad = True
                continue
            if b == _ESC:
                self.esc = True
            elif b == _END:
                if self.buf and not self.bad:
                    out.append(bytes(self.buf))
                    self.buf = None
                else:  # an empty frame: the C0 that ends one is the start of the next
                    self.buf, self.bad = bytearray(), False
            else:
                self.buf.append(b)
        return out


class FlashImage:
    """The chip's SPI flash as a file of `size` bytes, made (erased: 0xFF) on the first write or
    erase. A missing file is a flash nobody has written through the loader: a factory-flashed
    virtual node (see boot())."""

    def __init__(self, path, size):
        self.path = Path(path)
        self.size = size
        if self.path.exists():
            self._fit()

    def _fit(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            have = os.fstat(fd).st_size
            if have < self.size:
                os.pwrite(fd, b"\xff" * (self.size - have), have)
            elif have > self.size:
                os.ftruncate(fd, self.size)
        finally:
            os.close(fd)

    def read(self, addr, n):
        if not self.path.exists():
            return b"\xff" * max(0, min(n, self.size - addr))
        with open(self.path, "rb") as f:
            f.seek(addr)
            return f.read(n)

    def write(self, addr, data):
        # NOR flash: a write can only clear bits (the region is erased first).
        old = self.read(addr, len(data))
        new = bytes(a & b for a, b in zip(old, data)) if old != b"\xff" * len(old) else data
        if not self.path.exists():
            self._fit()
        fd = os.open(self.path, os.O_WRONLY)
        try:
            os.pwrite(fd, new, addr)
        finally:
            os.close(fd)

    def erase(self, addr, n):
        if not self.path.exists():
            self._fit()
            return
        fd = os.open(self.path, os.O_WRONLY)
        try:
            step = 1 << 20
            for a in range(addr, addr + n, step):
                os.pwrite(fd, b"\xff" * min(step, addr + n - a), a)
        finally:
            os.close(fd)


class Loader:
    """The ROM loader and, after MEM_END, the flasher stub of one virtual chip.

    feed(bytes) -> bytes to send back. After a reply, `baud` may have changed (CHANGE_BAUDRATE:
    the relay paces at the new rate once the reply is out), and `reset` may be set: "boot" when
    the host asked to run the application (RUN_USER_CODE, or FLASH_END/FLASH_DEFL_END with "run"
    from the ROM), "loader" when it asked for a reboot that lands back in the ROM loader (FLASH_END
    with "reboot" from the stub: the BOOT strap is held on a virtual node while a host talks to it).
    on_erase_all() is called on ERASE_FLASH (the node's filesystem lives in the erased flash)."""

    ROM_SYNC_VAL = 0x20120707

    def __init__(self, image, chip="ESP32", mac=None, baud=115200, on_erase_all=None):
        self.chip = CHIPS[chip] if isinstance(chip, str) else chip
        self.flash = image if isinstance(image, FlashImage) else FlashImage(image, self.chip.flash_size)
        self.mac = bytes(mac or b"\x02\xce\x00\x00\x00\x01")
        self.baud = baud
        self.on_erase_all = on_erase_all
        self.reader = SlipReader()
        self.stub = False
        self.reset = None
        self.regs = dict(self.chip.efuse)
        self._mac_regs()
        self.ram = {}          # address -> bytearray of uploaded segments
        self._mem = None       # [address, size, blocks, blocksize, next seq]
        self._write = None     # flash write session
        self._read = None      # READ_FLASH session (stub)
        self.stats = {"frames": 0, "errors": 0, "written": 0}

    # --- registers ------------------------------------------------------------------------------

    def _mac_regs(self):
        kind, lo, hi = self.chip.mac_regs
        m = self.mac
        if kind == "esp32":   # word 2 holds CRC8 | mac[0:2], word 1 mac[2:6] (esptool reads 2, then 1)
            self.regs[hi] = (m[0] << 8) | m[1]
            self.regs[lo] = struct.unpack(">I", m[2:6])[0]
        else:                 # MAC_EFUSE_REG = mac[2:6], +4 low 16 bits = mac[0:2]
            self.regs[lo] = struct.unpack(">I", m[2:6])[0]
            self.regs[hi] = (m[0] << 8) | m[1]

    def read_reg(self, addr):
        c = self.chip
        if addr == CHIP_DETECT_MAGIC_REG and c.magic is not None:
            return c.magic
        if addr == c.uart_clkdiv:
            return int(round(40e6 / self.baud)) & 0xFFFFF   # a 40 MHz APB clock at the current rate
        return self.regs.get(addr, 0)

    def write_reg(self, addr, value, mask):
        old = self.regs.get(addr, 0)
        self.regs[addr] = (old & ~mask) | (value & mask)
        c = self.chip
        if addr == c.spi_base and self.regs[addr] & _SPI_CMD_USR:
            self._spi_user_command()

    def _spi_user_command(self):
        """The SPI flash answers esptool's "user" commands: JEDEC id and status registers."""
        c = self.chip
        op = self.regs.get(c.spi_base + c.spi_usr2, 0) & 0xFF
        if op == _RDID:
            cap = self.flash.size.bit_length() - 1   # JEDEC capacity code: log2(bytes), 0x16 = 4 MB
            val = _WINBOND | (0x40 << 8) | (cap << 16)
        else:   # RDSR/RDSR2/RDSR3, SFDP...: an idle, unprotected flash
            val = 0
        self.regs[c.spi_base + c.spi_w0] = val
        self.regs[c.spi_base] &= ~_SPI_CMD_USR

    # --- framing ----------------------------------------------------------------------------------

    def feed(self, data):
        out = bytearray()
        for frame in self.reader.feed(data):
            self.stats["frames"] += 1
            if self._read is not None:
                out += self._read_ack(frame)
                continue
            out += self._packet(frame)
            if self.reset:
                break   # the chip resets: what followed is not heard by this loader
        return bytes(out)

    def _reply(self, op, val=0, data=b"", error=0):
        if error:
            self.stats["errors"] += 1
        status = bytes([1 if error else 0, error]) + (b"" if self.stub else b"\x00\x00")
        body = data + status
        return slip(struct.pack("<BBHI", 1, op, len(body), val) + body)

    def _err(self, op, rom, stub):
        return self._reply(op, error=stub if self.stub else rom)

    def _packet(self, p):
        if len(p) < 8 or p[0] != 0:
            return b""   # not a request: the ROM ignores it
        op, size, chk = struct.unpack_from("<BHI", p, 1)
        data = p[8:]
        if len(data) != size:
            return self._err(op, ROM_INVALID_MSG, STUB_BAD_DATA_LEN)
        if op in _STUB_ONLY and not self.stub:
            return self._err(op, ROM_INVALID_MSG, STUB_INVALID_COMMAND)
        handler = _HANDLERS.get(op)
        if handler is None or (op == GET_SECURITY_INFO and not self.chip.security_info):
            return self._err(op, ROM_INVALID_MSG, STUB_INVALID_COMMAND)
        try:
            return handler(self, op, data, chk)
        except (struct.error, IndexError):
            return self._err(op, ROM_INVALID_MSG, STUB_BAD_DATA_LEN)

    # --- commands -------------------------------------------------------------------------------

    def _sync(self, op, data, chk):
        if data != b"\x07\x07\x12\x20" + b"\x55" * 32:
            return self._err(op, ROM_INVALID_MSG, STUB_BAD_DATA_LEN)
        # The ROM answers one SYNC eight times; esptool reads them all. The stub answers with 0.
        return self._reply(op, 0 if self.stub else self.ROM_SYNC_VAL) * 8

    def _read_reg(self, op, data, chk):
        (addr,) = struct.unpack("<I", data)
        return self._reply(op, self.read_reg(addr))

    def _write_reg(self, op, data, chk):
        if len(data) % 16:
            return self._err(op, ROM_INVALID_MSG, STUB_BAD_DATA_LEN)
        for i in range(0, len(data), 16):
            addr, value, mask, _delay = struct.unpack_from("<IIII", data, i)
            self.write_reg(addr, value, mask)
        return self._reply(op)

    def _security_info(self, op, data, chk):
        # flags, flash_crypt_cnt, 7 key purposes, chip id, API version: nothing secured.
        return self._reply(op, data=struct.pack("<IBBBBBBBBII", 0, 0, 0, 0, 0, 0, 0, 0, 0, self.chip.image_id, 0))

    def _ack(self, op, data, chk):
        return self._reply(op)

    def _change_baud(self, op, data, chk):
        new, _old = struct.unpack("<II", data[:8])
        if not 300 <= new <= 5_000_000:
            return self._err(op, ROM_INVALID_MSG, STUB_BAD_DATA_LEN)
        reply = self._reply(op)
        self.baud = new
        return reply

    def _mem_begin(self, op, data, chk):
        size, blocks, blocksize, addr = struct.unpack("<IIII", data)
        if blocksize == 0 or blocks * blocksize < size or size > _RAM_MAX:
            # a size no chip's RAM holds (an ESP32 has 520 KB) is refused, not allocated on the host
            return self._err(op, ROM_INVALID_MSG, STUB_BAD_BLOCKSIZE)
        self._mem = [addr, size, blocks, blocksize, 0]
        self.ram[addr] = bytearray(size)
        return self._reply(op)

    def _mem_data(self, op, data, chk):
        n, seq = struct.unpack_from("<II", data)
        block = data[16:]
        if self._mem is None:
            return self._err(op, ROM_FAILED, STUB_NOT_IN_FLASH_MODE)
        if len(block) != n:
            return self._err(op, ROM_INVALID_MSG, STUB_BAD_DATA_LEN)
        if checksum(block) != chk & 0xFF:
            return self._err(op, ROM_BAD_CRC, STUB_BAD_CHECKSUM)
        addr, size, blocks, bs, want = self._mem
        if seq != want or n > bs or seq * bs + n > size:
            return self._err(op, ROM_INVALID_MSG, STUB_BAD_DATA_LEN)
        self.ram[addr][seq * bs:seq * bs + n] = block
        self._mem[4] += 1
        return self._reply(op)

    def _mem_end(self, op, data, chk):
        no_entry, entry = struct.unpack("<II", data)
        reply = self._reply(op)
        if no_entry or not entry:
            return reply
        if not any(a <= entry < a + len(b) for a, b in self.ram.items()):
            return self._err(op, ROM_FAILED, STUB_BAD_DATA_LEN)   # nothing loaded there to run
        # The uploaded stub starts: it greets, and from now on this loader is the stub.
        self.stub = True
        self._mem = None
        return reply + slip(b"OHAI")

    def _flash_begin(self, op, data, chk):
        size, blocks, bs, offset = struct.unpack_from("<IIII", data)
        compressed = op == FLASH_DEFL_BEGIN
        if bs == 0:
            return self._err(op, ROM_INVALID_MSG, STUB_BAD_BLOCKSIZE)
        # the ROM erases whole sectors from `offset`: it must be sector aligned; the stub erases the
        # sector an unaligned address falls in (esptool warns about it).
        if not self.stub and offset % SECTOR:
            return self._err(op, ROM_INVALID_MSG, STUB_BAD_DATA_LEN)
        if offset + size > self.flash.size:
            return self._err(op, ROM_INVALID_MSG, STUB_BAD_DATA_LEN)
        start = offset - offset % SECTOR
        end = min(self.flash.size, -(-(offset + size) // SECTOR) * SECTOR)
        self._write = {"op": op, "offset": offset, "size": size, "blocks": blocks, "bs": bs, "seq": 0,
                       "pos": offset, "erased": start, "end": end,
                       "z": zlib.decompressobj() if compressed else None}
        if not self.stub and size:
            self.flash.erase(start, end - start)   # the ROM erases up front
            self._write["erased"] = end
        return self._reply(op)

    def _put(self, w, addr, chunk):
        """Write `chunk` at `addr`; the stub erases sectors just ahead of what it writes."""
        top = addr + len(chunk)
        if top > w["erased"]:
            new = min(w["end"], max(-(-top // SECTOR) * SECTOR, w["erased"]))
            self.flash.erase(w["erased"], new - w["erased"])
            w["erased"] = new
        self.flash.write(addr, chunk)
        self.stats["written"] += len(chunk)

    def _flash_data(self, op, data, chk):
        w = self._write
        n, seq = struct.unpack_from("<II", data)
        block = data[16:]
        want = FLASH_DEFL_DATA if (w and w["z"] is not None) else FLASH_DATA
        if w is None or op != want:
            return self._err(op, ROM_FAILED, STUB_NOT_IN_FLASH_MODE)
        if len(block) != n:
            return self._err(op, ROM_INVALID_MSG, STUB_BAD_DATA_LEN)
        if checksum(block) != chk & 0xFF:
            return self._err(op, ROM_BAD_CRC, STUB_BAD_CHECKSUM)
        if seq == w["seq"] - 1:
            return self._reply(op)   # a retry of a block already taken (its reply was lost)
        if seq != w["seq"]:
            return self._err(op, ROM_INVALID_MSG, STUB_BAD_DATA_LEN)
        if w["z"] is None:
            # Uncompressed: each block goes at offset + seq * blocksize (esptool pads the last one).
            addr = w["offset"] + seq * w["bs"]
            room = w["offset"] + max(w["size"], w["blocks"] * w["bs"]) - addr
            if n > w["bs"] or addr + n > self.flash.size or n > room:
                return self._err(op, ROM_INVALID_MSG, STUB_TOO_MUCH_DATA)
            self._put(w, addr, block)
        else:
            try:
                out = w["z"].decompress(block)
            except zlib.error:
                return self._err(op, ROM_DEFLATE, STUB_INFLATE_ERROR)
            if w["pos"] + len(out) > w["offset"] + w["size"] + (0 if self.stub else SECTOR):
                return self._err(op, ROM_DEFLATE, STUB_TOO_MUCH_DATA)
            if out:
                self._put(w, w["pos"], out)
                w["pos"] += len(out)
        w["seq"] += 1
        return self._reply(op)

    def _flash_end(self, op, data, chk):
        (run,) = struct.unpack("<I", data[:4]) if data else (1,)
        w = self._write
        if self.stub and w is None and op == FLASH_DEFL_END:
            return self._err(op, ROM_FAILED, STUB_NOT_IN_FLASH_MODE)
        if self.stub and w is not None and w["z"] is not None and w["size"]:
            if w["pos"] < w["offset"] + w["size"] or not w["z"].eof:
                self._write = None
                return self._err(op, ROM_FAILED, STUB_NOT_ENOUGH_DATA)
        if w is not None and w["erased"] < w["end"]:
            self.flash.erase(w["erased"], w["end"] - w["erased"])   # the rest of the region, as begun
        self._write = None
        reply = self._reply(op)
        # data: 0 = reboot, 1 = run the application (the ROM jumps to it; the stub stays).
        if not run:
            self.reset = "loader" if self.stub else "boot"
        elif not self.stub:
            self.reset = "boot"
        return reply

    def _md5(self, op, data, chk):
        addr, size = struct.unpack_from("<II", data)
        if addr + size > self.flash.size:
            return self._err(op, ROM_READ_LEN, STUB_BAD_DATA_LEN)
        h = hashlib.md5()
        for a in range(addr, addr + size, 1 << 20):
            h.update(self.flash.read(a, min(1 << 20, addr + size - a)))
        return self._reply(op, data=h.digest() if self.stub else h.hexdigest().encode())

    def _erase_flash(self, op, data, chk):
        self.flash.erase(0, self.flash.size)
        if self.on_erase_all:
            self.on_erase_all()
        return self._reply(op)

    def _erase_region(self, op, data, chk):
        addr, size = struct.unpack("<II", data)
        if addr % SECTOR or size % SECTOR or addr + size > self.flash.size:
            return self._err(op, ROM_INVALID_MSG, STUB_BAD_DATA_LEN)
        self.flash.erase(addr, size)
        return self._reply(op)

    def _read_flash_slow(self, op, data, chk):
        addr, size = struct.unpack("<II", data)
        if size > 64 or addr + size > self.flash.size:
            return self._err(op, ROM_READ_LEN, STUB_BAD_DATA_LEN)
        return self._reply(op, data=self.flash.read(addr, size).ljust(64, b"\xff"))

    def _read_flash(self, op, data, chk):
        addr, size, bs, inflight = struct.unpack("<IIII", data)
        if not bs or not inflight or addr + size > self.flash.size:
            return self._err(op, ROM_READ_LEN, STUB_BAD_DATA_LEN)
        self._read = {"addr": addr, "size": size, "bs": bs, "inflight": inflight, "sent": 0, "acked": 0,
                      "md5": hashlib.md5()}
        return self._reply(op) + self._read_more()

    def _read_more(self):
        r = self._read
        out = bytearray()
        while r["sent"] < r["size"] and r["sent"] - r["acked"] < r["bs"] * r["inflight"]:
            n = min(r["bs"], r["size"] - r["sent"])
            chunk = self.flash.read(r["addr"] + r["sent"], n)
            r["md5"].update(chunk)
            r["sent"] += n
            out += slip(chunk)
        return bytes(out)

    def _read_ack(self, frame):
        """During READ_FLASH the host acknowledges with the byte count it has; the digest ends it."""
        r = self._read
        if len(frame) != 4:
            self._read = None
            return b""
        r["acked"] = max(r["acked"], struct.unpack("<I", frame)[0])
        if r["acked"] >= r["size"]:
            self._read = None
            return slip(r["md5"].digest())
        return self._read_more()

    def _run_user_code(self, op, data, chk):
        self.reset = "boot"
        return b""   # esptool does not wait for a reply


_HANDLERS = {
    SYNC: Loader._sync, READ_REG: Loader._read_reg, WRITE_REG: Loader._write_reg,
    GET_SECURITY_INFO: Loader._security_info, SPI_ATTACH: Loader._ack, SPI_SET_PARAMS: Loader._ack,
    CHANGE_BAUDRATE: Loader._change_baud,
    MEM_BEGIN: Loader._mem_begin, MEM_DATA: Loader._mem_data, MEM_END: Loader._mem_end,
    FLASH_BEGIN: Loader._flash_begin, FLASH_DATA: Loader._flash_data, FLASH_END: Loader._flash_end,
    FLASH_DEFL_BEGIN: Loader._flash_begin, FLASH_DEFL_DATA: Loader._flash_data, FLASH_DEFL_END: Loader._flash_end,
    SPI_FLASH_MD5: Loader._md5, ERASE_FLASH: Loader._erase_flash, ERASE_REGION: Loader._erase_region,
    READ_FLASH_SLOW: Loader._read_flash_slow, READ_FLASH: Loader._read_flash, RUN_USER_CODE: Loader._run_user_code,
}

# A SYNC request as it starts on the wire: frame start, direction 0, op 8, length 36.
SYNC_START = b"\xc0\x00\x08\x24\x00"


# --- booting from the flash ---------------------------------------------------------------------

ROM_BANNER = {
    "ESP32": b"ets Jul 29 2019 12:21:46\r\n\r\nrst:0x1 (POWERON_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)\r\n",
    "ESP32-S3": b"ESP-ROM:esp32s3-20210327\r\nBuild:Mar 27 2021\r\nrst:0x1 (POWERON),boot:0x8 (SPI_FAST_FLASH_BOOT)\r\n",
}
_VERSION_RE = re.compile(rb"MicroPython (v\d+\.\d+\.\d+[0-9A-Za-z.+-]*) on (\d{4}-\d{2}-\d{2})")
_MACHINE_RE = re.compile(rb"; ([ -~]{1,80}? with (ESP32[0-9A-Z-]*))\x00")
PARTITION_TABLE = 0x8000


class Boot:
    """What the virtual board does after a reset: `ok` (MicroPython starts), `text` (what it prints
    up to its banner, or the error a board prints for a bad image), `version` and `machine`."""

    def __init__(self, ok, text, version=None, machine=None, date=None):
        self.ok, self.text, self.version, self.machine, self.date = ok, text, version, machine, date


def check_image(read, addr, limit, chip):
    """Check the ESP app/bootloader image at `addr` the way the boot ROM and the second-stage
    bootloader do: magic, chip id, segments inside the flash, the XOR checksum and, when the
    header says one is appended, the SHA-256. Returns (end address, None) or (None, reason)."""
    head = read(addr, 24)
    if len(head) < 24 or head[0] != 0xE9:
        return None, "invalid header: 0x%08x" % struct.unpack("<I", head[:4].ljust(4, b"\xff"))[0]
    nseg = head[1]
    chip_id = struct.unpack_from("<H", head, 12)[0]
    if chip_id != chip.image_id:
        return None, "image is for chip id %d, this chip is %s (id %d)" % (chip_id, chip.name, chip.image_id)
    if not 1 <= nseg <= 16:
        return None, "invalid segment count %d" % nseg
    pos, state = addr + 24, 0xEF
    for _ in range(nseg):
        seg = read(pos, 8)
        if len(seg) < 8:
            return None, "image runs past the end of the flash"
        _load, length = struct.unpack("<II", seg)
        if length > limit or pos + 8 + length > limit:
            return None, "segment length 0x%x at 0x%x is out of range" % (length, pos)
        body = read(pos + 8, length)
        state = checksum(body, state)
        pos += 8 + length
    pos += 15 - (pos - addr) % 16   # pad so that the checksum byte ends a 16-byte line
    stored = read(pos, 1)
    if not stored or stored[0] != state:
        return None, "Checksum failed. Calculated 0x%02x read 0x%02x" % (state, stored[0] if stored else 0xFF)
    pos += 1
    if head[23] == 1:   # hash appended
        h = read(pos, 32)
        if hashlib.sha256(read(addr, pos - addr)).digest() != h:
            return None, "Image hash failed - image is corrupt"
        pos += 32
    return pos, None


def _app_partition(read):
    """The first app partition (factory, else ota_0) of the partition table: (offset, size)."""
    apps = []
    for i in range(0, 0xC00, 32):
        e = read(PARTITION_TABLE + i, 32)
        if e[:2] != b"\xaa\x50":
            break
        ptype, sub, off, size = struct.unpack_from("<BBII", e, 2)
        if ptype == 0:
            apps.append((0 if sub == 0 else 1, off, size))
    return min(apps)[1:] if apps else None


def boot(image, chip="ESP32"):
    """Boot the virtual chip from its flash image file: the ROM checks the second-stage bootloader
    at the chip's boot offset, the bootloader reads the partition table and checks the app; an app
    that carries MicroPython's banner strings is MicroPython, and its banner is what it prints."""
    c = CHIPS[chip] if isinstance(chip, str) else chip
    fl = image if isinstance(image, FlashImage) else FlashImage(image, c.flash_size)
    read, size = fl.read, fl.size
    text = ROM_BANNER.get(c.name, b"")
    if not fl.path.exists():
        # never written through the loader: the factory MicroPython the sim runs as it is
        return Boot(True, text)
    end, err = check_image(read, c.boot_offset, size, c)
    if err:
        # What the ROM prints, over and over on a board: the virtual one stays in its loader.
        msg = err if err.startswith("invalid header") else "invalid header: 0x%08x" % \
            struct.unpack("<I", read(c.boot_offset, 4))[0]
        return Boot(False, text + msg.encode() + b"\r\n")
    part = _app_partition(read)
    if part is None:
        return Boot(False, text + b"E (57) boot: Failed to verify partition table\r\nE (62) boot: load partition table error!\r\n")
    off, psize = part
    end, err = check_image(read, off, min(size, off + psize), c)
    if err:
        return Boot(False, text + ("E (93) esp_image: %s\r\nE (98) boot: Factory app partition is not bootable\r\n"
                                   "E (104) boot: No bootable app partitions in the partition table\r\n" % err).encode())
    app = read(off, end - off)
    m = _VERSION_RE.search(app)
    if not m:
        return Boot(False, text + b"I (250) boot: Loaded app from partition at offset 0x%x\r\n"
                    b"(the application is not MicroPython: no MicroPython banner in it)\r\n" % off)
    mm = _MACHINE_RE.search(app)
    machine = mm.group(1).decode() if mm else c.machine
    version, date = m.group(1).decode(), m.group(2).decode()
    text += b"I (250) boot: Loaded app from partition at offset 0x%x\r\n" % off
    banner = "MicroPython %s on %s; %s\r\nType \"help()\" for more information.\r\n" % (version, date, machine)
    return Boot(True, text + banner.encode(), version, machine, date)


# --- images to boot: what a MicroPython merged .bin looks like to the boot ROM -------------------

def _esp_image(chip, segments, entry=0x40080000):
    """An ESP image: common + extended header, segments, XOR checksum on a 16-byte line, SHA-256."""
    out = bytearray(struct.pack("<BBBBI", 0xE9, len(segments), 2, 0x20, entry))
    # extended header: WP pin, SPI drive strengths, chip id, min rev, min/max full rev, reserved, hash
    out += struct.pack("<BBBBHBHH4BB", 0xEE, 0, 0, 0, chip.image_id, 0, 0, 0xFFFF, 0, 0, 0, 0, 1)
    state = 0xEF
    for load, body in segments:
        body = bytes(body) + b"\x00" * (-len(body) % 4)
        out += struct.pack("<II", load, len(body)) + body
        state = checksum(body, state)
    out += b"\x00" * (15 - len(out) % 16) + bytes([state])
    out += hashlib.sha256(out).digest()
    return bytes(out)


def build_image(chip="ESP32", version="v1.29.0", date="2026-06-01", machine=None, app_size=64 * 1024,
                micropython=True, seed=1):
    """A merged image as MicroPython publishes them, to be written at the chip's boot offset:
    second-stage bootloader, partition table at 0x8000, factory app at 0x10000 (`app_size` bytes
    of code-like filler carrying MicroPython's banner strings). For tests and benchmarks: it boots
    on the virtual ROM, not on a chip."""
    c = CHIPS[chip] if isinstance(chip, str) else chip
    boot_img = _esp_image(c, [(0x3FFF0000, b"bootloader " * 300)])
    rows = [(1, 2, 0x9000, 0x6000, b"nvs"), (1, 1, 0xF000, 0x1000, b"phy_init"),
            (0, 0, 0x10000, 0x1F0000, b"factory"), (1, 0x81, 0x200000, c.flash_size - 0x200000, b"vfs")]
    table = b"".join(struct.pack("<2sBBII16sI", b"\xaa\x50", t, s, o, n, lab, 0) for t, s, o, n, lab in rows)
    table += b"\xeb\xeb" + b"\xff" * 14 + hashlib.md5(table).digest()
    strings = b""
    if micropython:
        strings = (b"MicroPython %s on %s\x00; %s\x00" % (version.encode(), date.encode(),
                                                          (machine or c.machine).encode()))
    # filler that compresses about as well as Xtensa code does (~60 %)
    rnd = hashlib.sha256(b"%d" % seed).digest()
    filler = bytearray()
    i = 0
    while len(filler) < app_size:
        rnd = hashlib.sha256(rnd).digest()
        filler += rnd[:20] + bytes(12) + b"\x00\x00\x36\x41" + bytes([i & 0xFF]) * 4
        i += 1
    body = bytes(filler[:app_size // 2]) + strings + bytes(filler[app_size // 2:app_size - len(strings)])
    app = _esp_image(c, [(0x3F400020, body[:len(body) // 2]), (0x400D0020, body[len(body) // 2:])],
                     entry=0x400D1000)
    base = c.boot_offset
    img = bytearray(b"\xff" * (0x10000 - base + len(app)))
    img[0:len(boot_img)] = boot_img
    img[0x8000 - base:0x8000 - base + len(table)] = table
    img[0x10000 - base:] = app
    return bytes(img)

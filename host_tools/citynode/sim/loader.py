"""The virtual node in its ROM loader: the relay between the node's serial face and rom.Loader.

    r = LoaderRelay(node).run()      # "boot": MicroPython may start; None: the node is stopping

The loader itself (what esptool's commands do) is rom.py; this module moves bytes and resets.

How a virtual node gets into and out of its loader (a pseudo-terminal has no DTR/RTS lines, so
esptool's reset dance cannot reach it; see docs/flash.md):
- in: a SLIP SYNC request from the host (esptool `--before no-reset`) while MicroPython runs is
  taken as "BOOT held, EN pressed": the MicroPython process is stopped and the loader answers.
  At power-on a node whose flash image does not boot stays in the loader too.
- out: RUN_USER_CODE, or FLASH_END "run" from the ROM, boots from the flash image: a MicroPython
  image prints its banner and the firmware runs; anything else prints what a board prints for a
  bad image and the loader keeps listening. FLASH_END "reboot" from the stub (what esptool's
  `--after no-reset` sends) comes back into the ROM loader, as a board with BOOT held does.
Pacing follows CHANGE_BAUDRATE once its reply is out, and goes back to the node's rate on reset.
"""
import os
import select
import shutil
import time

from . import rom
from .ptys import hung_up
from .wire import send_paced


def image_path(flash):
    """The flash image file of a node whose flash directory is `flash`: `<flash>.bin` beside it."""
    return flash.with_name(flash.name + ".bin")


def node_mac(flash):
    """A stable, locally administered MAC per flash directory (so two virtual nodes differ)."""
    import hashlib
    h = hashlib.sha256(str(flash).encode()).digest()
    return b"\x02\xce" + h[:4]


def erase_files(flash):
    """ERASE_FLASH takes the node's filesystem with it: its files go, the directory stays. Only
    in a directory the simulator made its flash (node.flash_mark): `--flash .` in a checkout is
    not wiped by an `esptool erase-flash`."""
    from .node import flash_mark
    if not flash_mark(flash).exists():
        return
    for p in flash.iterdir():
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            try:
                p.unlink()
            except OSError:
                pass


class LoaderRelay:
    LIMIT = 1 << 16

    def __init__(self, node, pending=b""):
        self.n = node
        self.a = node._master
        self.rom_baud = 115200
        self.loader = self._new_loader()
        self.to_node = bytearray(pending)    # from the host, on its way to the loader
        self.to_client = node._to_client
        self.to_client.clear()               # the reset cut whatever the firmware was saying
        self.up, self.down = node._up, node._down
        self.want_baud = None
        self.reset = None
        self.next_hup_check = 0.0

    def _new_loader(self):
        n = self.n
        return rom.Loader(image_path(n.flash), chip=n.chip, mac=node_mac(n.flash), baud=self.rom_baud,
                             on_erase_all=lambda: erase_files(n.flash))

    def _pace(self, baud):
        """UART pacing at `baud` when the node is paced at all (sim --baud)."""
        if self.n.baud:
            self.up.rate = self.down.rate = baud / 10.0

    def say(self, text):
        if self.n._connected:
            self.to_client += text

    def check_client(self, now):
        if now < self.next_hup_check:
            return
        self.next_hup_check = now + 0.01
        hup = hung_up(self.a)
        if hup and self.n._connected:
            self.to_client.clear()
        self.n._connected = not hup

    def after_reply(self):
        """What the loader asked for, once its last reply has left."""
        lo = self.loader
        if lo.baud != self.rom_baud and self.want_baud is None and lo.reset is None:
            self.want_baud = lo.baud
        if self.to_client:
            return None
        if self.want_baud:
            self._pace(self.want_baud)
            self.rom_baud, self.want_baud = self.want_baud, None
        if lo.reset:
            what = lo.reset
            self.rom_baud = 115200
            self._pace(self.n.baud or 115200)
            self.to_node.clear()
            if what == "boot":
                b = rom.boot(image_path(self.n.flash), self.n.chip)
                self.n.boot_log.append(b)
                self.say(b.text)
                if b.ok:
                    return "boot"
            self.loader = self._new_loader()
        return None

    def run(self):
        n, a = self.n, self.a
        while not n._stop.is_set():
            now = time.monotonic()
            self.check_client(now)
            timeout = 0.05
            if self.loader.reset:
                self.to_node.clear()   # the chip is resetting: nobody listens until it has
            if self.to_node:
                k = self.up.ready(now, len(self.to_node))
                if k > 0:
                    chunk = bytes(self.to_node[:k])
                    del self.to_node[:k]
                    self.up.sent(k, len(self.to_node))
                    n.wire["to_node"] += k
                    out = self.loader.feed(chunk)
                    if out:
                        self.say(out)
                if self.to_node:
                    timeout = min(timeout, self.up.wait(now, len(self.to_node)))
            if self.to_client and not n._connected:
                self.to_client.clear()
            if self.to_client:
                timeout = min(timeout, send_paced(n, a, self.to_client, self.down, now))
            if self.after_reply() == "boot":
                # the banner goes out before the firmware's first words
                self._flush(time.monotonic() + 2.0)
                return "boot"
            if self.loader.reset and self.to_client:
                timeout = min(timeout, 0.002)
            rd = [a] if n._connected and len(self.to_node) < self.LIMIT else []
            if not n._connected:
                rd = [a]   # a client opening the port shows up as readable/no longer hung up
                timeout = min(timeout, 0.01)
            for fd in select.select(rd, [], [], timeout)[0]:
                try:
                    d = os.read(fd, self.LIMIT - len(self.to_node))
                except BlockingIOError:
                    continue
                except OSError:   # EIO: nobody has the port open
                    d = b""
                if d:
                    n._connected = True
                    self.to_node += d
                else:
                    n._connected = False
                    self.to_client.clear()
                    time.sleep(0.01)
        return None

    def _flush(self, deadline):
        while self.to_client and self.n._connected and time.monotonic() < deadline:
            time.sleep(max(0.0005, send_paced(self.n, self.a, self.to_client, self.down, time.monotonic())))

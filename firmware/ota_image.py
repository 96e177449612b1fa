"""Over-the-air update of the whole MicroPython image, on boards built with OTA partitions
(ESP32_GENERIC, variant OTA: partitions-4MiB-ota.csv, bootloader rollback on). Used by ota.py
when a bundle's manifest says "kind": "image"; the transfer, the signature and the checks are
ota.py's, this module only writes the partition and talks to the bootloader.

    sink = ota_image.ImageSink(ota_image.next_partition(), bundle_id, size, sha256_hex)
    sink.write(chunk) ...; sink.finish(); sink.switch("0.5.0", "0.4.0")   # then reset
    # next boot, once the birth is out: ota_image.commit()

The seam is the `esp32` module (esp32.Partition): tests hand in a fake with the same methods
(info, readblocks, writeblocks, set_boot, get_next_update, mark_app_valid_cancel_rollback).
What the bootloader does is the bootloader's: a new image boots once as "pending verify"; if it
resets before mark_app_valid_cancel_rollback(), the bootloader boots the previous one again.
So every failure of a trial (crash, watchdog, no birth in time: node.py resets) rolls back.
"""
import binascii
import hashlib

import persist

try:
    from micropython import const
except ImportError:
    const = lambda x: x  # noqa: E731

BLOCK = const(4096)        # the flash's erase sector: esp32.Partition's block size
STATE = "ota_image.json"   # the transfer's progress, then what the next boot should run


def _esp32(mod=None):
    if mod is not None:
        return mod
    import esp32
    return esp32


def next_partition(esp32=None):
    """The OTA partition the next image goes to; OSError on a board without OTA partitions."""
    e = _esp32(esp32)
    # Partition(Partition.RUNNING): the stubs take only a label (str); the port also takes
    # BOOT and RUNNING (ports/esp32/esp32_partition.c)
    p = e.Partition(e.Partition.RUNNING).get_next_update()  # pyright: ignore[reportArgumentType]
    if p is None:
        raise OSError("no OTA partition")
    return p


class ImageSink:
    """Writes an image into a partition in whole blocks. With resume, goes on from the last block
    written (STATE says which), so a cut costs at most one block again; without, from the first
    (the transfer starts over: an old record of the same image would put it at the wrong blocks)."""

    def __init__(self, part, bid, size, sha, log=print, resume=False):
        self.p = part
        self.size, self.sha, self.log = size, sha, log
        cap = part.info()[3]
        if size > cap:
            raise ValueError("image: %d bytes, the partition holds %d" % (size, cap))
        st = persist.read_json(STATE) if resume else None
        self.block = st["block"] if isinstance(st, dict) and st.get("id") == bid and "block" in st else 0
        self.id = bid
        self.buf = bytearray(BLOCK)
        self.fill = 0
        self._save()

    def _save(self):
        persist.write_json(STATE, {"id": self.id, "block": self.block})

    def held(self):
        return self.block * BLOCK + self.fill

    def write(self, chunk):
        mv = memoryview(chunk)
        while len(mv):
            k = min(BLOCK - self.fill, len(mv))
            self.buf[self.fill:self.fill + k] = mv[:k]
            self.fill += k
            mv = mv[k:]
            if self.fill == BLOCK:
                self._flush()

    def _flush(self):
        if not self.fill:
            return
        for i in range(self.fill, BLOCK):
            self.buf[i] = 0xFF   # erased flash: the tail of the last block
        self.p.writeblocks(self.block, self.buf)
        self.block += 1
        self.fill = 0
        self._save()

    def finish(self):
        """The last block, then the image's SHA-256 read back from the partition."""
        self._flush()
        h = hashlib.sha256()
        left = self.size
        n = 0
        while left > 0:
            self.p.readblocks(n, self.buf)
            h.update(memoryview(self.buf)[:min(BLOCK, left)])
            left -= BLOCK
            n += 1
        if binascii.hexlify(h.digest()).decode() != self.sha:
            persist.remove(STATE)
            raise ValueError("hash: the image in %s does not match the manifest" % self.p.info()[4])

    def switch(self, version, running):
        """Tell the bootloader (otadata: its own atomic switch) and remember what to expect."""
        persist.write_json(STATE, {"expect": self.p.info()[4], "version": version, "from": running})
        self.p.set_boot()


def boot_check(esp32=None):
    """At boot, after an image update: "trial" when the new image runs (not yet confirmed), a
    rollback record when the bootloader went back to the old one, None when nothing is pending."""
    st = persist.read_json(STATE)
    if not isinstance(st, dict) or "expect" not in st:
        return None
    e = _esp32(esp32)
    if e.Partition(e.Partition.RUNNING).info()[4] == st["expect"]:  # pyright: ignore[reportArgumentType]
        return "trial"
    persist.remove(STATE)
    crash = persist.read_json("crash.json")
    persist.remove("crash.json")
    return {"reason": "crash" if crash else "image not confirmed (the bootloader rolled back)",
            "crash": crash, "version": st.get("version"), "running": st.get("from"), "image": True}


def commit(esp32=None):
    """The new image has published its birth: keep it (the old one stays as the other slot)."""
    _esp32(esp32).Partition.mark_app_valid_cancel_rollback()
    persist.remove(STATE)

"""The outbox: readings not yet acknowledged by the broker, in an append-only log on flash.

    ob = Outbox("outbox.d", max_kb=64)
    ob.append(b'{"boot":12,"seq":431,...}')      # on flash when it returns
    for rec in ob.peek(10): publish(rec)         # QoS 1; then ob.ack(1) per PUBACK, in order

Runs on MicroPython (ESP32 littlefs, unix port) and CPython. The on-flash format, the wear figures
and the bounds of every guarantee are in docs/outbox.md. Paths stay relative: under the
virtual node the flash is a VfsPosix mounted at "/", where os.rename of absolute paths fails.
"""
import os
import struct
import sys
from binascii import crc32

try:
    from micropython import const
except ImportError:
    const = lambda x: x  # noqa: E731

MAX_REC = const(1024)
_HDR = const(6)             # u16 length + u32 CRC32 of (the two length bytes + data), little-endian
_ENOSPC = const(28)         # the unix port's errno module has no ENOSPC
_EIO = const(5)
_MIN_SEGS = const(4)        # dropping one segment when full loses at most 1/4 of the outbox
_MAX_SEGS = const(64)       # bookkeeping is 3 ints per segment: bounded RAM for any outbox_kb


def _rm(name):
    try:
        os.remove(name)
    except OSError:
        pass


class Outbox:
    """path: a directory (created if missing), relative. max_kb: the size bound; when an append
    would pass it the oldest segment goes. seg_kb: segment size, kept within max_kb/64..max_kb/4.
    ack_every: the ack position is stored every this many acks (the duplicate bound after a cut).

    Sending: peek(n) a batch, publish it in order, ack(1) per PUBACK (or ack(k) for k of them);
    call rewind() when the connection is lost, since no PUBACK can come for the rest."""

    def __init__(self, path="outbox.d", max_kb=64, seg_kb=4, ack_every=16):
        self.path = path.rstrip("/")
        self._max = max_kb * 1024
        self._segmax = min(max(seg_kb * 1024, self._max // _MAX_SEGS), self._max // _MIN_SEGS)
        self._k = max(1, ack_every)
        self.dropped = 0          # records evicted by a full outbox since take_dropped()
        self.discarded = 0        # bytes cut at load: torn or corrupt tails of segments
        self.bytes_written = 0    # data + framing + ack position files + load-time rewrites
        # One entry per segment file, oldest first: number, records, valid bytes.
        self._nos = []
        self._cnt = []
        self._siz = []
        self._hoff = 0            # offset of the oldest unacked record in the first segment
        self._hack = 0            # records acked in the first segment (its first _hack records)
        self._n = 0
        self._total = 0
        self._next = 0
        self._f = None            # append handle of the last segment, opened lazily
        self._sealed = False      # last segment must not be appended to (garbage after its end)
        self._unsaved = 0         # acks not yet in the ack position file
        # In RAM only, so that ack(n) never takes a record that was not handed out (see ack()).
        self._out = 0             # oldest records handed out by peek() and not acked yet
        self._owed = 0            # handed-out records evicted since: their acks are absorbed
        self._pkno = -1           # peek cache: end offsets of records read from the first segment
        self._pka = 0
        self._pko = []
        # Preallocated so that append() allocates nothing of its own (heap fragmentation).
        self._hdr = bytearray(_HDR)
        self._lenv = memoryview(self._hdr)[0:2]
        self._ackb = bytearray(12)
        self._ackv = memoryview(self._ackb)[0:8]
        self._load()

    # The one seam for file access: tests replace it to make the flash refuse (ENOSPC).
    def _open(self, name, mode):
        return open(name, mode)

    def _name(self, no):
        return "%s/s%08d" % (self.path, no)

    # --- load ----------------------------------------------------------------------------

    def _load(self):
        # Once, at boot: from its own module, dropped again (about 2 KB of code from .mpy)
        had = "outbox_load" in sys.modules
        import outbox_load
        try:
            outbox_load.load(self)
        finally:
            if not had:
                sys.modules.pop("outbox_load", None)

    # --- append --------------------------------------------------------------------------

    def append(self, rec):
        """Store rec (bytes, at most 1 KiB) on flash; flushed when this returns. Raises OSError
        (ENOSPC) when the flash refuses: the record is then not held, and the outbox stays usable."""
        ln = len(rec)
        if ln > MAX_REC:
            raise ValueError("outbox: record over 1024 bytes")
        need = _HDR + ln
        nos = self._nos
        new = not nos or self._sealed or (self._siz[-1] + need > self._segmax and self._siz[-1] > 0)
        if new:
            self._close_w()
            if nos and not self._n:
                self._evict()         # the last segment, wholly acked: nothing is dropped
        while self._total + need > self._max and len(nos) > (0 if new else 1):
            self._evict()
        if new:
            no = self._next
            f = self._open(self._name(no), "ab")
            self._next = no + 1
            self._f = f
        else:
            f = self._f
            if f is None:
                f = self._f = self._open(self._name(nos[-1]), "ab")
        hdr = self._hdr
        struct.pack_into("<H", hdr, 0, ln)
        struct.pack_into("<I", hdr, 2, crc32(rec, crc32(self._lenv)))
        try:
            if f.write(hdr) != _HDR or f.write(rec) != ln:
                raise OSError(_ENOSPC)
            f.flush()
        except OSError:
            self._failed(new)
            raise
        if new:
            nos.append(self._next - 1)
            self._cnt.append(1)
            self._siz.append(need)
            self._sealed = False
        else:
            self._cnt[-1] += 1
            self._siz[-1] += need
        self._total += need
        self._n += 1
        self.bytes_written += need

    def _failed(self, new):
        # The flash refused part of a record. Whatever reached the file after the last valid
        # record must never have a record appended behind it.
        self._close_w()
        if new:
            _rm(self._name(self._next - 1))
            return
        name = self._name(self._nos[-1])
        end = self._siz[-1]
        try:
            size = os.stat(name)[6]
        except OSError:
            return
        if size <= end:
            return
        self._sealed = True       # the next append starts a new segment
        try:
            # Spoil the stray header so a later load cuts it (may itself fail on a full flash;
            # then a record whose append raised can reappear after a reboot: a duplicate).
            f = self._open(name, "r+b")
            try:
                f.seek(end)
                f.write(b"\0" * _HDR)
                f.flush()
            finally:
                f.close()
        except OSError:
            pass

    def _close_w(self):
        if self._f is not None:
            try:
                self._f.close()
            except OSError:
                pass
            self._f = None

    def _evict(self):
        # The outbox is full: the oldest segment goes, its unacked records counted in `dropped`.
        if len(self._nos) == 1:
            self._close_w()
        os.remove(self._name(self._nos[0]))
        k = self._cnt[0] - self._hack
        self.dropped += k
        self._n -= k
        e = min(k, self._out)
        self._out -= e
        self._owed += e
        self._pop()

    def _pop(self):
        self._total -= self._siz[0]
        self._nos.pop(0)
        self._cnt.pop(0)
        self._siz.pop(0)
        self._hoff = self._hack = 0
        self._pkno = -1
        if not self._nos:
            self._sealed = False

    # --- peek and ack --------------------------------------------------------------------

    def peek(self, n):
        """Up to n of the oldest held records, oldest first (read from flash; none removed)."""
        out = []
        if n <= 0 or not self._n:
            return out
        hdr = self._hdr
        pko = self._pko
        pko.clear()
        self._pkno = self._nos[0]
        self._pka = self._hack
        off = self._hoff
        for i in range(len(self._nos)):
            end = self._siz[i]
            f = self._open(self._name(self._nos[i]), "rb")
            try:
                if off:
                    f.seek(off)
                while off < end and len(out) < n:
                    if f.readinto(hdr) != _HDR:
                        raise OSError(_EIO)
                    ln = hdr[0] | hdr[1] << 8
                    rec = f.read(ln)
                    if len(rec) != ln:
                        raise OSError(_EIO)
                    out.append(rec)
                    off += _HDR + ln
                    if i == 0:
                        pko.append(off)
            finally:
                f.close()
            if len(out) >= n:
                break
            off = 0
        self._out = max(self._out, len(out))
        return out

    def ack(self, n):
        """The n oldest records handed out by peek() were acknowledged; they leave the outbox.

        PUBACKs come in publishing order, so they name the handed-out records in order. When a
        full outbox evicted some of those meanwhile, their acks are absorbed: an ack never takes
        a record that was not handed out."""
        if n < 0:
            raise ValueError("outbox: negative ack")
        a = min(n, self._owed)
        k = n - a
        if k > self._n:
            raise ValueError("outbox: ack of %d records, %d held" % (k, self._n))
        self._owed -= a
        self._out = max(0, self._out - k)
        if not k:
            return
        self._n -= k
        self._unsaved += k
        while k:
            avail = self._cnt[0] - self._hack
            if k >= avail and len(self._nos) > 1:
                k -= avail
                os.remove(self._name(self._nos[0]))
                self._pop()
            else:
                # Inside the first segment, or the last one wholly acked: it stays, to be
                # appended to, until the next segment starts (no file created per reading).
                self._hoff = self._skip(k)
                self._hack += k
                k = 0
        if self._unsaved >= self._k:
            try:
                self._save()
            except OSError:
                pass              # retried at the next ack; the bound grows meanwhile

    def _skip(self, k):
        # Offset after the next k records of the first segment: from peek()'s cache, or the file.
        i = self._hack - self._pka + k - 1
        if self._pkno == self._nos[0] and 0 <= i < len(self._pko):
            return self._pko[i]
        off = self._hoff
        f = self._open(self._name(self._nos[0]), "rb")
        try:
            while k:
                f.seek(off)
                if f.readinto(self._hdr) != _HDR:
                    raise OSError(_EIO)
                off += _HDR + (self._hdr[0] | self._hdr[1] << 8)
                k -= 1
        finally:
            f.close()
        return off

    def _save(self):
        # Ack position: (segment, offset) of the oldest unacked record. Only needed inside a
        # partly acked segment: an empty outbox or a deleted segment says it by itself.
        if self._nos and self._hoff:
            b = self._ackb
            struct.pack_into("<II", b, 0, self._nos[0], self._hoff)
            struct.pack_into("<I", b, 8, crc32(self._ackv))
            tmp = self.path + "/ack.tmp"
            try:
                f = self._open(tmp, "wb")
                try:
                    if f.write(b) != 12:
                        raise OSError(_ENOSPC)
                    f.flush()
                finally:
                    f.close()
                os.rename(tmp, self.path + "/ack")
            except OSError:
                _rm(tmp)
                raise
            self.bytes_written += 12
        self._unsaved = 0

    # --- the rest ------------------------------------------------------------------------

    def rewind(self):
        """The connection is gone: no PUBACK can come for what peek() handed out. The next peek()
        starts afresh from the oldest record."""
        self._out = self._owed = 0

    def flush(self):
        """Store the ack position now (before a deep sleep or a reboot): nothing is sent twice."""
        if self._unsaved:
            self._save()

    def close(self):
        try:
            self.flush()
        finally:
            self._close_w()

    def take_dropped(self):
        d = self.dropped
        self.dropped = 0
        return d

    def __len__(self):
        return self._n

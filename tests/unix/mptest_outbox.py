# The outbox on the MicroPython unix port: order, reopen, torn and corrupt records, a full outbox,
# the ack position after a power cut, bytes written per reading, a flash that refuses (ENOSPC),
# and the same on a real littlefs (vfs.VfsLfs2 on a RAM block device, as on the ESP32).
import os
import sys

if sys.implementation.name != "micropython":
    # Named on pytest's command line, this file is also imported as a CPython module; the
    # MicroPython items come from tests/conftest.py, so the CPython import has nothing to run.
    import pytest
    pytest.skip("MicroPython unix-port tests (run by tests/conftest.py)", allow_module_level=True)

import vfs
from outbox import Outbox

_HOME = os.getcwd()


class Scratch:
    """A fresh directory under /tmp as cwd: the outbox is opened by a relative path, as on the node."""

    def __enter__(self):
        self.dir = "/tmp/mpob-" + "".join("%02x" % b for b in os.urandom(6))
        os.mkdir(self.dir)
        os.chdir(self.dir)
        return self

    def __exit__(self, *exc):
        os.chdir(_HOME)
        _rmtree(self.dir)


def _rmtree(d):
    for name in os.listdir(d):
        p = d + "/" + name
        if os.stat(p)[0] & 0x4000:
            _rmtree(p)
        else:
            os.remove(p)
    os.rmdir(d)


def _recs(n, size=40, start=0):
    # Unique, varied records: "r<number>:" then filler whose length varies with the number.
    return [(b"r%d:" % i) + bytes([65 + i % 26]) * (size + i % 7) for i in range(start, start + n)]


def _all(ob):
    # Inspection, not sending: nothing stays handed out.
    r = ob.peek(1 << 30)
    ob.rewind()
    return r


def _segs(path="ob"):
    return sorted(n for n in os.listdir(path) if n[0] == "s")


def _read(name):
    with open(name, "rb") as f:
        return f.read()


def _write(name, data):
    with open(name, "wb") as f:
        f.write(data)


def _cut_all(ob):
    # A power cut: the handles go away, nothing is saved.
    ob._close_w()


def test_append_peek_ack_order():
    with Scratch():
        ob = Outbox("ob", max_kb=16, seg_kb=1)
        assert len(ob) == 0 and ob.peek(5) == []
        recs = _recs(60)
        for r in recs:
            ob.append(r)
        assert len(ob) == 60
        assert len(_segs()) > 3                       # crosses segments
        assert ob.peek(0) == []
        assert ob.peek(10) == recs[:10]
        assert ob.peek(10) == recs[:10]               # peek does not remove
        assert _all(ob) == recs
        ob.ack(3)
        assert len(ob) == 57 and ob.peek(2) == recs[3:5]
        ob.ack(1)
        ob.ack(1)
        assert ob.peek(1) == [recs[5]]
        segs = len(_segs())
        ob.ack(30)                                    # acks across segment boundaries
        assert _all(ob) == recs[35:]
        assert len(_segs()) < segs                    # wholly acked segments are deleted
        try:
            ob.ack(26)
            raise AssertionError("ack beyond the outbox accepted")
        except ValueError:
            pass
        assert _all(ob) == recs[35:]
        ob.ack(25)
        assert len(ob) == 0 and ob.peek(3) == []
        assert len(_segs()) == 1                      # the last one stays, to be appended to
        ob.append(b"next")
        assert ob.peek(3) == [b"next"]
        ob.append(b"")                                # an empty record is a record
        assert ob.peek(3) == [b"next", b""]
        try:
            ob.append(bytes(1025))
            raise AssertionError("1025-byte record accepted")
        except ValueError:
            pass
        ob.append(bytes(1024))
        assert len(ob) == 3


def test_survives_reopen():
    with Scratch():
        ob = Outbox("ob", max_kb=16, seg_kb=1)
        recs = _recs(40)
        for r in recs:
            ob.append(r)
        ob.peek(7)
        ob.ack(7)
        ob.close()
        ob = Outbox("ob", max_kb=16, seg_kb=1)       # clean close: exact
        assert _all(ob) == recs[7:]
        more = _recs(5, start=40)
        for r in more:
            ob.append(r)
        ob.ack(2)
        ob.close()
        ob = Outbox("ob", max_kb=16, seg_kb=1)
        assert _all(ob) == recs[9:] + more
        ob.ack(len(ob))
        ob.close()
        ob = Outbox("ob", max_kb=16, seg_kb=1)
        assert len(ob) == 0 and _all(ob) == []
        ob.append(b"after")
        _cut_all(ob)
        assert _all(Outbox("ob", max_kb=16, seg_kb=1)) == [b"after"]


def test_torn_last_record_every_offset():
    with Scratch():
        ob = Outbox("ob", max_kb=16, seg_kb=1)
        recs = _recs(12, size=150)
        for r in recs:
            ob.append(r)
        ob.close()
        last = "ob/" + _segs()[-1]
        whole = _read(last)
        start = len(whole) - 6 - len(recs[-1])
        assert start > 0
        for keep in range(start, len(whole)):         # every byte offset inside the last record
            _write(last, whole[:keep])
            ob = Outbox("ob", max_kb=16, seg_kb=1)
            assert _all(ob) == recs[:-1], keep
            assert ob.discarded == keep - start
            assert os.stat(last)[6] == start          # the tail is cut on flash, not only skipped
            ob.append(b"again")
            ob.close()
            assert _all(Outbox("ob", max_kb=16, seg_kb=1)) == recs[:-1] + [b"again"]
        for junk in (b"\0" * 40, b"\xff" * 40, b"\x05\x00\x01\x02"):   # zeroed, erased, stray header
            _write(last, whole + junk)
            ob = Outbox("ob", max_kb=16, seg_kb=1)
            assert _all(ob) == recs and ob.discarded == len(junk)


def test_corrupt_record_in_the_middle():
    # Documented: a record that fails its check ends its segment; the records before it and
    # every later segment are kept, the rest of that segment is cut (counted in `discarded`).
    with Scratch():
        ob = Outbox("ob", max_kb=16, seg_kb=1)
        recs = _recs(40)
        for r in recs:
            ob.append(r)
        ob.close()
        first = "ob/" + _segs()[0]
        whole = _read(first)
        n0 = ob._cnt[0]                               # records in the first segment
        offs = [0]
        for r in recs[:n0]:
            offs.append(offs[-1] + 6 + len(r))
        assert offs[-1] == len(whole) and n0 >= 4
        j = n0 // 2
        bad = bytearray(whole)
        bad[offs[j] + 6 + 3] ^= 0x10                  # one bit of record j's data
        _write(first, bad)
        ob = Outbox("ob", max_kb=16, seg_kb=1)
        assert _all(ob) == recs[:j] + recs[n0:]
        assert ob.discarded == len(whole) - offs[j]
        assert _read(first) == whole[:offs[j]]
        # A length field gone bad (beyond 1 KiB) is caught the same way: here in the first record
        # of the second segment, so the whole segment goes and the file with it.
        n1 = ob._cnt[1]
        second = "ob/" + _segs()[1]
        w2 = bytearray(_read(second))
        w2[1] = 0x7F
        _write(second, w2)
        ob = Outbox("ob", max_kb=16, seg_kb=1)
        assert _all(ob) == recs[:j] + recs[n0 + n1:]
        assert ob.discarded == len(w2)
        assert second[3:] not in _segs()


def test_full_outbox_drops_oldest_and_counts():
    with Scratch():
        ob = Outbox("ob", max_kb=4)                   # 1 KiB segments, 4 KiB in all
        assert ob._segmax == 1024
        recs = _recs(100, size=94)                    # 100..106 bytes framed
        for i, r in enumerate(recs):
            ob.append(r)
            assert ob._total <= 4096
            held = _all(ob)
            assert held == recs[i + 1 - len(held):i + 1]
            assert ob.dropped == i + 1 - len(held)
        assert ob.dropped > 50 and len(ob) >= 27      # at most a quarter is freed at a time
        assert ob.take_dropped() == 100 - len(ob)
        assert ob.dropped == 0 and ob.take_dropped() == 0
        # Acked records do not count as dropped when their segment is evicted.
        held = _all(ob)
        ob.peek(2)
        ob.ack(2)
        per_seg = ob._cnt[0]
        k = 0
        while not ob.dropped:
            ob.append(b"x%d" % k + bytes(96))
            k += 1
        assert ob.dropped == per_seg - 2
        assert ob.peek(1) == [held[per_seg]]


def test_ack_after_eviction_never_acks_an_unsent_record():
    with Scratch():
        ob = Outbox("ob", max_kb=4)
        recs = _recs(36, size=94)
        for r in recs:
            ob.append(r)
        sent = ob.peek(5)                             # in flight
        base = recs.index(sent[0])
        k = 0
        while ob.dropped < 5:                         # the oldest segment, with the 5, is evicted
            ob.append(b"y%d" % k + bytes(96))
            k += 1
        first = ob.peek(1)[0]
        ob.ack(5)                                     # the PUBACKs of the 5 arrive
        assert ob.peek(1) == [first]                  # nothing still held was acked
        assert recs.index(first) > base + 4


def test_ack_position_after_power_cut():
    # Bound: after a power cut at most ack_every-1 records whose ack() had returned come back.
    with Scratch():
        K = 8
        recs = _recs(120)
        ob = Outbox("ob", max_kb=16, seg_kb=1, ack_every=K)
        for r in recs:
            ob.append(r)
        acked = 0
        worst = 0
        for step in range(100):
            n = 1 + step % 3
            ob.peek(n)
            ob.ack(n)
            acked += n
            _cut_all(ob)
            ob = Outbox("ob", max_kb=16, seg_kb=1, ack_every=K)
            held = _all(ob)
            assert held == recs[len(recs) - len(held):], step   # never a hole, never reordered
            again = len(held) - (len(recs) - acked)
            assert 0 <= again <= K - 1, (step, again)
            worst = max(worst, again)
            acked -= again                            # those are held again: the node resends
        assert worst > 0                              # the bound was reached, not vacuous
        ob.flush()                                    # before a deep sleep: nothing comes back
        _cut_all(ob)
        assert len(Outbox("ob", max_kb=16, seg_kb=1, ack_every=K)) == len(recs) - acked


class _Reset(Exception):
    pass


class _CutOs:
    """os for outbox.py in which the power goes at the n-th remove or rename: after it took
    effect, or (before=True) just before. The only writes a kill can leave half done are the
    records and the temporary files; these are the steps that make anything final."""

    def __init__(self, n, before=False):
        self.n = n
        self.before = before
        self.hit = False

    def _step(self, fn, *args):
        self.n -= 1
        if self.n == 0 and self.before:
            self.hit = True
            raise _Reset()
        fn(*args)
        if self.n == 0:
            self.hit = True
            raise _Reset()

    def remove(self, p):
        self._step(os.remove, p)

    def rename(self, a, b):
        self._step(os.rename, a, b)

    def listdir(self, p):
        return os.listdir(p)

    def mkdir(self, p):
        os.mkdir(p)

    def stat(self, p):
        return os.stat(p)


def test_reset_inside_ack_at_every_step():
    # The SIGKILL test's near miss made exact: the power goes inside ack(2), before or after each
    # remove/rename it does. Gone may be what acks that returned took, and at most the 2 records
    # of the ack cut short (it may have taken effect); nothing else, never a hole.
    import outbox
    K = 4
    recs = _recs(90)
    took_inflight = 0
    for before in (False, True):
        n = 1
        while True:
            with Scratch():
                ob = Outbox("ob", max_kb=16, seg_kb=1, ack_every=K)
                for r in recs:
                    ob.append(r)
                cut = _CutOs(n, before)
                acked = 0
                outbox.os = cut
                try:
                    while acked < len(recs):
                        ob.peek(2)
                        ob.ack(2)
                        acked += 2
                except _Reset:
                    pass
                finally:
                    outbox.os = os
                _cut_all(ob)
                held = _all(Outbox("ob", max_kb=16, seg_kb=1, ack_every=K))
                start = len(recs) - len(held)
                assert held == recs[start:], (n, before)
                assert acked - (K - 1) <= start <= acked + 2, (n, before, start, acked)
                took_inflight += start > acked
                if not cut.hit:
                    break
            n += 1
        assert n > 20, n                          # segment deletions and ack files were both cut
    assert took_inflight > 0                      # the cut-short ack did take effect sometimes


def test_reset_inside_load_rewrite():
    # Load rewrites a segment with a torn tail to its valid prefix (temporary file, rename): the
    # power going at any step of it loses no complete record, and the next load finishes the job.
    import outbox
    recs = _recs(12, size=150)
    for n in (1,):                                # the load's one remove/rename: the rename
        for before in (False, True):
            with Scratch():
                ob = Outbox("ob", max_kb=16, seg_kb=1)
                for r in recs:
                    ob.append(r)
                ob.close()
                last = "ob/" + _segs()[-1]
                _write(last, _read(last) + b"\x30\x00\x01\x02\x03")   # a torn record
                cut = _CutOs(n, before)
                outbox.os = cut
                try:
                    Outbox("ob", max_kb=16, seg_kb=1)
                except _Reset:
                    pass
                finally:
                    outbox.os = os
                assert cut.hit
                assert _all(Outbox("ob", max_kb=16, seg_kb=1)) == recs, (n, before)
                assert not [nm for nm in os.listdir("ob") if nm.endswith(".tmp")]


def test_records_are_checked_in_pieces_at_load():
    # The load checks a record's CRC in 256-byte pieces: records of every size around the piece
    # come back whole, and a flipped byte in the last piece of the largest record cuts exactly
    # that record and what follows it.
    sizes = (0, 1, 255, 256, 257, 511, 512, 513, 1023, 1024)
    recs = [bytes([65 + i]) * n for i, n in enumerate(sizes)]
    with Scratch():
        ob = Outbox("ob", max_kb=64, seg_kb=16)
        for r in recs:
            ob.append(r)
        ob.close()
        assert _all(Outbox("ob", max_kb=64, seg_kb=16)) == recs
        seg = "ob/" + _segs()[0]
        data = bytearray(_read(seg))
        big = len(data) - 1024 - 6          # the last record: 6 bytes of header, then 1024 of data
        data[big + 6 + 1000] ^= 0x40      # in its fourth piece
        _write(seg, data)
        ob = Outbox("ob", max_kb=64, seg_kb=16)
        assert _all(ob) == recs[:-1] and ob.discarded == 1030, ob.discarded


def test_bytes_written_per_reading():
    with Scratch():
        rec = b"x" * 180
        ob = Outbox("ob", ack_every=16)
        for i in range(400):                          # online: each reading acked at once
            ob.append(rec)
            ob.peek(1)
            ob.ack(1)
        per = ob.bytes_written / 400
        assert 186 <= per <= 186 + 12 / 16 + 0.01, per
        assert len(_segs()) == 1
        ob = Outbox("ob", ack_every=16)
        for i in range(300):                          # an outage, then the drain
            ob.append(rec)
        while len(ob):
            ob.ack(len(ob.peek(10)))
        per = ob.bytes_written / 300
        assert 186 <= per <= 187, per


class Refusing:
    """A file that takes `room` more bytes, then raises ENOSPC; a partial write lands first."""

    def __init__(self, f, box):
        self.f = f
        self.box = box

    def write(self, b):
        room = self.box[0]
        if room is not None and len(b) > room:
            if room:
                self.f.write(bytes(b)[:room])
            self.box[0] = 0
            raise OSError(28)
        if room is not None:
            self.box[0] = room - len(b)
        return self.f.write(b)

    def __getattr__(self, name):
        return getattr(self.f, name)


def _refusing(ob, box, modes="ab"):
    ob._close_w()                                     # the append handle is reopened through the seam
    real = ob._open

    def opener(name, mode):
        if box[1] and mode in modes:
            raise OSError(28)
        f = real(name, mode)
        return Refusing(f, box) if mode in modes else f
    ob._open = opener


def test_enospc_on_write_leaves_outbox_consistent():
    with Scratch():
        recs = _recs(30, size=100)
        for room in (0, 3, 6, 7, 50, 105):           # nothing, part of the header, part of the data
            for d in os.listdir("."):
                _rmtree(d)
            ob = Outbox("ob", max_kb=16, seg_kb=1)
            for r in recs[:12]:
                ob.append(r)
            box = [room, False]
            _refusing(ob, box)
            try:
                ob.append(b"refused" + bytes(100))
                raise AssertionError("no OSError")
            except OSError as e:
                assert e.errno == 28
            assert len(ob) == 12 and _all(ob) == recs[:12], room
            box[0] = None                             # room again
            for r in recs[12:]:
                ob.append(r)
            assert _all(ob) == recs
            ob.ack(3)
            ob.close()
            ob = Outbox("ob", max_kb=16, seg_kb=1)
            assert _all(ob) == recs[3:], room         # the refused record never reappears
        # The flash refuses to create a new segment: nothing changes, later appends work.
        ob = Outbox("ob2", max_kb=16, seg_kb=1)
        box = [None, True]
        _refusing(ob, box)
        try:
            ob.append(b"a")
            raise AssertionError("no OSError")
        except OSError:
            pass
        assert len(ob) == 0
        box[1] = False
        ob.append(b"b")
        assert _all(Outbox("ob2")) == [b"b"]
        # The ack position file cannot be written: ack() still succeeds, is retried later.
        ob = Outbox("ob3", max_kb=16, seg_kb=1, ack_every=2)
        for r in recs[:10]:
            ob.append(r)
        box = [None, True]
        _refusing(ob, box, modes="wb")
        ob.ack(3)
        assert ob._unsaved == 3 and _all(ob) == recs[3:10]
        box[1] = False
        ob.ack(1)
        assert ob._unsaved == 0
        _cut_all(ob)
        assert _all(Outbox("ob3", max_kb=16, seg_kb=1)) == recs[4:10]


def test_on_the_virtual_nodes_flash():
    # As under `citynode sim`: a VfsPosix of a directory mounted at "/", where os.rename of
    # absolute paths fails: every path the outbox uses is relative. (The outbox loads its
    # load code when it opens, from the firmware's directory, which the mount hides here.)
    import outbox_load  # noqa: F401
    with Scratch() as sc:
        os.mkdir("flash")
        flash = sc.dir + "/flash"
        vfs.umount("/")
        vfs.mount(vfs.VfsPosix(flash), "/")
        try:
            os.chdir("/")
            ob = Outbox("outbox", max_kb=8, seg_kb=1, ack_every=2)
            recs = _recs(100, size=150)
            for r in recs:
                ob.append(r)
            ob.ack(len(ob.peek(5)))
            ob.close()
            ob = Outbox("outbox", max_kb=8, seg_kb=1, ack_every=2)
            held = _all(ob)
            assert held and held == recs[100 - len(held):]
            assert "ack" in os.listdir("outbox")
        finally:
            vfs.umount("/")
            vfs.mount(vfs.VfsPosix(), "/")
            os.chdir(sc.dir)
        assert "ack" in os.listdir(flash + "/outbox")


# --- littlefs, as on the ESP32 ---------------------------------------------------------------

class RamFlash:
    """A NOR flash for littlefs: programs and erases are counted; `cut_after` programs, power goes."""

    def __init__(self, block_size, blocks, image=None):
        self.bs = block_size
        self.n = blocks
        self.mem = bytearray(image) if image else bytearray(b"\xff" * (block_size * blocks))
        self.programmed = 0
        self.erased = 0
        self.cut_after = -1
        self.dead = False

    def readblocks(self, block, buf, off=0):
        a = block * self.bs + off
        buf[:] = self.mem[a:a + len(buf)]

    def writeblocks(self, block, buf, off=None):
        if self.dead:
            return
        a = block * self.bs + (off or 0)
        if self.cut_after == 0:
            h = len(buf) // 2                         # the program in progress lands half-way
            self.mem[a:a + h] = bytes(buf)[:h]
            self.dead = True
            raise PowerCut()
        if self.cut_after > 0:
            self.cut_after -= 1
        self.mem[a:a + len(buf)] = buf
        self.programmed += len(buf)

    def ioctl(self, op, arg):
        if op == 4:
            return self.n
        if op == 5:
            return self.bs
        if op == 6:
            self.erased += 1
            a = arg * self.bs
            self.mem[a:a + self.bs] = b"\xff" * self.bs
        return 0


class PowerCut(Exception):
    pass


def _mount(dev, mkfs=False):
    if mkfs:
        vfs.VfsLfs2.mkfs(dev)
    try:
        vfs.umount("/lfs")
    except OSError:
        pass
    vfs.mount(vfs.VfsLfs2(dev), "/lfs")
    os.chdir("/lfs")


def _unmount():
    os.chdir(_HOME)
    vfs.umount("/lfs")


def test_littlefs_full_flash_and_recovery():
    dev = RamFlash(512, 40)                           # 20 KiB of flash, an outbox allowed 64 KiB
    _mount(dev, mkfs=True)
    try:
        ob = Outbox("ob", max_kb=64, seg_kb=4)
        recs = _recs(400, size=170)
        i = 0
        try:
            while i < len(recs):
                ob.append(recs[i])
                i += 1
            raise AssertionError("the flash never filled")
        except OSError as e:
            assert e.errno == 28
        assert i > 40
        assert _all(ob) == recs[:i]
        try:
            ob.append(recs[i])
        except OSError:
            pass
        assert _all(ob) == recs[:i]
        held = Outbox("ob", max_kb=64, seg_kb=4)      # loads on a full flash
        assert _all(held) == recs[:i]
        ob.ack(i - 5)                                 # the broker is back: space is freed
        ob.append(recs[i])
        assert _all(ob) == recs[i - 5:i + 1]
        ob.close()
        assert _all(Outbox("ob", max_kb=64, seg_kb=4)) == recs[i - 5:i + 1]
    finally:
        _unmount()


def test_littlefs_power_cut_at_every_program():
    # Power goes at the k-th flash program of a run of appends and acks, for many k; the flash
    # is then mounted again: the outbox loads, and every record appended before holds.
    base = RamFlash(512, 64)
    _mount(base, mkfs=True)
    ob = Outbox("ob", max_kb=8, seg_kb=1, ack_every=4)
    recs = _recs(30, size=60)
    for r in recs[:10]:
        ob.append(r)
    ob.close()
    _unmount()
    image = bytes(base.mem)
    k = 0
    while True:
        dev = RamFlash(512, 64, image)
        _mount(dev)
        ob = Outbox("ob", max_kb=8, seg_kb=1, ack_every=4)
        dev.cut_after = k
        done = 10
        acked = 0
        try:
            for r in recs[10:]:
                ob.append(r)
                done += 1
                if done % 3 == 0:
                    ob.ack(2)
                    acked += 2
            finished = True
        except PowerCut:
            finished = False
            ob._close_w()                             # the dead flash takes nothing more
        ob = None
        _unmount()
        dev2 = RamFlash(512, 64, dev.mem)
        _mount(dev2)
        try:
            held = _all(Outbox("ob", max_kb=8, seg_kb=1, ack_every=4))
        finally:
            _unmount()
        start = recs.index(held[0]) if held else done
        assert held == recs[start:start + len(held)], k
        assert start + len(held) >= done, (k, done, len(held))   # nothing appended is lost
        assert start + len(held) <= done + 1
        assert acked - 3 - 2 <= start <= acked, (k, start, acked)
        if finished:
            break
        k += 3
    assert k > 30

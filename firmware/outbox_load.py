"""The outbox's load at boot (outbox.Outbox runs it once and drops it): find the segments, check
every record's CRC, cut torn or corrupt tails, and find the ack position. docs/outbox.md has the
format. Runs on MicroPython and CPython, like outbox.py.
"""
import struct
from binascii import crc32

import outbox
from outbox import MAX_REC, _rm

try:
    from micropython import const
except ImportError:
    const = lambda x: x  # noqa: E731

_HDR = const(6)     # as outbox.py: u16 length + u32 CRC32 of (the two length bytes + data)
_CHUNK = const(256)
_EIO = const(5)


def load(ob):
    os = outbox.os   # the outbox's: the tests cut the power through it
    try:
        names = os.listdir(ob.path)
    except OSError:
        os.mkdir(ob.path)
        names = []
    nos = []
    for nm in names:
        if nm.endswith(".tmp"):
            _rm(ob.path + "/" + nm)   # a rewrite cut short: the original is intact
        elif len(nm) == 9 and nm[0] == "s" and nm[1:].isdigit():
            nos.append(int(nm[1:]))
    nos.sort()
    ano, aoff = _read_ack(ob)
    ob._next = max(nos[-1] if nos else -1, ano) + 1
    buf = bytearray(_CHUNK)
    for no in nos:
        name = ob._name(no)
        if no < ano:
            _rm(name)             # wholly acked; its deletion was cut short
            continue
        cnt, end, acked, hoff = _scan(ob, name, aoff if no == ano else -1, buf)
        size = os.stat(name)[6]
        ob.discarded += size - end
        if not cnt:
            _rm(name)
            continue
        ok = size == end or _cut(ob, name, end, buf)
        if not ob._nos:
            ob._hoff = hoff
            ob._hack = acked
        ob._nos.append(no)
        ob._cnt.append(cnt)
        ob._siz.append(end)
        ob._sealed = not ok
    ob._n = sum(ob._cnt) - ob._hack
    ob._total = sum(ob._siz)
    if ob._nos and ob._hack == ob._cnt[0] and (len(ob._nos) > 1 or ob._sealed):
        ob._evict()             # wholly acked, and no longer the one appended to


def _read_ack(ob):
    try:
        f = ob._open(ob.path + "/ack", "rb")
    except OSError:
        return -1, 0
    try:
        n = f.readinto(ob._ackb)
    finally:
        f.close()
    if n != 12:
        return -1, 0
    no, off, crc = struct.unpack("<III", ob._ackb)
    if crc32(ob._ackv) != crc:
        return -1, 0
    return no, off


def _scan(ob, name, aoff, buf):
    # -> (valid records, end of the last valid one, records wholly before aoff, offset after them)
    hdr = ob._hdr
    off = cnt = acked = hoff = 0
    f = ob._open(name, "rb")
    try:
        while True:
            if off <= aoff:
                acked = cnt
                hoff = off
            if f.readinto(hdr) != _HDR:
                break
            ln, crc = struct.unpack("<HI", hdr)
            if ln > MAX_REC:
                break
            # checked in pieces of buf (_CHUNK bytes): no record-sized block at boot, when
            # the heap is at its most fragmented
            c = crc32(ob._lenv)
            left = ln
            while left:
                k = min(left, _CHUNK)
                mv = memoryview(buf)[0:k]
                if f.readinto(mv) != k:
                    break
                c = crc32(mv, c)
                left -= k
            if left or c != crc:
                break
            off += _HDR + ln
            cnt += 1
    finally:
        f.close()
    return cnt, off, acked, hoff


def _cut(ob, name, end, buf):
    os = outbox.os
    # Rewrite a segment to its valid prefix (MicroPython files have no truncate()).
    tmp = name + ".tmp"
    try:
        src = ob._open(name, "rb")
        try:
            dst = ob._open(tmp, "wb")
            try:
                left = end
                while left:
                    k = min(left, _CHUNK)
                    mv = memoryview(buf)[0:k]
                    if src.readinto(mv) != k or dst.write(mv) != k:
                        raise OSError(_EIO)
                    left -= k
                dst.flush()
            finally:
                dst.close()
        finally:
            src.close()
        os.rename(tmp, name)
    except OSError:
        _rm(tmp)
        return False
    ob.bytes_written += end
    return True

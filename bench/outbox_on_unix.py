# Measurements of the outbox on the MicroPython unix port; run by bench/bench_outbox.py:
#   micropython -X heapsize=64k bench/outbox_on_unix.py FIRMWARE_DIR SCRATCH_DIR
# Prints one "name value" line per figure.
import gc
import os
import sys
import time
import vfs

sys.path.insert(0, sys.argv[1])
from outbox import Outbox

os.chdir(sys.argv[2])
REC = b'{"boot":12,"seq":431,"ts":1764390000,"up":3600,"values":{"water_level_cm":123.4,"distance_cm":176.6,"air_temp_c":27.1,"rh_pct":81.2,"pressure_hpa":1008},"errors":{"pm":"timeout"}}'
REC = REC + b" " * (180 - len(REC))
assert len(REC) == 180


def out(name, value):
    print(name, value)


def us(t0):
    return time.ticks_diff(time.ticks_us(), t0)


def online(ob, n):
    # Normal operation: each reading is published and acknowledged at once.
    for _ in range(n):
        ob.append(REC)
        ob.peek(1)
        ob.ack(1)


def outage(ob, n, batch=10):
    for _ in range(n):
        ob.append(REC)
    t0 = time.ticks_us()
    while len(ob):
        ob.ack(len(ob.peek(batch)))
    return us(t0)


# --- VfsPosix: the virtual node's flash, every append flushed (fsync) ---------------------------
ob = Outbox("ob1", max_kb=512)
N = 2000
t0 = time.ticks_us()
for _ in range(N):
    ob.append(REC)
out("append_per_s", N * 1000000 // us(t0))
t0 = time.ticks_us()
ob2 = Outbox("ob1", max_kb=512)
out("load_ms_%d" % N, us(t0) // 1000)
ob2 = None

ob = Outbox("ob2", max_kb=256)
online(ob, 1000)
out("online_bytes", ob.bytes_written / 1000)

ob = Outbox("ob3", max_kb=256)
t = outage(ob, 1000, 10)
out("outage_bytes", ob.bytes_written / 1000)
out("drain10_ms", t // 1000)
ob = Outbox("ob4", max_kb=256)
out("drain1_ms", outage(ob, 1000, 1) // 1000)

# Heap: with the collector off, what append() and a peek+ack cycle leave allocated.
ob = Outbox("ob5", max_kb=64)
online(ob, 50)
for _ in range(30):
    ob.append(REC)
gc.collect()
gc.disable()
zero = 0
a0 = gc.mem_alloc()
for _ in range(110):                                  # five segment rollovers among them
    a = gc.mem_alloc()
    ob.append(REC)
    zero += gc.mem_alloc() == a
out("heap_append", (gc.mem_alloc() - a0) / 110)
out("heap_append_zero_pct", zero * 100 // 110)
gc.collect()
a = gc.mem_alloc()
for _ in range(40):
    ob.ack(len(ob.peek(1)))
out("heap_peek_ack", (gc.mem_alloc() - a) / 40)
gc.enable()
ob = None
gc.collect()
out("heap_free_kb", gc.mem_free() // 1024)


# --- littlefs on a file-backed NOR flash, as on an ESP32 (4 KiB blocks) -----------------------
class FileFlash:
    def __init__(self, name, block_size, blocks):
        self.bs = block_size
        self.n = blocks
        self.f = open(name, "w+b")
        ff = b"\xff" * block_size
        for _ in range(blocks):
            self.f.write(ff)
        self.programmed = 0
        self.erased = 0

    def readblocks(self, block, buf, off=0):
        self.f.seek(block * self.bs + off)
        self.f.readinto(buf)

    def writeblocks(self, block, buf, off=None):
        self.f.seek(block * self.bs + (off or 0))
        self.f.write(buf)
        self.programmed += len(buf)

    def ioctl(self, op, arg):
        if op == 4:
            return self.n
        if op == 5:
            return self.bs
        if op == 6:
            self.erased += 1
        return 0


def lfs_run(tag, seg_kb, fn, n):
    dev = FileFlash("flash-%s.img" % tag, 4096, 256)   # 1 MiB littlefs partition
    vfs.VfsLfs2.mkfs(dev)
    vfs.mount(vfs.VfsLfs2(dev), "/lfs")
    os.chdir("/lfs")
    ob = Outbox("outbox", max_kb=64, seg_kb=seg_kb)
    ob.append(REC)                                    # warm: the directory and first segment exist
    ob.ack(len(ob.peek(1)))
    p0, e0, b0 = dev.programmed, dev.erased, ob.bytes_written
    fn(ob)
    os.chdir(sys.argv[2])
    vfs.umount("/lfs")
    dev.f.close()
    os.remove("flash-%s.img" % tag)
    return (dev.programmed - p0) / n, (dev.erased - e0) / n, (ob.bytes_written - b0) / n


for seg_kb in (4, 1):
    p, e, b = lfs_run("on%d" % seg_kb, seg_kb, lambda ob: online(ob, 1000), 1000)
    out("lfs_online_prog_seg%d" % seg_kb, p)
    out("lfs_online_erase_seg%d" % seg_kb, e)
    out("lfs_online_bytes_seg%d" % seg_kb, b)
    p, e, b = lfs_run("out%d" % seg_kb, seg_kb, lambda ob: outage(ob, 300), 300)
    out("lfs_outage_prog_seg%d" % seg_kb, p)
    out("lfs_outage_erase_seg%d" % seg_kb, e)
    out("lfs_outage_bytes_seg%d" % seg_kb, b)
print("DONE")

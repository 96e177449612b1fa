# Run by tests/test_outbox_crash.py on the MicroPython unix port, in a scratch directory:
#   micropython outbox_crash_child.py FIRMWARE_DIR FIRST_NUMBER
# Loads the outbox, prints what it holds, then appends numbered records for ever (acking 2 of
# every 3), printing each number only after append() or ack() returned. It is killed with SIGKILL.
import sys

sys.path.insert(0, sys.argv[1])
from outbox import Outbox

w = sys.stdout.write
ob = Outbox("ob", max_kb=1024, seg_kb=4, ack_every=8)
runs = []
for rec in ob.peek(1 << 30):
    k = int(rec.split(b"|")[0])
    if runs and runs[-1][1] + 1 == k:
        runs[-1][1] = k
    else:
        runs.append([k, k])
ob.rewind()
w("HELD %s\n" % " ".join("%d-%d" % (a, b) for a, b in runs))
n = max(int(sys.argv[2]), runs[-1][1] + 1 if runs else 0)   # the killed append may have landed
pad = b"|" + b"t" * 60
while True:
    ob.append(b"%d" % n + pad)
    w("A %d\n" % n)
    n += 1
    if n % 3 == 0:
        got = ob.peek(2)
        ob.ack(len(got))
        w("K %s\n" % got[-1].split(b"|")[0].decode())

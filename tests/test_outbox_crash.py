"""SIGKILL a MicroPython process that appends to the outbox, 20 times at random moments (seeded):
the outbox always loads, every record whose append() returned is held unless its ack() returned,
what is held is one run of consecutive numbers, and at most ack_every-1 acked records come back.

An ack() cut short by the kill may have taken effect (it deletes a wholly acked segment, then
renames the new ack position into place) although its "K" line never came: the records it was
acking, the oldest held, may be gone. That is not a loss: the broker had acknowledged them."""
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MICROPYTHON = str(Path(sys.executable).with_name("micropython"))
CHILD = ROOT / "tests" / "unix" / "outbox_crash_child.py"
ACK_EVERY = 8


def _run_until_killed(cwd, first, after, delay):
    """Start the child, SIGKILL it `delay` s after it has loaded and printed `after` more lines;
    return its complete lines. Counting lines, not time, keeps a slow (loaded) machine from
    turning mid-stream kills into kills right after the load."""
    p = subprocess.Popen([MICROPYTHON, str(CHILD), str(ROOT / "firmware"), str(first)], cwd=cwd,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    fd = p.stdout.fileno()
    buf = b""
    deadline = None
    while True:
        if deadline is None and buf.count(b"\n") > after:
            deadline = time.monotonic() + delay     # far enough: now kill at a random moment
        wait = 0.01
        if deadline is not None:
            wait = deadline - time.monotonic()
            if wait <= 0:
                break
        r, _, _ = select.select([fd], [], [], min(wait, 0.01))
        if r:
            chunk = os.read(fd, 65536)
            if not chunk:
                break                               # it died by itself
            buf += chunk
    p.send_signal(signal.SIGKILL)
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        buf += chunk
    p.wait()
    err = p.stderr.read().decode()
    p.stdout.close()
    p.stderr.close()
    assert p.returncode == -signal.SIGKILL, "child ended by itself (%s): %s" % (p.returncode, err[-2000:])
    return buf.decode().split("\n")[:-1]            # the last piece has no newline: not complete


def _held(line):
    assert line.startswith("HELD"), line
    nums = []
    for run in line.split()[1:]:
        a, b = run.split("-")
        nums.extend(range(int(a), int(b) + 1))
    return nums


def test_sigkill_20_times(tmp_path):
    _kill_20_times(tmp_path, 20251129)


def _kill_20_times(tmp_path, seed):
    rnd = random.Random(seed)
    appended = set()     # numbers whose append() returned
    acked_upto = -1      # acks go oldest first: every number up to this one was acked
    nxt = 0
    in_ack = set()       # records of an ack() the last kill may have cut short
    kills_mid_stream = 0
    for i in range(21):
        if i < 20:
            lines = _run_until_killed(tmp_path, nxt, rnd.randint(20, 400), rnd.uniform(0, 0.02))
        else:
            lines = _run_until_killed(tmp_path, nxt, 0, 0.0)    # right after the load
        held = _held(lines[0])                       # the outbox loaded, and holds:
        if held:
            assert held == list(range(held[0], held[0] + len(held))), "a hole or reordering"
        hs = set(held)
        lost = {n for n in appended if n > acked_upto} - hs - in_ack
        assert not lost, "lost after kill %d: %s" % (i, sorted(lost)[:10])
        assert hs <= appended | {nxt}, "held, never appended: %s" % sorted(hs - appended - {nxt})
        back = [n for n in held if n <= acked_upto]
        assert len(back) <= ACK_EVERY - 1, "%d acked records came back" % len(back)
        if held:
            acked_upto = held[0] - 1                 # those are held again: the node resends them
        appended |= hs
        if i == 20:
            break
        for ln in lines[1:]:
            kind, num = ln.split()
            if kind == "A":
                appended.add(int(num))
            else:
                acked_upto = int(num)
        nxt = max(appended) + 1
        # The child acks the 2 oldest held right after "A m" when (m + 1) % 3 == 0; after any
        # other last line the operation cut short was an append.
        last = lines[-1].split() if len(lines) > 1 else ["K"]
        in_ack = set()
        if last[0] == "A" and (int(last[1]) + 1) % 3 == 0:
            in_ack = {acked_upto + 1, acked_upto + 2}
        kills_mid_stream += len(lines) > 50
    assert kills_mid_stream >= 15
    assert len(appended) > 1000

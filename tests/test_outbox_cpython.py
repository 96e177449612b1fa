"""The outbox against a model (a list), on CPython with hypothesis: random appends, batches of
peek/ack with a full outbox evicting under them, clean reopens, power cuts, torn tails, stray bytes
and a flash that refuses writes. The outbox always loads, and a record leaves only by ack, by a
full-outbox eviction (counted in `dropped`) or as the torn tail of a cut; after a power cut at most
ack_every-1 acked records come back, just before the held ones."""
import os
import shutil
import sys
import tempfile
from pathlib import Path

from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "firmware"))
from outbox import Outbox  # noqa: E402

K = 3
OPTS = dict(max_kb=4, seg_kb=1, ack_every=K)     # 1 KiB segments, 4 in all: rollover and eviction


class Refusing:
    """Takes `room` bytes (a partial write lands), then raises ENOSPC, like a full flash."""

    def __init__(self, f, room):
        self.f, self.room = f, room

    def write(self, b):
        if len(b) > self.room:
            self.f.write(bytes(b)[:self.room])
            self.room = 0
            raise OSError(28, "No space left on device")
        self.room -= len(b)
        return self.f.write(b)

    def __getattr__(self, name):
        return getattr(self.f, name)


class OutboxModel(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.tmp = tempfile.mkdtemp(prefix="obhyp-")
        self.path = os.path.join(self.tmp, "ob")
        self.ob = Outbox(self.path, **OPTS)
        self.held = []      # the model: records not acked, oldest first
        self.acked = []     # acked records, in order (the last few may come back after a cut)
        self.n = 0

    def teardown(self):
        self.ob._close_w()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _rec(self, size):
        self.n += 1
        return (b"%d|" % self.n + b"x" * size)[:max(size, len(b"%d|" % self.n))]

    def _appended(self, rec):
        self.held.append(rec)
        d = self.ob.take_dropped()
        assert d < len(self.held)
        del self.held[:d]   # the oldest go; the invariant checks they were exactly these

    def _reloaded(self, lost_tail=0):
        """After a power cut: the held records, minus a torn tail, maybe behind a few acked ones."""
        self.ob = Outbox(self.path, **OPTS)
        got = self.ob.peek(1 << 30)
        self.ob.rewind()
        if lost_tail:
            self.held = self.held[:-lost_tail]
        extra = len(got) - len(self.held)
        assert 0 <= extra <= K - 1, (extra, len(got), len(self.held))
        assert got[extra:] == self.held
        assert got[:extra] == self.acked[len(self.acked) - extra:]
        if extra:
            del self.acked[-extra:]
        self.held = got

    def _last_segment(self):
        return os.path.join(self.path, max(n for n in os.listdir(self.path) if n.startswith("s")))

    @rule(size=st.integers(0, 300))
    def append(self, size):
        rec = self._rec(size)
        self.ob.append(rec)
        self._appended(rec)

    @rule(p=st.integers(1, 12), more=st.lists(st.integers(0, 300), max_size=12), a=st.integers(0, 12))
    def batch(self, p, more, a):
        # A batch is handed out, readings keep coming (the outbox may evict under the batch),
        # then `a` PUBACKs arrive; the connection goes before the rest (rewind).
        out = self.ob.peek(p)
        assert out == self.held[:p]
        for size in more:
            rec = self._rec(size)
            self.ob.append(rec)
            self._appended(rec)
        a = min(a, len(out))
        self.ob.ack(a)
        self.ob.rewind()
        for rec in out[:a]:
            if rec in self.held:        # not evicted meanwhile: it must be the oldest
                assert self.held[0] == rec
                self.held.pop(0)
                self.acked.append(rec)

    @rule()
    def reopen_clean(self):
        self.ob.close()
        self.ob = Outbox(self.path, **OPTS)
        got = self.ob.peek(1 << 30)
        self.ob.rewind()
        assert got == self.held

    @rule()
    def power_cut(self):
        self.ob._close_w()
        self._reloaded()

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def torn_tail(self, data):
        # The newest record was being written when the power went: a cut inside it.
        # (After a refused append the file may end in stray bytes: cut from the last valid record.)
        self.ob._close_w()
        seg = self.ob._name(self.ob._nos[-1])
        cut = data.draw(st.integers(1, 6 + len(self.held[-1])), label="cut")
        with open(seg, "r+b") as f:
            f.truncate(self.ob._siz[-1] - cut)
        self._reloaded(lost_tail=1)

    @precondition(lambda self: any(n.startswith("s") for n in os.listdir(self.path)))
    @rule(junk=st.binary(min_size=1, max_size=40))
    def stray_bytes(self, junk):
        self.ob._close_w()
        with open(self._last_segment(), "ab") as f:
            f.write(junk)
        self._reloaded()

    @rule(size=st.integers(0, 300), room=st.integers(0, 320))
    def flash_refuses(self, size, room):
        rec = self._rec(size)
        if room >= 6 + len(rec):
            room = 0
        real = self.ob._open
        self.ob._close_w()
        self.ob._open = lambda name, mode: Refusing(real(name, mode), room) if mode == "ab" else real(name, mode)
        try:
            self.ob.append(rec)
            raise AssertionError("no OSError")
        except OSError as e:
            assert e.errno == 28
        finally:
            del self.ob._open
        self.held = self.held[self.ob.take_dropped():]

    @invariant()
    def matches_model(self):
        assert len(self.ob) == len(self.held)
        assert self.ob.peek(len(self.held) + 1) == self.held
        self.ob.rewind()
        assert self.ob._total <= 4096


OutboxModel.TestCase.settings = settings(max_examples=80, stateful_step_count=30, deadline=None)
TestOutboxModel = OutboxModel.TestCase

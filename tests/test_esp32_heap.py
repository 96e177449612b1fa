"""The memory goals on the virtual ESP32 (issue 11), short enough for every `make test`: the
bench's own harness (bench/node_cycles_mp.py) on the 32-bit build, publishing to a Mosquitto of
the test's own. A run passes only with 0 sensor errors (a sensor's MemoryError is one), every
reading delivered and every command answered (one every 5 cycles: ping, set and get_config in
turn, for which the node loads its command code). bench/bench_node.py runs the same for 1,000 cycles and finds the smallest heap."""
import sys

import pytest

from conftest import ROOT
from citynode import vesp32

sys.path.insert(0, str(ROOT / "bench"))
import bench_node  # noqa: E402

CYCLES = 25


def exe_of(kind):
    exe = vesp32.binary(kind)
    if exe is None:
        pytest.skip(vesp32.why_missing())
    return exe


@pytest.mark.parametrize("kind,node,heap_kb", [
    ("frozen", "every", 56),     # the issue's goal: every sensor type in an ESP32's boot heap
    ("frozen", "water", 56),
    # From .mpy files the goals (56 KB water node, 72 KB every sensor type) are not met: these
    # hold today's figures (bench: smallest 76 and 96 KB, ping, set and get_config answered)
    # with 8 and 12 KB of margin against regression (the bisection's figures vary by 4 KB).
    ("plain", "water", 84),
    ("plain", "every", 108),
])
def test_node_runs_clean_in_the_heap(tmp_path, broker, kind, node, heap_kb):
    exe = exe_of(kind)
    d = bench_node.flash_dir(tmp_path, bench_node.NODES[node], exe)
    r, err = bench_node.run(d, broker, "%dk" % heap_kb, CYCLES, exe=exe)
    assert err is None, err
    assert bench_node.clean(r), (r["errors"], r["undelivered"], r["commands"], r["commands_ok"])
    assert r["commands"] == CYCLES // bench_node.CMD_EVERY
    assert r["cycles"] == CYCLES and r["mem_total"] <= heap_kb * 1024


def test_smallest_heap_counts_a_sensor_memory_error_as_a_failure(monkeypatch):
    # The node turns a sensor's MemoryError into an `error` entry and goes on: below 60 KB this
    # fake node "runs" but with errors, below 48 KB it crashes. The search must answer 60.
    def fake_run(d, broker, heap, cycles, threshold=0, exe=None):
        kb = int(heap[:-1])
        if kb < 48:
            return None, ["MemoryError: memory allocation failed"]
        errors = {"water:MemoryError": 1} if kb < 60 else {}
        return {"errors": errors, "undelivered": 0}, None

    monkeypatch.setattr(bench_node, "run", fake_run)
    assert bench_node.smallest_heap(None, None, None) == 60
    # and a run with readings left undelivered is not clean either
    assert not bench_node.clean({"errors": {}, "undelivered": 1})
    # nor one where a command (the harness sends one every 5 cycles) was not answered ok
    assert not bench_node.clean({"errors": {}, "undelivered": 0, "commands": 4, "commands_ok": 3})


def test_a_node_from_files_grows_its_heap_once_as_a_board_does(tmp_path, broker):
    # A stock image boots with an ESP32's 56 KB heap, in which the water node from files does not
    # run (the plain rows above hold it at 84 KB). On a board py/gc.c then adds an area from the
    # ESP-IDF heap (MICROPY_GC_SPLIT_HEAP_AUTO), as large as the heap so far; the virtual ESP32 is
    # built the same way, into a budget of ESP-IDF heap (tools/idfheap/).
    exe = exe_of("plain")
    d = bench_node.flash_dir(tmp_path, bench_node.NODES["water"], exe)
    r, err = bench_node.run(d, broker, "56k", CYCLES, exe=exe, idf=160 * 1024)
    assert err is None, err
    assert bench_node.clean(r), (r["errors"], r["undelivered"], r["commands"], r["commands_ok"])
    assert r["idf_areas"] == 1, r["idf_taken"]
    assert 56 * 1024 <= r["idf_taken"] <= 60 * 1024    # the heap doubled: not what the node lacked
    # the growth is what made it run: without ESP-IDF heap the same node fails in 56 KB
    r, err = bench_node.run(d, broker, "56k", CYCLES, exe=exe)
    assert not bench_node.clean(r) and (r is None or r["idf_areas"] == 0)

"""The node on the virtual ESP32 when its heap may grow, as a board's does: it boots with an
ESP32's 56 KB GC heap and, when a collection leaves no room, py/gc.c adds an area taken from the
ESP-IDF heap (MICROPY_GC_SPLIT_HEAP_AUTO, as the esp32 port is built), which the virtual ESP32
emulates with a budget (tools/idfheap/). bench_node.py measures what fits without growth; this
says what a stock image running the node from files takes from the ESP-IDF heap, which Wi-Fi and
TLS also draw on, and the smallest free block with which it still runs.

    python bench/bench_node_growth.py      # prints a markdown section (make bench)
"""
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_node as bn  # noqa: E402
from citynode import vesp32  # noqa: E402

BOOT_KB = 56       # an ESP32's GC heap at boot (ports/esp32/mpconfigport.h)
AMPLE_KB = 160     # more ESP-IDF heap than one doubling of the GC heap takes
CYCLES = 200       # with a command every 5 cycles (ping, set, get_config in turn)


def smallest_block(d, b, exe):
    """The smallest ESP-IDF heap (KB, to 4 KB) with which 20 cycles run clean from a 56 KB boot:
    0 when none is needed (the search starts below 0 so that 0 is tried), None over 64 KB."""
    return bn.bisect_kb(-4, 64, lambda kb: bn.clean(bn.run(d, b, "%dk" % BOOT_KB, bn.SHORT_CYCLES, exe=exe,
                                                           idf=kb * 1024)[0]))


def main():
    builds = [(k, vesp32.binary(k)) for k in vesp32.KINDS]
    print("## The virtual ESP32 with a heap that grows, as a stock board's does\n")
    if not all(exe for _, exe in builds):
        print("Not measured: %s" % vesp32.why_missing())
        return
    tmp = tempfile.mkdtemp(prefix="citynode-bench-growth-")
    builds = [(k, Path(shutil.copy(exe, Path(tmp) / Path(exe).name))) for k, exe in builds]
    b = bn.Mosquitto(Path(tmp) / "broker")
    b.start()
    rows = []
    try:
        for kind, exe in builds:
            for node in ("water", "every"):
                d = bn.flash_dir(tmp, bn.NODES[node], exe, name="%s-%s" % (kind, node))
                r, err = bn.run(d, b, "%dk" % BOOT_KB, CYCLES, exe=exe, idf=AMPLE_KB * 1024)
                rows.append((kind, node, r, err, smallest_block(d, b, exe)))
    finally:
        b.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print("The harness of the section above (bench_node.py: %d cycles, a command every 5, a run counts only "
          "when clean) on the virtual ESP32 booted with an ESP32's %d KB GC heap and %d KB of ESP-IDF heap "
          "to grow into. The virtual ESP32 is built as the esp32 port is (`MICROPY_GC_SPLIT_HEAP_AUTO`): "
          "py/gc.c adds an area only when a collection leaves no room, as large as the heap so far (it "
          "doubles) or the allocation, and no larger than the ESP-IDF heap's largest free block "
          "(tools/idfheap/ stands in for that heap). The last column: the smallest such block with which "
          "20 cycles still run clean.\n" % (CYCLES, BOOT_KB, AMPLE_KB))
    print("| build | node | %d cycles from a %d KB boot heap | taken from the ESP-IDF heap | "
          "smallest free block it runs with |" % (CYCLES, BOOT_KB))
    print("|---|---|---|---|---|")
    for kind, node, r, err, block in rows:
        if bn.clean(r):
            res = "runs: 0 errors, 0 undelivered, %d/%d commands ok" % (r["commands_ok"], r["commands"])
        elif r:
            res = "**fails**: %s errors, %d undelivered" % (len(r["errors"]), r["undelivered"])
        else:
            res = "**fails**: %s" % " ".join(err or ["no result"])
        taken = ("%.1f KB in %d area%s" % (r["idf_taken"] / 1024, r["idf_areas"], "" if r["idf_areas"] == 1 else "s")
                 if r and r["idf_areas"] else "none" if r else "-")
        print("| %s | %s | %s | %s | %s |" % (kind, bn.NODE_NAMES[node], res, taken,
                                               "none needed" if block == 0 else "%d KB" % block if block
                                               else "> 64 KB"))
    print("\n- A from-files node grows its heap once, and py/gc.c takes what doubles it, not what the node "
          "lacks: with the block free, a board gives the GC heap about 56 KB of its ESP-IDF heap for good "
          "(an area is given back only when it empties). With less free it takes what there is, down to "
          "the last column's figure. Not measured here: what Wi-Fi and a TLS session leave free on a real "
          "ESP32 (`esp32.idf_heap_info(esp32.HEAP_DATA)` there tells the largest free block).")


if __name__ == "__main__":
    main()

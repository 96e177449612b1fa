"""Outbox benchmark on the MicroPython unix port (-X heapsize=64k); prints a markdown section.

    .venv/bin/python bench/bench_outbox.py

The measuring runs in bench/outbox_on_unix.py: VfsPosix (the virtual node's flash, each append
fsync'd) for speed, logical bytes and heap, and littlefs on a file-backed 4 KiB-block NOR flash
(as on an ESP32) for what the flash itself programs and erases per reading.
"""
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MICROPYTHON = str(Path(sys.executable).with_name("micropython"))

# Flash life: a typical ESP32 MicroPython image gives littlefs 2 MiB (512 blocks of 4 KiB); NOR
# sectors are rated 100k erase cycles; littlefs spreads erases over the free blocks.
FREE_BLOCKS = 480
CYCLES = 100_000


def measure():
    with tempfile.TemporaryDirectory(prefix="obbench-") as scratch:
        p = subprocess.run([MICROPYTHON, "-X", "heapsize=64k", str(ROOT / "bench/outbox_on_unix.py"),
                            str(ROOT / "firmware"), scratch], capture_output=True, text=True, timeout=120)
    if "DONE" not in p.stdout:
        sys.exit("benchmark failed:\n" + p.stdout + p.stderr)
    return {k: float(v) for k, v in (ln.split() for ln in p.stdout.splitlines() if ln != "DONE")}


def years(erases_per_reading, interval_s):
    return FREE_BLOCKS * CYCLES / erases_per_reading * interval_s / 86400 / 365


def main():
    m = measure()
    e = m["lfs_online_erase_seg4"]
    rows = [
        ("appends per second, 180-byte record, each fsync'd (VfsPosix)", "%d" % m["append_per_s"]),
        ("load (boot) of 2,000 held records", "%d ms" % m["load_ms_2000"]),
        ("bytes written per reading, online (append + peek + ack each)", "%.1f" % m["online_bytes"]),
        ("bytes written per reading, outage of 1,000 then drain", "%.1f" % m["outage_bytes"]),
        ("drain 1,000 held records, peek(10) + ack(10), no network", "%d ms" % m["drain10_ms"]),
        ("drain 1,000 held records, peek(1) + ack(1), no network", "%d ms" % m["drain1_ms"]),
        ("heap per append after warm-up (amortised over segment rollovers)", "%.1f B" % m["heap_append"]),
        ("appends that allocate nothing", "%d %%" % m["heap_append_zero_pct"]),
        ("heap per peek(1) + ack(1) (the record itself, a list, a file object)", "%.0f B" % m["heap_peek_ack"]),
        ("littlefs: bytes programmed per reading, online, 4 KiB segments", "%.0f" % m["lfs_online_prog_seg4"]),
        ("littlefs: bytes programmed per reading, outage of 300, 4 KiB segments", "%.0f" % m["lfs_outage_prog_seg4"]),
        ("littlefs: bytes programmed per reading, online, 1 KiB segments", "%.0f" % m["lfs_online_prog_seg1"]),
        ("littlefs: block erases per reading, online / outage, 4 KiB segments",
         "%.2f / %.2f" % (m["lfs_online_erase_seg4"], m["lfs_outage_erase_seg4"])),
        ("littlefs: block erases per reading, online / outage, 1 KiB segments",
         "%.2f / %.2f" % (m["lfs_online_erase_seg1"], m["lfs_outage_erase_seg1"])),
        ("flash life at one reading a minute / every 10 s / every second",
         "%.0f / %.0f / %.1f years" % (years(e, 60), years(e, 10), years(e, 1))),
    ]
    print("## Outbox benchmark (MicroPython unix port, -X heapsize=64k)\n")
    print("| measure | value |")
    print("|---|---|")
    for name, value in rows:
        print("| %s | %s |" % (name, value))
    print("\nRecord: 180 bytes of telemetry JSON, framed in 186. Bytes written count what the outbox\n"
          "asks of the file system (data, framing, ack position files). littlefs copies the partly\n"
          "filled last block of a file on every flushed append (copy-on-write), so the flash programs\n"
          "more and erases about one 4 KiB block per reading; flash life assumes %d free blocks\n"
          "(a 2 MiB littlefs partition) rated %d cycles, spread by littlefs's wear levelling."
          % (FREE_BLOCKS, CYCLES))


if __name__ == "__main__":
    main()

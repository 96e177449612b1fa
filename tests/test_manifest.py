"""firmware/manifest.py, what a board's image freezes: asyncio, every module a board runs, the
drivers package; never main.py (a deploy may change the boot) nor the simulator."""
import os

from conftest import FIRMWARE


def entries():
    calls = []
    api = {"include": lambda p, **k: calls.append(("include", p)),
           "module": lambda p, **k: calls.append(("module", p)),
           "package": lambda p, **k: calls.append(("package", p))}
    cwd = os.getcwd()
    os.chdir(FIRMWARE)    # as MicroPython's manifest tool runs it: relative to its own directory
    try:
        exec((FIRMWARE / "manifest.py").read_text(), api)
    finally:
        os.chdir(cwd)
    return calls


def test_manifest_freezes_the_board_firmware_and_nothing_else():
    calls = entries()
    modules = {p for k, p in calls if k == "module"}
    expected = {p.name for p in FIRMWARE.glob("*.py")} - {"main.py", "manifest.py"}
    expected = {n for n in expected if not n.startswith("simhw")}
    assert modules == expected and "node.py" in modules
    assert ("package", "drivers") in calls and ("include", "$(MPY_DIR)/extmod/asyncio") in calls
    assert not [p for k, p in calls if "sim" in p]

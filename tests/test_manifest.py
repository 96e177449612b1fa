"""firmware/manifest.py, what a board's image freezes: asyncio, every module a board runs, the
drivers package; never main.py (a deploy may change the boot) nor the simulator."""
import os

import pytest

from conftest import FIRMWARE
from citynode import vesp32


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


def test_the_virtual_esp32_has_frozen_every_module_the_manifest_names():
    exe = vesp32.binary("frozen")
    if exe is None:
        pytest.skip(vesp32.why_missing())
    frozen = vesp32.frozen_modules(exe)
    want = {p for k, p in entries() if k == "module"} | {
        "drivers/" + p.name for p in (FIRMWARE / "drivers").glob("*.py")}
    assert want <= frozen, want - frozen
    assert "main.py" not in frozen and "manifest.py" not in frozen


def test_deploy_knows_what_a_frozen_image_holds():
    # deploy skips what an image of the same version has frozen in: the manifest's modules
    from citynode import deploy
    src = deploy.sources(FIRMWARE.parent)
    frozen = {p for k, p in entries() if k == "module"} | {
        "drivers/" + p.name for p in (FIRMWARE / "drivers").glob("*.py")}
    assert deploy.frozen_paths(src) == frozen

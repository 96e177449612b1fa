"""`make typecheck` as part of `make test`: every file a board runs type-checks against the ESP32
stubs with 0 errors, and the check is not toothless: a call the ESP32 cannot make fails it."""
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import typecheck  # noqa: E402


@pytest.mark.parametrize("profile", sorted(typecheck.STUBS))
def test_board_files_have_no_type_errors(profile):
    n, lines = typecheck.check(profile)
    assert n == 0, "\n".join(lines)


def test_a_call_the_esp32_cannot_make_fails_the_check(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import machine\n\nmachine.Pin(5).frobnicate()\n")
    n, lines = typecheck.check("esp32", [bad])
    assert n == 1 and "frobnicate" in lines[0] and "bad.py:3" in lines[0], lines


def test_the_files_are_what_a_board_runs():
    names = {p.relative_to(ROOT / "firmware").as_posix() for p in typecheck.board_files()}
    assert {"main.py", "node.py", "link.py", "drivers/bme280.py"} <= names
    assert not {n for n in names if n.startswith("sim") or n == "manifest.py"}, names

"""tools/esp32-unix.sh (`make esp32-unix`): without a MicroPython source it says in one line that
the 32-bit run is skipped and why, and exits 0 (make test goes on); with one, a build whose inputs
did not change is not redone."""
import os
import shutil
import subprocess

from conftest import ROOT
from citynode import vesp32

SCRIPT = ROOT / "tools" / "esp32-unix.sh"


def run(script, out, **env):
    e = {k: v for k, v in os.environ.items() if k != "MICROPY_SRC"}
    e.update(env, ESP32_UNIX_OUT=str(out))
    return subprocess.run(["bash", str(script)], capture_output=True, text=True, env=e, timeout=600)


def test_no_source_anywhere_is_one_line_and_not_a_failure(tmp_path):
    # a checkout with no ../shared beside it and no MICROPY_SRC
    repo = tmp_path / "repo"
    (repo / "tools").mkdir(parents=True)
    shutil.copy(SCRIPT, repo / "tools")
    out = tmp_path / "out"
    out.mkdir()
    (out / "micropython-frozen").write_text("a stale build")
    p = run(repo / "tools" / "esp32-unix.sh", out)
    assert p.returncode == 0 and p.stdout == "", p
    assert p.stderr.splitlines() == ["esp32-unix: 32-bit run skipped: no MicroPython source (set MICROPY_SRC "
                                     "to a checkout or a source tarball; none in ../shared/micropython/)"]
    assert (out / "SKIPPED").read_text().strip() == p.stderr.strip()
    assert not (out / "micropython-frozen").exists()     # never test another checkout's firmware


def test_a_micropy_src_that_is_not_there(tmp_path):
    p = run(SCRIPT, tmp_path, MICROPY_SRC=str(tmp_path / "nowhere"))
    assert p.returncode == 0 and len(p.stderr.splitlines()) == 1 and "does not exist" in p.stderr, p
    d = tmp_path / "notmp"
    d.mkdir()
    p = run(SCRIPT, tmp_path, MICROPY_SRC=str(d))
    assert p.returncode == 0 and "is not a MicroPython source tree" in p.stderr, p


def test_an_unchanged_build_is_not_redone():
    if vesp32.binary("frozen") is None:
        import pytest
        pytest.skip(vesp32.why_missing())
    subprocess.run(["bash", str(SCRIPT)], capture_output=True, timeout=600, check=True)   # up to date
    before = vesp32.binary("frozen").stat().st_mtime_ns
    p = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0 and "building" not in p.stderr, p.stderr
    assert vesp32.binary("frozen").stat().st_mtime_ns == before

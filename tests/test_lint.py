"""pyflakes over everything a board or the host tool runs: an undefined name in a path that tests
seldom take (an error branch, a rare command) is found here, not in the field."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_no_undefined_names_or_dead_imports():
    # firmware/manifest.py is run by MicroPython's manifest tool, which hands it include() & co.
    fw = [str(p) for p in (ROOT / "firmware").rglob("*.py") if p.name != "manifest.py"]
    p = subprocess.run([sys.executable, "-m", "pyflakes", *fw, "host_tools/citynode/cli",
                        "host_tools/citynode/sim"] + [str(f) for f in (ROOT / "host_tools/citynode").glob("*.py")],
                       cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr

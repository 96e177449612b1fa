"""Shared fixtures: a real Mosquitto per test on a free loopback port, and the collector
that runs tests/unix/mptest_*.py on the MicroPython unix port (one process per file)."""
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
MICROPYTHON = str(Path(sys.executable).with_name("micropython"))
sys.path.insert(0, str(ROOT / "tests"))

from helpers import Mirror, Mosquitto, free_port  # noqa: E402


@pytest.fixture
def mirror(tmp_path):
    """A firmware mirror on 127.0.0.1:<free port> (helpers.Mirror): .url, .put(name, data)."""
    m = Mirror(tmp_path / "mirror")
    yield m
    m.stop()


@pytest.fixture
def broker(tmp_path):
    """A Mosquitto of this test's own, on 127.0.0.1:<free port>, persistent, anonymous."""
    b = Mosquitto(tmp_path / "broker")
    b.start()
    yield b
    b.stop()


# --- MicroPython unix-port tests -------------------------------------------------------------

_TEST_RE = re.compile(r"^(?:async\s+)?def\s+(test_\w+)\s*\(", re.M)


def pytest_pycollect_makemodule(module_path, parent):
    # mptest_*.py are MicroPython modules: run them on the unix port, never import them here.
    if module_path.name.startswith("mptest_"):
        return MPFile.from_parent(parent, path=module_path)


class MPFile(pytest.File):
    def collect(self):
        for name in _TEST_RE.findall(self.path.read_text()):
            yield MPItem.from_parent(self, name=name)

    def results(self):
        if not hasattr(self, "_results"):
            self._results = run_mp_file(self.path)
        return self._results


def run_mp_file(path, names=(), timeout=300):
    p = subprocess.run([MICROPYTHON, str(ROOT / "tests/unix/runner.py"), str(path), *names],
                       cwd=str(path.parent), capture_output=True, text=True, timeout=timeout)
    res, cur = {}, None
    for line in p.stdout.splitlines():
        if cur is not None:
            if line == "END":
                cur = None
            else:
                res[cur] += line + "\n"
            continue
        parts = line.split(" ")
        if parts[0] == "PASS":
            res[parts[1]] = None
        elif parts[0] == "FAIL":
            cur = parts[1]
            res[cur] = ""
    if "DONE" not in p.stdout.splitlines():
        res["__crash__"] = "runner did not finish (rc=%d)\n%s\n%s" % (p.returncode, p.stdout[-3000:], p.stderr[-3000:])
    return res


class MPItem(pytest.Item):
    def runtest(self):
        res = self.parent.results()
        if self.name not in res:
            raise MPFailure(res.get("__crash__", "test did not run"))
        if res[self.name] is not None:
            raise MPFailure(res[self.name])

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, MPFailure):
            return "MicroPython unix port:\n" + str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, 0, "mp::%s" % self.name


class MPFailure(Exception):
    pass

"""Shared fixtures: a real Mosquitto per test on a free loopback port, and the collector
that runs tests/unix/mptest_*.py on the MicroPython unix port (one process per file and
interpreter): the pinned 64-bit port (`[unix]`) and the virtual ESP32, the 32-bit port with the
firmware frozen in that `make esp32-unix` builds (`[esp32]`, skipped with the reason when absent)."""
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
MICROPYTHON = str(Path(sys.executable).with_name("micropython"))
sys.path.insert(0, str(ROOT / "tests"))

from citynode import vesp32  # noqa: E402

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


_BUILT = []


def interpreters():
    """(id, executable or None, why it is missing) of each interpreter the unix-port tests run on.
    The virtual ESP32 is brought up to date first (seconds when cached): its frozen firmware must
    be the firmware under test, however pytest was started."""
    if not _BUILT:
        _BUILT.append(subprocess.run(["bash", str(ROOT / "tools" / "esp32-unix.sh")], capture_output=True, text=True))
        if _BUILT[0].returncode != 0:
            raise pytest.UsageError("make esp32-unix failed:\n" + _BUILT[0].stderr[-2000:])
    esp32 = vesp32.binary("frozen")
    return (("unix", MICROPYTHON, None),
            ("esp32", str(esp32) if esp32 else None, None if esp32 else vesp32.why_missing()))


class MPFile(pytest.File):
    def collect(self):
        names = _TEST_RE.findall(self.path.read_text())
        for interp, exe, why in interpreters():
            for name in names:
                item = MPItem.from_parent(self, name="%s[%s]" % (name, interp))
                item.test, item.exe, item.interp = name, exe, interp
                if exe is None:
                    item.add_marker(pytest.mark.skip(reason=why))
                yield item

    def results(self, interp, exe):
        if not hasattr(self, "_results"):
            self._results = {}
        if interp not in self._results:
            self._results[interp] = run_mp_file(self.path, exe=exe)
        return self._results[interp]


def run_mp_file(path, names=(), timeout=300, exe=MICROPYTHON):
    # CITYNODE_INTERP: which interpreter a test runs on, for the tests of the virtual ESP32 itself
    # CITYNODE_TMP: the process's own scratch directory (two runs never share a file)
    tmp = tempfile.mkdtemp(prefix="citynode-mp-")
    env = dict(os.environ, CITYNODE_INTERP="unix" if exe == MICROPYTHON else "esp32", CITYNODE_TMP=tmp)
    try:
        p = subprocess.run([exe, str(ROOT / "tests/unix/runner.py"), str(path), *names],
                           cwd=str(path.parent), capture_output=True, text=True, timeout=timeout, env=env)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
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
        res = self.parent.results(self.interp, self.exe)
        if self.test not in res:
            raise MPFailure(res.get("__crash__", "test did not run"))
        if res[self.test] is not None:
            raise MPFailure(res[self.test])

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, MPFailure):
            return "MicroPython unix port (%s):\n%s" % (self.interp, excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, 0, "mp::%s" % self.name


class MPFailure(Exception):
    pass

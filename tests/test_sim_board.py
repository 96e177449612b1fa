"""The virtual node as a board looks to the tools on its serial port, with an unmodified mpremote:
`ls` gives file sizes, `df` an ESP32_GENERIC's 2 MiB filesystem (not the host's disk), `reset`
restarts it with the reset cause an ESP32 reports (hard); `machine.unique_id()` is there, and
the REPL ends its lines with \\r\\n."""
import os
import sys
import subprocess

import pytest
import serial

from helpers import wait_for
from simproc import MPREMOTE, SimProc

TICKER = "import time\nopen('boots', 'a').write('x')\nwhile True:\n    time.sleep(0.05)\n"


@pytest.fixture
def env(tmp_path):
    e = dict(os.environ, XDG_RUNTIME_DIR=str(tmp_path / "run"))
    os.makedirs(e["XDG_RUNTIME_DIR"])
    return e


def mpremote(port, *args):
    r = subprocess.run([MPREMOTE, "connect", port, *args], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r
    return r.stdout


def test_mpremote_ls_df_reset_unique_id_as_on_a_board(tmp_path, env):
    flash = tmp_path / "flash"
    (flash / "lib").mkdir(parents=True)
    (flash / "main.py").write_text(TICKER)
    (flash / "data.bin").write_bytes(b"x" * 5000)
    with SimProc(flash, "--empty", env=env) as sim:
        sizes = {ln.split()[-1]: int(ln.split()[0]) for ln in mpremote(sim.port, "ls").splitlines()[1:]}
        assert sizes == {"main.py": len(TICKER), "data.bin": 5000, "lib/": 0, "boots": 1}, sizes

        lines = mpremote(sim.port, "df").splitlines()
        assert lines[0].split() == ["filesystem", "size", "used", "avail", "use%", "mounted", "on"]
        assert len(lines) == 2, lines                    # one filesystem, as on a board
        _, size, used, avail, _, mount = lines[1].split()
        # 512 blocks of 4 KiB: 2 for littlefs's root, 1 per directory (/, lib), 2 for data.bin,
        # 1 each for main.py and boots
        assert (int(size), int(used), int(avail), mount) == (2097152, 8 * 4096, 504 * 4096, "/"), lines

        uid = mpremote(sim.port, "exec", "import machine; print(machine.unique_id().hex())").strip()
        assert len(uid) == 12 and uid == mpremote(sim.port, "exec", "import machine; print(machine.unique_id().hex())").strip()

        mpremote(sim.port, "reset")
        # as after a board's reset: talk to it again once it has booted (main.py ran again)
        wait_for(lambda: (flash / "boots").read_text() == "xx", 20, what="the node's boot after the reset")
        cause = mpremote(sim.port, "resume", "exec", "import os; print(os.getenv('CITYNODE_RESET'))").strip()
        assert cause == "hard", cause


def test_repl_lines_end_with_crlf(tmp_path, env):
    flash = tmp_path / "flash"
    flash.mkdir()
    with SimProc(flash, "--empty", env=env) as sim:
        with serial.Serial(sim.port, 115200, timeout=0.2) as s:
            s.write(b"\r\n")
            buf = b""
            for _ in range(50):
                buf += s.read(256)
                if buf.count(b">>> ") >= 1:
                    break
            s.write(b"print('a')\r")
            for _ in range(50):
                buf += s.read(256)
                if b"a\r\n>>> " in buf:
                    break
            assert b"a\r\n>>> " in buf, buf
            assert b"\n" not in buf.replace(b"\r\n", b""), buf   # no bare \n anywhere


def test_on_the_virtual_esp32_the_heap_is_an_esp32s(tmp_path, env):
    from citynode import vesp32
    exe = vesp32.binary("plain")
    if exe is None:
        pytest.skip(vesp32.why_missing())
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "main.py").write_text("import gc, sys\nprint('heap', gc.mem_free() + gc.mem_alloc(), sys.maxsize)\n")
    r = subprocess.run([sys.executable, "-m", "citynode", "sim", "--flash", str(flash), "--empty"],
                       env=dict(env, CITYNODE_MICROPYTHON=str(exe)), capture_output=True, text=True, timeout=60)
    heap, maxsize = r.stdout.split()[-2:]
    assert int(maxsize) == 2**31 - 1 and 54 * 1024 <= int(heap) <= 56 * 1024, r.stdout

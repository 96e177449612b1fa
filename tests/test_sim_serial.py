"""The virtual node's serial face, against `citynode sim --serial` as a process: the friendly and
raw REPL, raw-paste, Ctrl-C, soft reset, pacing, several nodes, registration, clean stop; and
the supervisor's exit-code contract in the foreground mode."""
import json
import os
import signal
import subprocess
import time

import pytest
import serial

from simproc import CITYNODE, MPREMOTE, SimProc, pid_alive, run, sim_config

TICKER = """import os, time
print("main: reset=%s" % os.getenv("CITYNODE_RESET"))
n = 0
while True:
    n += 1
    print("tick", n)
    time.sleep(0.05)
"""


@pytest.fixture
def env(tmp_path):
    e = dict(os.environ, XDG_RUNTIME_DIR=str(tmp_path / "run"))
    os.makedirs(e["XDG_RUNTIME_DIR"])
    return e


def read_until(s, pattern, timeout=5.0):
    end = time.monotonic() + timeout
    buf = b""
    while time.monotonic() < end:
        buf += s.read(s.in_waiting or 1)
        if pattern in buf:
            return buf
    raise AssertionError("no %r within %.1fs; got %r" % (pattern, timeout, buf[-500:]))


def test_mpremote_exec_ls_cp_on_a_running_firmware(tmp_path, env):
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "main.py").write_text(TICKER)
    (tmp_path / "hello.txt").write_text("hello node\n")
    with SimProc(flash, "--empty", env=env) as sim:
        assert sim.port.startswith("/dev/pts/")
        r = subprocess.run([MPREMOTE, "connect", sim.port, "exec", "print(6*7)"], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and r.stdout.strip() == "42", r
        r = subprocess.run([MPREMOTE, "connect", sim.port, "fs", "cp", str(tmp_path / "hello.txt"), ":hello.txt"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r
        assert (flash / "hello.txt").read_text() == "hello node\n"
        r = subprocess.run([MPREMOTE, "connect", sim.port, "fs", "ls"], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r
        names = {ln.split()[-1] for ln in r.stdout.splitlines()[1:]}
        assert {"main.py", "hello.txt"} <= names
        # the flash directory is "/" on the node, as a board's filesystem
        r = subprocess.run([MPREMOTE, "connect", sim.port, "exec", "import os; print(os.getcwd(), sorted(os.listdir('/')))"],
                           capture_output=True, text=True, timeout=30)
        assert r.stdout.strip() == "/ ['hello.txt', 'main.py']", r


def test_ctrl_c_interrupts_main_and_ctrl_d_soft_reboots(tmp_path, env):
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "main.py").write_text(TICKER)
    with SimProc(flash, "--empty", env=env) as sim:
        with serial.Serial(sim.port, timeout=0.2) as s:
            read_until(s, b"tick 3")
            s.write(b"\x03")
            out = read_until(s, b">>> ")
            assert b"KeyboardInterrupt" in out
            s.write(b"print('x' * 3)\r")
            assert b"xxx" in read_until(s, b">>> ")
            s.reset_input_buffer()
            s.write(b"\x04")   # a board soft-reboots and runs main.py again
            out = read_until(s, b"tick 2")
            assert b"MPY: soft reboot" in out and b"main: reset=soft" in out


def test_raw_repl_raw_paste_and_soft_reset_back_into_raw_repl(tmp_path, env):
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "main.py").write_text(TICKER)
    with SimProc(flash, "--empty", env=env) as sim:
        with serial.Serial(sim.port, timeout=0.2) as s:
            s.write(b"\r\x03")
            read_until(s, b">>> ")
            s.write(b"\r\x01")
            read_until(s, b"raw REPL; CTRL-B to exit\r\n>")
            s.write(b"print(1+1)\x04")
            assert read_until(s, b"\x04>").endswith(b"OK2\r\n\x04\x04>")   # \r\n as a board's
            s.write(b"\x05A\x01")                       # raw-paste
            hdr = s.read(4)
            assert hdr[:2] == b"R\x01" and int.from_bytes(hdr[2:4], "little") > 0
            s.write(b"print('paste')\x04")
            assert b"paste\r\n\x04\x04>" in read_until(s, b"\x04>")
            s.write(b"\x04")                            # soft reset from the raw REPL
            out = read_until(s, b"raw REPL; CTRL-B to exit\r\n>")
            assert out.startswith(b"OK\r\nMPY: soft reboot\r\n"), out
            assert b"tick" not in out                  # main.py does not run
            s.write(b"import os; print(os.getenv('CITYNODE_RESET'))\x04")
            assert b"OKsoft\r\n" in read_until(s, b"\x04>")
            s.write(b"\r\x02")                          # friendly REPL
            assert b">>> " in read_until(s, b">>> ")


def test_baud_paces_the_link_both_ways(tmp_path, env):
    flash = tmp_path / "flash"
    flash.mkdir()
    with SimProc(flash, "--empty", "--baud", "9600", env=env) as sim:   # 960 B/s
        with serial.Serial(sim.port, timeout=0.2) as s:
            s.write(b"\r\x01")
            read_until(s, b"raw REPL; CTRL-B to exit\r\n>")
            t0 = time.monotonic()
            s.write(b"print('y'*500)\x04")
            out = read_until(s, b"\x04>")
            dt = time.monotonic() - t0
            assert out.count(b"y") == 500
            # 17 bytes up, then ~507 down: at least 0.53 s at 960 B/s, and not much more
            assert 0.5 < dt < 1.5, dt


def test_busy_port_is_refused_and_ports_lists_virtual_nodes(tmp_path, env):
    flash = tmp_path / "flash"
    cfg = sim_config(tmp_path / "c.json", node_id="sim-list-01", port=1)
    with SimProc(flash, "--config", cfg, "--broker", "127.0.0.1:1", env=env) as sim:
        r = run(["ports", "--json"], env=env)
        assert r.returncode == 0
        v = [p for p in json.loads(r.stdout) if p["kind"] == "virtual"]
        assert [(p["port"], p["node_id"]) for p in v] == [(sim.port, "sim-list-01")]
        with serial.Serial(sim.port, exclusive=True):
            r = run(["deploy", "--port", sim.port], env=env)
        assert r.returncode == 3
        assert r.stderr.strip() == "Error: %s: port is busy (another program has it open)" % sim.port
        assert r.stdout == ""
        assert not list(flash.rglob("*.part"))
    r = run(["ports", "--json"], env=env)
    assert not [p for p in json.loads(r.stdout) if p["kind"] == "virtual"]


def test_several_nodes_get_own_flash_node_id_and_port(tmp_path, env):
    cfg = sim_config(tmp_path / "c.json", node_id="fleet", port=1)
    with SimProc(tmp_path / "f", "--nodes", "2", "--config", cfg, "--json", env=env, nodes=2) as sim:
        assert len(set(sim.ports)) == 2
        assert [i["node_id"] for i in sim.info] == ["fleet-1", "fleet-2"]
        for k, port in enumerate(sim.ports, 1):
            assert sim.info[k - 1]["flash"] == str(tmp_path / "f" / ("node-%d" % k))
            r = run(["config", "show", "--port", port, "--json", "--no-reset"], env=env)
            assert r.returncode == 0, r.stderr
            assert json.loads(r.stdout)["node_id"] == "fleet-%d" % k
        pids = [i["pid"] for i in sim.info]
        assert all(pid_alive(p) for p in pids)
        assert sim.stop() == 0
    time.sleep(0.2)
    assert not any(pid_alive(p) for p in pids), "micropython outlived citynode sim"


EXITS = """import os, sys
r = os.getenv("CITYNODE_RESET")
print("boot reset=%s broker=%s" % (r, os.getenv("CITYNODE_BROKER")))
if r == "power":
    sys.exit(77)
if r == "hard":
    with open(".deepsleep_ms", "w") as f:
        f.write("400")
    sys.exit(78)
if r == "deepsleep":
    sys.exit(79)
sys.exit(5)
"""


def test_foreground_exit_codes_restart_with_the_reset_cause(tmp_path, env):
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "main.py").write_text(EXITS)
    t0 = time.monotonic()
    r = run(["sim", "--flash", str(flash), "--empty", "--broker", "127.0.0.1:1884"], env=env, timeout=30)
    dt = time.monotonic() - t0
    assert r.stdout.splitlines() == ["boot reset=%s broker=127.0.0.1:1884" % c
                                     for c in ("power", "hard", "deepsleep", "wdt")]
    assert r.returncode == 5          # any other exit ends the foreground sim with its code
    assert dt >= 0.4                  # it slept the 400 ms the firmware asked for
    assert not (flash / ".deepsleep_ms").exists()


def test_foreground_installs_firmware_and_stops_cleanly_on_sigint(tmp_path, env):
    flash = tmp_path / "flash"
    p = subprocess.Popen([CITYNODE, "sim", "--flash", str(flash), "--heapsize", "256k"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    try:
        first = p.stdout.readline()   # no config.json: the firmware says so and waits (safe mode)
        assert "safe mode" in first, first
        assert (flash / "main.py").exists() and (flash / "boards" / "esp32-generic.json").exists()
        # the simulated board is the node's hardware, not a file on its flash
        assert not (flash / "boards" / "sim.json").exists() and not list(flash.rglob("simhw*"))
        kids = subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True, text=True).stdout.split()
        assert len(kids) == 1
        p.send_signal(signal.SIGINT)
        assert p.wait(10) == 0
    finally:
        if p.poll() is None:
            p.kill()
    time.sleep(0.2)
    assert not pid_alive(int(kids[0]))

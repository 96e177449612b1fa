"""`citynode deploy` onto a node whose image has the firmware frozen in (the virtual ESP32's frozen
build, `make esp32-unix`): of the same version it sends only what is not frozen (main.py, the
board profiles) and removes copies that would shadow the frozen modules, and the node runs from
its image in an ESP32's 56 KB heap; of another version it says so in one line and sends it all."""
import os

import pytest

from citynode import vesp32
from helpers import wait_for
from simproc import SimProc, run, sim_config, snapshot
from test_deploy import Sub, deploy, fw_version


@pytest.fixture
def env(tmp_path):
    exe = vesp32.binary("frozen")
    if exe is None:
        pytest.skip(vesp32.why_missing())
    e = dict(os.environ, XDG_RUNTIME_DIR=str(tmp_path / "run"), XDG_CACHE_HOME=str(tmp_path / "cache"),
             CITYNODE_MICROPYTHON=str(exe))
    os.makedirs(e["XDG_RUNTIME_DIR"])
    return e


def test_same_version_sends_only_what_is_not_frozen(tmp_path, env, broker):
    src = snapshot(tmp_path / "src")
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "drivers").mkdir()
    (flash / "node.mpy").write_bytes(b"M\x06stale")          # an old deploy's copies: they would
    (flash / "drivers" / "bme280.mpy").write_bytes(b"M\x06x")  # shadow the frozen modules
    cfg = sim_config(tmp_path / "cfg.json", node_id="usb-frozen-01", port=broker.port)
    sub = Sub(broker, "city/usb-frozen-01/#")
    try:
        with SimProc(flash, "--empty", "--config", cfg, env=env) as sim:
            s = deploy(sim.port, src, env)
            boards = sorted("boards/" + p.name for p in (src / "boards").glob("*.json"))
            assert s["frozen"] == fw_version(src) and "note" not in s
            assert sorted(s["sent"]) == sorted(boards + ["main.py"]), s["sent"]
            assert sorted(s["removed"]) == ["drivers/bme280.mpy", "node.mpy"]
            code = sorted(p.relative_to(flash).as_posix() for p in flash.rglob("*") if p.suffix in (".py", ".mpy"))
            assert code == ["main.py"] and not (flash / "drivers").exists(), code   # an empty drivers/ too
            # the node runs from its image, in an ESP32's heap (the sim's default on this build)
            wait_for(lambda: sub.find(lambda t, p: t.endswith("/telemetry")), 30, what="telemetry")
            st = sub.find(lambda t, p: t.endswith("/status") and p.get("state") == "online")
            assert st[-1]["fw"] == fw_version(src)
            s = deploy(sim.port, src, env)                       # nothing changed: nothing sent
            assert s["sent"] == [] and s["removed"] == []
    finally:
        sub.close()


def test_another_version_is_told_and_sent_as_files(tmp_path, env, broker):
    src = snapshot(tmp_path / "src")
    v = src / "firmware" / "version.py"
    v.write_text(v.read_text().replace('VERSION = "', 'VERSION = "9.9.9-'))
    flash = tmp_path / "flash"
    cfg = sim_config(tmp_path / "cfg.json", node_id="usb-frozen-02", port=broker.port)
    with SimProc(flash, "--empty", "--config", cfg, env=env) as sim:
        r = run(["deploy", "--port", sim.port, "--src", str(src), "--no-reset"], env=env)
        assert r.returncode == 0, r.stderr
        notes = [ln for ln in r.stdout.splitlines() if ln.startswith("note: ")]
        assert len(notes) == 1 and "frozen in" in notes[0] and "9.9.9-" in notes[0], r.stdout
        assert (flash / "node.mpy").exists() and (flash / "drivers" / "bme280.mpy").exists()

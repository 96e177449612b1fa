"""`citynode deploy` against `citynode sim --serial` with the real transport: onto an empty node
that then boots and publishes, nothing sent twice, only what changed, stale files removed, data
kept, and a deploy killed half-way that leaves the previous firmware booting."""
import hashlib
import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from citynode import deploy as deploylib
from helpers import wait_for
from simproc import CITYNODE, MPREMOTE, SimProc, run, sim_config, snapshot


@pytest.fixture
def env(tmp_path):
    e = dict(os.environ, XDG_RUNTIME_DIR=str(tmp_path / "run"), XDG_CACHE_HOME=str(tmp_path / "cache"))
    os.makedirs(e["XDG_RUNTIME_DIR"])
    return e


class Sub:
    """A paho subscriber on the test's broker, collecting (topic, payload dict)."""

    def __init__(self, broker, topic):
        self.msgs = []
        self.lock = threading.Lock()
        ready = threading.Event()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.c.on_message = self._on_message
        self.c.on_subscribe = lambda *a: ready.set()
        self.c.connect(broker.host, broker.port)
        self.c.subscribe(topic, 1)
        self.c.loop_start()
        assert ready.wait(5)

    def _on_message(self, c, u, m):
        with self.lock:
            self.msgs.append((m.topic, json.loads(m.payload)))

    def find(self, pred):
        with self.lock:
            return [p for t, p in self.msgs if pred(t, p)]

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


def deploy(port, src, env, *extra):
    r = run(["deploy", "--port", port, "--src", str(src), "--json"] + list(extra), env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def expected_names(src):
    names = []
    for p in sorted((src / "firmware").rglob("*.py")):
        rel = p.relative_to(src / "firmware").as_posix()
        if rel == "manifest.py":    # what a firmware image freezes: never sent to a node
            continue
        names.append(rel if rel in ("main.py", "boot.py") else rel[:-3] + ".mpy")
    return sorted(names + ["boards/" + p.name for p in (src / "boards").glob("*.json")])


def digests(flash):
    return {p.relative_to(flash).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in flash.rglob("*") if p.is_file()}


def fw_version(src):
    return re.search(r'^VERSION = "([^"]+)"', (src / "firmware" / "version.py").read_text(), re.M).group(1)


def setup_node(tmp_path, broker, node_id):
    """(firmware tree, flash dir, config file, a subscriber to the node's topics)."""
    cfg = sim_config(tmp_path / "cfg.json", node_id=node_id, port=broker.port)
    return snapshot(tmp_path / "src"), tmp_path / "flash", cfg, Sub(broker, "city/%s/#" % node_id)


def test_deploy_empty_node_boots_publishes_then_sends_only_changes(tmp_path, env, broker):
    src, flash, cfg, sub = setup_node(tmp_path, broker, "usb-dep-01")
    try:
        with SimProc(flash, "--empty", "--config", cfg, env=env) as sim:
            assert sorted(os.listdir(flash)) == ["config.json"]
            s = deploy(sim.port, src, env)
            assert sorted(s["sent"]) == expected_names(src)
            assert s["sent"][-1] == "main.py" and s["removed"] == [] and s["reset"] is True
            assert s["bytes"] > 0 and s["mpy"].startswith("6.3")
            assert (flash / "main.py").read_bytes() == (src / "firmware" / "main.py").read_bytes()
            assert (flash / "node.mpy").read_bytes()[:2] == b"M\x06"
            built = deploylib.build(root=src)         # every file arrived byte for byte
            assert {k: (flash / k).read_bytes() for k in built} == built
            assert not list(flash.rglob("*.part"))
            # the deploy's soft reset boots the new firmware: it publishes to the broker
            wait_for(lambda: sub.find(lambda t, p: t.endswith("/telemetry")), 20, what="telemetry")
            st = sub.find(lambda t, p: t.endswith("/status") and p.get("state") == "online")
            assert st and st[-1]["fw"] == fw_version(src) and st[-1]["reset"] == "soft"
            config_before = (flash / "config.json").read_bytes()

            s = deploy(sim.port, src, env)          # nothing changed: nothing sent
            assert s["sent"] == [] and s["removed"] == [] and s["bytes"] == 0
            assert sorted(s["skipped"]) == expected_names(src)

            with open(src / "firmware" / "telemetry.py", "a") as f:
                f.write("\n_DEPLOY_PROBE = 1\n")
            before = digests(flash)
            r = run(["deploy", "--port", sim.port, "--src", str(src), "--dry-run"], env=env)
            assert r.returncode == 0 and "send    telemetry.mpy" in r.stdout, r
            now = digests(flash)                    # a dry run changes no firmware file
            assert [k for k in expected_names(src) if now.get(k) != before.get(k)] == []
            s = deploy(sim.port, src, env)
            assert s["sent"] == ["telemetry.mpy"] and s["removed"] == []
            after = digests(flash)
            assert {k for k in expected_names(src) if before.get(k) != after.get(k)} == {"telemetry.mpy"}

            (src / "firmware" / "extra_mod.py").write_text("X = 1\n")
            assert deploy(sim.port, src, env)["sent"] == ["extra_mod.mpy"]
            (src / "firmware" / "extra_mod.py").unlink()
            # a firmware with fewer files than the node holds of ours is refused, nothing touched
            r = run(["deploy", "--port", sim.port, "--src", str(src)], env=env)
            assert r.returncode == 1 and "extra_mod.mpy" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r
            assert (flash / "extra_mod.mpy").exists()
            s = deploy(sim.port, src, env, "--prune")
            assert s["sent"] == [] and s["removed"] == ["extra_mod.mpy"]
            assert not (flash / "extra_mod.mpy").exists()
            assert (flash / "config.json").read_bytes() == config_before   # data is never touched
            assert (flash / "state.json").exists()
    finally:
        sub.close()


def test_deploy_over_factory_sources_removes_the_shadowing_py(tmp_path, env):
    src = snapshot(tmp_path / "src")
    flash = tmp_path / "flash"
    with SimProc(flash, "--broker", "127.0.0.1:1", env=env) as sim:   # factory: firmware as .py
        assert (flash / "config.py").exists()
        s = deploy(sim.port, src, env, "--no-reset")
        assert "config.py" in s["removed"] and "drivers/hcsr04.py" in s["removed"] and "main.py" not in s["removed"]
        assert "config.mpy" in s["sent"] and "main.py" not in s["sent"]   # main.py was already right
        assert not [p for p in flash.rglob("*.py") if p.name != "main.py"]
        r = subprocess.run([MPREMOTE, "connect", sim.port, "exec", "import config, drivers.hcsr04 as h; print(config.__file__, h.__file__)"],
                           capture_output=True, text=True, timeout=30)
        assert r.stdout.split() == ["config.mpy", "drivers/hcsr04.mpy"], r


def test_deploy_killed_half_way_leaves_the_previous_firmware_booting(tmp_path, env, broker):
    src = snapshot(tmp_path / "src")
    flash = tmp_path / "flash"
    cfg = sim_config(tmp_path / "cfg.json", node_id="usb-kill-01", port=broker.port)
    v1 = fw_version(src)
    with SimProc(flash, "--empty", "--config", cfg, env=env) as sim:
        deploy(sim.port, src, env, "--no-reset")
    old = {k: v for k, v in digests(flash).items() if k.endswith((".py", ".mpy", ".json")) and k != "state.json"}

    # v2 touches every module, so the transfer takes a while on a slow link
    ver_py = src / "firmware" / "version.py"
    ver_py.write_text(ver_py.read_text().replace('VERSION = "%s"' % v1, 'VERSION = "9.9.9-v2"'))
    for p in (src / "firmware").rglob("*.py"):
        with open(p, "a") as f:
            f.write("\n_V2 = 2\n")
    with SimProc(flash, "--baud", "38400", env=env) as sim:
        p = subprocess.Popen([CITYNODE, "deploy", "--port", sim.port, "--src", str(src)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: list(flash.rglob("*.part")) or p.poll() is not None, 30, what="a .part file")
            assert p.poll() is None, "the deploy finished before it could be killed"
            p.send_signal(signal.SIGKILL)     # the laptop's cable pulled, the process killed
            p.wait(5)
        finally:
            if p.poll() is None:
                p.kill()
        time.sleep(0.3)
    assert list(flash.rglob("*.part"))
    now = {k: v for k, v in digests(flash).items() if k in old}
    assert now == old, "a firmware file changed although the deploy never finished"

    boots = json.loads((flash / "state.json").read_text())["boot"]
    sub = Sub(broker, "city/usb-kill-01/status")
    try:
        # power the node up again: it boots the previous firmware, and publishes
        with SimProc(flash, env=env) as sim:
            st = wait_for(lambda: sub.find(lambda t, p: p.get("state") == "online" and p.get("boot", -1) > boots),
                          20, what="a new boot's status")
            assert st[-1]["fw"] == v1 and st[-1]["reset"] == "power"
            # the next deploy finishes the job and clears the leftovers
            s = deploy(sim.port, src, env)
            assert "node.mpy" in s["sent"] and s["sent"][-1] == "main.py"
            assert not list(flash.rglob("*.part"))
            wait_for(lambda: sub.find(lambda t, p: p.get("fw") == "9.9.9-v2"), 20, what="v2 online")
    finally:
        sub.close()


def test_deploy_compile_error_touches_nothing(tmp_path, env):
    src = snapshot(tmp_path / "src")
    (src / "firmware" / "broken.py").write_text("x = 1\ndef f(:\n    pass\n")
    flash = tmp_path / "flash"
    with SimProc(flash, "--empty", env=env) as sim:
        r = run(["deploy", "--port", sim.port, "--src", str(src)], env=env)
    assert r.returncode == 1
    assert r.stderr.strip() == "Error: firmware/broken.py, line 2: SyntaxError: invalid syntax"
    assert os.listdir(flash) == []


def test_ctrl_c_during_a_paced_deploy_puts_the_node_back_to_work(tmp_path, env, broker):
    src, flash, cfg, sub = setup_node(tmp_path, broker, "usb-int-01")
    try:
        # a factory node (firmware as .py sources), running; the deploy sends all of it as .mpy
        with SimProc(flash, "--config", cfg, "--baud", "38400", env=env) as sim:
            wait_for(lambda: sub.find(lambda t, p: t.endswith("/telemetry")), 20, what="the node's telemetry")
            p = subprocess.Popen([CITYNODE, "deploy", "--port", sim.port, "--src", str(src)], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                wait_for(lambda: list(flash.rglob("*.part")) or p.poll() is not None, 30, what="a .part file")
                assert p.poll() is None, "the deploy finished before it could be interrupted"
                p.send_signal(signal.SIGINT)          # the technician's Ctrl-C
                out, err = p.communicate(timeout=30)
            finally:
                if p.poll() is None:
                    p.kill()
            assert p.returncode == 130, (p.returncode, err)
            lines = err.strip().splitlines()
            assert lines == ["interrupted: %s: old firmware still in place, new files partly written as .part: "
                             "safe to re-run deploy; node back at work (soft reset)" % sim.port], err
            assert "Traceback" not in err and "Aborted" not in err
            n = len(sub.msgs)
            got = wait_for(lambda: [pl for t, pl in sub.msgs[n:] if t.endswith("/telemetry")], 10,
                           what="telemetry within 10 s of the interrupted deploy")
            assert got
            assert (flash / "config.py").exists() and not (flash / "config.mpy").exists()   # the old firmware runs
    finally:
        sub.close()


def test_a_ctrl_c_waits_for_a_step_that_must_finish_whole():
    from citynode import transport
    old = signal.signal(signal.SIGINT, transport.on_sigint)
    done = []
    try:
        with pytest.raises(KeyboardInterrupt):
            with transport.whole():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)
                done.append("renamed")          # the interrupt waited for this
        assert done == ["renamed"]
        # once that Ctrl-C has been dealt with (the CLI clears it after its line), the next one,
        # outside such a step, interrupts at once (while one is on its way out, another waits:
        # test_interrupt.py)
        transport.clear_interrupt()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
    finally:
        signal.signal(signal.SIGINT, old)
        transport._INT.update(hit=False, reports=[])

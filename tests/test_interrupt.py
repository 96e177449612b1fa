"""Ctrl-C in the commands that change a node, at chosen steps: the command exits 130, the node is
left running, and its one line says what the node holds in that window (docs/contract.md).

The interrupt is the real one: the test process signals itself (SIGINT) at the step the test
chooses, from a wrapper around Device.exec or a step of the command, so the window is exact and
no test waits for a moment to strike. A signal sent from a worker thread (provision, ota push)
reaches the main thread, as a technician's Ctrl-C does."""
import json
import os
import re
import signal
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from citynode import deploy, fieldtest, ota, provision, transport
from citynode.cli import main
from citynode.sim import SimNode
from citynode.sim import rom as simrom
from helpers import Sub, wait_for
from nodeproc import VNode, sim_config
from simproc import SimProc, snapshot
from test_field import Sim, node_config
from test_provision import start_fleet, stop

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def ctrl_c():
    """The technician's Ctrl-C. From a worker thread: returns once the main thread has taken it."""
    os.kill(os.getpid(), signal.SIGINT)   # in the main thread: KeyboardInterrupt here, or deferred
    if threading.current_thread() is not threading.main_thread():
        wait_for(transport.interrupted, 10, what="the main thread to take the Ctrl-C")


def interrupt_lines(r):
    assert r.exit_code == 130, r.output
    assert not transport.interrupted()     # the next command in this process starts afresh
    return [ln for ln in r.stderr.splitlines() if ln.startswith("interrupted")]


def at_exec(monkeypatch, when, before=False):
    """Ctrl-C just before (or just after) the first Device.exec whose code satisfies when(code)."""
    real = transport.Device.exec
    hit = []

    def exec_(self, code, timeout=None):
        fire = not hit and when(code)
        if fire:
            hit.append(code)
            if before:
                ctrl_c()
        out = real(self, code, timeout)
        if fire and not before:
            ctrl_c()
        return out
    monkeypatch.setattr(transport.Device, "exec", exec_)
    return hit


def writes(name):
    return lambda code: "open(%r,'w')" % (name + ".tmp") in code


def renames(name):
    return lambda code: "os.rename(%r,%r)" % (name + ".tmp", name) in code


# --- config push: before the write, between the write and the rename, after the rename ----------

@pytest.fixture
def node(tmp_path):
    n = SimNode(tmp_path / "flash", serial=True, empty=True, register=False).start()
    yield n
    n.stop()


@pytest.mark.parametrize("window", ["before the write", "written, not renamed", "during the rename",
                                    "after the rename"])
def test_ctrl_c_in_a_config_push_says_whether_the_new_config_is_in_place(tmp_path, node, monkeypatch, window):
    flash = Path(node.flash)
    (flash / "config.json").write_text('{"old": true}')
    cfg = json.loads((EXAMPLES / "contract.json").read_text())
    p = tmp_path / "c.json"
    p.write_text(json.dumps(cfg))
    when = writes("config.json") if window in ("before the write", "written, not renamed") else renames("config.json")
    hit = at_exec(monkeypatch, when, before=window in ("before the write", "during the rename"))
    r = cli("config", "push", p, "--port", node.port)
    assert hit, "the window was never reached"
    lines = interrupt_lines(r)
    left = "; node back at work (soft reset)"
    if window in ("before the write", "written, not renamed"):
        assert lines == ["interrupted: %s: unchanged%s" % (node.port, left)], r.output
        assert (flash / "config.json").read_text() == '{"old": true}'
    else:   # a Ctrl-C waits for the rename: the new config is whole
        assert lines == ["interrupted: %s: new config.json in place%s" % (node.port, left)], r.output
        assert json.loads((flash / "config.json").read_text()) == cfg
    assert not (flash / "config.json.tmp").exists()     # what the write left is removed


# --- calibrate: the new calibration stored --------------------------------------------------------

@pytest.fixture
def fw_node(tmp_path, broker):
    """A virtual node running the firmware, online on the test's broker."""
    n = Sim(tmp_path, broker, node_config())
    yield n
    n.stop()


def test_ctrl_c_after_a_calibration_is_stored_says_so(fw_node, monkeypatch):
    node = fw_node
    hit = at_exec(monkeypatch, renames("config.json"))
    r = cli("calibrate", "water", "--port", node.port, "--reference-cm", 62.5, "--samples", 5)
    assert hit
    off = node.config()["sensors"][0]["offset_cm"]
    assert interrupt_lines(r) == ["interrupted: %s: calibration stored: offset_cm = %s in config.json; "
                                  "node back at work (soft reset)" % (node.port, off)], r.output


# --- deploy onto a node that has no firmware ------------------------------------------------------

@pytest.mark.parametrize("window", ["scanned", "partly sent"])
def test_ctrl_c_in_a_first_deploy_says_there_is_no_firmware_yet(tmp_path, monkeypatch, window):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    src = snapshot(tmp_path / "src")
    flash = tmp_path / "flash"
    if window == "scanned":     # the node scanned, the transfer planned, nothing sent
        real, hit = deploy.transfer_calls, []

        def transfer_calls(*a):
            if not hit:
                hit.append(a)
                ctrl_c()
            return real(*a)
        monkeypatch.setattr(deploy, "transfer_calls", transfer_calls)
    else:                       # right after the first transfer call
        hit = at_exec(monkeypatch, lambda code: "_a(" in code and "os.rename" not in code)
    with SimProc(flash, "--empty") as sim_:
        r = cli("deploy", "--port", sim_.port, "--src", src)
        assert hit
        lines = interrupt_lines(r)
        tail = "; node soft-reset (nothing to run yet)"
        if window == "scanned":
            assert lines == ["interrupted: %s: no firmware installed yet%s" % (sim_.port, tail)], r.output
            assert not list(flash.rglob("*.part"))
        else:
            assert lines == ["interrupted: %s: no firmware installed yet, new files partly written as .part: "
                             "safe to re-run deploy%s" % (sim_.port, tail)], r.output
            assert list(flash.rglob("*.part"))
        assert not (flash / "main.py").exists()
        r = cli("deploy", "--port", sim_.port, "--src", src)    # the next deploy finishes the job
        assert r.exit_code == 0, r.output
        assert (flash / "main.py").exists() and not list(flash.rglob("*.part"))


# --- provision: the state carried across its steps --------------------------------------------------

INVENTORY = """node_id,board,sensors,mqtt.host,mqtt.port,mqtt.prefix,interval_s
prov-int,sim,water:a02yyuw:mount_height_cm=300; air:bme280,127.0.0.1,1,prov,60
"""


@pytest.mark.parametrize("window", ["flashed", "config written", "field test"])
def test_ctrl_c_in_provision_says_what_its_steps_left_on_the_node(tmp_path, broker, monkeypatch, window):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    inv = tmp_path / "fleet.csv"
    inv.write_text(INVENTORY)
    proc, nodes = start_fleet(tmp_path, broker, 1)
    (port, flash), = nodes
    how = ["--skip-flash"]
    try:
        if window == "flashed":     # written through the virtual ROM loader, reset; nothing deployed
            img = tmp_path / "mp.bin"
            img.write_bytes(simrom.build_image("ESP32", version="v1.29.0"))
            how = ["--firmware", img]
            real, hit = provision.flash.flash, []

            def flash_(*a, **kw):
                r = real(*a, **kw)
                hit.append(r)
                ctrl_c()
                return r
            monkeypatch.setattr(provision.flash, "flash", flash_)
        elif window == "config written":
            hit = at_exec(monkeypatch, renames("config.json"))
        else:   # the field test's first call to the node, from provision's worker thread
            real, hit = fieldtest.probe, []

            def probe(dev, *a, **kw):
                hit.append(threading.current_thread() is not threading.main_thread())
                ctrl_c()
                return real(dev, *a, **kw)     # its call to the node stops the worker
            monkeypatch.setattr(fieldtest, "probe", probe)
        r = cli("provision", "--inventory", inv, "--ports", port, "--broker", broker.address,
                "--samples", 2, "--src", tmp_path / "src", *how)
        assert hit, "the window was never reached"
        if window == "flashed":
            assert interrupt_lines(r) == ["interrupted: %s: MicroPython v1.29.0 flashed; node running (reset after "
                                          "the flash)" % port], r.output
            assert not (flash / "config.json").exists()
            return
        # the factory node holds the firmware as sources; the deploy put it in place as .mpy
        assert interrupt_lines(r) == ["interrupted: %s: new firmware in place, new config.json in place; "
                                      "node back at work (soft reset)" % port], r.output
        assert json.loads((flash / "config.json").read_text())["node_id"] == "prov-int"
    finally:
        stop(proc)


# --- ota push ---------------------------------------------------------------------------------------

NEW = "9.1.0"


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("ota")
    pub = ota.keygen(d / "s")
    ota.bundle(secrets=d / "s", out=d / "new.cnota", version=NEW)
    return d, pub


def at_push(monkeypatch, method, when):
    """Ctrl-C from the push's worker thread when method's call satisfies when(push, *args); the
    worker then waits until the main thread has cancelled the transfer, so nothing moves on."""
    real = getattr(ota._Push, method)
    hit = []

    def wrapped(self, *a):
        out = real(self, *a)
        if not hit and when(self, *a):
            hit.append(a)
            ctrl_c()
            assert self.cancel.wait(10)
        return out
    monkeypatch.setattr(ota._Push, method, wrapped)
    return hit


def at_progress(monkeypatch, phase):
    """As at_push, at the push's progress event `phase` (the callback is the push's own)."""
    real = ota._Push.__init__
    hit = []

    def init(self, *a, **kw):
        real(self, *a, **kw)
        shown = self.progress

        def progress(node, ev):
            shown(node, ev)
            if not hit and ev["phase"] == phase:
                hit.append(ev)
                ctrl_c()
                assert self.cancel.wait(10)
        self.progress = progress
    monkeypatch.setattr(ota._Push, "__init__", init)
    return hit


@pytest.mark.parametrize("window", ["partly sent", "handed over"])
def test_ctrl_c_in_an_ota_push_says_what_the_node_runs(tmp_path, broker, keys, monkeypatch, window):
    from citynode import __version__ as old
    d, pub = keys
    node = VNode(tmp_path, sim_config("ota-int", ota={"pubkey": pub}), broker).start()
    try:
        with Sub(broker, "city/ota-int/status") as sub:
            sub.wait(lambda m: b'"online"' in m.payload, 30, "the node online")
            if window == "partly sent":   # the node has acknowledged some chunks, not all
                hit = at_push(monkeypatch, "_data", lambda p, off: p.acked and p.acked >= 8 * ota.CHUNK)
            else:                         # the node said it switches: the progress event that follows
                hit = at_progress(monkeypatch, "reboot")
            r = cli("ota", "push", "ota-int", "--broker", broker.address, "--bundle", d / "new.cnota")
            assert hit, "the window was never reached"
            lines = interrupt_lines(r)
            if window == "partly sent":
                m = re.fullmatch(r"interrupted: ota-int: still runs %s; %s partly sent \(at least ([\d,]+) of ([\d,]+) B held\): "
                                 r"the next push resumes" % (re.escape(old), re.escape(NEW)), lines[0] if lines else "")
                assert m and len(lines) == 1, r.output
                held, size = (int(x.replace(",", "")) for x in m.groups())
                assert 8 * ota.CHUNK <= held < size == (d / "new.cnota").stat().st_size
                # it kept running the old version, and a new push resumes and finishes
                monkeypatch.undo()
                res = ota.push(["ota-int"], broker.address, d / "new.cnota")["ota-int"]
                assert (res.state, res.version) == ("ok", NEW), res.as_dict()
            else:
                assert lines == ["interrupted: ota-int: %s handed over: the node boots it on trial and rolls back "
                                 "to %s by itself if it does not come up" % (NEW, old)], r.output
                # and it does, without the push
                wait_for(lambda: [x for x in sub.json("status") if x.get("fw") == NEW and x.get("trial") is False],
                         30, what="the new version committed")
    finally:
        node.kill()


def test_a_second_ctrl_c_waits_while_the_nodes_are_put_back():
    # Provision's workers put their nodes back one after another, each clearing "busy" when it
    # is done: a second Ctrl-C then must not cut the others short (they would get no line).
    transport.clear_interrupt()
    old = signal.signal(signal.SIGINT, transport.on_sigint)
    try:
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)        # the first: on its way out
        assert transport.interrupted()
        os.kill(os.getpid(), signal.SIGINT)            # the second: waits, no KeyboardInterrupt
        assert transport.interrupted()
    finally:
        signal.signal(signal.SIGINT, old)
        transport.clear_interrupt()

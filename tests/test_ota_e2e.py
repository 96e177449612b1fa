"""Issue 15 end to end: virtual nodes (the real firmware on the unix port) updated over a real
Mosquitto by citynode.ota, refused bundles, a rollback, power cuts anywhere, a fleet at once."""
import hashlib
import json
import random
import shutil
import subprocess
import sys
import threading

import pytest
from click.testing import CliRunner

from helpers import Gate, Listener, Sub, wait_for
from nodeproc import ROOT, VNode, sim_config

from citynode import __version__, deploy, ota
from citynode.cli import main
from citynode.errors import BadInput
from citynode.sim import SimNode

OLD = __version__          # what the virtual nodes run before an update
NEW = "9.1.0"


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("ota")
    pub = ota.keygen(d / "s")
    ota.keygen(d / "other")
    ota.bundle(secrets=d / "s", out=d / "new.cnota", version=NEW)
    return d, pub


def ota_node(tmp_path, broker, node_id, pub, interval=1):
    """A virtual node that holds the fleet's OTA public key, started."""
    return VNode(tmp_path, sim_config(node_id, interval=interval, ota={"pubkey": pub}), broker).start()


def births(sub, node):
    return [d for d in sub.json("%s/status" % node) if d.get("state") == "online"]


def no_hole(tel):
    """Every (boot, seq) from 0 to the last seen of each boot is there."""
    by = {}
    for d in tel:
        by.setdefault(d["boot"], set()).add(d["seq"])
    for boot, seqs in by.items():
        assert seqs == set(range(max(seqs) + 1)), (boot, sorted(set(range(max(seqs) + 1)) - seqs))
    return by


def test_update_arrives_node_reboots_into_it_and_no_reading_is_lost(broker, tmp_path, keys):
    d, pub = keys
    node = ota_node(tmp_path, broker, "ota-up", pub, 0.2)
    try:
        with Sub(broker, "city/ota-up/#") as sub:
            sub.wait(lambda m: m.topic.endswith("/telemetry"), 30, "telemetry before the update")
            during = []

            def progress(nid, ev):   # readings published while the chunks go in
                if ev["phase"] in ("offer", "reboot"):
                    during.append(len(sub.json("telemetry")))
            res = ota.push(["ota-up"], broker.address, d / "new.cnota", progress=progress)["ota-up"]
            assert during[1] > during[0], during
            assert (res.state, res.version) == ("ok", NEW), res.as_dict()
            # the push's own client saw the committed status; this subscriber may see it a moment later
            wait_for(lambda: len(births(sub, "ota-up")) >= 3, 10, what="the committed status")
            b = births(sub, "ota-up")
            # the trial's birth, then the same status once it has committed
            assert [(x["fw"], x["trial"]) for x in b] == [(OLD, False), (NEW, True), (NEW, False)]
            assert res.detail == "runs %s (committed)" % NEW
            assert b[1]["boot"] == b[0]["boot"] + 1
            # the new version samples; readings from before the reboot still arrive
            wait_for(lambda: any(t["boot"] == b[1]["boot"] and t["seq"] >= 3 for t in sub.json("telemetry")),
                     20, what="telemetry of the new version")
            by = no_hole(sub.json("telemetry"))
            assert len(by[b[0]["boot"]]) >= 3     # it kept sampling during the transfer
        p = json.loads((node.flash / "fw.json").read_text())
        assert p["run"] == "fw/a/" and p["trial"] is False and p["prev"] == ""   # committed
        with Sub(broker, "city/ota-up/reply") as sub:
            sub.publish("city/ota-up/cmd", json.dumps({"id": "p", "cmd": "ping"}))
            r = sub.wait(lambda m: True, 10, "ping reply")
            assert json.loads(r[0].payload)["result"]["fw"] == NEW
        # then one module changed: a delta against what the node runs carries two files
        tree = one_module_changed(tmp_path / "tree")
        info = ota.bundle(src=tree, version="9.1.1", secrets=d / "s", out=tmp_path / "delta.cnota",
                          base=d / "new.cnota")
        assert info["carried"] == 2 and info["bytes"] < 15000, info      # node.mpy and version.mpy
        res = ota.push(["ota-up"], broker.address, tmp_path / "delta.cnota")["ota-up"]
        assert (res.state, res.version) == ("ok", "9.1.1") and res.sent < 20000, res.as_dict()
        p = json.loads((node.flash / "fw.json").read_text())
        full = ota.Bundle.read(tmp_path / "delta.cnota").digests()
        assert _digests(node.flash / p["run"], full) == full and p["prev"] == "fw/a/"
    finally:
        node.kill()


def one_module_changed(tree):
    shutil.copytree(ROOT / "firmware", tree / "firmware")
    shutil.copytree(ROOT / "boards", tree / "boards")
    with open(tree / "firmware/node.py", "a") as f:
        f.write("\n_CHANGED = 1\n")
    return tree


def test_a_node_id_or_prefix_no_node_can_have_is_refused_before_connecting(tmp_path):
    junk = tmp_path / "junk.cnota"
    junk.write_bytes(b"not a bundle")     # the names are checked first: a usage error, exit 2
    with Listener() as fake:
        for args, msg in ((["wl-01", "wl/+"], "node id 'wl/+': only a-z, 0-9 and - are allowed"),
                          (["--all", "--prefix", "city/#"],
                           "prefix 'city/#': a topic prefix takes a-z, 0-9, - _ and inner / (--prefix)")):
            r = CliRunner().invoke(main, ["ota", "push", *args, "--broker", fake.address, "--bundle", str(junk)])
            assert r.exit_code == 2 and r.stderr.strip() == "Error: " + msg, r.output
        with pytest.raises(BadInput, match="node id 'BAD ID'"):
            ota.push(["BAD ID"], fake.address, str(junk))
        assert not fake.connected(), "the broker was contacted"


def test_bad_bundles_are_refused_with_a_reason_and_the_old_version_runs_on(broker, tmp_path, keys):
    d, pub = keys
    good = (d / "new.cnota").read_bytes()
    hl = ota.Bundle(good).header_len
    flipped = bytearray(good)
    flipped[hl + 100] ^= 0x20                       # one byte of the first file
    files = {k: v for k, v in deploy.build().items()}
    bad = {
        "other key": (ota.pack(files, NEW, ota.load_key(d / "other"), micropython="1.29"),
                      "signature: not signed by this node's ota.pubkey"),
        "one byte": (bytes(flipped), "hash: "),
        "other abi": (ota.pack(files, NEW, ota.load_key(d / "s"), mpy="6.2", micropython="1.29"),
                      "abi: bundle needs .mpy 6.2, node loads 6.3"),
        "older": (ota.pack(files, "0.0.1", ota.load_key(d / "s"), micropython="1.29"),
                  "version 0.0.1 is older than the running %s" % OLD),
    }
    node = ota_node(tmp_path, broker, "ota-bad", pub)
    try:
        with Sub(broker, "city/ota-bad/status") as sub:
            sub.wait(lambda m: b"online" in m.payload, 30, "birth")
            for what, (data, reason) in bad.items():
                res = ota.push(["ota-bad"], broker.address, ota.Bundle(data))["ota-bad"]
                assert res.state == "refused" and res.detail.startswith(reason), (what, res.as_dict())
            # the command line says the same, exit 1
            (tmp_path / "other.cnota").write_bytes(bad["other key"][0])
            p = subprocess.run([sys.executable, "-m", "citynode", "ota", "push", "ota-bad", "--broker", broker.address,
                                "--bundle", str(tmp_path / "other.cnota")], capture_output=True, text=True, timeout=60)
            assert p.returncode == 1 and "FAIL ota-bad: signature: not signed by this node's ota.pubkey" in p.stderr
        with Sub(broker, "city/ota-bad/reply") as rs:   # still the same boot of the old version
            rs.publish("city/ota-bad/cmd", json.dumps({"id": "p", "cmd": "ping"}))
            r = json.loads(rs.wait(lambda m: True, 10, "ping reply")[0].payload)["result"]
            assert r["fw"] == OLD and r["boot"] == births(sub, "ota-bad")[0]["boot"]
            assert [x["fw"] for x in births(sub, "ota-bad")] == [OLD]      # never rebooted
        assert not (node.flash / "fw.json").exists()
        assert not any((node.flash / "fw").rglob("*.mpy"))                 # nothing left staged
        assert "Traceback" not in node.output()
    finally:
        node.kill()


def test_a_version_that_raises_at_import_rolls_back_and_says_why(broker, tmp_path, keys):
    d, pub = keys
    broken_bundle(tmp_path, d, "raise RuntimeError('broken on purpose')")
    node = ota_node(tmp_path, broker, "ota-rb", pub)
    try:
        with Sub(broker, "city/ota-rb/#") as sub:
            sub.wait(lambda m: m.topic.endswith("/telemetry"), 30, "telemetry")
            res = ota.push(["ota-rb"], broker.address, tmp_path / "broken.cnota")["ota-rb"]
            assert res.state == "rolled_back" and res.version == OLD, res.as_dict()
            assert "crash: RuntimeError('broken on purpose'" in res.detail
            # the push's own client saw the event; this subscriber may see it a moment later
            sub.wait(lambda m: m.topic.endswith("/event") and b"ota_rollback" in m.payload, 10, "the rollback event")
            ev = [e for e in sub.json("event") if e["event"] == "ota_rollback"]
            assert len(ev) == 1
            assert ev[0]["detail"]["reason"] == "crash" and ev[0]["detail"]["version"] == "9.2.0"
            assert "broken on purpose" in ev[0]["detail"]["crash"]["trace"]
            assert [(x["fw"], x["trial"]) for x in births(sub, "ota-rb")][-1] == (OLD, False)
            assert not [e for e in sub.json("event") if e["event"] == "crash"]   # reported once, as the rollback
        p = json.loads((node.flash / "fw.json").read_text())
        assert p["run"] == "" and p["trial"] is False
        # the node is still updatable: the good bundle goes in now
        assert ota.push(["ota-rb"], broker.address, d / "new.cnota")["ota-rb"].state == "ok"
    finally:
        node.kill()


def broken_bundle(tmp_path, d, line):
    """tmp_path/broken.cnota: version 9.2.0 of the firmware, whose node.py runs `line` at import."""
    tree = tmp_path / "tree"
    shutil.copytree(ROOT / "firmware", tree / "firmware")
    shutil.copytree(ROOT / "boards", tree / "boards")
    src = (tree / "firmware/node.py").read_text()
    (tree / "firmware/node.py").write_text(src.replace("\nimport asyncio\n", "\nimport asyncio\n%s\n" % line, 1))
    ota.bundle(src=tree, version="9.2.0", secrets=d / "s", out=tmp_path / "broken.cnota")


def test_a_watchdog_reset_during_the_trial_rolls_back(broker, tmp_path, keys):
    """A trial that hangs until the watchdog resets it (the virtual node's watchdog exit, 79):
    no crash record, a watchdog reset cause, and the previous version runs again."""
    d, pub = keys
    broken_bundle(tmp_path, d, "import sys\nsys.exit(79)")
    node = ota_node(tmp_path, broker, "ota-wd", pub)
    try:
        with Sub(broker, "city/ota-wd/#") as sub:
            sub.wait(lambda m: m.topic.endswith("/status") and b"online" in m.payload, 30, "birth")
            res = ota.push(["ota-wd"], broker.address, tmp_path / "broken.cnota")["ota-wd"]
            assert res.state == "rolled_back" and res.detail == "rolled back to %s (watchdog)" % OLD, res.as_dict()
            sub.wait(lambda m: m.topic.endswith("/event") and b"ota_rollback" in m.payload, 10, "the rollback event")
            ev = [e for e in sub.json("event") if e["event"] == "ota_rollback"]
            assert [e["detail"]["reason"] for e in ev] == ["watchdog"] and ev[0]["detail"]["crash"] is None
    finally:
        node.kill()


def _digests(root, names):
    return {n: hashlib.sha256((root / n).read_bytes()).hexdigest() for n in names}


def _files(d):
    return {x.relative_to(d).as_posix() for x in d.rglob("*") if x.is_file()}


def test_power_cut_anywhere_in_transfer_or_switch_comes_back_wholly_old_or_new(broker, tmp_path, keys):
    """20 SIGKILLs of the node's process group at random points: during the transfer (a random
    byte count) or after the last byte (a random delay: hashing, the fw.json rename, the reboot,
    the trial boot, the commit). After each the node boots again and runs all of one version:
    the one fw.json names, every file of its manifest and nothing else. Two bundles take turns,
    so the slots rotate, and a cut transfer is resumed by the next push."""
    d, pub = keys
    ota.bundle(secrets=d / "s", out=tmp_path / "b2.cnota", version="9.1.1")
    bundles = {NEW: ota.Bundle.read(d / "new.cnota"), "9.1.1": ota.Bundle.read(tmp_path / "b2.cnota")}
    want = {v: {n: h for n, _, h in b.manifest["files"]} for v, b in bundles.items()}
    cfgp = tmp_path / "cfg.json"
    cfgp.write_text(json.dumps(sim_config("ota-cut", interval=0.5, ota={"pubkey": pub})))
    flash = tmp_path / "flash"
    SimNode(flash, config=str(cfgp)).prepare()
    root_names = [p.relative_to(flash).as_posix() for p in flash.rglob("*") if p.suffix in (".py", ".mpy")]
    root_want = _digests(flash, root_names)
    rnd = random.Random(15)
    lines = []
    seen = {}

    def start():
        return SimNode(flash, broker=broker.address, output=lines.append).start()

    def pointer():
        return json.loads((flash / "fw.json").read_text()) if (flash / "fw.json").exists() else {}

    node = start()
    try:
        with Sub(broker, "city/ota-cut/status") as sub:
            wait_for(lambda: births(sub, "ota-cut"), 20, what="birth")
            for i in range(20):
                fw = births(sub, "ota-cut")[-1]["fw"]
                b = bundles["9.1.1" if fw == NEW else NEW]
                cut_at = rnd.uniform(0, len(b.data) * 1.3)
                delay = rnd.uniform(0, 1.5)
                cancel, timers = threading.Event(), []
                victim = node

                def cut():
                    victim.kill()
                    cancel.set()

                def progress(nid, ev):
                    if not timers and (ev["phase"] == "send" and ev["done"] >= cut_at or ev["phase"] == "reboot"):
                        timers.append(threading.Timer(0 if ev["phase"] == "send" else delay, cut))
                        timers[0].start()

                r = ota.push(["ota-cut"], broker.address, b, downgrade=True, progress=progress, cancel=cancel,
                             ack_timeout=3, boot_timeout=20)["ota-cut"]
                assert r.state in ("ok", "unreachable"), r.as_dict()
                if timers:
                    timers[0].join()
                else:
                    cut()   # the push ended before the cut: cut now, in the new version
                # offline, before it boots again: fw.json names a version whose files are all there
                p = pointer()
                if p.get("run"):
                    assert _digests(flash / p["run"], want[p["version"]]) == want[p["version"]], p
                    assert _files(flash / p["run"]) == set(want[p["version"]]), p
                assert _digests(flash, root_names) == root_want            # the root is never touched
                n_births = len(births(sub, "ota-cut"))
                node = start()
                try:
                    # A trial boot's birth comes before its commit, and a node on trial refuses an
                    # offer: the next round starts once the status says the version is kept.
                    wait_for(lambda: len(births(sub, "ota-cut")) > n_births and not births(sub, "ota-cut")[-1]["trial"],
                             20, what="birth after the cut")
                except AssertionError:
                    raise AssertionError("round %d: no birth after the cut; node said:\n%s" % (i, "\n".join(lines[-40:])))
                fw = births(sub, "ota-cut")[-1]["fw"]
                p = pointer()
                assert fw == (p["version"] if p.get("run") else OLD), (i, fw, p)
                seen[fw] = seen.get(fw, 0) + 1
        assert len(seen) >= 2, seen
    finally:
        node.kill()


def test_a_push_to_a_node_cut_after_the_last_byte_switches_on_the_offer(broker, tmp_path, keys):
    """What a power cut while the node hashed the files leaves: every byte in the slot, no switch.
    The next push has nothing to send; its offer makes the node check and switch (before, each
    side waited for the other, offer after offer, for ever)."""
    d, pub = keys
    b = ota.Bundle.read(d / "new.cnota")
    node = VNode(tmp_path, sim_config("ota-held", ota={"pubkey": pub}), broker)
    slot = node.flash / "fw/a"
    slot.mkdir(parents=True)
    (slot / ".id").write_text(json.dumps([b.id, len(b.data)]))
    (slot / ".head").write_bytes(b.data[:b.header_len])
    off = b.header_len
    for name, size, _ in b.streamed():
        (slot / name).parent.mkdir(parents=True, exist_ok=True)
        (slot / name).write_bytes(b.data[off:off + size])
        off += size
    node.start()
    try:
        with Sub(broker, "city/ota-held/status") as sub:
            sub.wait(lambda m: b"online" in m.payload, 30, "birth")
        res = ota.push(["ota-held"], broker.address, b)["ota-held"]
        assert (res.state, res.version) == ("ok", NEW), res.as_dict()
        assert res.sent < 1000, res.as_dict()          # the offer only: nothing sent again
        p = json.loads((node.flash / "fw.json").read_text())
        assert p["run"] == "fw/a/" and p["version"] == NEW
    finally:
        node.kill()


def test_ota_push_all_updates_four_virtual_nodes_at_once(broker, tmp_path, keys):
    d, pub = keys
    nodes = [ota_node(tmp_path, broker, "fleet-%d" % k, pub) for k in range(1, 5)]
    try:
        with Sub(broker, "city/+/status") as sub:
            wait_for(lambda: len({m.topic for m in sub.all(lambda m: b"online" in m.payload)}) == 4, 30,
                     what="4 births")
        p = subprocess.run([sys.executable, "-m", "citynode", "ota", "push", "--all", "--broker", broker.address,
                            "--bundle", str(d / "new.cnota"), "--json"], capture_output=True, text=True, timeout=180)
        assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
        out = [json.loads(x) for x in p.stdout.splitlines()]
        res = {r["node"]: r for r in out if "result" in r}
        assert sorted(res) == ["fleet-%d" % k for k in range(1, 5)]
        assert all(r["result"] == "ok" and r["fw"] == NEW for r in res.values()), res
        assert {r["node"] for r in out if r.get("phase") == "send"} == set(res)   # progress lines per node
        # pushing it again to one named node that is gone: exit 3
        p = subprocess.run([sys.executable, "-m", "citynode", "ota", "push", "nobody", "--broker", broker.address,
                            "--bundle", str(d / "new.cnota")], capture_output=True, text=True, timeout=60)
        assert p.returncode == 3 and "nobody" in p.stderr
    finally:
        for n in nodes:
            n.kill()


def test_a_usb_deploy_after_an_update_runs_what_was_deployed(tmp_path):
    """fw.json would keep the node on its OTA version; a deploy removes it with its commit."""
    from simproc import SimProc, run, snapshot
    import os
    env = dict(os.environ, XDG_RUNTIME_DIR=str(tmp_path / "run"), XDG_CACHE_HOME=str(tmp_path / "cache"))
    os.makedirs(env["XDG_RUNTIME_DIR"])
    src = snapshot(tmp_path / "src")
    flash = tmp_path / "flash"
    (flash / "fw/a").mkdir(parents=True)
    (flash / "fw/a/main.py").write_text("print('the OTA version')\n")
    (flash / "fw.json").write_text(json.dumps({"run": "fw/a/", "prev": "", "trial": False}))
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(sim_config("usb-after-ota")))
    with SimProc(flash, "--empty", "--config", str(cfg), env=env) as sim:
        r = run(["deploy", "--port", sim.port, "--src", str(src), "--json", "--no-reset"], env=env)
        assert r.returncode == 0, r.stderr
        assert "fw.json" in json.loads(r.stdout)["removed"]
    assert not (flash / "fw.json").exists() and (flash / "node.mpy").exists()


def test_a_trial_that_finds_no_broker_in_time_rolls_back_with_no_birth(broker, tmp_path, keys):
    """The way to the broker is gone for the new version: the trial cannot publish its birth within
    ota.trial_s, resets itself, and the previous version runs and reports it once the way is back.
    The gate turns new connections away from before the transfer, while the session that carries
    it goes on: the trial finds no broker however fast it reboots (a broker frozen when the switch
    is seen raced a reboot of ~50 ms, and lost under load)."""
    d, pub = keys
    gate = Gate(broker).start()
    cfg = sim_config("ota-nb", interval=1, ota={"pubkey": pub, "trial_s": 10})
    cfg["mqtt"]["backoff_max_s"] = 2
    node = VNode(tmp_path, cfg, gate).start()
    try:
        with Sub(broker, "city/ota-nb/#") as sub:
            sub.wait(lambda m: b"online" in m.payload, 30, "birth")
            gate.close()
            switched, res = threading.Event(), {}

            def progress(nid, ev):
                if ev["phase"] == "reboot":
                    switched.set()

            t = threading.Thread(target=lambda: res.update(
                ota.push(["ota-nb"], broker.address, d / "new.cnota", progress=progress, boot_timeout=60)))
            t.start()
            wait_for(switched.is_set, 60, what="the switch")
            wait_for(lambda: "no birth within 10 s on trial" in node.output(), 30, what="the trial's own reset")
            assert gate.refused > 0        # the trial tried, and found no way to the broker
            gate.open()
            t.join(90)
            assert not t.is_alive()
            r = res["ota-nb"]
            assert (r.state, r.detail) == ("rolled_back", "rolled back to %s (no_birth)" % OLD), r.as_dict()
            ev = sub.wait(lambda m: m.topic.endswith("/event") and b"ota_rollback" in m.payload, 10, "ota_rollback")
            detail = json.loads(ev[0].payload)["detail"]
            assert detail["reason"] == "no_birth" and detail["version"] == NEW and detail["running"] == OLD
            assert [x["fw"] for x in births(sub, "ota-nb")] == [OLD, OLD]    # the trial never had a birth
        assert json.loads((node.flash / "fw.json").read_text())["run"] == ""
    finally:
        node.kill()
        gate.stop()


def test_a_transfer_resumes_after_the_link_is_lost_for_a_while(broker, tmp_path, keys):
    """The broker stops answering for longer than the sender's patience, half-way through: the
    sender offers again, the node says what it holds, and the transfer goes on from there."""
    d, pub = keys
    node = ota_node(tmp_path, broker, "ota-lost", pub)
    b = ota.Bundle.read(d / "new.cnota")
    try:
        with Sub(broker, "city/ota-lost/status") as sub:
            sub.wait(lambda m: b"online" in m.payload, 30, "birth")
        frozen = threading.Event()

        def progress(nid, ev):
            if ev["phase"] == "send" and ev["done"] > len(b.data) // 2 and not frozen.is_set():
                frozen.set()
                broker.freeze()
                threading.Timer(4.0, broker.thaw).start()
        res = ota.push(["ota-lost"], broker.address, b, progress=progress, ack_timeout=2)["ota-lost"]
        assert frozen.is_set()
        assert res.state == "ok" and res.version == NEW, res.as_dict()
        assert res.sent < 1.15 * len(b.data)     # resumed where the node was: nothing sent twice
    finally:
        broker.thaw()
        node.kill()

"""Issue 15, the node's side of an update without a broker: firmware/ota.py on CPython, fed a
bundle that citynode.ota signed, in chunks, cut off and resumed anywhere."""
import hashlib
import json
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings, strategies as st

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "firmware"))
import ota as node_ota  # noqa: E402  (firmware/ota.py)
import config as fw_config  # noqa: E402

from citynode import ota  # noqa: E402

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PUB = ota.public_hex(KEY)
# CPython stands in for the node: its "ABI" is .mpy 0.0 and its "MicroPython" its own version.
HERE = dict(mpy="0.0", micropython="%d.%d" % sys.implementation.version[:2])
FILES = {"main.py": b"print('new')\n", "node.mpy": bytes(range(256)) * 7, "drivers/x.mpy": b"x" * 999,
         "boards/sim.json": b"{}", "empty.mpy": b""}


def bundle(version="0.9.0", key=KEY, files=FILES, **kw):
    args = dict(HERE)
    args.update(kw)
    return ota.pack(files, version, key, **args)


def offer(rx, data, downgrade=False):
    b = ota.Bundle(data)
    return rx.offer({"op": "offer", "id": b.id, "size": len(data), "downgrade": downgrade})["held"]


def feed(rx, data, start, step):
    off = start
    while off < len(data):
        r = rx.data(off, data[off:off + step])
        assert "gap" not in r
        off = r["held"]
        if r.get("switch"):
            return r
    return None


@pytest.fixture
def flash(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def slot_files(flash, slot):
    d = flash / slot
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in d.rglob("*") if p.is_file()}


def test_a_bundle_in_chunks_is_staged_verified_and_switched_to(flash):
    data = bundle()
    rx = node_ota.Receiver(PUB, "", "0.3.1", log=lambda m: None)
    assert offer(rx, data) == 0
    r = feed(rx, data, 0, 496)
    assert r == {"held": len(data), "switch": "fw/a"}
    assert slot_files(flash, "fw/a") == FILES
    p = json.loads((flash / "fw.json").read_text())
    assert p == {"run": "fw/a/", "prev": "", "trial": True, "tries": 0, "version": "0.9.0", "from": "0.3.1"}


def test_the_next_update_goes_beside_the_running_one_and_its_fallback(flash):
    (flash / "fw.json").write_text(json.dumps({"run": "fw/a/", "prev": "fw/b/", "trial": False}))
    for s in ("fw/a", "fw/b", "fw/c"):
        (flash / s).mkdir(parents=True)
        (flash / s / "keep.mpy").write_bytes(b"old")
    data = bundle()
    rx = node_ota.Receiver(PUB, "fw/a/", "0.3.1", log=lambda m: None)
    offer(rx, data)
    assert feed(rx, data, 0, 300)["switch"] == "fw/c"
    assert (flash / "fw/a/keep.mpy").read_bytes() == b"old" and (flash / "fw/b/keep.mpy").read_bytes() == b"old"
    assert slot_files(flash, "fw/c") == FILES  # the stale third slot was emptied first
    p = json.loads((flash / "fw.json").read_text())
    assert p["run"] == "fw/c/" and p["prev"] == "fw/a/"


@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.floats(min_value=0, max_value=1), max_size=4), step=st.integers(1, 700))
def test_cut_off_anywhere_a_new_receiver_resumes_from_what_the_flash_holds(tmp_path_factory, cuts, step):
    import os
    d = tmp_path_factory.mktemp("flash")
    old = os.getcwd()
    os.chdir(d)
    try:
        data = bundle()
        held = 0
        for c in sorted(cuts):
            rx = node_ota.Receiver(PUB, "", "0.3.1", log=lambda m: None)   # a reboot
            assert offer(rx, data) == held
            stop = int(c * len(data))
            off = held
            while off < stop:
                r = rx.data(off, data[off:min(off + step, stop)])
                off = r["held"]
            held = max(held, off)
            if (d / "fw.json").exists():
                break
        rx = node_ota.Receiver(PUB, "", "0.3.1", log=lambda m: None)
        if not (d / "fw.json").exists():
            assert offer(rx, data) == held
            assert feed(rx, data, held, step)["switch"] == "fw/a"
        assert {k: v for k, v in slot_files(d, "fw/a").items()} == FILES
    finally:
        os.chdir(old)


def test_a_cut_after_the_last_byte_is_finished_by_the_offer_that_resumes_it(flash, monkeypatch):
    """Every byte on the flash, the power gone while they were hashed: the next offer has nothing
    left to ask for, so it checks the files and switches (the sender goes to the reboot)."""
    data = bundle()
    rx = node_ota.Receiver(PUB, "", "0.3.1", log=lambda m: None)
    offer(rx, data)

    def cut():
        raise KeyboardInterrupt("power cut")
    monkeypatch.setattr(rx, "finish", cut)
    with pytest.raises(KeyboardInterrupt):
        feed(rx, data, 0, 496)
    assert not (flash / "fw.json").exists()
    rx = node_ota.Receiver(PUB, "", "0.3.1", log=lambda m: None)    # the reboot
    b = ota.Bundle(data)
    r = rx.offer({"op": "offer", "id": b.id, "size": len(data)})
    assert r == {"held": len(data), "offer": 1, "switch": "fw/a"}
    assert json.loads((flash / "fw.json").read_text())["run"] == "fw/a/" and slot_files(flash, "fw/a") == FILES
    # the same with a file changed on the flash meanwhile: refused by its hash, the slot emptied
    (flash / "fw.json").unlink()
    rx = node_ota.Receiver(PUB, "", "0.3.1", log=lambda m: None)
    offer(rx, data)
    monkeypatch.setattr(rx, "finish", cut)
    with pytest.raises(KeyboardInterrupt):
        feed(rx, data, 0, 496)
    (flash / "fw/a/node.mpy").write_bytes(b"\0" * len(FILES["node.mpy"]))
    with pytest.raises(node_ota.Refused, match="hash: node.mpy"):
        node_ota.Receiver(PUB, "", "0.3.1", log=lambda m: None).offer({"id": b.id, "size": len(data)})
    assert not (flash / "fw/a").exists() and not (flash / "fw.json").exists()


def test_a_file_longer_than_the_manifest_says_is_started_over(flash):
    """A flash write that failed part-way (an OSError) and came again can leave a file longer than
    its manifest entry: the next offer starts that file over, with what came after it, instead of
    counting it whole and ending the transfer refused by hash."""
    data = bundle()
    b = ota.Bundle(data)
    at = {f[0]: b.header_len + sum(g[1] for g in b.streamed()[:i]) for i, f in enumerate(b.streamed())}
    rx = node_ota.Receiver(PUB, "", "0.3.1", log=lambda m: None)
    offer(rx, data)
    off = 0
    while off < at["node.mpy"] + 500:
        off = rx.data(off, data[off:min(off + 496, at["node.mpy"] + 500)])["held"]
    with open(flash / "fw/a/drivers/x.mpy", "ab") as f:
        f.write(b"x" * 40)
    rx = node_ota.Receiver(PUB, "", "0.3.1", log=lambda m: None)    # the next offer
    assert offer(rx, data) == at["drivers/x.mpy"]
    assert feed(rx, data, at["drivers/x.mpy"], 496)["switch"] == "fw/a"
    assert slot_files(flash, "fw/a") == FILES


def test_a_chunk_at_the_wrong_offset_is_not_written(flash):
    data = bundle()
    rx = node_ota.Receiver(PUB, "", "0.3.1", log=lambda m: None)
    offer(rx, data)
    rx.data(0, data[:100])
    assert rx.data(300, data[300:400]) == {"held": 100, "gap": 1, "at": 300}   # one was lost
    assert rx.data(0, data[:100]) == {"held": 100, "gap": 1, "at": 0}       # one came twice
    assert feed(rx, data, 100, 496)["switch"] == "fw/a"


@pytest.mark.parametrize("make,reason", [
    (lambda: bundle(key=Ed25519PrivateKey.generate()), "signature: not signed by this node's ota.pubkey"),
    (lambda: bundle(mpy="6.2"), "abi: bundle needs .mpy 6.2"),
    (lambda: bundle(micropython="1.0"), "micropython: bundle needs 1.0"),
    (lambda: bundle(version="0.2.9"), "version 0.2.9 is older than the running 0.3.1"),
])
def test_refused_in_the_header_before_a_file_is_written(flash, make, reason):
    data = make()
    rx = node_ota.Receiver(PUB, "", "0.3.1", log=lambda m: None)
    offer(rx, data)
    hl = ota.Bundle(data).header_len
    with pytest.raises(node_ota.Refused) as e:
        rx.data(0, data[:hl + 10])
    assert str(e.value).startswith(reason)
    assert not (flash / "fw/a").exists() and not (flash / "fw.json").exists()


def test_one_byte_changed_anywhere_is_refused(flash):
    data = bundle()
    hl = ota.Bundle(data).header_len
    for where in (20, hl - 5, hl + 3, len(data) - 1):       # manifest, signature, a file, main.py
        bad = bytearray(data)
        bad[where] ^= 0x01
        rx = node_ota.Receiver(PUB, "", "0.3.1", log=lambda m: None)
        try:
            offer(rx, bytes(bad))
            feed(rx, bytes(bad), 0, 496)
            raise AssertionError("byte %d changed and accepted" % where)
        except node_ota.Refused as e:
            assert str(e).split(":")[0] in ("signature", "hash", "manifest"), e
        assert not (flash / "fw.json").exists()


def test_downgrade_only_when_allowed_and_no_key_no_update(flash):
    data = bundle(version="0.2.0")
    rx = node_ota.Receiver(PUB, "", "0.3.1", log=lambda m: None)
    offer(rx, data, downgrade=True)
    assert feed(rx, data, 0, 496)["switch"] == "fw/a"
    with pytest.raises(node_ota.Refused, match="no ota.pubkey"):
        offer(node_ota.Receiver(None, "", "0.3.1"), data)


def test_commit_keeps_the_previous_version_and_removes_the_rest(flash):
    for s in ("fw/a", "fw/b", "fw/c"):
        (flash / s).mkdir(parents=True)
    (flash / "fw.json").write_text(json.dumps({"run": "fw/b/", "prev": "fw/a/", "trial": True, "tries": 1}))
    assert node_ota.commit()
    assert json.loads((flash / "fw.json").read_text())["trial"] is False
    assert (flash / "fw/a").exists() and (flash / "fw/b").exists() and not (flash / "fw/c").exists()


def test_the_ota_key_cannot_be_set_over_mqtt():
    board = json.loads((ROOT / "host_tools/citynode/sim/board/boards/sim.json").read_text())
    cfg = {"node_id": "a", "board": "sim", "mqtt": {"host": "h"}, "ota": {"pubkey": PUB}}
    with pytest.raises(fw_config.ConfigError, match="not a settable key"):
        fw_config.set_key(cfg, "ota.pubkey", "00" * 32, board)


def test_keygen_writes_a_private_key_only_we_can_read(tmp_path):
    import stat
    pub = ota.keygen(tmp_path / "s")
    assert (tmp_path / "s/ota.pub").read_text().strip() == pub and len(bytes.fromhex(pub)) == 32
    assert stat.S_IMODE((tmp_path / "s/ota.key").stat().st_mode) == 0o600
    assert ota.public_hex(ota.load_key(tmp_path / "s")) == pub
    with pytest.raises(ota.CheckFailed, match="exists already"):
        ota.keygen(tmp_path / "s")


def test_bundle_compiles_the_firmware_and_says_its_version(tmp_path):
    ota.keygen(tmp_path / "s")
    info = ota.bundle(secrets=tmp_path / "s", out=tmp_path / "b.cnota", version="7.1.2")
    b = ota.Bundle.read(tmp_path / "b.cnota")
    assert b.verify((tmp_path / "s/ota.pub").read_text().strip())
    names = [f[0] for f in b.manifest["files"]]
    assert names[-1] == "main.py" and "node.mpy" in names and "version.mpy" in names and "ota.mpy" in names
    assert b.manifest["version"] == info["version"] == "7.1.2"
    assert b.manifest["mpy"] == "6.3" and b.manifest["micropython"] == "1.29"
    off = b.header_len
    for name, size, digest in b.manifest["files"]:
        assert hashlib.sha256(b.data[off:off + size]).hexdigest() == digest
        off += size
    assert b"7.1.2" in b.data   # version.mpy carries it


def test_a_delta_carries_what_changed_and_copies_the_rest_from_the_running_version(flash):
    (flash / "fw/b/drivers").mkdir(parents=True)
    for name, data in FILES.items():
        (flash / "fw/b" / name).parent.mkdir(parents=True, exist_ok=True)
        (flash / "fw/b" / name).write_bytes(data)
    (flash / "fw.json").write_text(json.dumps({"run": "fw/b/", "prev": "", "trial": False}))
    new = dict(FILES, **{"node.mpy": b"changed"})
    base = {n: hashlib.sha256(d).hexdigest() for n, d in FILES.items()}
    data = bundle(version="0.9.1", files=new, base=base)
    full = bundle(version="0.9.1", files=new)
    assert len(data) < len(full) - sum(len(d) for n, d in FILES.items() if n != "node.mpy") + 10
    rx = node_ota.Receiver(PUB, "fw/b/", "0.9.0", log=lambda m: None)
    offer(rx, data)
    assert feed(rx, data, 0, 496)["switch"] == "fw/a"
    assert slot_files(flash, "fw/a") == new
    # the running version's drivers/x.mpy is not what the delta was made against: refused up front
    (flash / "fw.json").write_text(json.dumps({"run": "fw/b/", "prev": "", "trial": False}))
    (flash / "fw/b/drivers/x.mpy").write_bytes(b"y" * 999)
    rx = node_ota.Receiver(PUB, "fw/b/", "0.9.0", log=lambda m: None)
    offer(rx, data)
    with pytest.raises(node_ota.Refused, match="delta: the running firmware has another drivers/x.mpy"):
        rx.data(0, data[:ota.Bundle(data).header_len])


def test_a_whole_image_goes_to_the_next_ota_partition_and_the_bootloader_switches(flash):
    sys.path.insert(0, str(ROOT / "tests" / "unix"))
    import fakeesp32
    bl = fakeesp32.Bootloader(size=8 * 4096)
    esp = bl.module()
    img = bytes((i * 13) & 0xFF for i in range(5 * 4096 + 77))
    data = ota.pack({"image.bin": img}, "0.6.0", KEY, kind="image", **HERE)
    rx = node_ota.Receiver(PUB, "", "0.5.0", log=lambda m: None, esp32=esp)
    offer(rx, data)
    hl = ota.Bundle(data).header_len
    off = 0
    while off < hl + 2 * 4096 + 100:                 # a cut after two blocks and a bit
        off = rx.data(off, data[off:off + 496])["held"]
    rx = node_ota.Receiver(PUB, "", "0.5.0", log=lambda m: None, esp32=esp)   # the reboot
    assert offer(rx, data) == hl + 2 * 4096           # resumed at the last whole block
    assert feed(rx, data, hl + 2 * 4096, 496) == {"held": len(data), "switch": "fw/a"}
    assert bytes(bl.data["ota_1"][:len(img)]) == img and bl.state == "new" and bl.boot == "ota_1"
    assert not (flash / "fw.json").exists()          # the files' pointer is not touched
    big = ota.pack({"image.bin": b"\0" * (9 * 4096)}, "0.6.1", KEY, kind="image", **HERE)
    rx = node_ota.Receiver(PUB, "", "0.5.0", log=lambda m: None, esp32=esp)
    offer(rx, big)
    with pytest.raises(node_ota.Refused, match="image: 36864 bytes, the partition holds 32768"):
        rx.data(0, big[:ota.Bundle(big).header_len])
    with pytest.raises(node_ota.Refused, match="image: this board has no OTA partitions"):
        rx = node_ota.Receiver(PUB, "", "0.5.0", log=lambda m: None)   # no esp32 module here
        offer(rx, data)
        rx.data(0, data[:hl])


def test_an_image_started_over_after_a_files_offer_starts_at_its_first_block(flash):
    """An image cut after two blocks, then a files bundle offered (its slot is emptied, the image's
    header with it): the image's next offer starts from its header, so its blocks start over too,
    not at the block its old progress record names (which cost a whole transfer, refused by hash)."""
    sys.path.insert(0, str(ROOT / "tests" / "unix"))
    import fakeesp32
    bl = fakeesp32.Bootloader(size=8 * 4096)
    esp = bl.module()
    img = bytes((i * 7 + i // 4096) & 0xFF for i in range(4 * 4096 + 5))   # no two blocks alike
    data = ota.pack({"image.bin": img}, "0.6.0", KEY, kind="image", **HERE)
    rx = node_ota.Receiver(PUB, "", "0.5.0", log=lambda m: None, esp32=esp)
    offer(rx, data)
    off = 0
    while off < ota.Bundle(data).header_len + 2 * 4096 + 100:
        off = rx.data(off, data[off:off + 496])["held"]
    assert offer(node_ota.Receiver(PUB, "", "0.5.0", log=lambda m: None), bundle()) == 0
    rx = node_ota.Receiver(PUB, "", "0.5.0", log=lambda m: None, esp32=esp)
    assert offer(rx, data) == 0
    assert feed(rx, data, 0, 496) == {"held": len(data), "switch": "fw/a"}
    assert bytes(bl.data["ota_1"][:len(img)]) == img


def test_garbage_is_refused_at_its_first_8_bytes(flash):
    rx = node_ota.Receiver(PUB, "", "0.3.1", log=lambda m: None)
    rx.offer({"id": "0123456789abcdef", "size": 100000})
    with pytest.raises(node_ota.Refused, match="not a citynode OTA bundle"):
        rx.data(0, b"CNOTA\x01\xff\xff" + bytes(400))     # a 65535-byte manifest: never stored
    assert not (flash / "fw/a").exists()


def test_the_node_side_fits_a_small_heap_on_the_unix_port(tmp_path):
    """firmware/ota.py and ed25519.py (.mpy, as on a node) on MicroPython in a 52 KB heap with
    asyncio loaded, as on a node, the modules included (an ESP32 starts with 56 KB, and the unix
    port's 64-bit objects are about twice as big): the real firmware's bundle, received in 496-byte
    chunks, verified, switched to."""
    import subprocess
    from citynode import deploy
    files = deploy.build()
    data = ota.pack(files, "0.9.0", KEY)
    (tmp_path / "b.bin").write_bytes(data)
    (tmp_path / "lib").mkdir()
    for m in ("ota.mpy", "ed25519.mpy", "persist.mpy"):    # as the node loads them
        (tmp_path / "lib" / m).write_bytes(files[m])
    script = """
import sys, gc, os, asyncio
sys.path.insert(0, %r)
os.chdir(%r)
import ota
gc.collect()
base = gc.mem_alloc()
rx = ota.Receiver(%r, "", "0.3.1", log=lambda m: None)
f = open("b.bin", "rb")
buf = bytearray(496)
print(rx.offer({"id": %r, "size": %d}))
peak = 0
while True:
    n = f.readinto(buf)
    r = rx.data(rx.held, memoryview(buf)[:n])
    peak = max(peak, gc.mem_alloc() - base)
    if r.get("switch"):
        break
print(r["switch"], peak)
""" % (str(tmp_path / "lib"), str(tmp_path), PUB, ota.Bundle(data).id, len(data))
    p = subprocess.run([str(Path(sys.executable).with_name("micropython")), "-X", "heapsize=52k", "-c", script],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.split()[-2] == "fw/a"
    assert json.loads((tmp_path / "fw.json").read_text())["version"] == "0.9.0"
    for name, size, digest in ota.Bundle(data).manifest["files"]:
        assert hashlib.sha256((tmp_path / "fw/a" / name).read_bytes()).hexdigest() == digest


def test_a_bundle_larger_than_the_free_flash_is_refused_before_a_file_is_written(flash, monkeypatch):
    data = bundle()
    need = sum(len(d) for d in FILES.values())
    monkeypatch.setattr(node_ota, "free_bytes", lambda: need + 100)   # less than need + the margin
    rx = node_ota.Receiver(PUB, "", "0.3.1", log=lambda m: None)
    offer(rx, data)
    with pytest.raises(node_ota.Refused, match="flash: %d bytes needed, %d free" % (need + 8192, need + 100)):
        rx.data(0, data[:ota.Bundle(data).header_len + 1])
    assert not (flash / "fw/a").exists() and not (flash / "fw.json").exists()


def test_a_release_is_newer_than_its_release_candidate():
    assert node_ota.version_tuple("0.4.0-rc1") < node_ota.version_tuple("0.4.0") < node_ota.version_tuple("0.4.1")
    assert node_ota.version_tuple("0.4.0") < node_ota.version_tuple("0.4.0.1")

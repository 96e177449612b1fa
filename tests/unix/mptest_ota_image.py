# firmware/ota_image.py on the unix port, against a fake esp32.Partition (fakeesp32.py): an
# image written in blocks, resumed after a cut, read back and hashed, switched to, confirmed
# by its trial, or rolled back by the bootloader when it was not.
import binascii
import hashlib
import os

import fakeesp32
import ota_image
import persist

_HOME = os.getcwd()


def _fresh(size=16 * 4096):
    # a fresh directory under /tmp as cwd (the module writes relative paths, as on the node), and
    # a board with two OTA partitions: (its bootloader, its esp32 module)
    d = "/tmp/mpota-" + "".join("%02x" % b for b in os.urandom(6))
    os.chdir(_HOME)
    os.mkdir(d)
    os.chdir(d)
    bl = fakeesp32.Bootloader(size)
    return bl, bl.module()


def _image(n):
    return bytes((i * 7 + 3) & 0xFF for i in range(n))


def _write(esp, img, bid, cut=None):
    sha = binascii.hexlify(hashlib.sha256(img).digest()).decode()
    sink = ota_image.ImageSink(ota_image.next_partition(esp), bid, len(img), sha, resume=True)
    off = sink.held()
    stop = cut if cut is not None else len(img)
    while off < stop:
        sink.write(img[off:min(off + 500, stop)])
        off += min(500, stop - off)
    return sink


def test_an_image_resumes_from_its_last_block_and_the_trial_confirms_it():
    bl, esp = _fresh()
    img = _image(3 * 4096 + 1234)
    _write(esp, img, "b1", cut=2 * 4096 + 700)             # power cut: the partial block is lost
    sink = _write(esp, img, "b1")
    assert sink.held() == len(img) and sink.block == 3       # 3 whole blocks + 1234 B in RAM
    sink.finish()
    sink.switch("0.5.0", "0.4.0")
    assert bl.boot == "ota_1" and bl.state == "new"
    assert bytes(bl.data["ota_1"][:len(img)]) == img
    assert bl.running == "ota_0"                            # until the reset
    bl.reset()
    assert bl.running == "ota_1" and ota_image.boot_check(esp) == "trial"
    ota_image.commit(esp)
    assert bl.state == "valid" and persist.read_json("ota_image.json") is None
    bl.reset()
    assert bl.running == "ota_1"


def test_an_image_started_over_starts_at_its_first_block():
    bl, esp = _fresh()
    img = _image(3 * 4096)
    _write(esp, img, "b5", cut=2 * 4096 + 10)
    # the same image from its header again (its slot was emptied): the old record must not count
    assert ota_image.ImageSink(ota_image.next_partition(esp), "b5", len(img), "00").held() == 0
    assert _write(esp, img, "b5").held() == len(img) and persist.read_json("ota_image.json")["block"] == 3


def test_an_image_that_never_confirms_is_rolled_back_and_reported():
    bl, esp = _fresh()
    sink = _write(esp, _image(5000), "b2")
    sink.finish()
    sink.switch("0.5.0", "0.4.0")
    bl.reset()
    assert ota_image.boot_check(esp) == "trial"
    persist.write_json("crash.json", {"error": "RuntimeError('boom',)"})   # main.py's record
    bl.reset()                                               # the crash's reset, unconfirmed
    assert bl.running == "ota_0"
    r = ota_image.boot_check(esp)
    assert r["reason"] == "crash" and r["crash"]["error"].startswith("RuntimeError") and r["version"] == "0.5.0"
    assert ota_image.boot_check(esp) is None                 # reported once


def test_a_changed_byte_in_the_partition_fails_the_read_back():
    bl, esp = _fresh()
    sink = _write(esp, _image(9000), "b3")
    sink._flush()
    bl.data["ota_1"][4100] ^= 1
    try:
        sink.finish()
        raise AssertionError("accepted")
    except ValueError as e:
        assert str(e).startswith("hash:")
    assert bl.state == "valid" and bl.boot == "ota_0"


def test_an_image_larger_than_the_partition_is_refused():
    bl, esp = _fresh(2 * 4096)
    try:
        ota_image.ImageSink(ota_image.next_partition(esp), "b4", 3 * 4096, "00")
        raise AssertionError("accepted")
    except ValueError as e:
        assert "partition holds 8192" in str(e)

"""`make firmware-image`: where ESP-IDF or the MicroPython checkout is missing it says so in one
line (exit 2); where both are there it builds the port's image with the port's manifest and then
firmware/manifest.py. ESP-IDF is not installed here: the build itself stops at a dry run."""
import os
import subprocess

from conftest import ROOT

SCRIPT = ROOT / "tools" / "firmware-image.sh"


def run(env_extra, board="ESP32_GENERIC"):
    env = {k: v for k, v in os.environ.items() if k not in ("IDF_PATH", "MICROPY_SRC")}
    env.update(env_extra, BOARD=board)
    return subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=60)


def fake_idf(tmp_path, version=(5, 5, 2)):
    idf = tmp_path / "esp-idf"
    (idf / "tools" / "cmake").mkdir(parents=True)
    (idf / "tools" / "cmake" / "version.cmake").write_text(
        "set(IDF_VERSION_MAJOR %d)\nset(IDF_VERSION_MINOR %d)\nset(IDF_VERSION_PATCH %d)\n" % version)
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "idf.py").write_text("#!/bin/sh\nexit 0\n")
    (bin_ / "idf.py").chmod(0o755)
    return {"IDF_PATH": str(idf), "PATH": "%s:%s" % (bin_, os.environ["PATH"])}


def fake_micropython(tmp_path, esp32=True, submodules=True):
    mp = tmp_path / "micropython"
    (mp / "ports" / ("esp32" if esp32 else "unix")).mkdir(parents=True)
    if submodules:
        (mp / "lib" / "micropython-lib").mkdir(parents=True)
        (mp / "lib" / "micropython-lib" / "README.md").write_text("x")
    return str(mp)


def one_line_error(p, *words):
    assert p.returncode == 2 and p.stdout == "", (p.returncode, p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("firmware-image: not built: "), lines
    for w in words:
        assert w in lines[0], lines


def test_without_esp_idf_it_says_so_in_one_line():
    one_line_error(run({}), "IDF_PATH is unset", "v5.5.2")


def test_a_wrong_idf_path_or_no_idf_py(tmp_path):
    one_line_error(run({"IDF_PATH": str(tmp_path)}), "not an ESP-IDF tree")
    env = fake_idf(tmp_path)
    env["PATH"] = "/usr/bin:/bin"
    one_line_error(run(env), "idf.py is not on PATH")


def test_a_micropython_tree_without_the_esp32_port_or_its_submodules(tmp_path):
    env = fake_idf(tmp_path)
    one_line_error(run(env), "set MICROPY_SRC")
    one_line_error(run(dict(env, MICROPY_SRC=fake_micropython(tmp_path / "a", esp32=False))), "no ports/esp32")
    one_line_error(run(dict(env, MICROPY_SRC=fake_micropython(tmp_path / "b", submodules=False))), "submodules")


def test_unknown_board(tmp_path):
    one_line_error(run({}, board="PYBV11"), "PYBV11")


def test_the_build_freezes_the_ports_manifest_then_ours(tmp_path):
    mp = fake_micropython(tmp_path)
    env = dict(fake_idf(tmp_path, (5, 4, 2)), MICROPY_SRC=mp, FIRMWARE_IMAGE_DRY_RUN="1")
    p = run(env, board="ESP32_GENERIC_S3")
    assert p.returncode == 0, p.stderr
    assert "ESP-IDF 5.4.2, not v5.5.2" in p.stderr            # a supported but not the pinned one
    out = ROOT / "build" / "firmware-image" / "ESP32_GENERIC_S3"
    assert p.stdout.split() == ["make", "-C", mp + "/ports/esp32", "BOARD=ESP32_GENERIC_S3",
                                "BUILD=%s/build" % out, "FROZEN_MANIFEST=%s/manifest.py" % out]
    assert (out / "manifest.py").read_text().splitlines() == [
        'include("$(PORT_DIR)/boards/manifest.py")', 'include("%s/firmware/manifest.py")' % ROOT]

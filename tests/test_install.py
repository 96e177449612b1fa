"""The tool as a technician installs it: a wheel built from this checkout, installed non-editable
into a throwaway venv, run from outside the checkout. Its dependencies come from the test venv
(a .pth line, which does not bring the checkout's editable install along), so nothing is
downloaded.

What it shows: the wheel carries the firmware and its board profiles (and the simulator only in
its own package); `citynode sim` from the install publishes; `deploy` from the install sends the
firmware to a virtual node and leaves no simulator file on its flash; the library imports
without Click."""
import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from helpers import Sub
from simproc import SimProc, sim_config

ROOT = Path(__file__).resolve().parent.parent
DEV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("install")
    wheels = tmp / "wheels"
    # --no-build-isolation: setuptools from the test venv, no download
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(wheels), str(ROOT)], check=True, capture_output=True, timeout=300)
    wheel = next(wheels.glob("citynode-*.whl"))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    (Path(purelib) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps",
                    "--no-index", str(wheel)], check=True, capture_output=True, timeout=300)
    env = dict(os.environ, CITYNODE_MICROPYTHON=str(DEV_BIN / "micropython"),
               PATH="%s:%s" % (venv / "bin", os.environ.get("PATH", "")))
    env.pop("PYTHONPATH", None)
    return {"wheel": wheel, "venv": venv, "py": str(py), "citynode": str(venv / "bin" / "citynode"),
            "env": env, "purelib": purelib, "cwd": str(tmp)}


def test_wheel_carries_firmware_boards_and_the_sim_apart(installed):
    names = set(zipfile.ZipFile(installed["wheel"]).namelist())
    for f in ("citynode/firmware/main.py", "citynode/firmware/version.py", "citynode/firmware/drivers/hcsr04.py",
              "citynode/boards/esp32-generic.json", "citynode/sim/board/simhw.py",
              "citynode/sim/board/boards/sim.json", "citynode/cli/__init__.py", "citynode/examples/sim-water.json"):
        assert f in names, f
    assert not [n for n in names if n.startswith("citynode/firmware/simhw")]
    assert "citynode/boards/sim.json" not in names


def test_installed_package_is_used_and_library_needs_no_click(installed):
    code = """
import importlib, json, pkgutil, sys
import citynode, citynode.fw as fw
# every library module: citynode/*.py and the sim package (walk_packages would import cli/ itself)
root = citynode.__path__[0]
mods = ['citynode.' + n for _, n, p in pkgutil.iter_modules([root]) if not p and n != '__main__']
mods += ['citynode.sim.' + n for _, n, p in pkgutil.iter_modules([root + '/sim']) if not p]
for m in mods:
    importlib.import_module(m)
print(json.dumps({"file": citynode.__file__, "fw": str(fw.FIRMWARE), "version": citynode.__version__,
                  "click": "click" in sys.modules, "rich": "rich" in sys.modules, "mods": mods}))
"""
    p = subprocess.run([installed["py"], "-c", code], capture_output=True, text=True, env=installed["env"],
                       cwd=installed["cwd"], timeout=60)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["file"].startswith(installed["purelib"]) and r["fw"].startswith(installed["purelib"]), r
    assert "citynode.deploy" in r["mods"] and "citynode.sim.node" in r["mods"], r["mods"]
    assert r["click"] is False and r["rich"] is False, r
    v = subprocess.run([installed["citynode"], "--version"], capture_output=True, text=True, env=installed["env"])
    assert v.stdout.strip() == "citynode, version %s" % r["version"]
    assert r["version"] in (ROOT / "firmware" / "version.py").read_text()


def test_installed_sim_publishes(installed, broker, tmp_path):
    cfg = sim_config(tmp_path / "c.json", node_id="wheel-01", port=broker.port)
    with Sub(broker, "city/wheel-01/#") as sub:
        p = subprocess.Popen([installed["citynode"], "sim", "--flash", str(tmp_path / "flash"), "--config", cfg,
                              "--broker", broker.address], env=installed["env"], cwd=installed["cwd"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            sub.wait(lambda m: m.topic.endswith("/telemetry"), 30, what="telemetry from the installed sim")
        finally:
            p.terminate()
            p.wait(10)
    assert (tmp_path / "flash" / "main.py").exists()


def test_installed_deploy_sends_the_firmware_and_no_simulator(installed, tmp_path):
    flash = tmp_path / "flash"
    cfg = sim_config(tmp_path / "c.json", node_id="wheel-02")
    env = installed["env"]
    with SimProc(flash, "--empty", "--config", cfg, env=env) as sim:
        p = subprocess.run([installed["citynode"], "deploy", "--port", sim.port, "--json"], capture_output=True,
                           text=True, env=env, cwd=installed["cwd"], timeout=120)
        assert p.returncode == 0, p.stderr
        s = json.loads(p.stdout)
    assert "main.py" in s["sent"] and "drivers/hcsr04.mpy" in s["sent"], s["sent"]
    on_flash = sorted(str(f.relative_to(flash)) for f in flash.rglob("*") if f.is_file())
    assert "main.py" in on_flash and "boards/esp32-generic.json" in on_flash, on_flash
    assert not [f for f in on_flash if "simhw" in f or f == "boards/sim.json"], on_flash

"""A virtual node for tests, started the way a person starts one: `citynode sim` in its own
process group (so SIGKILL of the group kills the node's MicroPython process with it)."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def sim_config(node_id="e2e-01", interval=1, keepalive=10, sensors=None, **extra):
    cfg = {"node_id": node_id, "board": "sim", "mqtt": {"host": "127.0.0.1", "port": 1, "keepalive_s": keepalive},
           "interval_s": interval,
           "sensors": sensors if sensors is not None else [
               {"name": "water", "type": "hcsr04", "mount_height_cm": 300.0},
               {"name": "air", "type": "bme280"}]}
    cfg.update(extra)
    return cfg


class VNode:
    def __init__(self, tmp, cfg, broker, scenario=None, env=None):
        self.flash = Path(tmp) / ("flash-" + cfg["node_id"])
        self.flash.mkdir(parents=True, exist_ok=True)
        self.cfg = cfg
        (Path(tmp) / (cfg["node_id"] + ".json")).write_text(json.dumps(cfg))
        self.args = [sys.executable, "-m", "citynode", "sim", "--flash", str(self.flash),
                     "--config", str(Path(tmp) / (cfg["node_id"] + ".json")), "--broker", broker.address]
        if scenario is not None:
            sp = Path(tmp) / (cfg["node_id"] + "-sim.json")
            sp.write_text(json.dumps(scenario))
            self.args += ["--scenario", str(sp)]
        self.env = dict(os.environ, **(env or {}))
        self.log = Path(tmp) / (cfg["node_id"] + ".log")
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(self.args, stdout=open(self.log, "a"), stderr=subprocess.STDOUT,
                                     env=self.env, start_new_session=True)
        return self

    def output(self):
        return self.log.read_text() if self.log.exists() else ""

    def kill(self, sig=signal.SIGKILL):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(10)

    def stop(self):
        self.kill(signal.SIGTERM)

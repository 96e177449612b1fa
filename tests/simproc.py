"""Helpers for the USB-path tests: `citynode sim --serial` as a subprocess (as a technician starts
it), a snapshot of the firmware tree to deploy from, and running the citynode CLI."""
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CITYNODE = str(BIN / "citynode")
MPREMOTE = str(BIN / "mpremote")


def snapshot(dst):
    """A copy of firmware/ and boards/ (others edit the checkout while tests run)."""
    dst = Path(dst)
    shutil.copytree(ROOT / "firmware", dst / "firmware", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copytree(ROOT / "boards", dst / "boards")
    return dst


def sim_config(path, node_id="usb-test-01", port=1883, **extra):
    cfg = {"node_id": node_id, "board": "sim", "mqtt": {"host": "127.0.0.1", "port": port},
           "interval_s": 1, "sensors": [{"name": "water", "type": "hcsr04", "mount_height_cm": 300}]}
    cfg.update(extra)
    Path(path).write_text(json.dumps(cfg))
    return str(path)


def run(args, env=None, timeout=120, **kw):
    """The citynode CLI as a process: CompletedProcess with text output."""
    return subprocess.run([CITYNODE] + list(args), capture_output=True, text=True, env=env,
                          timeout=timeout, **kw)


class SimProc:
    """`citynode sim --serial --flash DIR ...`: reads the port(s) from its first line(s)."""

    def __init__(self, flash, *args, env=None, nodes=1):
        self.flash = Path(flash)
        self.args = list(args)
        self.env = env
        self.nodes = nodes
        self.proc = None
        self.ports = []
        self.info = []

    def start(self, timeout=20):
        argv = [CITYNODE, "sim", "--serial", "--flash", str(self.flash)] + self.args
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env)
        end = time.monotonic() + timeout
        buf = b""
        while len(self.ports) < self.nodes:
            left = end - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                err = self.proc.stderr.read1(4000) if self.proc.poll() is not None else b""
                self.stop()
                raise AssertionError("citynode sim gave no port (rc=%s): %r %r" % (self.proc.returncode, buf, err))
            r, _, _ = select.select([self.proc.stdout], [], [], left)
            if r:
                d = os.read(self.proc.stdout.fileno(), 4096)
                buf += d
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    line = line.decode().strip()
                    if line.startswith("{"):
                        self.info.append(json.loads(line))
                        line = self.info[-1]["port"]
                    self.ports.append(line)
        return self

    @property
    def port(self):
        return self.ports[0]

    def stop(self, timeout=10):
        """SIGTERM, as a technician's Ctrl-C or a service manager; the exit code."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def pid_alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False

"""A broker on 127.0.0.1 for the demo and for laptops: Mosquitto when it is installed,
otherwise the embedded Python broker amqtt (`pip install 'citynode[broker]'`).
Tests never use this fallback: they start their own Mosquitto.

    with LocalBroker() as b:
        print(b.address)        # 127.0.0.1:41873
"""
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time

from .errors import CitynodeError, Unreachable


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mosquitto_path():
    return shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)


class LocalBroker:
    def __init__(self, port=None, prefer="auto"):
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.prefer = prefer
        self.kind = None
        self._proc = None
        self._dir = None
        self._loop = None

    @property
    def address(self):
        return "%s:%d" % (self.host, self.port)

    def start(self):
        exe = mosquitto_path() if self.prefer in ("auto", "mosquitto") else None
        if exe:
            self._start_mosquitto(exe)
        else:
            self._start_amqtt()
        end = time.monotonic() + 10
        while time.monotonic() < end:
            try:
                socket.create_connection((self.host, self.port), 0.2).close()
                return self
            except OSError:
                if self._proc is not None and self._proc.poll() is not None:
                    break
                time.sleep(0.05)
        raise Unreachable("local broker (%s) did not start on %s" % (self.kind, self.address))

    def _start_mosquitto(self, exe):
        self.kind = "mosquitto"
        self._dir = tempfile.mkdtemp(prefix="citynode-broker-")
        conf = os.path.join(self._dir, "mosquitto.conf")
        lines = ["listener %d 127.0.0.1" % self.port, "allow_anonymous true"]
        if os.geteuid() == 0:
            lines.append("user root")  # else it drops to `mosquitto` and cannot use our temp dir
        with open(conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        self._proc = subprocess.Popen([exe, "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def _start_amqtt(self):
        try:
            from amqtt.broker import Broker
        except ImportError:
            raise CitynodeError("no Mosquitto and no amqtt: apt-get install mosquitto, "
                                "or pip install 'citynode[broker]'")
        import asyncio
        self.kind = "amqtt"
        cfg = {"listeners": {"default": {"type": "tcp", "bind": self.address}},
               "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}}}
        ready = threading.Event()

        async def serve():
            b = Broker(cfg)
            await b.start()
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            ready.set()
            await self._stop.wait()
            await b.shutdown()

        threading.Thread(target=lambda: asyncio.run(serve()), daemon=True, name="amqtt").start()
        ready.wait(10)

    def stop(self):
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
            self._proc = None
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._loop = None
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *a):
        self.stop()

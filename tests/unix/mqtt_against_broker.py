# firmware/mqtt.py against a real broker, driven by tests/test_mqtt_broker.py:
#   micropython tests/unix/mqtt_against_broker.py MODE HOST PORT [ARG ...]
# One line per event on stdout: READY, MSG <topic> <size> <payload>, DEAD <reason>, ERR <reason>.
#   pubsub        publishes t/q0 (QoS 0), t/q1 (QoS 1), t/ret (QoS 1, retained); subscribes t/in and
#                 echoes every message to t/echo at QoS 1; "stop" on t/in -> DISCONNECT, BYE
#   will KA       connects with will t/will "offline" (QoS 1), then idles until killed
#   freeze KA     connects with keepalive KA, prints DEAD <reason> when the link is declared dead
#   auth USER PW  connects with a user name and password, prints OK or ERR <reason>
import sys
import asyncio

_here = sys.argv[0].rsplit("/", 1)[0] if "/" in sys.argv[0] else "."
sys.path.insert(0, _here + "/../../firmware")

from mqtt import MQTTClient, MQTTError  # noqa: E402


def say(*a):
    print(" ".join(str(x) for x in a))


async def main(mode, host, port, args):
    s = (await asyncio.open_connection(host, port))[0]
    if mode == "pubsub":
        c = MQTTClient("mp-pubsub", keepalive=10)
        stop = asyncio.Event()

        async def on_message(topic, payload, size):
            say("MSG", topic, size, payload.decode())
            if payload == b"stop":
                stop.set()
            else:
                await c.publish("t/echo", payload, 1)

        c.on_message = on_message
        await c.connect(s)
        await c.subscribe("t/in", 1)
        await c.publish("t/q0", b"zero")
        await c.publish("t/q1", b"one", 1)
        await c.publish("t/ret", b"kept", 1, retain=True)
        say("READY")
        await stop.wait()
        await c.disconnect()
        say("BYE")
    elif mode == "will":
        c = MQTTClient("mp-will", keepalive=int(args[0]), will=("t/will", b"offline", 1, False))
        await c.connect(s)
        say("READY")
        await c.dead.wait()
        say("DEAD", c.reason)
    elif mode == "freeze":
        c = MQTTClient("mp-freeze", keepalive=int(args[0]))
        await c.connect(s)
        say("READY")

        async def pongs():      # PONG: a PINGREQ went out (its time changed) and its answer came back
            sent = c._ping_t
            while True:
                if c._ping_t != sent and not c._ping_out:
                    say("PONG")
                    sent = c._ping_t
                await asyncio.sleep_ms(10)
        t = asyncio.create_task(pongs())
        await c.dead.wait()
        t.cancel()
        say("DEAD", c.reason)
    elif mode == "auth":
        c = MQTTClient("mp-auth", user=args[0], password=args[1])
        try:
            await c.connect(s)
        except MQTTError as e:
            say("ERR", e.args[0])
            return
        say("OK")
        await c.disconnect()


asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]))

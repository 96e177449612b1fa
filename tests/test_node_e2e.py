"""Issue 2, end to end: the real firmware on the unix port (a virtual node), a real Mosquitto,
a paho-mqtt subscriber checking every field of docs/contract.md."""
import json
import time

import citynode
import pytest

from helpers import Sub, wait_for
from nodeproc import VNode, sim_config



def check_telemetry(d):
    assert set(d) <= {"boot", "seq", "ts", "up", "values", "errors", "kept"}, d
    assert isinstance(d["boot"], int) and isinstance(d["seq"], int)
    assert d["ts"] is None or isinstance(d["ts"], int)
    assert isinstance(d["up"], int) and d["up"] >= 0
    assert isinstance(d["values"], dict)
    for k, v in d["values"].items():
        assert "_" in k and isinstance(v, (int, float)) and not isinstance(v, bool), (k, v)
    if "errors" in d:
        assert d["errors"] and all(isinstance(v, str) for v in d["errors"].values())


def test_virtual_node_publishes_answers_and_leaves_a_will(broker, tmp_path):
    cfg = sim_config(interval=1, keepalive=10)
    base = "city/%s/" % cfg["node_id"]
    node = VNode(tmp_path, cfg, broker).start()
    try:
        with Sub(broker, base + "telemetry", base + "reply") as sub:
            tel = sub.wait(lambda m: m.topic.endswith("telemetry"), 30, "first telemetry")
            # The birth is retained: a subscriber that comes later still sees `online`.
            with Sub(broker, base + "status") as late:
                st = late.wait(lambda m: True, 5, "retained status")[0]
                assert st.retain
                birth = json.loads(st.payload)
                assert birth["state"] == "online" and birth["fw"] == citynode.__version__
                assert birth["boot"] == 0 and birth["reset"] == "power"

            sub.publish(base + "cmd", json.dumps({"id": "c-1", "cmd": "ping", "args": {}}))
            sub.publish(base + "cmd", b"{not json")
            sub.publish(base + "cmd", json.dumps({"id": "c-2", "cmd": "format_flash", "args": {}}))
            big = json.dumps({"id": "c-3", "cmd": "ping", "args": {"pad": "x" * 2048}})
            sub.publish(base + "cmd", big)
            replies = sub.wait(lambda m: m.topic.endswith("reply") and len(sub.json("reply")) >= 4, 15, "4 replies")
            rs = {r["id"]: r for r in sub.json("reply")}
            assert rs["c-1"]["ok"] is True and rs["c-1"]["result"]["fw"] == citynode.__version__
            assert isinstance(rs["c-1"]["result"]["up"], int)
            anon = sorted(r["error"] for r in sub.json("reply") if r["id"] is None and r["ok"] is False)
            assert anon == ["malformed JSON", "payload too large (%d > 512 bytes)" % len(big)], anon
            assert rs["c-2"] == {"id": "c-2", "ok": False, "error": "unknown command"}

            n_before = len(sub.json("telemetry"))
            wait_for(lambda: len(sub.json("telemetry")) >= max(12, n_before + 2), 30, what="12 telemetry messages")
            ts = sub.json("telemetry")
            for d in ts:
                check_telemetry(d)
            assert [d["seq"] for d in ts] == list(range(len(ts)))  # 0, 1, 2 ... no hole
            assert {d["boot"] for d in ts} == {0}
            assert "water_level_cm" in ts[-1]["values"] and "distance_cm" in ts[-1]["values"]
            assert "air_temp_c" in ts[-1]["values"]

        # SIGKILL: no DISCONNECT, so the broker must deliver the will within 1.5 x keepalive.
        with Sub(broker, base + "status") as sub:
            sub.wait(lambda m: json.loads(m.payload)["state"] == "online", 5, "online before kill")
            t0 = time.monotonic()
            node.kill()
            sub.wait(lambda m: json.loads(m.payload)["state"] == "offline", 1.5 * 10 + 2, "the offline will")
            assert time.monotonic() - t0 <= 1.5 * 10 + 1
    finally:
        node.kill()


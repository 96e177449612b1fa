# A node must run for months: its heap after each cycle's collect may not grow. Every sensor
# type on the sim board, the real drivers and node loop, no broker (the outbox takes the records).
import gc
import json

import board
import config
import drivers
import node

_HERE = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
PROFILE = json.load(open(_HERE + "/../../boards/sim.json"))
SENSORS = [
    {"name": "water", "type": "hcsr04", "mount_height_cm": 300.0, "samples": 3},
    {"name": "level2", "type": "a02yyuw", "uart": 1, "rx": 4, "tx": 23, "mount_height_cm": 300.0, "samples": 3},
    {"name": "pm", "type": "pms5003", "uart": 2, "rx": 16, "tx": 17, "warmup_s": 0, "frames": 1},
    {"name": "pm_b", "type": "sds011", "uart": 0, "rx": 13, "tx": 14, "warmup_s": 0, "frames": 1},
    {"name": "gas", "type": "mq135", "adc": 34, "gas": "nh3", "r0_kohm": 76.6, "preheat_s": 0},
    {"name": "air", "type": "bme280", "i2c": 0, "sda": 21, "scl": 22},
    {"name": "air2", "type": "dht22", "pin": 27},
]


class SinkOutbox:
    """Takes every record and keeps none: an outbox that the broker drains at once."""
    n = 0

    def append(self, rec):
        self.n += 1

    def take_dropped(self):
        return 0

    def __len__(self):
        return 0


async def test_standing_heap_does_not_grow_over_cycles():
    cfg = config.validate({"node_id": "heap-1", "board": "sim", "mqtt": {"host": "127.0.0.1", "port": 1},
                           "interval_s": 0, "sensors": SENSORS,
                           "alarms": {"water_level_cm": {"high": 10, "clear": 5}}}, PROFILE)
    ob = SinkOutbox()
    n = node.Node(cfg, board.open(PROFILE), 1, "power", ob, clock=lambda: 1764390000, log=lambda m: None)
    standing = [0] * 36         # made before the count: a growing list would be counted too
    for i in range(36):
        r = await n.cycle()     # ends with gc.collect()
        assert not r["errors"], r["errors"]
        standing[i] = gc.mem_alloc()
    # every reading stored, plus the water_high event of the first cycle (50 cm of water)
    assert ob.n == 37 and len(r["values"]) == 9 and n.alarm_high == {"water_level_cm": True}, (ob.n, r["values"])
    early, late = max(standing[6:16]), max(standing[26:36])
    # 256 B of slack for where the collector happens to find things; a leak of even 16 B a
    # cycle would pass it over these 20 cycles
    assert late <= early + 256, (early, late, standing)

# A node must run for months: its heap after each cycle's collect may not grow. Every sensor
# type on the sim board, the real drivers and node loop, no broker (the outbox takes the records).
import gc
import json

import board
import config
import drivers
import node

_HERE = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
PROFILE = json.load(open(_HERE + "/../../host_tools/citynode/sim/board/boards/sim.json"))
EVERY = json.load(open(_HERE + "/../../examples/sim-every-sensor.json"))   # bench_node's node too


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
    cfg = config.validate(EVERY, PROFILE)
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

# Node logic on the unix port, without a broker: cycles, alarms, storing, commands, watchdog.
import asyncio
import json
import os
import time

import config
import drivers
import node

_TMP = (os.getenv("CITYNODE_TMP") or "/tmp") + "/citynode-mptest-node"   # the run's own (conftest)


def _profile():
    with open("../../host_tools/citynode/sim/board/boards/sim.json") as f:
        return json.load(f)


def _fresh():
    os.system("rm -rf %s && mkdir -p %s" % (_TMP, _TMP))


def _cfg(sensors=(), alarms=None, interval=1):
    return {"node_id": "t-1", "board": "sim", "mqtt": {"host": "127.0.0.1", "port": 1},
            "interval_s": interval, "sensors": list(sensors), "alarms": alarms or {}}


class FakeOutbox:
    def __init__(self, fail=False):
        self.recs, self.fail, self.dropped = [], fail, 0

    def append(self, rec):
        if self.fail:
            raise OSError(28)
        self.recs.append(bytes(rec))

    def take_dropped(self):
        d, self.dropped = self.dropped, 0
        return d

    def peek(self, n):
        return self.recs[:n]

    def ack(self, n):
        del self.recs[:n]

    def rewind(self):
        pass

    def flush(self):
        pass

    def __len__(self):
        return len(self.recs)


class Fake:
    """A driver stand-in: yields its values in turn, or raises what it is given."""
    ORDER = 1

    def __init__(self, seq):
        self.seq = list(seq)

    async def read(self, values):
        v = self.seq.pop(0) if len(self.seq) > 1 else self.seq[0]
        if isinstance(v, Exception):
            raise v
        values.update(v)


def _node(cfg, ob=None, fakes=()):
    # The node keeps only the validated config; `set` reads config.json and the profile from flash.
    v = config.validate(cfg, _profile())
    for d in (_TMP, _TMP + "/boards"):
        try:
            os.mkdir(d)
        except OSError:
            pass
    with open(_TMP + "/config.json", "w") as f:
        json.dump(cfg, f)
    with open(_TMP + "/boards/sim.json", "w") as f:
        json.dump(_profile(), f)
    n = node.Node(v, None, 3, "power", ob if ob is not None else FakeOutbox(), clock=lambda: 1764390000,
                  log=lambda m: None, cfg_path=_TMP + "/config.json")
    for i in range(len(fakes)):
        n.sensors[i][1] = fakes[i]
    return n


def _sensor(name):
    return {"name": name, "type": "dht22"}


async def test_cycle_stores_telemetry_with_seq_and_errors():
    ob = FakeOutbox()
    n = _node(_cfg([_sensor("a"), _sensor("b"), _sensor("c"), _sensor("d")][:0]), ob)
    n.sensors = [[{"name": "a", "type": "x"}, Fake([{"air_temp_c": 27.1}])],
                 [{"name": "b", "type": "x"}, Fake([drivers.SensorError("timeout")])],
                 [{"name": "c", "type": "x"}, Fake([ZeroDivisionError("bug")])],
                 [{"name": "d", "type": "x"}, Fake([OSError(19)])]]
    for i in range(3):
        await n.cycle()
    assert len(ob.recs) == 3
    for i in range(3):
        r = ob.recs[i]
        assert r[0] == ord("t")
        d = json.loads(r[1:])
        assert d["seq"] == i and d["boot"] == 3 and d["ts"] == 1764390000
        assert d["values"] == {"air_temp_c": 27.1}
        assert d["errors"] == {"b": "timeout", "c": "error", "d": "not_found"}


async def test_alarm_hysteresis_events_and_fast_interval():
    ob = FakeOutbox()
    levels = [100.0, 151.0, 155.0, 145.0, 139.0, 120.0, 150.0]
    n = _node(_cfg(alarms={"water_level_cm": {"high": 150.0, "clear": 140.0}}, interval=60), ob)
    n.sensors = [[{"name": "water", "type": "x"}, Fake([{"water_level_cm": v} for v in levels])]]
    n.cfg["alarm_interval_s"] = 5
    intervals = []
    for _ in levels:
        await n.cycle()
        intervals.append(n.interval_ms())
    events = [json.loads(r[1:]) for r in ob.recs if r[0] == ord("e")]
    got = [(e["event"], e["seq"]) for e in events]
    assert got == [("water_high", 1), ("water_normal", 4), ("water_high", 6)], got
    assert events[0]["detail"]["value"] == 151.0
    assert intervals == [60000, 5000, 5000, 5000, 60000, 60000, 5000]
    tel = [json.loads(r[1:])["seq"] for r in ob.recs if r[0] == ord("t")]
    assert tel == list(range(len(levels)))  # events never take a telemetry seq


async def test_full_flash_keeps_publishing_live_and_reports():
    ob = FakeOutbox(fail=True)
    n = _node(_cfg(), ob)
    await n.cycle()
    await n.cycle()
    assert len(n.held) == 2 and n.store_error == "outbox: errno 28"
    d = json.loads(n.held[1][1:])
    assert d["errors"] == {"outbox": "outbox: errno 28"}
    for _ in range(40):
        await n.cycle()
    assert len(n.held) == node.HELD_MAX  # bounded in RAM: the oldest go first
    assert json.loads(n.held[-1][1:])["seq"] == 41


async def test_dropped_event_when_outbox_full():
    ob = FakeOutbox()
    n = _node(_cfg(), ob)
    ob.dropped = 7
    await n.cycle()
    e = json.loads(ob.recs[-1][1:])
    assert e["event"] == "dropped" and e["detail"] == {"count": 7}
    assert ob.dropped == 0


async def test_commands():
    _fresh()
    n = _node(_cfg(), FakeOutbox())
    n.sensors = [[{"name": "a", "type": "x"}, Fake([{"rh_pct": 80.0}])]]
    r, after = await n.commands.run("ping", {})
    assert r["fw"] == node.FW and r["boot"] == 3 and after is None
    r, _ = await n.commands.run("sample", {})
    assert r["values"] == {"rh_pct": 80.0} and r["seq"] == 0
    r, _ = await n.commands.run("get_config", {})
    assert r["node_id"] == "t-1"
    r, _ = await n.commands.run("set", {"key": "interval_s", "value": 30})
    assert n.cfg["interval_s"] == 30
    with open(_TMP + "/config.json") as f:
        assert json.load(f)["interval_s"] == 30
    for args in ({"key": "node_id", "value": "x"}, {"key": "interval_s", "value": "fast"}, {"key": "interval_s"}):
        try:
            await n.commands.run("set", args)
        except ValueError:   # config.ConfigError or commands.CommandError (config may have been reloaded)
            pass
        else:
            raise AssertionError("set accepted %r" % args)
    assert n.cfg["interval_s"] == 30 and n.cfg["node_id"] == "t-1"
    with open(_TMP + "/config.json") as f:
        assert json.load(f)["interval_s"] == 30


async def test_set_on_the_config_validated_at_boot_loads_only_the_keys_rules():
    # board.load() keeps the CRC of the file it validated; a `set` on that very file checks the
    # one key (cfgkeys.py) and leaves the validator (config.py, ~14 KB from .mpy) unloaded.
    import sys
    from binascii import crc32

    import board
    _fresh()
    n = _node(_cfg(), FakeOutbox())
    path = _TMP + "/config.json"

    def written():
        with open(path) as f:
            return json.load(f)

    with open(path, "rb") as f:
        board.CRC = crc32(f.read())
    sys.modules.pop("config", None)
    try:
        r, _ = await n.commands.run("set", {"key": "site.name", "value": "Jl. Siliwangi"})
        assert r == {"key": "site.name", "value": "Jl. Siliwangi"}, r
        assert "config" not in sys.modules
        assert n.cfg["site"]["name"] == "Jl. Siliwangi" and written()["site"] == {"name": "Jl. Siliwangi"}
        assert "lat" not in written()["site"] and "alarm_interval_s" not in written()   # no defaults written
        await n.commands.run("set", {"key": "interval_s", "value": 45})   # the file it wrote is known too
        assert "config" not in sys.modules and n.cfg["interval_s"] == 45 and written()["interval_s"] == 45
        for args, why in (({"key": "interval_s", "value": 0}, "interval_s: at least 1 s"),
                          ({"key": "mqtt.port", "value": 1884}, "mqtt.port: not a settable key")):
            try:
                await n.commands.run("set", args)
            except ValueError as e:
                assert str(e).startswith(why), str(e)
            else:
                raise AssertionError("set accepted %r" % args)
        assert "config" not in sys.modules and written()["interval_s"] == 45
        # Changed on the flash since (by hand, over USB): validated whole, and its own fault named.
        raw = written()
        raw["mqtt"]["port"] = 0
        with open(path, "w") as f:
            json.dump(raw, f)
        try:
            await n.commands.run("set", {"key": "interval_s", "value": 50})
        except ValueError as e:
            assert str(e) == "mqtt.port: out of range 1..65535", str(e)
        else:
            raise AssertionError("set wrote over a config that no longer validates")
        assert written() == raw and n.cfg["interval_s"] == 45
        # A file too large to be read whole is refused before it is parsed.
        with open(path, "w") as f:
            f.write(json.dumps(raw) + " " * 8192)
        try:
            await n.commands.run("set", {"key": "interval_s", "value": 50})
        except ValueError as e:
            assert "over 8192 bytes" in str(e), str(e)
        else:
            raise AssertionError("set read an oversized config")
        assert n.cfg["interval_s"] == 45
    finally:
        board.CRC = None
        sys.modules["config"] = config   # later tests catch its classes


class DropNoteFails(FakeOutbox):
    """The reading goes in; the note of what the outbox dropped to make room does not."""

    def append(self, rec):
        if rec[0] == 0x65:   # b"e": an event record
            raise OSError(28)
        FakeOutbox.append(self, rec)


async def test_a_stored_reading_is_not_held_too_when_the_dropped_note_fails():
    ob = DropNoteFails()
    n = _node(_cfg(), ob)
    n.sensors = [[{"name": "a", "type": "x"}, Fake([{"rh_pct": 80.0}])]]
    ob.dropped = 3
    await n.cycle()
    assert len(ob.recs) == 1 and json.loads(ob.recs[0][1:])["seq"] == 0
    assert n.store_error is None, n.store_error          # the reading was stored
    assert [json.loads(r[1:])["event"] for r in n.held] == ["dropped"]   # only the note waits in RAM


class Replies:
    def __init__(self):
        self.sent = []

    async def reply(self, payload):
        self.sent.append(json.loads(payload))


async def test_a_refused_command_is_answered_with_its_id():
    _fresh()
    n = _node(_cfg(), FakeOutbox())
    r = Replies()
    n.commands.reply = r.reply
    t = asyncio.create_task(n.commands.task())
    for p in (b'{"id":"c-9","cmd":"set","args":{}}', b'{"id":"c-10","cmd":"nope"}', b'{"cmd":"set","args":{}}'):
        n.commands.on_message("t", p, len(p))
    for _ in range(100):
        if len(r.sent) == 3:
            break
        await asyncio.sleep_ms(10)
    t.cancel()
    assert [(x["id"], x["ok"]) for x in r.sent] == [("c-9", False), ("c-10", False), (None, False)], r.sent
    assert "set needs args" in r.sent[0]["error"]


async def test_get_config_masks_secrets():
    c = _cfg()
    c["mqtt"]["password"] = "s3cret"
    n = _node(c)
    r, _ = await n.commands.run("get_config", {})
    assert r["mqtt"]["password"] == "***"
    assert "s3cret" not in json.dumps(r)


class FakeWDT:
    def __init__(self):
        self.feeds = 0

    def feed(self):
        self.feeds += 1


async def test_watchdog_fed_only_while_every_task_is_alive():
    n = _node(_cfg())
    now = time.ticks_ms()
    for k in ("sampler", "publisher", "commands"):
        n.beats[k] = now
    assert n.alive()
    w = FakeWDT()
    t = asyncio.create_task(n.watchdog(w))
    await asyncio.sleep_ms(50)
    assert w.feeds == 1
    n.beats["publisher"] = time.ticks_add(now, -node.STALE_MS - 1)  # the publisher got stuck
    assert not n.alive()
    await asyncio.sleep_ms(1100)
    assert w.feeds == 1
    t.cancel()


async def test_crash_record_becomes_an_event():
    _fresh()
    ob = FakeOutbox()
    n = _node(_cfg(), ob)
    with open(_TMP + "/crash.json", "w") as f:
        f.write('{"boot": 2, "error": "ZeroDivisionError()"}')
    import nodeboot
    nodeboot.report_crash(n, _TMP + "/crash.json")
    e = json.loads(ob.recs[0][1:])
    assert e["event"] == "crash" and e["detail"]["error"] == "ZeroDivisionError()"
    assert not _exists(_TMP + "/crash.json")
    # kept as the last crash, for `citynode info`
    assert json.loads(open(_TMP + "/crash.last.json").read())["error"] == "ZeroDivisionError()"


def _exists(p):
    try:
        os.stat(p)
        return True
    except OSError:
        return False


class FakeClient:
    def __init__(self, fail=0):
        self.sent, self.fail = [], fail

    async def publish(self, topic, payload, qos=0, retain=False, timeout_ms=10000):
        if self.fail:
            self.fail -= 1
            raise OSError(104)  # ECONNRESET: the link died under the publish
        self.sent.append((topic, bytes(payload), qos))


async def test_reply_waits_for_the_link_instead_of_dropping_the_answer():
    n = _node(_cfg())
    c = FakeClient(fail=1)

    async def link_comes_back():
        await asyncio.sleep_ms(50)
        n.link.client = c
        n.link.up.set()

    t = asyncio.create_task(link_comes_back())
    assert not n.link.up.is_set()
    await n.commands.reply(b'{"id":"c-1","ok":true}')   # down, then up; the first publish fails, the second goes
    await t
    assert c.sent == [(n.t_reply, b'{"id":"c-1","ok":true}', 1)], c.sent


def test_uptime_survives_tick_wrap():
    n = _node(_cfg())
    n._up_ms = 0
    n._up_last = time.ticks_add(time.ticks_ms(), -5000)
    assert n.up_s() == 5
    assert n.up_s() == 5


def test_backoff_full_jitter_bounds():
    import link
    import random
    random.seed(1)
    for attempt in range(15):
        hi = min(1000 << attempt, 300000)
        ds = [link.backoff_ms(attempt) for _ in range(200)]
        assert min(ds) >= 0 and max(ds) <= hi, (attempt, max(ds), hi)
        assert max(ds) > hi * 0.8  # full jitter spreads over the whole window
    for attempt in range(15):
        ds = [link.backoff_ms(attempt, refused=True) for _ in range(100)]
        assert min(ds) >= 15000  # a refusing broker: never more than 4 tries a minute
    assert max(link.backoff_ms(20, cap_ms=4000) for _ in range(100)) <= 4000


def test_driver_registry_matches_config():
    import drivers
    for t in config.SENSORS:
        assert drivers._ALIAS.get(t, t) == config.SENSORS[t][0], t


# --- issue 14: a command channel that cannot be replayed or abused --------------------------------

class FakeHW:
    def __init__(self):
        self.resets = 0

    def reset(self):
        self.resets += 1


async def _until(pred, ms=3000, what="condition"):
    t0 = time.ticks_ms()
    while not pred():
        if time.ticks_diff(time.ticks_ms(), t0) > ms:
            raise AssertionError("timed out waiting for " + what)
        await asyncio.sleep_ms(2)


async def _answers(n, msgs, want):
    """Feed (payload, retained) as the link would, run the commander until `want` replies."""
    c = FakeClient()
    n.link.client = c
    n.link.up.set()
    for p, retained in msgs:
        n._on_message(n.t_cmd, p, len(p), retained)
    t = asyncio.create_task(n.commands.task())
    await _until(lambda: len(c.sent) >= want, what="%d replies" % want)
    await asyncio.sleep_ms(20)
    t.cancel()
    import sys
    sys.modules["config"] = config   # the commander unloads it; later tests catch its classes
    assert all(x[0] == n.t_reply for x in c.sent)
    return [json.loads(x[1]) for x in c.sent]


def _cmd(cid, cmd, args=None):
    return json.dumps({"id": cid, "cmd": cmd, "args": args or {}}).encode()


async def test_retained_commands_are_answered_never_run():
    _fresh()
    n = _node(_cfg())
    n.hw = FakeHW()
    n._up_ms = 3600000   # long up: a reboot would be allowed if it were not retained
    rs = await _answers(n, [(_cmd("r-1", "reboot"), True), (_cmd("r-2", "set", {"key": "interval_s", "value": 5}), True),
                            (b"{not json", True)], 3)
    assert rs == [{"id": "r-1", "ok": False, "error": "retained commands are not obeyed"},
                  {"id": "r-2", "ok": False, "error": "retained commands are not obeyed"},
                  {"id": None, "ok": False, "error": "retained commands are not obeyed"}], rs
    assert n.hw.resets == 0 and n.cfg["interval_s"] == 1


async def test_a_repeated_id_gets_its_first_reply_and_does_not_run_again():
    _fresh()
    n = _node(_cfg(), FakeOutbox())
    n.sensors = [[{"name": "a", "type": "x"}, Fake([{"rh_pct": 80.0}])]]
    rs = await _answers(n, [(_cmd("s-1", "sample"), False), (_cmd("s-1", "sample"), False),
                            (_cmd("s-2", "sample"), False), (_cmd("s-1", "sample"), False)], 4)
    assert rs[0]["ok"] and rs[0]["result"]["seq"] == 0
    assert rs[1] == rs[0] and rs[3] == rs[0]       # the first reply, word for word
    assert rs[2]["result"]["seq"] == 1             # a new id runs
    assert n.seq == 2 and len(n.outbox) == 2       # two readings taken, not four


async def test_full_queue_answers_busy():
    _fresh()
    n = _node(_cfg())
    q = 4  # node._CMD_QUEUE (a const: not visible from here)
    k = q + 3
    rs = await _answers(n, [(_cmd("p-%d" % i, "ping"), False) for i in range(k)], k)
    busy = sorted(r["id"] for r in rs if r.get("error") == "busy")
    done = sorted(r["id"] for r in rs if r["ok"])
    assert done == ["p-%d" % i for i in range(q)], rs
    assert busy == ["p-%d" % i for i in range(q, k)], rs


async def test_reboot_and_set_are_rate_limited():
    _fresh()
    n = _node(_cfg())
    n.hw = FakeHW()
    rs = await _answers(n, [(_cmd("b-1", "reboot"), False)], 1)   # just booted
    assert rs[0]["ok"] is False and rs[0]["error"].startswith("rate limited: no reboot within 60 s"), rs
    assert n.hw.resets == 0
    sets = [(_cmd("v-%d" % i, "set", {"key": "interval_s", "value": 10 + i}), False) for i in range(7)]
    _fresh()
    n = _node(_cfg())
    rs = await _answers(n, sets[:4], 4)
    rs += await _answers(n, sets[4:], 3)
    ok = [r["id"] for r in rs if r["ok"]]
    limited = [r["id"] for r in rs if not r["ok"] and r["error"].startswith("rate limited")]
    assert ok == ["v-0", "v-1", "v-2", "v-3", "v-4"] and limited == ["v-5", "v-6"], rs
    assert n.cfg["interval_s"] == 14


async def test_commands_are_dropped_when_answered_and_a_repeat_is_still_known():
    # The inbox loads commands.py and cmdguard.py for a command and drops them (and cfgkeys,
    # which get_config loads) once it is answered; the guard's memory stays with the inbox, so
    # the same id after the drop gets the first answer, not a second run.
    import sys
    _fresh()
    n = _node(_cfg())
    n.sensors = [[{"name": "a", "type": "x"}, Fake([{"rh_pct": 80.0}] * 3)]]
    first = await _answers(n, [(_cmd("s-1", "sample"), False), (_cmd("g-1", "get_config"), False)], 2)
    sys.modules.pop("config", None)   # _answers puts it back for the other tests
    assert [r["id"] for r in first] == ["s-1", "g-1"] and first[0]["ok"], first
    assert not [m for m in ("commands", "cmdguard", "cfgkeys", "config") if m in sys.modules]
    again = await _answers(n, [(_cmd("s-1", "sample"), False)], 1)
    assert again == first[:1] and n.seq == 1, (again, n.seq)   # answered as before, not sampled again


async def test_commands_that_cannot_be_loaded_are_answered_as_failed_and_the_inbox_goes_on():
    # In a cut-up heap from .mpy files, loading commands.py can run out of memory: the queued
    # commands get a failed answer (never silence, never a reset), and the next one runs.
    import inbox
    _fresh()
    n = _node(_cfg())
    serve = inbox._serve
    tries = []

    async def no_memory(box):
        tries.append(1)
        raise MemoryError("memory allocation failed, allocating 1136 bytes")

    inbox._serve = no_memory
    try:
        rs = await _answers(n, [(_cmd("p-1", "ping"), False), (b"{not json", False)], 2)
    finally:
        inbox._serve = serve
    assert len(tries) == 2, tries                # tried again after a collection
    assert [(r["id"], r["ok"]) for r in rs] == [("p-1", False), (None, False)], rs
    assert rs[0]["error"].startswith("failed: memory allocation failed"), rs
    rs = await _answers(n, [(_cmd("p-2", "ping"), False)], 1)
    assert rs[0]["id"] == "p-2" and rs[0]["ok"], rs


async def test_set_interval_zero_is_refused_even_on_the_sim_board():
    _fresh()
    n = _node(_cfg())
    rs = await _answers(n, [(_cmd("z-1", "set", {"key": "interval_s", "value": 0}), False),
                            (_cmd("z-2", "set", {"key": "alarm_interval_s", "value": 1e-400}), False)], 2)
    assert rs[0] == {"id": "z-1", "ok": False, "error": "interval_s: at least 1 s"}, rs
    assert rs[1] == {"id": "z-2", "ok": False, "error": "alarm_interval_s: at least 1 s"}, rs
    assert n.cfg["interval_s"] == 1


def test_image_trial_is_confirmed_by_the_birth_or_reported_when_rolled_back():
    import fakeesp32
    import nodeboot
    import ota
    import persist
    _fresh()
    bl = fakeesp32.Bootloader()
    ob = FakeOutbox()
    n, n2 = _node(_cfg()), _node(_cfg(), ob)   # the same node before and after a reset
    here = os.getcwd()
    os.chdir(_TMP)
    try:
        n.esp32 = n2.esp32 = bl.module()
        # what ota_image.ImageSink.switch() leaves, then the reset into the new image
        persist.write_json("ota_image.json", {"expect": "ota_1", "version": "0.6.0", "from": "0.5.0"})
        bl.boot, bl.state = "ota_1", "new"
        bl.reset()
        nodeboot.ota_boot(n)
        assert n.trial == "image" and json.loads(n.link.birth[1])["trial"] is True
        ota.commit_trial(n)
        assert bl.state == "valid" and not n.trial and json.loads(n.link.birth[1])["trial"] is False
        assert persist.read_json("ota_image.json") is None
        # the next image never confirms: the bootloader goes back, and the node says so once
        persist.write_json("ota_image.json", {"expect": "ota_0", "version": "0.7.0", "from": "0.6.0"})
        bl.boot, bl.state = "ota_0", "new"
        bl.reset()
        bl.reset()
        assert bl.running == "ota_1"
        nodeboot.ota_boot(n2)
        e = json.loads(ob.recs[0][1:])
        assert e["event"] == "ota_rollback" and e["detail"]["version"] == "0.7.0" and e["detail"]["image"]
        assert not n2.trial
    finally:
        os.chdir(here)


async def test_deep_sleep_wake_waits_for_the_clock_and_stops_ntp():
    # A wake from deep sleep starts with an unsynced clock; NTP (an extra task) sets it a moment
    # later. run_once runs it and reads once it is set: the reading has a ts, not null.
    ob = FakeOutbox()
    n = _node(_cfg(), ob)
    now = [None]
    n.clock = lambda: now[0]
    n.sensors = [[{"name": "a", "type": "x"}, Fake([{"air_temp_c": 27.1}])]]
    state = {"ran": False, "cancelled": False}

    async def ntp():
        state["ran"] = True
        await asyncio.sleep_ms(150)
        now[0] = 1764390000
        try:
            await asyncio.sleep_ms(60000)
        except asyncio.CancelledError:
            state["cancelled"] = True
            raise

    await n.run_once(budget_ms=100, extra=(ntp(),))
    await asyncio.sleep_ms(0)
    d = json.loads(ob.recs[0][1:])
    assert d["ts"] == 1764390000 and state == {"ran": True, "cancelled": True}, (d, state)


async def test_deep_sleep_wake_without_a_clock_reads_after_the_bound():
    ob = FakeOutbox()
    n = _node(_cfg(), ob)
    n.clock = lambda: None
    n.sensors = [[{"name": "a", "type": "x"}, Fake([{"air_temp_c": 27.1}])]]

    async def ntp_unreachable():
        await asyncio.sleep_ms(60000)

    await n.run_once(budget_ms=100, extra=(ntp_unreachable(),), sync_ms=200)   # returns: bounded
    assert json.loads(ob.recs[0][1:])["ts"] is None


class UptimeHw:
    def __init__(self):
        self.kept = None

    def keep_uptime(self, up_s):
        self.kept = up_s


async def test_cycle_keeps_the_wrap_safe_uptime_for_probe():
    # ticks_ms wraps every 2^30 ms on an ESP32: the node's accumulated uptime goes to RTC memory
    # each cycle (board.keep_uptime), and the ESP32 board's uptime_ms (what probe.py reports and
    # an MQ heater's warm-up counts from) is at least that.
    import esp32hw
    n = _node(_cfg())
    n.hw = UptimeHw()
    n._up_ms = 1073741 * 1000 + 5000      # up 12.4 days and 5 s: ticks have just wrapped
    await n.cycle()
    assert n.hw.kept == 1073746, n.hw.kept

    class Rtc:
        mem = b""

        def memory(self, b=None):
            if b is None:
                return Rtc.mem
            Rtc.mem = b

    class Machine:
        RTC = Rtc

    class Esp(esp32hw.Esp32):
        def __init__(self):                    # Esp32's wants the ESP32's machine
            self.m = Machine

    esp = Esp()
    assert esp.uptime_ms() < 1073741000          # nothing kept: the unix port's ticks
    esp.keep_uptime(n.hw.kept)
    assert esp.uptime_ms() >= 1073746000 and esp.kept_uptime_s() == 1073746

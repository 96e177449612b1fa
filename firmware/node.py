"""The node: sample every sensor each interval, keep every reading until the broker has it,
answer commands. Built by main.py (the composition root) from a validated config.

    n = node.Node(cfg, hw, boot=persist.next_boot(), reset=hw.reset_cause(), outbox=ob)
    asyncio.run(n.run())

Tasks (started in run(), cancelled by deinit()): the link (link.py), the sampler, the
publisher (outbox -> broker, oldest first, QoS 1), the commander and the watchdog.
"""
import asyncio
import gc
import sys
import time

import drivers
import inbox
import link
import telemetry
from version import VERSION as FW

try:
    from micropython import const
except ImportError:
    const = lambda x: x  # noqa: E731

_BATCH = const(8)        # records in flight at once while draining the outbox
HELD_MAX = const(32)    # readings kept in RAM when the flash refuses writes (ENOSPC)
# A task silent for longer is stuck: stop feeding the watchdog. Above the longest wait a healthy
# task makes between two beats: a reply's 10 s for the link plus 3 x 10 s for its PUBACK.
STALE_MS = const(45000)
WDT_MS = const(60000)
_SENSOR_CAP_MS = const(15000)  # safety net over every driver's own documented bound
_SYNC_MS = const(3000)   # a deep-sleep wake waits this long for a first clock (NTP) before reading
_KIND_T = const(0x74)    # b"t": a telemetry record in the outbox
_KIND_E = const(0x65)    # b"e": an event record


def alarm_event_name(quantity, high):
    # water_level_cm -> water_high / water_normal (docs/contract.md); pm2_5_ugm3 -> pm2_5_high
    base = quantity.rsplit("_", 1)[0]
    if base.endswith("_level"):
        base = base[:-6]
    return base + ("_high" if high else "_normal")


class Node:
    def __init__(self, cfg, hw, boot, reset, outbox=None, wifi=None, clock=None, log=None,
                 cfg_path="config.json", broker=None, trial=False):
        # Neither the config as written nor the board profile is kept (about 10 KB on the unix
        # port): `set`, the one command that needs them, reads config.json from flash (and the
        # profile too when the file must be validated whole: commands.py).
        self.cfg = cfg
        self.cfg_path = cfg_path
        self.hw = hw
        self.boot = boot
        self.reset = reset
        self.outbox = outbox
        self.clock = clock
        self.log = log or print
        self.seq = 0
        self._up_ms = 0
        self._up_last = time.ticks_ms()
        m = cfg["mqtt"]
        p = "%s/%s/" % (m["prefix"], cfg["node_id"])
        self.topics = {_KIND_T: p + "telemetry", _KIND_E: p + "event"}
        self.t_status, self.t_cmd, self.t_reply = p + "status", p + "cmd", p + "reply"
        self.t_ota = p + "ota"
        # Updates over the air (ota.py, loaded with the first message on t_ota): trial is True on
        # the first boot of a version installed over the air ("image" for a whole image) until
        # its birth is out; esp32 is the seam of whole-image updates (None: the real module).
        self.trial = trial
        self.updater = None
        self.esp32 = None
        host, port = broker if broker else (m["host"], m["port"])
        tls = None
        if m["tls"]:
            tls = {"ca": m.get("ca"), "pin_sha256": m.get("pin_sha256"), "cert": m.get("cert"),
                   "key": m.get("key"), "insecure": m.get("tls_insecure", False)}
        self.link = link.Link(host, port, tls, cfg["node_id"], m.get("user"), m.get("password"),
                              m["keepalive_s"], (self.t_status, telemetry.status(False), 1, True),
                              (self.t_cmd, self.t_ota), self.birth(),
                              self._on_message, wifi, self.log, backoff_max_ms=m["backoff_max_s"] * 1000,
                              ack_timeout_ms=m.get("ack_timeout_s", 10) * 1000,
                              clean=not cfg["power"]["deep_sleep"])
        self.commands = inbox.Inbox(self)
        self.sensors = [[s, None] for s in cfg["sensors"]]  # [conf, driver or None until made]
        self.sensors.sort(key=lambda e: drivers.rank(e[0]))
        self.alarm_high = {}
        self.held = []
        self.store_error = None
        self._kick = asyncio.Event()
        self._cycle_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self.beats = {}
        self._tasks = []

    # --- time ---------------------------------------------------------------------------
    def up_s(self):
        now = time.ticks_ms()
        self._up_ms += time.ticks_diff(now, self._up_last)  # accumulate: ticks wrap, uptime must not
        self._up_last = now
        return self._up_ms // 1000

    def ts(self):
        return self.clock() if self.clock else None

    def beat(self, name):
        self.beats[name] = time.ticks_ms()

    # --- storing --------------------------------------------------------------------------
    def store(self, kind, payload):
        """Put a record where it survives until the broker acknowledged it."""
        ob = self.outbox
        if ob is not None:
            try:
                ob.append(bytes((kind,)) + payload)
            except OSError as e:
                ob = None
                self.store_error = "outbox: errno %s" % (e.args[0] if e.args else "?")
                self.log("cannot store reading: %s; publishing live" % self.store_error)
        if ob is not None:
            # stored: what follows (the note of what the outbox dropped) cannot un-store it
            self.store_error = None
            d = ob.take_dropped()
            if d:
                self.log("outbox full: dropped %d oldest" % d)
                ev = bytes((_KIND_E,)) + telemetry.event(self.boot, max(self.seq - 1, 0), self.ts(), "dropped", {"count": d})
                try:
                    ob.append(ev)
                except OSError:
                    self._hold(ev)
            self._kick.set()
            return
        self._hold(bytes((kind,)) + payload)

    def _hold(self, rec):
        """Keep a record in RAM (the flash refused it) until it is published."""
        if len(self.held) >= HELD_MAX:
            self.held.pop(0)
        self.held.append(rec)
        self._kick.set()

    def event(self, name, detail, seq=None):
        # An event carries the seq of the reading that raised it (the latest one otherwise).
        if seq is None:
            seq = self.seq - 1 if self.seq else 0
        self.store(_KIND_E, telemetry.event(self.boot, seq, self.ts(), name, detail))

    # --- sampling -------------------------------------------------------------------------
    async def _read(self, entry, values, errors, kept):
        conf = entry[0]
        name = conf["name"]
        try:
            if entry[1] is None:
                entry[1] = drivers.make(conf, self.hw)
            n = await asyncio.wait_for_ms(entry[1].read(values), _SENSOR_CAP_MS)
            if n is not None:
                kept[name] = n
        except Exception as e:  # a driver bug must never stop the node: report it and go on
            errors[name] = drivers.code(e)
            if errors[name] == "error":
                self.log("sensor %s: %r" % (name, e))

    async def cycle(self):
        """One reading cycle: sample, store as telemetry (seq+1), check alarms. Returns the dict
        that went out."""
        async with self._cycle_lock:
            ts = self.ts()
            values, errors, kept = {}, {}, {}
            for entry in self.sensors:
                await self._read(entry, values, errors, kept)
                self.beat("sampler")
            if self.store_error:
                errors["outbox"] = self.store_error
            seq = self.seq
            self.seq += 1
            up = self.up_s()
            self.store(_KIND_T, telemetry.reading(self.boot, seq, ts, up, values, errors, kept))
            if self.hw is not None:
                self.hw.keep_uptime(up)   # for probe.py: survives a soft reset, not ticks' wrap
            self._alarms(values, seq)
            gc.collect()  # between cycles, so the heap does not fragment on the next one
            return {"seq": seq, "ts": ts, "values": values, "errors": errors}

    def _alarms(self, values, seq):
        for q, a in self.cfg["alarms"].items():
            v = values.get(q)
            if v is None:
                continue
            high = self.alarm_high.get(q, False)
            if not high and v >= a["high"] or high and v <= a["clear"]:
                self.alarm_high[q] = not high
                self.event(alarm_event_name(q, not high),
                           {"quantity": q, "value": v, "high": a["high"], "clear": a["clear"]}, seq)

    def interval_ms(self):
        key = "alarm_interval_s" if any(self.alarm_high.values()) else "interval_s"
        return int(self.cfg[key] * 1000)

    async def _wait(self, ms):
        """Sleep up to ms, waking early for a config change; keeps the watchdog beat alive."""
        end = time.ticks_add(time.ticks_ms(), ms)
        while True:
            left = time.ticks_diff(end, time.ticks_ms())
            if left <= 0 or self._wake.is_set():
                self._wake.clear()
                return
            self.beat("sampler")
            try:
                await asyncio.wait_for_ms(self._wake.wait(), min(left, 1000))
            except asyncio.TimeoutError:
                pass

    async def sampler(self):
        while True:
            t0 = time.ticks_ms()
            await self.cycle()
            iv = self.interval_ms()
            if iv <= 0:
                await asyncio.sleep_ms(0)
                continue
            warm = 0
            for conf, s in self.sensors:
                if s is not None and getattr(s, "warmup_ms", 0) > warm:
                    warm = s.warmup_ms
            # Sleep PM sensors between cycles when there is time: the laser lasts ~8,000 h.
            if warm and iv > warm + 5000:
                await self._each("sleep")
                await self._wait(iv - warm - time.ticks_diff(time.ticks_ms(), t0))
                await self._each("wake")
            await self._wait(iv - time.ticks_diff(time.ticks_ms(), t0))

    async def _each(self, method):
        for conf, s in self.sensors:
            f = getattr(s, method, None) if s is not None else None
            if f:
                try:
                    await f()
                except Exception as e:
                    self.log("sensor %s %s: %r" % (conf["name"], method, e))

    # --- publishing ------------------------------------------------------------------------
    async def publisher(self):
        while True:
            self.beat("publisher")
            if not self.link.up.is_set():
                try:
                    await asyncio.wait_for_ms(self.link.up.wait(), 1000)
                except asyncio.TimeoutError:
                    pass
                continue
            c = self.link.client
            try:
                if await self._drain_once(c):
                    continue
            except Exception as e:
                # The link layer sees the dead link and reconnects; the records stay stored,
                # and no PUBACK will come for the batch in flight: send it again from the oldest.
                self._rewind()
                self.log("publish: %s" % (e,))
                await asyncio.sleep_ms(200)
                continue
            try:
                await asyncio.wait_for_ms(self._kick.wait(), 1000)
            except asyncio.TimeoutError:
                pass
            self._kick.clear()

    def _rewind(self):
        if self.outbox is not None:
            self.outbox.rewind()

    def flush(self):
        """Before a reset or a deep sleep: store the outbox's ack position, so nothing repeats."""
        if self.outbox is not None:
            try:
                self.outbox.flush()
            except OSError:
                pass

    async def _drain_once(self, c):
        """Publish the oldest stored records; True if there was something to send."""
        ob = self.outbox
        recs = ob.peek(_BATCH) if ob is not None else None
        if ob is not None and recs:
            await asyncio.gather(*[c.publish(self.topics[r[0]], memoryview(r)[1:], 1) for r in recs])
            ob.ack(len(recs))  # only now: a record leaves the outbox when its PUBACK has come
            return True
        if self.held:
            r = self.held[0]
            await c.publish(self.topics[r[0]], memoryview(r)[1:], 1)
            self.held.pop(0)
            return True
        return False

    def _on_message(self, topic, payload, size, retained=False):
        if topic == self.t_ota:
            if retained:
                return      # an update is offered by a live `ota push`, never left on the broker
            if self.updater is None:
                import ota
                self.updater = ota.Updater(self)
                self._tasks.append(asyncio.create_task(self.updater.task()))
            self.updater.on_message(payload, size)
            return
        self.commands.on_message(topic, payload, size, retained)

    def wake(self):
        """The config changed: the sampler starts its next wait afresh."""
        self._wake.set()

    async def reboot(self):
        self.log("reboot requested")
        await self.link.stop((self.t_status, telemetry.status(False)))
        self.flush()
        self.hw.reset()

    def pending(self):
        return (len(self.outbox) if self.outbox is not None else 0) + len(self.held)

    # --- watchdog ---------------------------------------------------------------------------
    def alive(self):
        now = time.ticks_ms()
        for name in ("sampler", "publisher", "commands"):
            t = self.beats.get(name)
            if t is None or time.ticks_diff(now, t) > STALE_MS:
                return False
        return True

    async def watchdog(self, wdt):
        # Fed only while every task shows signs of life: a stuck task means a reset.
        while True:
            if self.alive():
                wdt.feed()
            await asyncio.sleep_ms(1000)

    # --- running ------------------------------------------------------------------------------
    def birth(self):
        """The retained status this node publishes on each connection."""
        return (self.t_status, telemetry.status(True, FW, self.boot, self.reset, bool(self.trial)))

    async def run(self, wdt=None, extra=()):
        import nodeboot   # what runs once per boot: loaded, run and dropped
        nodeboot.reports(self)
        del nodeboot
        sys.modules.pop("nodeboot", None)
        gc.collect()
        now = time.ticks_ms()
        for name in ("sampler", "publisher", "commands"):
            self.beats[name] = now
        more = []   # beside the four that run for ever: the watchdog, an update's trial, the board's
        if wdt is not None:
            more.append(self.watchdog(wdt))
        if self.trial:
            import ota
            more.append(ota.trial(self, self.cfg["ota"]["trial_s"] * 1000))
        more.extend(extra)
        self._tasks = [asyncio.create_task(c) for c in
                       [self.link.run(), self.sampler(), self.publisher(), self.commands.task()] + more]
        # The first task to fail ends the node (main.py records the crash and resets).
        await asyncio.gather(*self._tasks)

    async def run_once(self, budget_ms=20000, extra=(), sync_ms=_SYNC_MS):
        """Deep-sleep mode: one wake (nodeboot.run_once)."""
        import nodeboot
        await nodeboot.run_once(self, budget_ms, extra, sync_ms)

    def deinit(self):
        for t in self._tasks:
            t.cancel()
        self._tasks = []

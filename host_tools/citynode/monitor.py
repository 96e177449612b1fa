"""Watch a fleet from the broker: who is online, what they measure, and which readings were
lost or delivered twice.

    from citynode import monitor
    w = monitor.Watch(monitor.parse_broker("127.0.0.1:1883"), "city").start()
    rows, totals = w.snapshot()        # one dict per node; {"nodes": 3, "lost": 0, ...}
    w.stop()

`Fleet` is the accounting and knows nothing of MQTT: feed it (topic, payload) and it keeps, per
node and boot, which `seq` numbers it has seen. A reading is identified by (boot, seq) for ever
(docs/contract.md), so a hole in seq is a lost reading, a pair seen before is a QoS 1 duplicate, and
a reading that arrives after a later one (held back in the node's outbox) fills its hole.
"""
import bisect
import json
import threading
import time
import uuid

from .errors import BadInput, Unreachable

KINDS = ("status", "telemetry", "event")
_MAX_BOOTS = 8  # ledgers kept per node; older boots are dropped (their holes with them)


# --- accounting (pure) -------------------------------------------------------------------------

class SeqSet:
    """A set of non-negative ints kept as sorted, disjoint, non-adjacent [lo, hi] runs, so a
    node that has sent a million readings in order costs one pair, not a million entries."""

    def __init__(self):
        self.lo = []
        self.hi = []

    def __contains__(self, s):
        i = bisect.bisect_right(self.lo, s) - 1
        return i >= 0 and s <= self.hi[i]

    def add(self, s):
        """Add s; False if it was already there."""
        i = bisect.bisect_right(self.lo, s) - 1
        if i >= 0 and s <= self.hi[i]:
            return False
        joins_left = i >= 0 and self.hi[i] == s - 1
        joins_right = i + 1 < len(self.lo) and self.lo[i + 1] == s + 1
        if joins_left and joins_right:
            self.hi[i] = self.hi[i + 1]
            del self.lo[i + 1], self.hi[i + 1]
        elif joins_left:
            self.hi[i] = s
        elif joins_right:
            self.lo[i + 1] = s
        else:
            self.lo.insert(i + 1, s)
            self.hi.insert(i + 1, s)
        return True

    def count_between(self, a, b):
        """How many members lie in [a, b]."""
        n = 0
        for lo, hi in zip(self.lo, self.hi):
            lo, hi = max(lo, a), min(hi, b)
            if lo <= hi:
                n += hi - lo + 1
        return n

    def runs(self):
        return list(zip(self.lo, self.hi))


class BootLedger:
    """The readings of one (node, boot). `floor` is the first seq we expect: 0 when we saw the
    boot begin, otherwise the first seq we happened to receive (we joined mid-stream and cannot
    know what came before)."""

    def __init__(self, floor=None):
        self.floor = floor
        self.seen = SeqSet()
        self.top = None
        self.holes = 0  # seqs in [floor, top] not seen yet; kept up to date by add()
        self.received = 0
        self.dups = 0
        self.late = 0   # arrived after a later reading and filled a hole
        self.early = 0  # arrived after a later reading, from before we joined

    def add(self, seq):
        """Record one reading; returns its verdict: new, gap, late, early or dup."""
        if seq in self.seen:
            self.dups += 1
            return "dup"
        self.seen.add(seq)
        self.received += 1
        if self.top is None:
            if self.floor is None or self.floor > seq:
                self.floor = seq
            self.top = seq
            self.holes = seq - self.floor
            return "gap" if self.holes else "new"
        if seq > self.top:
            self.holes += seq - self.top - 1
            verdict = "new" if seq == self.top + 1 else "gap"
            self.top = seq
            return verdict
        if seq < self.floor:
            self.early += 1
            return "early"
        self.holes -= 1
        self.late += 1
        return "late"

    def missing(self, limit=20):
        """The first `limit` missing seqs, for a report."""
        out, nxt = [], self.floor
        for lo, hi in self.seen.runs():
            if hi < nxt:
                continue
            if lo > nxt:
                out.extend(range(nxt, min(lo, nxt + limit - len(out))))
            nxt = hi + 1
            if len(out) >= limit:
                break
        return out


class Node:
    def __init__(self, node_id):
        self.id = node_id
        self.state = None     # "online" / "offline" from the retained status, the birth or the will
        self.fw = None
        self.boot = None
        self.reset = None
        self.last_seen = None  # host time of the last live (not retained) message
        self.latest = None     # (boot, seq) of the newest reading, which `values` belong to
        self.ts = None
        self.up = None
        self.values = {}
        self.errors = {}
        self.event = None
        self.events = 0
        self.malformed = 0
        self.ledgers = {}      # boot -> BootLedger
        self.started = set()   # boots whose start we witnessed (a live birth)

    def ledger(self, boot):
        led = self.ledgers.get(boot)
        if led is None:
            # We know the boot's numbering starts at 0 if we saw its birth, or if we were
            # already watching this node during an earlier boot.
            known_start = boot in self.started or any(b < boot for b in self.ledgers)
            led = self.ledgers[boot] = BootLedger(0 if known_start else None)
            while len(self.ledgers) > _MAX_BOOTS:
                del self.ledgers[min(self.ledgers)]
        return led

    @property
    def holes(self):
        return sum(x.holes for x in self.ledgers.values())

    @property
    def dups(self):
        return sum(x.dups for x in self.ledgers.values())

    @property
    def late(self):
        return sum(x.late for x in self.ledgers.values())

    @property
    def received(self):
        return sum(x.received for x in self.ledgers.values())

    def summary(self, now=None):
        return {"node": self.id, "state": self.state, "fw": self.fw, "boot": self.boot,
                "reset": self.reset, "last_seen": self.last_seen,
                "age_s": None if self.last_seen is None or now is None else round(now - self.last_seen, 1),
                "received": self.received, "lost": self.holes, "dups": self.dups, "late": self.late,
                "malformed": self.malformed, "latest": list(self.latest) if self.latest else None,
                "ts": self.ts, "values": self.values, "errors": self.errors, "event": self.event,
                "events": self.events,
                "missing": {str(b): led.missing() for b, led in sorted(self.ledgers.items()) if led.holes}}


class Fleet:
    """Everything learned from the messages seen so far. Not thread-safe: one feeder at a time."""

    def __init__(self, prefix="city"):
        self.prefix = prefix
        self.nodes = {}
        self.messages = 0

    def node(self, node_id):
        n = self.nodes.get(node_id)
        if n is None:
            n = self.nodes[node_id] = Node(node_id)
        return n

    def split(self, topic):
        """(node_id, kind) of a topic under our prefix, or None."""
        head = self.prefix + "/"
        if not topic.startswith(head):
            return None
        parts = topic[len(head):].split("/")
        if len(parts) != 2 or parts[1] not in KINDS or not parts[0]:
            return None
        return parts[0], parts[1]

    def feed(self, topic, payload, retained=False, now=None):
        """Account for one message; returns a dict describing it (the --json line), or None
        for a topic that is not ours."""
        where = self.split(topic)
        if where is None:
            return None
        node_id, kind = where
        self.messages += 1
        now = time.time() if now is None else now
        n = self.node(node_id)
        if not retained:
            n.last_seen = now
        rec = {"t": round(now, 3), "node": node_id, "kind": kind, "retained": bool(retained)}
        try:
            doc = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            doc = None
        if not isinstance(doc, dict):
            n.malformed += 1
            rec["verdict"] = "bad"
            rec["payload"] = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else payload
            return rec
        rec["payload"] = doc
        if kind == "status":
            self._status(n, doc, retained)
        elif kind == "telemetry":
            rec["verdict"] = self._telemetry(n, doc)
            rec.update(lost=n.holes, dups=n.dups, late=n.late)
        else:
            n.events += 1
            n.event = doc.get("event")
        return rec

    @staticmethod
    def _status(n, doc, retained):
        state = doc.get("state")
        if state in ("online", "offline"):
            n.state = state
        if state == "online":
            n.fw = doc.get("fw", n.fw)
            n.reset = doc.get("reset", n.reset)
            boot = doc.get("boot")
            if _is_int(boot):
                n.boot = boot
                if not retained:
                    n.started.add(boot)

    @staticmethod
    def _telemetry(n, doc):
        boot, seq = doc.get("boot"), doc.get("seq")
        if not (_is_int(boot) and _is_int(seq)) or seq < 0:
            n.malformed += 1
            return "bad"
        verdict = n.ledger(boot).add(seq)
        if verdict != "dup" and (n.latest is None or (boot, seq) > tuple(n.latest)):
            n.latest = (boot, seq)
            n.ts = doc.get("ts")
            n.up = doc.get("up")
            v = doc.get("values")
            n.values = v if isinstance(v, dict) else {}
            e = doc.get("errors")
            n.errors = e if isinstance(e, dict) else {}
        return verdict

    def totals(self):
        ns = self.nodes.values()
        return {"nodes": len(self.nodes), "online": sum(1 for n in ns if n.state == "online"),
                "offline": sum(1 for n in ns if n.state == "offline"), "messages": self.messages,
                "received": sum(n.received for n in ns), "lost": sum(n.holes for n in ns),
                "dups": sum(n.dups for n in ns), "late": sum(n.late for n in ns)}


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


# --- the broker --------------------------------------------------------------------------------

class TLS:
    """TLS with a named CA (a private fleet CA, e.g. `broker init`'s ca.crt) and an optional client certificate.
    The broker is always verified, against `cafile` or else the system's CAs; `tls` fields of
    a Broker hold True (system CAs), False (plain MQTT) or one of these."""

    def __init__(self, cafile=None, cert=None, key=None):
        self.cafile, self.cert, self.key = cafile, cert, key

    def __bool__(self):
        return True

    def apply(self, client):
        client.tls_set(ca_certs=self.cafile, certfile=self.cert, keyfile=self.key)


def tls_options(tls=False, cafile=None, cert=None, key=None):
    """tls/cafile/cert/key as a command takes them -> a Broker's `tls`; a CA or a certificate
    implies TLS."""
    if bool(cert) != bool(key):
        raise BadInput("a client certificate needs both its certificate and its key", param="cert" if key else "key")
    if cafile or cert:
        return TLS(cafile, cert, key)
    return bool(tls)


class Broker:
    """Where to connect: host, port and optional credentials."""

    def __init__(self, host, port=1883, user=None, password=None, tls=False):
        self.host, self.port, self.user, self.password, self.tls = host, port, user, password, tls

    def __str__(self):
        return "%s:%d" % (self.host, self.port)


def parse_broker(text, user=None, password=None, tls=False):
    """"host", "host:port" or "[v6]:port" -> Broker; CitynodeError (exit 2) when malformed."""
    text = (text or "").strip()
    host, port = text, 1883
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            port = rest.lstrip(":")
    elif text.count(":") == 1:
        host, port = text.split(":")
    try:
        port = int(port)
    except ValueError:
        port = -1
    if not host or not 0 < port < 65536:
        raise BadInput("broker %r: expected HOST or HOST:PORT" % text, param="broker")
    return Broker(host, port, user, password, tls)


def connect(broker, client_id=None, mqtt5=False, timeout=5.0, on_message=None, subscriptions=()):
    """A started paho client, connected (CONNACK seen) and subscribed (SUBACK seen);
    Unreachable naming the broker when it cannot be reached or refuses us."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    proto = mqtt.MQTTv5 if mqtt5 else mqtt.MQTTv311
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or "citynode-" + uuid.uuid4().hex[:10],
                    protocol=proto, **({} if mqtt5 else {"clean_session": True}))
    if broker.user:
        c.username_pw_set(broker.user, broker.password)
    if isinstance(broker.tls, TLS):
        try:
            broker.tls.apply(c)
        except (OSError, ValueError) as e:
            raise BadInput("TLS files: %s" % _reason(e), param="cafile")
    elif broker.tls:
        c.tls_set()
    state = {"rc": None, "subs": 0}   # subs: SUBACKs so far, the reconnects' included
    c.user_data_set(state)
    ready = threading.Event()
    subscribed = threading.Event()

    def on_connect(client, userdata, flags, rc, props=None):
        state["rc"] = rc
        ready.set()
        # Also on every reconnect: a clean session forgets subscriptions.
        if not rc.is_failure and subscriptions:
            for topic, qos in subscriptions:
                client.subscribe(topic, qos)

    def on_subscribe(client, userdata, mid, rcs, props=None):
        state["subs"] += 1
        if state["subs"] >= len(subscriptions):
            subscribed.set()

    c.on_connect = on_connect
    c.on_subscribe = on_subscribe
    if on_message:
        c.on_message = on_message
    try:
        c.connect(broker.host, broker.port, keepalive=30)
    except (OSError, ValueError) as e:
        raise Unreachable("broker %s could not be reached: %s" % (broker, _reason(e)))
    c.loop_start()
    if not ready.wait(timeout):
        _stop(c)
        raise Unreachable("broker %s did not answer the MQTT connect within %.0f s" % (broker, timeout))
    if state["rc"].is_failure:
        _stop(c)
        raise Unreachable("broker %s refused the connection: %s" % (broker, state["rc"]))
    if subscriptions and not subscribed.wait(timeout):
        _stop(c)
        raise Unreachable("broker %s did not confirm the subscription within %.0f s" % (broker, timeout))
    c.reconnect_delay_set(1, 8)
    return c


def _reason(e):
    return getattr(e, "strerror", None) or str(e) or e.__class__.__name__


def _stop(c):
    try:
        c.disconnect()
    finally:
        c.loop_stop()


def wait_quiet(last, quiet_s=0.3, most_s=3.0):
    """Wait until `last()` (the monotonic time of the latest message) is `quiet_s` old: the
    retained messages a subscription brings have all come. At most `most_s`."""
    end = time.monotonic() + most_s
    while time.monotonic() < end and time.monotonic() - last() < quiet_s:
        time.sleep(0.05)


def prefixes(broker, most_s=3.0):
    """{prefix: number of nodes} of every retained node status on the broker, for prefixes of
    one or two levels: where the nodes are when there are none where we looked."""
    seen, mark = {}, [time.monotonic()]
    lock = threading.Lock()

    def on(client, userdata, msg):
        parts = msg.topic.split("/")
        if msg.retain and parts[-1] == "status":
            with lock:
                seen.setdefault("/".join(parts[:-2]), set()).add(parts[-2])
                mark[0] = time.monotonic()

    c = connect(broker, on_message=on, subscriptions=[("+/+/status", 1), ("+/+/+/status", 1)])
    try:
        wait_quiet(lambda: mark[0], most_s=most_s)
    finally:
        _stop(c)
    with lock:
        return {p: len(n) for p, n in seen.items()}


def elsewhere(broker, prefix):
    """One line naming the prefixes that have nodes, for a monitor that found none under its own."""
    found = {p: n for p, n in prefixes(broker).items() if p != prefix}
    if not found:
        return "no node has a status on %s under any prefix" % broker
    return "no nodes under %s/ on %s; nodes are under: %s (use --prefix)" % (
        prefix, broker, ", ".join("%s/ (%d)" % kv for kv in sorted(found.items())))


def check_names(prefix, node_ids=(), share=None):
    """BadInput unless `prefix` and `node_ids` are names a node can have (the firmware's own rules,
    docs/contract.md "Names") and `share` is a group name MQTT allows. Checked before connecting:
    a wildcard or an empty level would subscribe to, or publish on, topics no node uses."""
    from . import fw
    why = fw.name_problem("mqtt.prefix", prefix)
    if why:
        raise BadInput("prefix %r: %s" % (prefix, why), param="prefix")
    for n in node_ids:
        why = fw.name_problem("node_id", n)
        if why:
            raise BadInput("node id %r: %s" % (n, why))
    if share is not None and (not share or any(c in share for c in "/+#\0")):
        raise BadInput("share group %r: expected a name without / + # or NUL" % share, param="share")


def topics(prefix, share=None):
    """Subscriptions for a monitor. With a shared subscription the broker hands each message to
    one member of the group, so telemetry and events are shared; status stays a plain
    subscription because MQTT 5 sends no retained messages on a shared one (spec 4.8.2), and
    every monitor should know which nodes are online."""
    shared = ("$share/%s/" % share) if share else ""
    return [("%s/+/status" % prefix, 1), (shared + "%s/+/telemetry" % prefix, 1),
            (shared + "%s/+/event" % prefix, 1)]


class Watch:
    """A Fleet fed from the broker on paho's network thread. `emit(rec)` is called for every
    message (the --json printer); the lock guards the Fleet against the table renderer."""

    def __init__(self, broker, prefix="city", share=None, emit=None, fleet=None):
        check_names(prefix, share=share)
        self.broker, self.prefix, self.share = broker, prefix, share
        self.fleet = fleet or Fleet(prefix)
        self.emit = emit
        self.lock = threading.Lock()
        self.client = None

    def _on_message(self, client, userdata, msg):
        with self.lock:
            rec = self.fleet.feed(msg.topic, msg.payload, bool(msg.retain))
        if rec is not None and self.emit:
            self.emit(rec)

    def start(self):
        self.client = connect(self.broker, mqtt5=bool(self.share), on_message=self._on_message,
                              subscriptions=topics(self.prefix, self.share))
        return self

    @property
    def connected(self):
        return bool(self.client and self.client.is_connected())

    @property
    def subacks(self):
        """Subscriptions the broker has confirmed since start (they are made again after a
        reconnect: a clean session forgets them)."""
        return self.client.user_data_get()["subs"] if self.client else 0

    def stop(self):
        if self.client:
            _stop(self.client)
            self.client = None

    def snapshot(self):
        now = time.time()
        with self.lock:
            return [n.summary(now) for _, n in sorted(self.fleet.nodes.items())], self.fleet.totals()

"""Commands to nodes over the broker (docs/contract.md, "cmd and reply"): send one, wait for its reply.

    from citynode import monitor, remote
    b = monitor.parse_broker("127.0.0.1:1883")
    rows = remote.send(b, "city", ["wl-01"], "set", {"key": "interval_s", "value": 30}, timeout=10)
    print(rows[0]["result"], rows[0]["reply"])       # "ok" {"key": "interval_s", "value": 30}

Each row's result is one of: "ok" (the node answered ok:true), "refused" (ok:false, with its
reason), "queued" (the node sleeps: the broker keeps the command for its next wake), "offline"
(its retained status says so), "no reply" (nothing within the timeout). `node_ids=None` sends to
every node that has a retained status under the prefix.
"""
import json
import threading
import time
import uuid

from . import monitor

NAMES = {"ping": "ping", "sample": "sample", "get-config": "get_config", "set": "set", "reboot": "reboot"}
OK, REFUSED, QUEUED, OFFLINE, NO_REPLY = "ok", "refused", "queued", "offline", "no reply"
RETAINED_QUIET_S = 0.3   # --all: the retained statuses have all come once the broker is quiet this long
RETAINED_MAX_S = 3.0


def settable():
    """The keys `set` may change, as the firmware's validator allows them (name -> kind)."""
    from . import fw
    return dict(fw.cfgkeys.SETTABLE)


def parse_value(text):
    """KEY=VALUE's value as the node's JSON would have it: 30 -> 30, 2.5 -> 2.5, else the text."""
    try:
        v = json.loads(text)
    except ValueError:
        return text
    return v if isinstance(v, (int, float, str, bool)) else text


def next_wake(status, now=None):
    """(seconds until the node's next wake, or None; its sleep interval) from an "asleep" status."""
    sleep_s = status.get("sleep_s")
    ts = status.get("ts")
    if not isinstance(sleep_s, (int, float)):
        return None, None
    if isinstance(ts, (int, float)):
        return max(0.0, ts + sleep_s - (now if now is not None else time.time())), sleep_s
    return None, sleep_s


class _Session:
    """One paho client subscribed to the prefix's status and reply topics."""

    def __init__(self, broker, prefix, node_ids):
        self.prefix = prefix
        self.lock = threading.Lock()
        self.status = {}      # node_id -> the retained status document
        self.replies = {}     # command id -> reply document
        self.last = time.monotonic()
        ids = node_ids or ["+"]
        subs = [("%s/%s/%s" % (prefix, n, k), 1) for n in ids for k in ("status", "reply")]
        self.c = monitor.connect(broker, subscriptions=subs, on_message=self._on)

    def _on(self, client, userdata, msg):
        parts = msg.topic.split("/")
        if len(parts) != 3 or parts[0] != self.prefix:
            return
        try:
            doc = json.loads(msg.payload)
        except ValueError:
            return
        if not isinstance(doc, dict):
            return
        with self.lock:
            self.last = time.monotonic()
            if parts[2] == "status" and msg.retain:
                self.status[parts[1]] = doc
            elif parts[2] == "status":
                self.status[parts[1]] = doc    # a birth or an asleep while we wait
            elif parts[2] == "reply" and doc.get("id") is not None:
                self.replies[doc["id"]] = doc

    def settle(self):
        """Wait until the retained statuses have arrived (the broker quiet for a moment)."""
        def last():
            with self.lock:
                return self.last
        monitor.wait_quiet(last, RETAINED_QUIET_S, RETAINED_MAX_S)

    def publish(self, node_id, doc):
        info = self.c.publish("%s/%s/cmd" % (self.prefix, node_id), json.dumps(doc), qos=1)
        info.wait_for_publish(5)

    def close(self):
        monitor._stop(self.c)


def send(broker, prefix, node_ids, name, args=None, timeout=10.0):
    """Send command `name` (a NAMES key or value) to each node; one row per node, in order."""
    cmd = NAMES.get(name, name)
    monitor.check_names(prefix, node_ids or ())
    s = _Session(broker, prefix, node_ids)
    try:
        s.settle()
        if node_ids is None:
            with s.lock:
                node_ids = sorted(s.status)
        rows, waiting = [], {}
        t0 = time.time()
        for nid in node_ids:
            with s.lock:
                st = s.status.get(nid)
            row = {"node_id": nid, "cmd": cmd, "result": None, "reply": None, "error": None,
                   "status": (st or {}).get("state"), "seconds": None}
            rows.append(row)
            if st and st.get("state") == "offline":
                row["result"] = OFFLINE
                row["error"] = "offline (its last will): the broker cannot reach it"
                continue
            cid = "c-" + uuid.uuid4().hex[:8]
            s.publish(nid, {"id": cid, "cmd": cmd, "args": args or {}})
            if st and st.get("state") == "asleep":
                _queued(row, st)
                continue
            waiting[cid] = row
        end = time.monotonic() + timeout
        while waiting and time.monotonic() < end:
            with s.lock:
                done = [(cid, s.replies[cid]) for cid in waiting if cid in s.replies]
            for cid, row in list(waiting.items()):
                with s.lock:
                    st = s.status.get(row["node_id"]) or {}
                if cid not in dict(done) and st.get("state") == "asleep":
                    _queued(waiting.pop(cid), st)   # it went to sleep before answering
            for cid, rep in done:
                row = waiting.pop(cid)
                row["seconds"] = round(time.time() - t0, 2)
                if rep.get("ok"):
                    row["result"], row["reply"] = OK, rep.get("result")
                else:
                    row["result"], row["error"] = REFUSED, rep.get("error") or "refused"
            time.sleep(0.02)
        for row in waiting.values():
            row["result"] = NO_REPLY
            row["error"] = "no reply within %g s%s" % (timeout, "" if row["status"] else
                                                       " (the broker has no status of this node)")
        return rows
    finally:
        s.close()


def _queued(row, status):
    left, every = next_wake(status)
    row["result"] = QUEUED
    row["wake_in_s"] = None if left is None else round(left)
    row["sleep_s"] = every
    row["error"] = "asleep: the broker keeps the command for its next wake (%s)" % (
        "in about %d s" % round(left) if left is not None else "every %s s" % every)


def exit_code(rows):
    """0 every node answered ok (or has the command queued for its wake); 1 one refused;
    3 one could not be reached (offline, no reply, no node at all)."""
    if not rows or any(r["result"] in (OFFLINE, NO_REPLY) for r in rows):
        return 3
    if any(r["result"] == REFUSED for r in rows):
        return 1
    return 0

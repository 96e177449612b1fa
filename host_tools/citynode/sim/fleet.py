"""Several virtual nodes in the foreground, as `citynode sim --nodes N` runs them.

    nodes = fleet("/tmp/flash", count=4, config="examples/sim-water.json", broker="127.0.0.1:1883")
    serve(nodes, ready=lambda ns: print([n.port for n in ns]))   # until Ctrl-C
"""
import json
import signal
import sys
import threading
from pathlib import Path

from .node import SimNode, _node_id


def _suffixed(node_id, k):
    s = "-%d" % k
    return node_id[:32 - len(s)] + s


def fleet(flash, count=1, config=None, **kw):
    """SimNodes for `citynode sim`: one on `flash`, or `count` on flash/node-1 .. flash/node-N.
    With a config and several nodes, node K gets the config's node_id with "-K" appended."""
    flash = Path(flash)
    if count == 1:
        return [SimNode(flash, config=config, **kw)]
    cfg = None
    if config:
        cfg = json.loads(Path(config).read_text())
    nodes = []
    lock = threading.Lock()

    def printer(text):
        with lock:
            sys.stdout.write(text + "\n")
            sys.stdout.flush()

    for k in range(1, count + 1):
        d = flash / ("node-%d" % k)
        d.mkdir(parents=True, exist_ok=True)
        if isinstance(cfg, dict):
            c = dict(cfg)
            if isinstance(c.get("node_id"), str):
                c["node_id"] = _suffixed(c["node_id"], k)
            (d / "config.json").write_text(json.dumps(c, indent=1))
        nid = _node_id(d) or "node-%d" % k
        kw.setdefault("output", printer)
        nodes.append(SimNode(d, prefix="[%s] " % nid, **kw))
    return nodes


def serve(nodes, ready=None):
    """Start the nodes, call ready(nodes), and run until they end or SIGINT/SIGTERM arrives.
    Returns the exit code: 0 after a signal, else the first non-zero code of a node."""
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    started = []
    try:
        for n in nodes:
            started.append(n.start())
        if ready:
            ready(nodes)
        while not stop.is_set() and any(n.alive for n in nodes):
            stop.wait(0.1)
    finally:
        for n in started:
            n._stop.set()
        for n in started:
            n.stop()
        for s, h in old.items():
            signal.signal(s, h)
    if stop.is_set():
        return 0
    return next((n.returncode for n in nodes if n.returncode), 0)

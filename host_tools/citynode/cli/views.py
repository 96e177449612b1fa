"""Results drawn for people: rich tables, the live fleet view, one-line summaries. The library
returns plain dicts; only the CLI renders them.

    views.field_test(report)      # a rich Table
    views.monitor(broker, "city") # the live table until Ctrl-C
"""
import json
import sys
import threading
import time

from .. import fieldtest
from .. import monitor as monitorlib
from .. import provision as provisionlib
from ..words import counted


def _running(r):
    return "\nnode restarted: %s" % r["running"] if r.get("running") else ""


def calibration_water(r):
    return ("%s %s: offset_cm %s -> %s; water level %s cm -> %s cm (reference %s cm; %d reads, distance %s cm, spread %s cm)%s"
            % (r["node_id"], r["sensor"], r["offset_cm"]["before"], r["offset_cm"]["after"], r["level_cm"]["before"],
               r["level_cm"]["after"], r["reference_cm"], r["samples"], r["distance_cm"], r["spread_cm"], _running(r)))


def calibration_gas(r):
    return ("%s %s (%s, %s): r0_kohm %s -> %s; %s in this air %s -> %s (Rs %s kOhm, median of %d reads over %s min, "
            "drift %+.1f %%)%s" % (r["node_id"], r["sensor"], r["type"], r["gas"], r["r0_kohm"]["before"], r["r0_kohm"]["after"],
                                   r["ppm"]["quantity"], r["ppm"]["before"], r["ppm"]["after"], r["rs_kohm"], r["reads"],
                                   r["minutes"], r["drift_pct"], _running(r)))


def calibration_cell(r):
    if r.get("inventory"):
        return "%s: %s's sensors cell is now: %s" % (r["inventory"]["file"], r["node_id"], r["inventory"]["cell"])
    return "inventory sensors cell for %s (paste it, or use --inventory FILE): %s" % (r["node_id"], r["cell"])


def field_test(rep):
    """A rich Table: one row per check, PASS/FAIL and the reason."""
    from rich.table import Table

    t = Table(title="field test of %s on %s: %s" % (rep.get("node_id") or "?", rep["port"], rep["result"]),
              caption="broker %s, %d reads per sensor, %s s" % (rep.get("broker", "-"), rep["samples"], rep.get("took_s", "-")),
              caption_justify="left")
    t.add_column("check")
    t.add_column("result")
    t.add_column("detail", overflow="fold")
    t.add_column("reason", overflow="fold")
    for c in rep["checks"]:
        style = {fieldtest.PASS: "green", fieldtest.FAIL: "bold red"}.get(c["result"], "dim")
        t.add_row(c["check"], "[%s]%s[/]" % (style, c["result"]), c.get("detail") or "", c.get("reason") or "")
    return t


def provision(rows):
    from rich.table import Table

    bad = sum(1 for r in rows if r["result"] != "PASS")
    t = Table(title="provisioning: %s, %d passed, %d failed" % (counted(len(rows), "node"), len(rows) - bad, bad))
    for c in ("node", "port") + provisionlib.STEPS + ("result", "s", "reason"):
        t.add_column(c, overflow="fold")
    for r in rows:
        cells = []
        for s in provisionlib.STEPS:
            st = r["steps"].get(s)
            cells.append("-" if st is None else {"PASS": "[green]ok[/]", "FAIL": "[bold red]FAIL[/]"}.get(st["result"], "skip"))
        style = "green" if r["result"] == "PASS" else "bold red"
        t.add_row(r["node_id"], r["port"], *cells, "[%s]%s[/]" % (style, r["result"]), "%.0f" % r["seconds"], r["reason"] or "")
    return t


def _size(n):
    return "?" if n is None else "%.1f MB" % (n / 1048576) if n >= 1048576 else "%d KB" % (n // 1024)


def node_info(d):
    """`citynode info` as aligned lines."""
    c = d.get("config") or {}
    mq = c.get("mqtt") or {}
    cal = "; ".join("%s %s" % (n, " ".join("%s=%s" % kv for kv in v.items())) for n, v in (d.get("calibration") or {}).items())
    crash = d.get("crash")
    rows = [
        ("port", d["port"]), ("chip", d.get("chip")), ("mac", d.get("mac")), ("flash", _size(d.get("flash_size"))),
        ("micropython", "%s (%s, mpy %s)" % (d.get("micropython"), d.get("build"), d.get("mpy"))),
        ("firmware", "%s%s" % (d.get("firmware") or "none", " (frozen)" if d.get("frozen") else "")),
        ("node_id", d.get("node_id") or "(no config.json)"), ("boot", d.get("boot")), ("last reset", d.get("reset")),
        ("free heap", _size(d.get("heap_free"))), ("free flash", _size(d.get("flash_free"))),
        ("config", "board %s, site %s, every %s s%s, broker %s:%s prefix %s%s%s" % (
            c.get("board"), c.get("site") or "-", c.get("interval_s"), " (deep sleep)" if c.get("deep_sleep") else "",
            mq.get("host"), mq.get("port"), mq.get("prefix"), " TLS" if mq.get("tls") else "",
            ", wifi %s" % c["wifi"]["ssid"] if c.get("wifi") else "") if c else "none"),
        ("sensors", ", ".join(c.get("sensors") or []) or "none"),
        ("calibration", cal or "none"),
        ("last crash", "none" if not crash else "boot %s after %s s: %s%s" % (
            crash.get("boot"), crash.get("up"), crash.get("error"), "" if d.get("crash_reported") else " (not yet reported)")),
    ]
    return "\n".join("%-12s %s" % (k, "" if v is None else v) for k, v in rows)


def command_rows(rows):
    """`citynode cmd`: one line for one node, a table for several."""
    if len(rows) == 1:
        r = rows[0]
        if r["result"] == "ok":
            return "%s: ok in %s s: %s" % (r["node_id"], r["seconds"], json.dumps(r["reply"], ensure_ascii=False))
        return "%s: %s: %s" % (r["node_id"], r["result"], r["error"])
    from rich.table import Table
    t = Table(box=None, header_style="bold")
    for col in ("node", "result", "s", "reply"):
        t.add_column(col, overflow="fold")
    for r in rows:
        style = {"ok": "green", "queued": "yellow"}.get(r["result"], "bold red")
        t.add_row(r["node_id"], "[%s]%s[/]" % (style, r["result"]), _s(r["seconds"]),
                  json.dumps(r["reply"], ensure_ascii=False) if r["result"] == "ok" else r["error"] or "")
    return t


def fleet_table(rows, totals, broker=None, share=None, connected=True):
    """A rich Table of the fleet."""
    from rich.table import Table

    title = "citynode fleet"
    if broker:
        title += " on %s" % broker
    if share:
        title += " (share %s: telemetry split with the group's other monitors)" % share
    t = Table(title=title, caption=_caption(totals, connected), caption_justify="left")
    for col, kw in (("node", {}), ("state", {}), ("fw", {}), ("boot", {"justify": "right"}),
                    ("seen", {"justify": "right"}), ("recv", {"justify": "right"}),
                    ("lost", {"justify": "right"}), ("dup", {"justify": "right"}),
                    ("late", {"justify": "right"}), ("values", {"overflow": "fold"}),
                    ("errors", {"overflow": "fold"})):
        t.add_column(col, **kw)
    for r in rows:
        state = r["state"] or "?"
        style = {"online": "green", "offline": "red"}.get(state, "yellow")
        t.add_row(r["node"], "[%s]%s[/]" % (style, state), r["fw"] or "", _s(r["boot"]), _age(r["age_s"]),
                  str(r["received"]), _warn(r["lost"]), _warn(r["dups"]), str(r["late"]),
                  " ".join("%s=%s" % (k, _num(v)) for k, v in sorted(r["values"].items())),
                  " ".join("%s:%s" % kv for kv in sorted(r["errors"].items())))
    return t


def _caption(totals, connected):
    s = ("%s, %d online, %d offline · %s · %d lost, %s, %d late"
         % (counted(totals["nodes"], "node"), totals["online"], totals["offline"], counted(totals["messages"], "message"),
            totals["lost"], counted(totals["dups"], "duplicate"), totals["late"]))
    return s if connected else s + " · broker connection lost, reconnecting"


def _s(v):
    return "" if v is None else str(v)


def _age(a):
    if a is None:
        return "-"
    return "%ds ago" % a if a < 120 else "%dm ago" % (a // 60)


def _warn(n):
    return "[bold red]%d[/]" % n if n else "0"


def _num(v):
    return ("%.4g" % v) if isinstance(v, float) else str(v)


def monitor(broker, prefix="city", share=None, json_out=False, seconds=None, out=None):
    """The `citynode monitor` loop: JSON lines or a live table until Ctrl-C or `seconds`.
    Returns the final (rows, totals)."""
    out = out or sys.stdout
    wlock = threading.Lock()

    def print_line(rec):
        line = json.dumps(rec, separators=(",", ":")) + "\n"
        with wlock:
            out.write(line)
            out.flush()  # a line per message as it comes, for `| jq` and `| tee`

    w = monitorlib.Watch(broker, prefix, share, print_line if json_out else None).start()
    end = None if seconds is None else time.monotonic() + seconds
    try:
        if json_out:
            _sleep_until(end)
        else:
            _table_loop(w, end, out)
    except KeyboardInterrupt:
        pass
    finally:
        w.stop()
    rows, totals = w.snapshot()
    if not rows:
        # nothing under our prefix: say where the nodes are (a wrong --prefix is the usual cause)
        sys.stderr.write(monitorlib.elsewhere(broker, prefix) + "\n")
    return rows, totals


def _sleep_until(end):
    while end is None or time.monotonic() < end:
        time.sleep(0.1 if end is None else max(0.0, min(0.1, end - time.monotonic())))


def _table_loop(w, end, out):
    from rich.console import Console
    from rich.live import Live

    con = Console(file=out)
    if not con.is_terminal:
        # Piped: no redraws, one table at the end (or at Ctrl-C).
        con = Console(file=out, width=160)
        try:
            _sleep_until(end)
        finally:
            rows, totals = w.snapshot()
            con.print(fleet_table(rows, totals, w.broker, w.share, w.connected))
        return

    hint = []
    t0 = time.monotonic()

    def table():
        rows, totals = w.snapshot()
        if not rows and not hint and time.monotonic() - t0 > 2:
            hint.append(monitorlib.elsewhere(w.broker, w.prefix))
        t = fleet_table(rows, totals, w.broker, w.share, w.connected)
        if hint and not rows:
            t.caption += "\n" + hint[0]
        return t

    with Live(table(), console=con, refresh_per_second=2) as live:
        while end is None or time.monotonic() < end:
            time.sleep(0.5)
            live.update(table())

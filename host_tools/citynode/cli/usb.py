"""Commands over USB serial: `ports`, `deploy`, `config validate|push|show|pull`."""
import json
import os
import sys
import time

import click

from ..errors import CheckFailed, CitynodeError
from ..words import counted
from .base import common, json_option, node_port, print_json, src_option

TIMEOUT = click.option("--timeout", type=click.FloatRange(0.1, 600), default=5.0, show_default=True,
                       envvar="CITYNODE_TIMEOUT", help="Seconds the node may stay silent.")


def _device(obj, timeout):
    from ..transport import Device
    return Device(node_port(obj), timeout)


def _emit(obj, doc, text):
    if obj.json:
        click.echo(json.dumps(doc))
    else:
        click.echo(text)


@click.command()
@click.option("--probe", is_flag=True,
              help="Ask each ESP32 board for its node_id over its REPL (the board is soft-reset afterwards).")
@json_option
@click.pass_obj
def ports(obj, probe):
    """List serial ports, marking ESP32 boards and running virtual nodes, with their node_id.

    \b
    Examples:
      citynode ports
      citynode ports --probe --json"""
    from .. import ports as portlib
    found = portlib.scan(probe=probe)
    if obj.json:
        click.echo(json.dumps(found))
        return
    if not found:
        click.echo("no serial ports")
        return
    from rich.console import Console
    from rich.table import Table
    t = Table(box=None, header_style="bold")
    for col in ("port", "kind", "chip", "node", "usb", "description"):
        t.add_column(col)
    for p in found:
        t.add_row(p["port"], p["kind"], p["bridge"] or "", p.get("node_id") or "", p["usb"] or "", p["description"])
    Console(soft_wrap=True).print(t)


@click.command()
@click.option("--dry-run", is_flag=True, help="List what would change; change nothing.")
@click.option("--no-reset", is_flag=True, help="Leave the node in the REPL afterwards.")
@click.option("--source", is_flag=True, help="Send .py sources instead of compiling to .mpy.")
@src_option
@click.option("--prune", is_flag=True,
              help="Allow a firmware with fewer files than the node holds of ours (the rest is removed).")
@TIMEOUT
@common
@click.pass_obj
def deploy(obj, dry_run, no_reset, source, src, prune, timeout):
    """Compile the firmware for the node and copy what changed, main.py last.

    \b
    Examples:
      citynode deploy -p /dev/ttyUSB0
      citynode deploy --dry-run"""
    from .. import deploy as deploylib
    bar = _Progress(enabled=not obj.json and not dry_run and sys.stderr.isatty())
    with _device(obj, timeout) as dev:
        try:
            s = deploylib.deploy(dev, dry_run=dry_run, reset=not no_reset, source=source,
                                 progress=bar.update, root=src, prune=prune)
        finally:
            bar.close()
    if obj.json:
        click.echo(json.dumps(s))
        return
    if s.get("note"):
        click.echo("note: " + s["note"])
    if dry_run:
        for p in s["sent"]:
            click.echo("send    %s" % p)
        for p in s["removed"]:
            click.echo("remove  %s" % p)
        click.echo("dry run: %d to send (%s B on the wire), %d unchanged, %d to remove (MicroPython %s, .mpy %s)"
                   % (len(s["sent"]), format(s["bytes"], ","), len(s["skipped"]), len(s["removed"]),
                      s["micropython"], s["mpy"]))
        return
    if not s["sent"] and not s["removed"]:
        click.echo("up to date: %d files unchanged%s" % (len(s["skipped"]), "; node soft-reset" if s["reset"] else ""))
        return
    click.echo("deployed %d files (%s B on the wire), %d unchanged, %d removed in %.1f s%s"
               % (len(s["sent"]), format(s["bytes"], ","), len(s["skipped"]), len(s["removed"]),
                  s["seconds"], "; node soft-reset" if s["reset"] else ""))


class _Progress:
    """A rich progress bar in bytes on stderr, created only when there is something to send."""

    def __init__(self, enabled):
        self.enabled = enabled
        self.p = None

    def update(self, done, total):
        if not self.enabled or not total:
            return
        if self.p is None:
            from rich.console import Console
            from rich.progress import (BarColumn, DownloadColumn, Progress, TimeRemainingColumn,
                                       TransferSpeedColumn)
            self.p = Progress("deploy", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                              TimeRemainingColumn(), console=Console(stderr=True), transient=True)
            self.p.start()
            self.task = self.p.add_task("deploy", total=total)
        self.p.update(self.task, completed=done)

    def close(self):
        if self.p is not None:
            self.p.stop()


# --- config -------------------------------------------------------------------------------------

@click.group()
def config():
    """Check, write, show and read a node's config.json."""


@config.command("validate")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--defaults", type=click.Path(dir_okay=False), help="Site defaults (for an inventory CSV).")
@json_option
@click.pass_obj
def config_validate(obj, file, defaults):
    """Check a config.json, or every row of an inventory CSV, with the firmware's validator.

    \b
    Examples:
      citynode config validate node.json
      citynode config validate fleet.csv --defaults site.json"""
    from .. import configtool
    if file.lower().endswith(".csv"):
        d = configtool.load_json(defaults, "defaults") if defaults else None
        rows = configtool.inventory_configs(file, d)
        _emit(obj, {"ok": True, "file": file, "nodes": [n for n, _ in rows]},
              "%s: %s OK (%s)" % (file, counted(len(rows), "node"), ", ".join(n for n, _ in rows)))
        return
    cfg = configtool.load_json(file)
    configtool.check(configtool.apply_secrets(cfg))
    configtool.check_secrets(cfg)
    _emit(obj, {"ok": True, "file": file, "node_id": cfg.get("node_id")},
          "%s: OK (%s, board %s, %d sensors)" % (file, cfg.get("node_id"), cfg.get("board"),
                                                 len(cfg.get("sensors") or [])))


@config.command("push")
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@click.option("--inventory", type=click.Path(dir_okay=False), help="The fleet's inventory CSV.")
@click.option("--node", "node_id", help="The node's row in the inventory.")
@click.option("--defaults", type=click.Path(dir_okay=False), help="Site defaults (JSON) under the row.")
@click.option("--secrets", "secrets_dir", type=click.Path(file_okay=False, exists=True),
              help="The fleet's secrets (citynode broker): the node's own MQTT login and the CA go on it.")
@click.option("--reset-calibration", is_flag=True,
              help="Replace the node's calibrations (offset_cm, r0_kohm) with the new config's.")
@click.option("--dry-run", is_flag=True, help="Show what would change on the node; change nothing.")
@click.option("--no-reset", is_flag=True, help="Do not soft-reset the node afterwards.")
@TIMEOUT
@common
@click.pass_obj
def config_push(obj, file, inventory, node_id, defaults, secrets_dir, reset_calibration, dry_run, no_reset, timeout):
    """Validate a config, then write it on the node atomically.

    Either FILE (a config.json) or --inventory fleet.csv --node ID [--defaults site.json].
    Passwords may come from CITYNODE_WIFI_PASSWORD and CITYNODE_MQTT_PASSWORD; with --secrets the
    node gets its own MQTT user and password and verifies the broker with the fleet's CA. A push
    that fails leaves the node running its previous config. The node's calibrations (offset_cm,
    r0_kohm) are kept unless --reset-calibration; what changes is shown first (secrets masked).

    \b
    Examples:
      citynode config push --inventory fleet.csv --node wl-01 --defaults site.json --dry-run
      citynode config push node.json --reset-calibration"""
    from .. import configtool
    if bool(file) == bool(inventory):
        raise click.UsageError("give either FILE or --inventory CSV --node ID")
    if inventory and not node_id:
        raise click.UsageError("--inventory needs --node ID")
    if file and (node_id or defaults):
        raise click.UsageError("--node and --defaults go with --inventory")
    if inventory:
        d = configtool.load_json(defaults, "defaults") if defaults else None
        cfg = configtool.from_inventory(inventory, node_id, d, skip_secrets=("mqtt",) if secrets_dir else ())
    else:
        cfg = configtool.apply_secrets(configtool.load_json(file))
        configtool.check(cfg, "%s: " % file)
        configtool.check_secrets(cfg, "%s: " % file, ("mqtt",) if secrets_dir else ())
    files = None
    if secrets_dir:
        cfg, files = configtool.with_secrets(cfg, secrets_dir)
    # validated: only now is the node touched
    with _device(obj, timeout) as dev:
        old = configtool.node_config(dev)
        kept = []
        if not reset_calibration:
            cfg, kept = configtool.keep_calibration(cfg, old)
        changes = configtool.diff(old, cfg)
        if dry_run:
            text = None
            dev.leave() if no_reset else dev.soft_reset()
        else:
            text = configtool.push_and_restart(dev, cfg, files, reset=not no_reset)
    doc = {"ok": True, "port": dev.port, "node_id": cfg["node_id"], "dry_run": dry_run,
           "bytes": len(text.encode()) if text else None, "files": sorted(files or {}), "reset": not no_reset,
           "kept_calibration": [{"sensor": n, "key": k, "value": v} for n, k, v in kept],
           "changes": [{"key": k, "node": a, "new": b} for k, a, b in changes]}
    if obj.json:
        click.echo(json.dumps(doc))
        return
    for line in configtool.diff_lines(changes):
        click.echo("  " + line)
    for n, k, v in kept:
        click.echo("kept the node's calibration %s.%s = %s (--reset-calibration replaces it)" % (n, k, v))
    if dry_run:
        click.echo("dry run: %d changes for %s on %s; nothing written%s" % (
            len(changes), cfg["node_id"], dev.port, "; node soft-reset" if not no_reset else ""))
        return
    click.echo("wrote config.json for %s on %s (%d B)%s" % (cfg["node_id"], dev.port, len(text.encode()),
                                                         "; node soft-reset" if not no_reset else ""))


RESUME = click.option("--no-reset", is_flag=True,
                      help="Leave the node in the REPL (default: soft-reset it back to work).")


@config.command("new")
@click.option("--board", required=True, help="The board profile (esp32-generic, esp32-s3, sim).")
@click.option("--sensor", "sensors", multiple=True, metavar="TYPE",
              help="Add a sensor of this type with every field at its default (repeatable).")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write to this file (default: print).")
@click.option("--force", is_flag=True, help="Overwrite --output if it exists.")
def config_new(board, sensors, output, force):
    """A starting config.json with every field at its default and placeholders to replace.

    \b
    Examples:
      citynode config new --board esp32-generic --sensor hcsr04 --sensor bme280 -o node.json
      citynode config new --board sim --sensor mq135"""
    from .. import configtool, fw
    if board not in fw.board_names():
        raise click.BadParameter("unknown board %r (known: %s)" % (board, ", ".join(fw.board_names())),
                                 param_hint="--board")
    text = configtool.encode(configtool.starting_config(board, sensors))
    if not output:
        click.echo(text, nl=False)
        return
    if os.path.exists(output) and not force:
        raise click.BadParameter("%s exists (overwrite it with --force)" % output, param_hint="--output")
    with open(output, "w", encoding="utf-8") as f:
        f.write(text)
    click.echo("%s: a starting config for %s; replace the placeholders, then: citynode config validate %s"
               % (output, board, output), err=True)


@config.command("diff")
@click.argument("file", type=click.Path(dir_okay=False))
@RESUME
@TIMEOUT
@common
@click.pass_obj
def config_diff(obj, file, no_reset, timeout):
    """What pushing FILE would change on the node (secrets masked).

    \b
    Example:
      citynode config diff node.json --port /dev/ttyUSB0"""
    from .. import configtool
    new = configtool.apply_secrets(configtool.load_json(file))
    with _device(obj, timeout) as dev:
        old = configtool.node_config(dev)
        dev.leave() if no_reset else dev.soft_reset()
    changes = configtool.diff(old, new)
    if obj.json:
        click.echo(json.dumps({"same": not changes, "node_has_config": old is not None,
                               "changes": [{"key": k, "node": a, "file": b} for k, a, b in changes]}))
        return
    if old is None:
        click.echo("the node has no config.json: everything is new")
    for line in configtool.diff_lines(changes):
        click.echo(line)




def _pull(obj, timeout, no_reset):
    # Reading a config interrupts the firmware (Ctrl-C); a node left in the REPL stops
    # publishing, so unless asked, it is soft-reset back to work as deploy and push do.
    from .. import configtool
    with _device(obj, timeout) as dev:
        text = configtool.pull(dev)
        if no_reset or text is None:
            dev.leave()
        else:
            dev.soft_reset()
    if text is None:
        raise CheckFailed("%s: the node has no config.json" % dev.port)
    return dev.port, text


@config.command("show")
@RESUME
@TIMEOUT
@common
@click.pass_obj
def config_show(obj, no_reset, timeout):
    """Print the node's config.json, secrets as ***.

    \b
    Example:
      citynode config show -p /dev/ttyUSB0"""
    from .. import configtool
    port, text = _pull(obj, timeout, no_reset)
    try:
        cfg = json.loads(text)
    except ValueError as e:
        raise CheckFailed("%s: config.json on the node is not valid JSON (%s)" % (port, e))
    if not isinstance(cfg, dict):
        raise CheckFailed("%s: config.json on the node is not a JSON object" % port)
    m = configtool.masked(cfg)
    click.echo(json.dumps(m) if obj.json else json.dumps(m, indent=1, ensure_ascii=False))


@config.command("pull")
@click.argument("file", required=False, type=click.Path(dir_okay=False, writable=True))
@RESUME
@TIMEOUT
@common
@click.pass_obj
def config_pull(obj, file, no_reset, timeout):
    """Copy the node's config.json (secrets included) to FILE, or print it.

    \b
    Example:
      citynode config pull wl-01.json -p /dev/ttyUSB0"""
    port, text = _pull(obj, timeout, no_reset)
    if not file:
        click.echo(text, nl=not text.endswith("\n"))
        return
    tmp = file + ".tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, file)
    except OSError as e:
        raise CitynodeError("%s: %s" % (file, e.strerror or e))
    _emit(obj, {"ok": True, "port": port, "file": file, "bytes": len(text.encode())},
          "%s: config.json of %s (%d B)" % (file, port, len(text.encode())))



# --- info ---------------------------------------------------------------------------------------

@click.command("info")
@RESUME
@TIMEOUT
@common
@click.pass_obj
def info(obj, no_reset, timeout):
    """What the node is and how it is doing, in one call over USB: chip, MAC, flash, MicroPython,
    firmware, boot count, last reset, free heap and flash, config (secrets masked), calibrations,
    last crash.

    \b
    Examples:
      citynode info --port /dev/ttyUSB0
      citynode info --json | jq .calibration"""
    from .. import info as infolib
    from . import views
    with _device(obj, timeout) as dev:
        doc = infolib.read(dev)
        dev.leave() if no_reset else dev.soft_reset()
    click.echo(json.dumps(doc) if obj.json else views.node_info(doc))


# --- logs ---------------------------------------------------------------------------------------

@click.command("logs")
@click.option("--since-boot", is_flag=True,
              help="First the lines the node kept since it booted (read from its REPL: the node is soft-reset).")
@click.option("--seconds", type=click.FloatRange(0.1, None), help="Stop after SECONDS (default: until Ctrl-C).")
@TIMEOUT
@common
@click.pass_obj
def logs(obj, since_boot, seconds, timeout):
    """The node's log lines as they come over USB, with the time they came, without stopping main.py.

    \b
    Examples:
      citynode logs --port /dev/ttyUSB0
      citynode logs --since-boot --seconds 60 > node.log"""
    from .. import logs as logslib
    from .. import transport
    port = node_port(obj)

    def show(ts, text, kept=False):
        if obj.json:
            print_json({"ts": round(ts, 3), "line": text, "kept": kept})
        else:
            stamp = time.strftime("%H:%M:%S", time.localtime(ts)) + ".%03d" % (ts % 1 * 1000)
            click.echo("%s%s %s" % (stamp, " (kept)" if kept else "", text))

    if since_boot:
        for ts, text in logslib.since_boot(port, timeout):
            show(ts, "citynode: " + text, kept=True)
        if not obj.json:
            click.echo("-- the node was soft-reset to read these; following its log --", err=True)
    try:
        for ts, text in logslib.follow(port, seconds):
            show(ts, text)
    except KeyboardInterrupt:   # the usual way to stop following: not an error
        transport.clear_interrupt()


# --- reset --------------------------------------------------------------------------------------

@click.command("reset")
@click.option("--hard", is_flag=True,
              help="Reset the chip (EN through RTS on a board) instead of a soft reset of MicroPython.")
@TIMEOUT
@common
@click.pass_obj
def reset(obj, hard, timeout):
    """Restart the node: a soft reset (MicroPython restarts, boot.py and main.py run again; the
    chip, its uptime and an MQ heater's warm-up carry on), or --hard, the chip itself.

    \b
    Examples:
      citynode reset --port /dev/ttyUSB0
      citynode reset --hard"""
    with _device(obj, timeout) as dev:
        if hard:
            how = dev.hard_reset()
        else:
            dev.raw()
            dev.soft_reset()
            how = "soft reset"
    _emit(obj, {"ok": True, "port": dev.port, "hard": hard, "how": how},
              "%s: %s; the node starts main.py again" % (dev.port, how))

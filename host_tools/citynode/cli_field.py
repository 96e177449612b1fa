"""The field crew's commands: flash, monitor, calibrate, test, provision. Each is a few lines
around flash.py, monitor.py, calibrate.py, fieldtest.py and provision.py."""
import json

import click

from .cli import common
from .errors import CitynodeError


def _port(ctx):
    port = ctx.obj.port
    if not port:
        raise click.UsageError("no serial port: give --port or set CITYNODE_PORT")
    return port


def _print_json(doc):
    click.echo(json.dumps(doc, separators=(",", ":"), default=str))


def _broker_options(f):
    f = click.option("--tls", is_flag=True, help="Connect to the broker over TLS.")(f)
    f = click.option("--password", envvar="CITYNODE_MQTT_PASSWORD", help="Broker password (or CITYNODE_MQTT_PASSWORD).")(f)
    f = click.option("--user", envvar="CITYNODE_MQTT_USER", help="Broker user (or CITYNODE_MQTT_USER).")(f)
    return f


@click.command("flash")
@click.option("--firmware", "firmware", required=True, type=click.Path(dir_okay=False),
              help="MicroPython image (.bin) for the board's chip.")
@click.option("--erase", is_flag=True, help="Erase the whole flash first (the node's files go too).")
@click.option("--baud", default=460800, show_default=True, type=click.IntRange(9600, 3000000),
              help="Baud rate while writing.")
@common
@click.pass_context
def flash_cmd(ctx, firmware, erase, baud):
    """Write a MicroPython image with esptool: chip detected, image checked, offset by chip."""
    from . import flash

    r = flash.flash(_port(ctx), firmware, erase=erase, baud=baud)
    if ctx.obj.json:
        _print_json(r)
    else:
        click.echo("%s: %s at 0x%x (%d bytes%s), MicroPython %s on %s"
                   % (r["port"], r["chip"], r["offset"], r["bytes"], ", erased first" if r["erased"] else "",
                      r["version"], r["machine"]))


@click.command("monitor")
@click.option("--broker", envvar="CITYNODE_BROKER", required=True, help="HOST[:PORT] of the broker (or CITYNODE_BROKER).")
@click.option("--prefix", default="city", show_default=True, help="Topic root (the nodes' mqtt.prefix).")
@click.option("--share", metavar="GROUP", help="MQTT 5 shared subscription: monitors in one GROUP split the telemetry.")
@click.option("--once", "seconds", type=click.FloatRange(0, min_open=True), metavar="SECONDS",
              help="Watch for SECONDS, print the result and exit.")
@_broker_options
@common
@click.pass_context
def monitor_cmd(ctx, broker, prefix, share, seconds, user, password, tls):
    """Live view of a fleet from the broker: online/offline, last seen, values, lost and duplicated readings."""
    from . import monitor

    b = monitor.parse_broker(broker, user, password, tls)
    monitor.run(b, prefix, share, json_out=ctx.obj.json, seconds=seconds)


COMMANDS = [flash_cmd, monitor_cmd]

__all__ = ["COMMANDS", "CitynodeError"]

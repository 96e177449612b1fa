"""`citynode monitor`: the fleet as the broker sees it, around monitor.py (views.py draws it)."""
import click

from .base import broker_options, json_option


@click.command("monitor")
@click.option("--broker", envvar="CITYNODE_BROKER", required=True, help="HOST[:PORT] of the broker (or CITYNODE_BROKER).")
@click.option("--prefix", default="city", show_default=True, help="Topic root (the nodes' mqtt.prefix).")
@click.option("--share", metavar="GROUP", help="MQTT 5 shared subscription: monitors in one GROUP split the telemetry.")
@click.option("--once", "seconds", type=click.FloatRange(0, min_open=True), metavar="SECONDS",
              help="Watch for SECONDS, print the result and exit.")
@broker_options
@json_option
@click.pass_context
def monitor_cmd(ctx, broker, prefix, share, seconds, user, password, tls):
    """Live view of a fleet from the broker: online/offline, last seen, values, lost and duplicated readings.

    \b
    Examples:
      citynode monitor --broker broker.local --prefix bandung
      citynode monitor --broker broker.local --once 60 --json > fleet.jsonl"""
    from .. import monitor

    b = monitor.parse_broker(broker, user, password, tls)
    from . import views
    views.monitor(b, prefix, share, json_out=ctx.obj.json, seconds=seconds)

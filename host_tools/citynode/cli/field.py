"""The field crew's commands at a node: test, calibrate, provision. Each is a few lines around
fieldtest.py, calibrate.py and provision.py; views.py draws their results."""
import click

from . import views
from .base import broker_options, common, console, json_option, node_port, print_json, src_option


@click.command("test")
@click.option("--samples", default=5, show_default=True, type=click.IntRange(1, 50), help="Reads per sensor.")
@click.option("--broker", envvar="CITYNODE_BROKER", help="HOST[:PORT] to check the round trip on (default: the node's mqtt.host/port).")
@click.option("--report", "report_dir", type=click.Path(file_okay=False), help="Keep a timestamped JSON report per node here.")
@click.option("--online-timeout", default=30.0, show_default=True, type=click.FloatRange(1, 600),
              help="Seconds the node may take to come online on the broker after its restart.")
@broker_options
@common
@click.pass_context
def test_cmd(ctx, samples, broker, report_dir, online_timeout, user, password, tls):
    """The field test: every sensor, Wi-Fi, the broker connection and a telemetry round trip. PASS/FAIL.

    \b
    Examples:
      citynode test -p /dev/ttyUSB0 --report reports/
      citynode test --broker staging.local:1883 --samples 10"""
    from .. import fieldtest

    rep = fieldtest.run(node_port(ctx.obj), samples, broker, user, password, tls, online_s=online_timeout)
    if report_dir:
        rep["report"] = str(fieldtest.save_report(rep, report_dir))
    _show(ctx, rep, views.field_test)
    if rep["result"] != "PASS":
        raise SystemExit(1)


def _show(ctx, doc, render):
    if ctx.obj.json:
        print_json(doc)
        return
    con = console()
    con.print(render(doc))
    if doc.get("report"):
        con.print("report: %s" % doc["report"])


@click.group("calibrate")
def calibrate_grp():
    """Calibrate a sensor on the node and store the result in its config.json."""


INVENTORY = click.option("--inventory", type=click.Path(dir_okay=False, exists=True),
                         help="Also write the result into this node's row of the inventory CSV.")


@calibrate_grp.command("water")
@click.option("--reference-cm", required=True, type=float, help="The water level now, read off a staff gauge (cm).")
@click.option("--samples", default=7, show_default=True, type=click.IntRange(3, 50), help="Readings to take.")
@click.option("--sensor", help="The water sensor's name (when the node has several).")
@click.option("--max-spread", default=2.0, show_default=True, type=click.FloatRange(0.1, 50),
              help="Refuse when the distances spread more than this (cm).")
@INVENTORY
@common
@click.pass_context
def calibrate_water(ctx, reference_cm, samples, sensor, max_spread, inventory):
    """Set the water sensor's offset_cm so that it reads the reference level now.

    \b
    Example:
      citynode calibrate water --reference-cm 62.5 --inventory fleet.csv"""
    from .. import calibrate

    r = calibrate.water(node_port(ctx.obj), reference_cm, samples, sensor, max_spread, inventory=inventory)
    print_json(r) if ctx.obj.json else click.echo(views.calibration_water(r) + "\n" + views.calibration_cell(r))


@calibrate_grp.command("gas")
@click.option("--minutes", default=2.0, show_default=True, type=click.FloatRange(0.05, 120),
              help="How long to watch Rs in clean air.")
@click.option("--sensor", help="The gas sensor's name (when the node has several).")
@INVENTORY
@common
@click.pass_context
def calibrate_gas(ctx, minutes, sensor, inventory):
    """Measure an MQ sensor's R0 in clean air and store r0_kohm.

    \b
    Example:
      citynode calibrate gas --minutes 10 --inventory fleet.csv"""
    from .. import calibrate

    r = calibrate.gas(node_port(ctx.obj), minutes, sensor, inventory=inventory)
    print_json(r) if ctx.obj.json else click.echo(views.calibration_gas(r) + "\n" + views.calibration_cell(r))


def _csv(ctx, param, value):
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise click.BadParameter("expected a comma-separated list")
    return items


@click.command("provision")
@click.option("--inventory", required=True, type=click.Path(dir_okay=False), help="The fleet's inventory CSV.")
@click.option("--ports", required=True, callback=_csv, help="P1,P2,...: one port per node, all done at once.")
@click.option("--firmware", type=click.Path(dir_okay=False), help="MicroPython image to flash first.")
@click.option("--skip-flash", is_flag=True, help="Boards already run MicroPython: deploy, config and test only.")
@click.option("--erase", is_flag=True, help="Erase each board's flash before writing the image.")
@click.option("--nodes", callback=_csv, help="ID1,ID2,...: the inventory rows for the ports, in order (default: all rows).")
@click.option("--defaults", type=click.Path(dir_okay=False), help="Site defaults (JSON) under each inventory row.")
@click.option("--samples", default=3, show_default=True, type=click.IntRange(1, 50), help="Field test: reads per sensor.")
@click.option("--broker", envvar="CITYNODE_BROKER", help="HOST[:PORT] for the field test's round trip (default: each node's).")
@click.option("--report", "report_dir", type=click.Path(file_okay=False), help="Keep each node's field test report here.")
@click.option("--online-timeout", default=30.0, show_default=True, type=click.FloatRange(1, 600),
              help="Seconds a node may take to come online on the broker.")
@src_option
@click.option("--secrets", "secrets_dir", type=click.Path(file_okay=False, exists=True),
              help="The fleet's secrets (citynode broker): each node's own login and the CA go on it.")
@click.option("--reset-calibration", is_flag=True,
              help="Replace the nodes' calibrations (offset_cm, r0_kohm) with the inventory's.")
@broker_options
@json_option
@click.pass_context
def provision_cmd(ctx, inventory, ports, firmware, skip_flash, erase, nodes, defaults, samples, broker, report_dir,
                  online_timeout, src, secrets_dir, reset_calibration, user, password, tls):
    """Flash, deploy, config and field-test several nodes at once, one worker per port.

    \b
    Example:
      citynode provision --inventory fleet.csv --defaults site.json --ports /dev/ttyUSB0,/dev/ttyUSB1 --firmware fw.bin"""
    from .. import provision

    rows = provision.provision(inventory, ports, firmware, nodes, defaults, skip_flash, erase, samples, broker,
                               user, password, tls, report_dir, online_timeout, src=src, secrets=secrets_dir,
                               log=None if ctx.obj.json else lambda m: click.echo(m, err=True),
                               reset_calibration=reset_calibration)
    doc = {"result": "PASS" if all(r["result"] == "PASS" for r in rows) else "FAIL", "nodes": rows}
    if ctx.obj.json:
        print_json(doc)
    else:
        console().print(views.provision(rows))
    if doc["result"] != "PASS":
        raise SystemExit(1)

"""The `citynode` command line: a thin layer over the library (every module of citynode but this
package), which knows nothing of Click. Every command is in the table below; a module that fails
to import fails loudly.

    from citynode.cli import main
    main(["deploy", "--port", "/dev/ttyUSB0"])
"""
import click

from .. import __version__
from . import broker, field, firmware, flash, monitor, ota, remote, sim, usb
from .base import Ctx, Group

# name -> command: the whole CLI in one place (as mpremote's _COMMANDS).
COMMANDS = {
    "ports": usb.ports,
    "firmware": firmware.firmware_grp,
    "flash": flash.flash_cmd,
    "deploy": usb.deploy,
    "config": usb.config,
    "info": usb.info,
    "logs": usb.logs,
    "calibrate": field.calibrate_grp,
    "test": field.test_cmd,
    "provision": field.provision_cmd,
    "monitor": monitor.monitor_cmd,
    "cmd": remote.cmd,
    "sim": sim.sim,
    "broker": broker.broker_grp,
    "ota": ota.ota,
}


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--port", "-p", envvar="CITYNODE_PORT", help="Serial port of the node (or CITYNODE_PORT).")
@click.option("--json", "json_out", is_flag=True, help="Print one JSON document instead of tables.")
@click.version_option(__version__, prog_name="citynode")
@click.pass_context
def main(ctx, port, json_out):
    """Flash, deploy, configure, calibrate, field-test and watch citynode sensor nodes."""
    ctx.obj = Ctx(port, json_out)


for _name, _cmd in COMMANDS.items():
    main.add_command(_cmd, _name)

__all__ = ["main", "COMMANDS"]

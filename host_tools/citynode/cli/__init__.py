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
    "reset": usb.reset,
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
@click.option("--json", "json_out", is_flag=True, help="Print one JSON document instead of tables.")
@click.version_option(__version__, prog_name="citynode")
@click.pass_context
def main(ctx, json_out):
    """Flash, deploy, configure, calibrate, field-test and watch citynode sensor nodes.

    The commands that talk to a node over USB take -p/--port (or CITYNODE_PORT); without
    it they use the only board or virtual node there is.

    \b
    Examples:
      citynode info -p /dev/ttyUSB0
      citynode cmd wl-01 ping --broker broker.local

    Shell completion: eval "$(_CITYNODE_COMPLETE=bash_source citynode)" (zsh_source, fish_source)."""
    ctx.obj = Ctx(None, json_out)


def _examples_last(cmd):
    # A docstring's "Example(s):" block goes after the options, where a reader looks for it.
    for c in getattr(cmd, "commands", {}).values():
        _examples_last(c)
    h = cmd.help or ""
    i = h.find("\b\n    Example")
    if i < 0:
        i = h.find("\b\nExample")
    if i > 0 and not cmd.epilog:
        cmd.help, cmd.epilog = h[:i].rstrip(), h[i:]


for _name, _cmd in COMMANDS.items():
    main.add_command(_cmd, _name)
_examples_last(main)

__all__ = ["main", "COMMANDS"]

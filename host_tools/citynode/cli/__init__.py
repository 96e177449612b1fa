"""The `citynode` command line. Commands are a few lines each; the work is in the modules
beside this one (transport, deploy, sim, monitor ...), which know nothing of Click."""
import click

from . import __version__
from .errors import CitynodeError


class Ctx:
    """State shared by every command: where the node is and how to print."""

    def __init__(self, port, json_out):
        self.port = port
        self.json = json_out


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--port", "-p", envvar="CITYNODE_PORT", help="Serial port of the node (or CITYNODE_PORT).")
@click.option("--json", "json_out", is_flag=True, help="Print one JSON document instead of tables.")
@click.version_option(__version__, prog_name="citynode")
@click.pass_context
def main(ctx, port, json_out):
    """Flash, deploy, configure, calibrate, field-test and watch citynode sensor nodes."""
    ctx.obj = Ctx(port, json_out)


def common(f):
    """--port and --json on the command itself too (`citynode deploy --port X` as well as
    `citynode --port X deploy`); the merged values land in ctx.obj."""
    def port_cb(ctx, param, value):
        if value:
            ctx.find_object(Ctx).port = value
        return value

    def json_cb(ctx, param, value):
        if value:
            ctx.find_object(Ctx).json = True
        return value

    f = click.option("--json", "_json", is_flag=True, expose_value=False, callback=json_cb,
                     help="Print one JSON document instead of tables.")(f)
    f = click.option("--port", "-p", "_port", expose_value=False, callback=port_cb,
                     help="Serial port of the node (or CITYNODE_PORT).")(f)
    return f


def node_port(obj, boards_only=False):
    """--port / CITYNODE_PORT, or the only node-looking port there is; `boards_only` (flash)
    looks at real boards only: a virtual node has no bootloader."""
    if obj.port:
        return obj.port
    from . import ports
    found = [p for p in ports.candidates() if not boards_only or p["kind"] == "esp32"]
    what = "ESP32 board" if boards_only else "ESP32 board or virtual node"
    if len(found) == 1:
        click.echo("using %s (%s)" % (found[0]["port"], found[0]["bridge"] or "virtual node"), err=True)
        return found[0]["port"]
    if not found:
        raise click.UsageError("no port given and no %s found; use --port" % what)
    raise click.UsageError("several possible nodes (%s); choose one with --port"
                           % ", ".join(p["port"] for p in found))


def _register():
    # Each module owns its commands; this keeps cli.py free of merge conflicts.
    import importlib
    for name in ("cli_usb", "cli_field", "cli_sim"):
        try:
            mod = importlib.import_module("." + name, __package__)
        except ModuleNotFoundError as e:
            if e.name != "%s.%s" % (__package__, name):
                raise
            continue
        for cmd in mod.COMMANDS:
            main.add_command(cmd)


_register()

__all__ = ["main", "Ctx", "CitynodeError", "common"]


"""What every command shares: the context object, --port/--json, the port chooser, JSON and
console output, the broker options, and the group that turns the library's errors into exits."""
import functools
import json
import os

import click

from ..errors import CitynodeError


class Ctx:
    """State shared by every command: where the node is and how to print."""

    def __init__(self, port, json_out):
        self.port = port
        self.json = json_out


def common(f):
    """--port (or CITYNODE_PORT) and --json on a command that talks to a node over USB; --json
    may also come before the command (`citynode --json info`); the values land in ctx.obj."""
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
    f = click.option("--port", "-p", "_port", expose_value=False, callback=port_cb, envvar="CITYNODE_PORT",
                     help="Serial port of the node (or CITYNODE_PORT).")(f)
    return f


def json_option(f):
    """--json on a command that uses no serial port (the broker's commands)."""
    def json_cb(ctx, param, value):
        if value:
            ctx.find_object(Ctx).json = True
        return value

    return click.option("--json", "_json", is_flag=True, expose_value=False, callback=json_cb,
                        help="Print one JSON document instead of tables.")(f)


def src_option(f):
    """--src (or CITYNODE_SRC): a tree holding firmware/ and boards/ to deploy, for the commands
    that deploy (deploy, provision); a tree without firmware/ is a usage error."""
    def src_cb(ctx, param, value):
        if value and not os.path.isdir(os.path.join(value, "firmware")):
            raise click.BadParameter("%s has no firmware/ directory" % value, ctx=ctx, param=param)
        return value

    return click.option("--src", type=click.Path(file_okay=False, exists=True), envvar="CITYNODE_SRC",
                        callback=src_cb,
                        help="A tree holding firmware/ and boards/ to deploy (default: the firmware in this package).")(f)


def node_port(obj):
    """--port / CITYNODE_PORT, or the only node-looking port there is (a board or a virtual node)."""
    if obj.port:
        return obj.port
    from .. import ports
    found = ports.candidates()
    what = "ESP32 board or virtual node"
    if len(found) == 1:
        click.echo("using %s (%s)" % (found[0]["port"], found[0]["bridge"] or "virtual node"), err=True)
        return found[0]["port"]
    if not found:
        raise click.UsageError("no port given and no %s found; use --port" % what)
    raise click.UsageError("several possible nodes (%s); choose one with --port"
                           % ", ".join(p["port"] for p in found))


class Fail(click.ClickException):
    """A library error on its way out: "Error: <one line>" on stderr, the contract's exit code."""

    def __init__(self, err):
        msg = str(err)
        if err.param:
            msg += " (--%s)" % err.param.replace("_", "-")
        super().__init__(msg)
        self.exit_code = err.exit_code


INTERRUPTED = 130   # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C


class Group(click.Group):
    """Runs a command; a CitynodeError it raises becomes one line and its exit code (with --json,
    also a JSON error document on stdout). Ctrl-C puts the node back to work first (transport),
    then says in what state the node is, and exits 130."""

    def invoke(self, ctx):
        import signal
        import threading

        from .. import transport
        main = threading.current_thread() is threading.main_thread()
        transport.clear_interrupt()
        old = signal.signal(signal.SIGINT, transport.on_sigint) if main else None
        try:
            return super().invoke(ctx)
        except CitynodeError as e:
            _json_error(ctx, str(Fail(e).message), e.exit_code)
            raise Fail(e) from None
        except KeyboardInterrupt:
            lines = ["interrupted: %s: %s%s" % (port, state, "; " + left if left else "")
                     for port, state, left in transport.interrupt_reports()] or ["interrupted"]
            transport.clear_interrupt()   # said: a caller in this process goes on afresh
            _json_error(ctx, "; ".join(lines), INTERRUPTED)
            for ln in lines:
                click.echo(ln, err=True)
            raise click.exceptions.Exit(INTERRUPTED)
        except click.ClickException as e:
            _json_error(ctx, e.format_message(), e.exit_code)
            raise
        finally:
            if main:
                signal.signal(signal.SIGINT, old)


def _json_error(ctx, message, code):
    """With --json, a failure is a JSON document on stdout too: scripts read one place."""
    obj = ctx.find_object(Ctx)
    if obj is not None and obj.json:
        print_json({"ok": False, "error": message, "exit": code})


def print_json(doc):
    click.echo(json.dumps(doc, separators=(",", ":"), default=str))


def broker_options(f):
    """--user/--password/--tls/--cafile/--cert/--key; the command gets `tls` as
    monitor.tls_options makes it (False, True or a monitor.TLS)."""
    cmd = f

    @functools.wraps(cmd)
    def inner(*a, cafile=None, cert=None, key=None, tls=False, **kw):
        from .. import monitor
        return cmd(*a, tls=monitor.tls_options(tls, cafile, cert, key), **kw)

    f = inner
    f = click.option("--key", type=click.Path(dir_okay=False, exists=True), help="Client certificate's key (PEM).")(f)
    f = click.option("--cert", type=click.Path(dir_okay=False, exists=True),
                     help="Client certificate (PEM), for brokers that want one.")(f)
    f = click.option("--cafile", type=click.Path(dir_okay=False, exists=True),
                     help="CA certificate (PEM) to verify the broker with, e.g. the fleet's ca.crt; implies --tls.")(f)
    f = click.option("--tls", is_flag=True, help="Connect to the broker over TLS (verified against the system's CAs).")(f)
    f = click.option("--password", envvar="CITYNODE_MQTT_PASSWORD", help="Broker password (or CITYNODE_MQTT_PASSWORD).")(f)
    f = click.option("--user", envvar="CITYNODE_MQTT_USER", help="Broker user (or CITYNODE_MQTT_USER).")(f)
    return f


def console():
    from rich.console import Console
    con = Console()
    return con if con.is_terminal else Console(width=max(con.width, 140))

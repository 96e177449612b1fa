"""`citynode cmd`: a command to one node, or to every node, over the broker (remote.py)."""
import click

from .base import broker_options, console, json_option, print_json

ACTIONS = (("ping", "", "uptime, firmware, boot, seq, free memory, readings held"),
           ("sample", "", "a reading cycle now; its values"),
           ("get-config", "", "the config, secrets as ***"),
           ("set", "KEY=VALUE", "change one settable key, stored on the node"),
           ("reboot", "", "answer, then restart"))


class _CmdHelp(click.Command):
    """The actions, the settable keys (from the firmware's validator, read only when help is
    asked for) and examples at the end of --help."""

    def format_epilog(self, ctx, formatter):
        from .. import remote
        with formatter.section("Actions"):
            formatter.write_dl([("%s %s" % (n, a) if a else n, h) for n, a, h in ACTIONS])
        with formatter.section("Settable keys (set KEY=VALUE)"):
            formatter.write_dl(sorted(remote.settable().items()))
        with formatter.section("Examples"):
            formatter.write_text("citynode cmd wl-01 set interval_s=30 --broker broker.local")
            formatter.write_text("citynode cmd --all ping --broker broker.local --prefix bandung")
        formatter.write_paragraph()
        formatter.write_text("Exit: 0 answered (or queued for a sleeping node), 1 refused, 3 not reached.")


@click.command("cmd", cls=_CmdHelp)
@click.argument("words", nargs=-1, required=True, metavar="[NODE] ACTION [KEY=VALUE]")
@click.option("--all", "all_nodes", is_flag=True, help="Send to every node with a status on the broker (no NODE).")
@click.option("--broker", envvar="CITYNODE_BROKER", required=True, help="HOST[:PORT] of the broker (or CITYNODE_BROKER).")
@click.option("--prefix", default="city", show_default=True, help="Topic root (the nodes' mqtt.prefix).")
@click.option("--timeout", type=click.FloatRange(0.1, 600), default=10.0, show_default=True,
              help="Seconds to wait for the replies.")
@broker_options
@json_option
@click.pass_obj
def cmd(obj, words, all_nodes, broker, prefix, timeout, user, password, tls):
    """Send a command to a node over the broker and wait for its reply."""
    from .. import monitor, remote
    from . import views
    words = list(words)
    node = None if all_nodes else words.pop(0)
    if not words:
        raise click.UsageError("no action: give one of %s" % ", ".join(n for n, _, _ in ACTIONS))
    action, rest = words[0], words[1:]
    if action not in remote.NAMES:
        raise click.UsageError("unknown action %r (actions: %s)" % (action, ", ".join(n for n, _, _ in ACTIONS)))
    args = {}
    if action == "set":
        if len(rest) != 1 or "=" not in rest[0]:
            raise click.UsageError("set needs one KEY=VALUE, e.g. set interval_s=30")
        key, value = rest[0].split("=", 1)
        keys = remote.settable()
        if key not in keys:
            raise click.UsageError("%r is not settable (settable: %s)" % (key, ", ".join(sorted(keys))))
        args = {"key": key, "value": remote.parse_value(value)}
    elif rest:
        raise click.UsageError("%s takes no arguments" % action)
    b = monitor.parse_broker(broker, user, password, tls)
    rows = remote.send(b, prefix, None if all_nodes else [node], action, args, timeout)
    code = remote.exit_code(rows)
    if obj.json:
        print_json({"ok": code == 0, "exit": code, "nodes": rows})
    elif not rows:
        click.echo("no node has a status under %s/ on %s" % (prefix, b), err=True)
    else:
        r = views.command_rows(rows)
        console().print(r) if not isinstance(r, str) else click.echo(r)
    if code:
        raise SystemExit(code)

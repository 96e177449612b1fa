"""`citynode ota keygen | bundle | push`: updates over the air (the work is in ota.py)."""
import sys
import threading

import click

from .base import broker_options, json_option, print_json


@click.group()
def ota():
    """Signed firmware updates over MQTT, with trial boot and rollback."""


@ota.command()
@click.option("--secrets", required=True, type=click.Path(file_okay=False),
              help="Directory for ota.key (private, 0600) and ota.pub.")
@click.option("--force", is_flag=True, help="Replace an existing key (nodes holding the old public key refuse bundles).")
@json_option
@click.pass_obj
def keygen(obj, secrets, force):
    """Make the fleet's Ed25519 signing key; print where the public key is.

    \b
    Example:
      citynode ota keygen --secrets fleet-secrets"""
    from .. import ota as lib
    pub = lib.keygen(secrets, force)
    if obj.json:
        print_json({"key": "%s/%s" % (secrets, lib.KEY), "pub": "%s/%s" % (secrets, lib.PUB), "pubkey": pub})
    else:
        click.echo("wrote %s/%s (private: keep it off the nodes) and %s/%s" % (secrets, lib.KEY, secrets, lib.PUB))
        click.echo('put the public key in each node\'s config as "ota": {"pubkey": "<%s>"} and config push it' % lib.PUB)


@ota.command()
@click.option("--src", type=click.Path(file_okay=False, exists=True), help="A tree holding firmware/ and boards/ (default: this package's).")
@click.option("--version", "version", help="Version the bundle reports (default: the tree's firmware/version.py).")
@click.option("--secrets", required=True, type=click.Path(file_okay=False), help="Directory holding ota.key.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Bundle file to write.")
@click.option("--base", type=click.Path(exists=True, dir_okay=False),
              help="The bundle the nodes run now: carry only the files that differ (a delta).")
@click.option("--image", type=click.Path(exists=True, dir_okay=False),
              help="A MicroPython image (.bin, OTA build) to send whole, for boards with OTA partitions.")
@json_option
@click.pass_obj
def bundle(obj, src, version, secrets, out, base, image):
    """Compile the firmware as deploy does and sign it into one bundle file.

    \b
    Example:
      citynode ota bundle --secrets fleet-secrets --out fw-0.5.0.bundle"""
    from .. import ota as lib
    info = lib.bundle(src=src, version=version, secrets=secrets, out=out, base=base, image=image)
    if obj.json:
        print_json(info)
    else:
        click.echo("%s: firmware %s, %d files (%d carried), %d bytes, for MicroPython %s (.mpy %s), id %s"
                   % (info["out"], info["version"], info["files"], info["carried"], info["bytes"],
                      info["micropython"], info["mpy"], info["id"]))


class _Bars:
    """One rich progress bar per node on stderr; with --json, one JSON line per event."""

    def __init__(self, nodes, json_out):
        self.json = json_out
        self.lock = threading.Lock()
        self.p = None
        self.tasks = {}
        if not json_out:
            from rich.console import Console
            from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn
            self.p = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                              TextColumn("{task.fields[phase]}"), console=Console(stderr=True),
                              transient=False)

    def __enter__(self):
        if self.p:
            self.p.start()
        return self

    def __exit__(self, *a):
        if self.p:
            self.p.stop()

    def __call__(self, node, ev):
        with self.lock:
            if self.json:
                print_json(dict(ev, node=node))
                return
            t = self.tasks.get(node)
            if t is None:
                t = self.tasks[node] = self.p.add_task(node, total=ev.get("total"), phase="")
            self.p.update(t, completed=ev.get("done", 0), phase=ev.get("phase", ""))


@ota.command()
@click.argument("nodes", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every node whose retained status is online.")
@click.option("--broker", envvar="CITYNODE_BROKER", required=True, help="HOST[:PORT] of the fleet's broker (or CITYNODE_BROKER).")
@click.option("--prefix", default="city", show_default=True, help="Topic root (the nodes' mqtt.prefix).")
@broker_options
@click.option("--bundle", "bundle_path", required=True, type=click.Path(exists=True, dir_okay=False), help="Bundle file (ota bundle).")
@click.option("--allow-downgrade", is_flag=True, help="Let nodes install a version older than theirs.")
@json_option
@click.pass_obj
def push(obj, nodes, all_, broker, prefix, bundle_path, allow_downgrade, user, password, tls):
    """Send a bundle to nodes; exit 0 when every one runs it, 1 when one refused or rolled back,
    3 when one could not be reached.

    \b
    Example:
      citynode ota push --all --broker broker.local --bundle fw-0.5.0.bundle"""
    from .. import monitor, ota as lib
    if bool(nodes) == bool(all_):
        raise click.UsageError("name the nodes, or give --all")
    # a usage error before the bundle's checks (ota.push checks again, for library callers)
    monitor.check_names(prefix, nodes)
    b = lib.Bundle.read(bundle_path)
    with _Bars(nodes, obj.json) as bars:
        results = lib.push(None if all_ else list(nodes), broker, b, prefix, user, password,
                           tls, allow_downgrade, bars)
    for r in results.values():
        if obj.json:
            print_json(r.as_dict())
        else:
            mark = {"ok": "OK  ", "refused": "FAIL", "rolled_back": "FAIL", "unreachable": "DOWN"}[r.state]
            click.echo("%s %s: %s (%.1f s)" % (mark, r.node, r.detail, r.seconds), err=r.state != "ok")
    sys.exit(lib.exit_code(results))


COMMANDS = [ota]

"""`citynode broker init|config`: the fleet's CA, credentials and Mosquitto config (broker.py)."""
import json

import click

from .base import json_option
from ..words import counted


@click.group("broker")
def broker_grp():
    """Make the fleet's CA and credentials, and the broker's config that goes with them."""


@broker_grp.command("init")
@click.option("--secrets", "secrets_dir", required=True, type=click.Path(file_okay=False),
              help="Directory for the fleet's secrets (made 0700).")
@click.option("--host", "hosts", required=True, multiple=True,
              help="The broker's DNS name or IP address, as nodes reach it; repeat for several.")
@json_option
@click.pass_obj
def broker_init(obj, secrets_dir, hosts):
    """A fleet CA, the broker's certificate for --host names, and the operators' credentials
    (operator.json). Run again to re-issue the broker certificate: the CA and keys are kept.

    \b
    Example:
      citynode broker init --secrets fleet-secrets --host broker.bandung.example"""
    from .. import broker
    r = broker.init(secrets_dir, list(hosts))
    if obj.json:
        click.echo(json.dumps(r))
        return
    click.echo("%s: wrote %s" % (r["secrets"], ", ".join(r["written"])))
    click.echo("broker certificate for %s; nodes verify it with %s (mqtt.ca)" % (", ".join(r["hosts"]), r["ca"]))
    click.echo("broker key pin (mqtt.pin_sha256): %s" % r["pin_sha256"])


@broker_grp.command("config")
@click.option("--inventory", required=True, type=click.Path(dir_okay=False), help="The fleet's inventory CSV.")
@click.option("--secrets", "secrets_dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="The directory `broker init` made.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Directory for the broker's files.")
@click.option("--listen", default="0.0.0.0:8883", show_default=True, help="IP:PORT of the TLS listener.")
@click.option("--client-certs", is_flag=True,
              help="Give each node a client certificate; the broker then requires one (CN = user).")
@click.option("--defaults", type=click.Path(dir_okay=False), help="Site defaults (JSON) under each row (for mqtt.prefix).")
@json_option
@click.pass_obj
def broker_config(obj, inventory, secrets_dir, out, listen, client_certs, defaults):
    """Credentials for every node of the inventory that lacks them, and OUT/mosquitto.conf, passwd,
    acl, ca.crt, server.crt, server.key: `mosquitto -c OUT/mosquitto.conf` runs the fleet's broker.

    \b
    Example:
      citynode broker config --inventory fleet.csv --secrets fleet-secrets --out broker/"""
    from .. import broker, configtool
    d = configtool.load_json(defaults, "defaults") if defaults else None
    r = broker.config(inventory, secrets_dir, out, listen, client_certs, d)
    if obj.json:
        click.echo(json.dumps(r))
        return
    click.echo("%s: broker config for %s (%s), TLS on %s%s"
               % (r["out"], counted(r["nodes"], "node"), counted(len(r["new_credentials"]), "new credential"), r["listen"],
                  ", client certificates required" if client_certs else ""))
    click.echo("run: mosquitto -c %s" % r["conf"])


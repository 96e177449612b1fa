"""`citynode flash`: a MicroPython image onto a board or a virtual node, around flash.py."""
import click

from .base import common, node_port, print_json


@click.command("flash")
@click.option("--firmware", "firmware", type=click.Path(dir_okay=False),
              help="MicroPython image (.bin) for the board's chip (default: the cached one for the chip found).")
@click.option("--erase", is_flag=True, help="Erase the whole flash first (the node's files go too).")
@click.option("--baud", default=460800, show_default=True, type=click.IntRange(9600, 3000000),
              help="Baud rate while writing.")
@common
@click.pass_context
def flash_cmd(ctx, firmware, erase, baud):
    """Write a MicroPython image with esptool: chip detected, image checked, offset by chip.

    \b
    Example:
      citynode flash --firmware ESP32_GENERIC-v1.24.1.bin -p /dev/ttyUSB0"""
    from .. import flash

    r = flash.flash(node_port(ctx.obj), firmware, erase=erase, baud=baud)
    if ctx.obj.json:
        print_json(r)
    else:
        click.echo("%s: %s at 0x%x (%d bytes%s), MicroPython %s on %s"
                   % (r["port"], r["chip"], r["offset"], r["bytes"], ", erased first" if r["erased"] else "",
                      r["version"], r["machine"]))

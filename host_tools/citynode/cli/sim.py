"""`citynode sim`: the virtual node (citynode.sim)."""
import json
import re

import click

from ..errors import CitynodeError
from .base import json_option


def _broker(ctx, param, value):
    if value is None:
        return value
    m = re.fullmatch(r"\[?([A-Za-z0-9.:_-]+?)\]?:(\d{1,5})", value)
    if not m or not 0 < int(m.group(2)) < 65536:
        raise click.BadParameter("expected HOST:PORT, e.g. 127.0.0.1:1883")
    return value


def _file_error(e, flash):
    return "%s: %s" % (e.filename or flash, e.strerror or e)


@click.command()
@click.option("--flash", required=True, type=click.Path(file_okay=False),
              help="The node's flash directory (created; gets the firmware if it has no main.py).")
@click.option("--broker", callback=_broker, metavar="HOST:PORT",
              help="Broker to use instead of the config's mqtt.host/port.")
@click.option("--config", type=click.Path(exists=True, dir_okay=False), help="Copy this config.json in.")
@click.option("--scenario", type=click.Path(exists=True, dir_okay=False), help="Copy this sim.json in.")
@click.option("--serial", is_flag=True, help="Serve the REPL on a pseudo-terminal; print its path first.")
@click.option("--baud", type=click.IntRange(300, 10_000_000), help="Pace the serial link to BAUD/10 bytes/s.")
@click.option("--nodes", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Start N nodes on FLASH/node-1 .. FLASH/node-N.")
@click.option("--heapsize", metavar="SIZE", help="MicroPython heap, e.g. 120k (default: the unix port's; an ESP32's 56k on the virtual ESP32).")
@click.option("--idf-heap", metavar="SIZE",
              help="On the virtual ESP32: ESP-IDF heap its GC heap may grow into when full, as a board's "
                   "does, e.g. 64k (default: none; the heap never grows).")
@click.option("--empty", is_flag=True, help="Do not install the firmware on an empty flash.")
@click.option("--chip", type=click.Choice(["ESP32", "ESP32-S3"]), default="ESP32", show_default=True,
              help="What the node's ROM loader tells esptool it is (--serial).")
@json_option
@click.pass_obj
def sim(obj, flash, broker, config, scenario, serial, baud, nodes, heapsize, idf_heap, empty, chip):
    """Run the firmware on a virtual node (the MicroPython unix port).

    \b
    Examples:
      citynode sim --serial --flash /tmp/node1 --config node.json --broker 127.0.0.1:1883
      citynode sim --serial --nodes 3 --flash /tmp/fleet --baud 115200"""
    from .. import sim as simlib
    if heapsize and not re.fullmatch(r"\d+[kKmM]?", heapsize):
        raise click.BadParameter("expected a size such as 120k or 2M", param_hint="--heapsize")
    env = None
    if idf_heap:
        from .. import vesp32
        from ..sim.bootstrap import micropython
        m = re.fullmatch(r"(\d{1,9})([kK]?)", idf_heap)
        if not m or int(m.group(1)) * (1024 if m.group(2) else 1) > 4 << 20:
            raise click.BadParameter("expected a size such as 64k, at most 4096k", param_hint="--idf-heap")
        if vesp32.default_heap(micropython()) is None:
            raise click.BadParameter("only the virtual ESP32 grows its heap (CITYNODE_MICROPYTHON="
                                     "build/esp32-unix/micropython-plain, after make esp32-unix)",
                                     param_hint="--idf-heap")
        env = {"CITYNODE_IDF_HEAP": idf_heap}
    try:
        fleet = simlib.fleet(flash, nodes, config=config, broker=broker, scenario=scenario,
                             serial=serial, baud=baud, heapsize=heapsize, empty=empty, chip=chip, env=env)
    except ValueError as e:       # the config is not JSON
        raise CitynodeError("%s: %s" % (config, e), 1)
    except OSError as e:
        raise CitynodeError(_file_error(e, flash), 1)

    def ready(started):
        if not serial:
            return
        for n in started:
            if obj.json:
                click.echo(json.dumps({"port": n.port, "flash": str(n.flash), "node_id": n.node_id,
                                       "pid": n.pid, "baud": baud, "chip": chip}))
            else:
                click.echo(n.port)

    try:
        code = simlib.serve(fleet, ready)
    except OSError as e:          # the flash directory or a file copied onto it
        raise CitynodeError(_file_error(e, flash), 1)
    except RuntimeError as e:     # MicroPython would not start
        raise CitynodeError("sim: %s" % e, 3)
    raise SystemExit(code)


"""`citynode firmware list|download`: the MicroPython images citynode flashes (see images.py)."""
import json

import click

from .base import json_option


@click.group("firmware")
def firmware_grp():
    """The MicroPython images citynode supports, and the per-user cache `flash` takes them from."""


@firmware_grp.command("list")
@json_option
@click.pass_obj
def list_cmd(obj):
    """Show the supported images: board, MicroPython version, size, SHA-256, source, cached.

    \b
    Example:
      citynode firmware list"""
    from .. import images

    rows = images.listing()
    if obj.json:
        click.echo(json.dumps({"cache": str(images.cache_dir()), "images": rows}, separators=(",", ":")))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title="MicroPython images (cache: %s)" % images.cache_dir())
    for c in ("board", "chip", "version", "size", "sha256", "source", "cached"):
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(r["board"], r["chip"], r["version"], "-" if r["size"] is None else format(r["size"], ","),
                  r["sha256"] or "not pinned", r["url"] or r["source"], "yes" if r["cached"] else "no")
    Console().print(t)


@firmware_grp.command("download")
@click.option("--board", default="ESP32_GENERIC", show_default=True, help="Which image (see `firmware list`).")
@click.option("--mirror", metavar="URL", envvar="CITYNODE_FIRMWARE_MIRROR",
              help="Base URL that has the image files (a city's own mirror); or CITYNODE_FIRMWARE_MIRROR.")
@click.option("--sha256", metavar="HASH", help="Expected SHA-256, for an image whose hash is not pinned yet.")
@json_option
@click.pass_obj
def download_cmd(obj, board, mirror, sha256):
    """Fetch an image into the cache; its SHA-256 must match, or nothing is kept.

    \b
    Examples:
      citynode firmware download --board ESP32_GENERIC
      citynode firmware download --mirror https://files.kota.example/micropython/"""
    from .. import images

    bar = None
    if not obj.json:
        from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
        bar = Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                       TransferSpeedColumn(), transient=True)
    task = None

    def progress(done, total):
        nonlocal task
        if bar is None:
            return
        if task is None:
            task = bar.add_task(images.lookup(board).file, total=total)
        bar.update(task, completed=done, total=total)

    if bar is not None:
        with bar:
            p = images.download(board, mirror, progress, sha256=sha256)
    else:
        p = images.download(board, mirror, progress, sha256=sha256)
    doc = {"board": board, "path": str(p), "sha256": images.sha256_file(p), "bytes": p.stat().st_size}
    if obj.json:
        click.echo(json.dumps(doc, separators=(",", ":")))
    else:
        click.echo("%s: %s (%s bytes, SHA-256 %s verified)" % (board, p, format(doc["bytes"], ","), doc["sha256"]))


COMMANDS = [firmware_grp]

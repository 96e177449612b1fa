"""Serial ports that may have a node behind them: USB bridges known on ESP32 boards, Espressif's
native USB, and the virtual nodes running on this machine.

    from citynode import ports
    for p in ports.scan():
        print(p["port"], p["kind"], p["description"])

Ports sort naturally (/dev/pts/8 before /dev/pts/10). A virtual node's node_id is read from its
flash (its config.json now, not the one it was started with); a board's, with probe=True, from
the board itself over its REPL (the board is soft-reset back to work afterwards).
"""
import re

# VID:PID of the USB-serial chips found on ESP32 boards.
BRIDGES = {
    (0x10C4, 0xEA60): "CP210x",
    (0x1A86, 0x7523): "CH340",
    (0x1A86, 0x55D4): "CH9102",
    (0x0403, 0x6001): "FTDI FT232R",
    (0x0403, 0x6015): "FTDI FT231X",
    (0x303A, 0x1001): "ESP32 native USB",
}


def _usb(p):
    vid, pid = getattr(p, "vid", None), getattr(p, "pid", None)
    return (vid, pid) if vid is not None and pid is not None else None


def describe(p):
    """One port from pyserial's list_ports as a dict."""
    usb = _usb(p)
    bridge = BRIDGES.get(usb) if usb else None
    return {
        "port": p.device,
        "kind": "esp32" if bridge else "serial",
        "bridge": bridge,
        "usb": "%04x:%04x" % usb if usb else None,
        "description": (p.description if p.description and p.description != "n/a" else "") or "",
        "serial_number": getattr(p, "serial_number", None),
        "node_id": None,
    }


def natural(port):
    """Sort key: the digits in a name compare as numbers (pts/8 < pts/10)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", port)]


def probe_node_id(port, timeout=3.0):
    """The node_id in the config.json of the node on `port`, read over its REPL; None when it has
    none or does not answer. The node is soft-reset back to work."""
    from . import configtool, transport
    from .errors import CitynodeError
    try:
        with transport.Device(port, timeout) as dev:
            cfg = configtool.node_config(dev)
            dev.soft_reset()
    except CitynodeError:
        return None
    return cfg.get("node_id") if cfg else None


def scan(include_virtual=True, probe=False):
    """Every port, ESP32 bridges first, then other serial ports, then virtual nodes."""
    from serial.tools import list_ports
    found = [describe(p) for p in list_ports.comports()]
    found.sort(key=lambda d: (d["kind"] != "esp32", natural(d["port"])))
    if probe:
        for p in found:
            if p["kind"] == "esp32":
                p["node_id"] = probe_node_id(p["port"])
    if include_virtual:
        from .sim import running
        from .sim.node import _node_id
        for v in sorted(running(), key=lambda v: natural(v["port"])):
            found.append({"port": v["port"], "kind": "virtual", "bridge": None, "usb": None,
                          "description": "citynode sim, flash %s%s" % (
                              v.get("flash"), ", %d baud" % v["baud"] if v.get("baud") else ""),
                          "serial_number": None, "node_id": (_node_id(v["flash"]) if v.get("flash") else None) or v.get("node_id"),
                          "pid": v.get("pid")})
    return found


def candidates():
    """Ports that look like a node: an ESP32 bridge or a virtual node."""
    return [p for p in scan() if p["kind"] in ("esp32", "virtual")]

"""Serial ports that may have a node behind them: USB bridges known on ESP32 boards, Espressif's
native USB, and the virtual nodes running on this machine.

    from citynode import ports
    for p in ports.scan():
        print(p["port"], p["kind"], p["description"])
"""

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


def scan(include_virtual=True):
    """Every port, ESP32 bridges first, then other serial ports, then virtual nodes."""
    from serial.tools import list_ports
    found = [describe(p) for p in list_ports.comports()]
    found.sort(key=lambda d: (d["kind"] != "esp32", d["port"]))
    if include_virtual:
        from .sim import running
        for v in running():
            found.append({"port": v["port"], "kind": "virtual", "bridge": None, "usb": None,
                          "description": "citynode sim, flash %s%s" % (
                              v.get("flash"), ", %d baud" % v["baud"] if v.get("baud") else ""),
                          "serial_number": None, "node_id": v.get("node_id"), "pid": v.get("pid")})
    return found


def candidates():
    """Ports that look like a node: an ESP32 bridge or a virtual node."""
    return [p for p in scan() if p["kind"] in ("esp32", "virtual")]

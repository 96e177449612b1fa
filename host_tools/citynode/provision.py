"""Provision several nodes at once: flash, deploy, config and field test, one worker per port.

    from citynode import provision
    rows = provision.provision("fleet.csv", ["/dev/ttyUSB0", "/dev/ttyUSB1"], firmware="ESP32_GENERIC.bin")
    print([(r["node_id"], r["result"], r["reason"]) for r in rows])

Every inventory row is validated before any port is touched. Port i gets the i-th node (of the
inventory, or of `nodes` when given). A node's failure stops that node's steps only; the others
go on. Virtual nodes are flashed too: their serial face has a ROM loader (sim/rom.py).
"""
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from . import configtool, deploy, fieldtest, flash, fw, monitor, transport
from .errors import BadInput, CitynodeError
from .words import counted

STEPS = ("flash", "deploy", "config", "test")


def plan(inventory, ports, nodes=None, defaults=None, secrets=None):
    """[(port, node_id, raw config, files)], every config validated first (with its own
    credentials and CA from `secrets`, then `files` holds what goes on its flash beside
    config.json). CitynodeError exit 2 when the ports and the nodes do not pair up."""
    configs = configtool.inventory_configs(inventory, configtool.load_json(defaults, "defaults") if defaults else None,
                                           skip_secrets=("mqtt",) if secrets else ())
    by_id = dict(configs)
    if nodes:
        unknown = [n for n in nodes if n not in by_id]
        if unknown:
            raise BadInput("nodes %s are not in %s" % (", ".join(unknown), inventory), param="nodes")
        chosen = [(n, by_id[n]) for n in nodes]
    else:
        chosen = configs
    if len(ports) != len(chosen):
        raise CitynodeError("%s for %s: give one port per node, or pick the nodes"
                            % (counted(len(ports), "port"), counted(len(chosen), "node")), 2, param="nodes")
    if len(set(ports)) != len(ports):
        raise BadInput("a port is listed twice", param="ports")
    out = []
    for p, (nid, cfg) in zip(ports, chosen):
        files = None
        if secrets:
            cfg, files = configtool.with_secrets(cfg, secrets)
        out.append((p, nid, cfg, files))
    return out


def _one(port, node_id, cfg, files, opts, log):
    row = {"port": port, "node_id": node_id, "result": "PASS", "reason": None, "steps": {}, "seconds": 0.0}
    t0 = time.monotonic()

    def step(name, fn):
        if transport.interrupted():     # a Ctrl-C reaches the main thread only: no further step
            raise KeyboardInterrupt
        t = time.monotonic()
        try:
            note = fn()
        except Exception as e:  # CitynodeError, or a bug in one worker: the others go on
            msg = e.message if isinstance(e, CitynodeError) else repr(e)
            row["steps"][name] = {"result": "FAIL", "detail": msg, "seconds": round(time.monotonic() - t, 1)}
            row["result"], row["reason"] = "FAIL", "%s: %s" % (name, msg)
            log(node_id, port, "%s FAILED: %s" % (name, msg))
            return False
        row["steps"][name] = {"result": "skip" if note.startswith("skipped") else "PASS", "detail": note,
                              "seconds": round(time.monotonic() - t, 1)}
        log(node_id, port, "%s: %s" % (name, note))
        return True

    def do_flash():
        if opts["skip_flash"]:
            return "skipped (asked to)"
        r = flash.flash(port, opts["firmware"], erase=opts["erase"], redirect=False)
        dev.holds("image", "MicroPython %s flashed%s" % (r["version"], " on an erased flash" if opts["erase"] else ""))
        return "%s at 0x%x, MicroPython %s" % (r["chip"], r["offset"], r["version"])

    dev = transport.Device(port, timeout=opts["timeout"])

    def do_deploy():
        dev.open()
        s = deploy.deploy(dev, reset=False, root=opts["src"])
        return "%d files sent, %d unchanged (%s B on the wire)" % (len(s["sent"]), len(s["skipped"]), format(s["bytes"], ","))

    def do_config():
        m = cfg["mqtt"]
        b = monitor.parse_broker(opts["broker"], opts["user"], opts["password"], opts["tls"]) if opts["broker"] else \
            monitor.Broker(m["host"], fw.validate(cfg)["mqtt"]["port"], opts["user"], opts["password"],
                           opts["tls"] or m.get("tls", False))
        nob = fieldtest.NodeOnBroker(b, m.get("prefix", "city"), node_id)
        try:
            new = cfg if opts["reset_calibration"] else \
                configtool.keep_calibration(cfg, configtool.node_config(dev))[0]
            configtool.push(dev, new, files)
            t = time.monotonic()
            line = fieldtest.restart(dev)  # main.py runs with the new firmware and config
            if line is None or line.startswith("safe mode"):
                raise CitynodeError("the firmware did not start after the reset: %s" % (line or "no word from main.py"))
            # Settled before it is tested: its first session on the broker is up.
            birth = nob.wait(lambda x: x[1] == "status" and not x[2] and x[0] >= t and isinstance(x[3], dict)
                             and x[3].get("state") == "online", opts["online_s"])
            if birth is None:
                raise CitynodeError("config.json written, but the node did not come online on %s within %.0f s"
                                    % (b, opts["online_s"]))
        finally:
            nob.close()
        return "config.json written; %s; online after %.1f s" % (line, birth[0] - t)

    def do_test():
        # its own Device, which says what the node holds after the steps before (an interrupt's line)
        rep = fieldtest.run(port, opts["samples"], opts["broker"], opts["user"], opts["password"], opts["tls"],
                            online_s=opts["online_s"], held=dev.held)
        if opts["report_dir"]:
            rep["report"] = row["report"] = str(fieldtest.save_report(rep, opts["report_dir"]))
        row["test"] = rep
        fails = [c for c in rep["checks"] if c["result"] == "FAIL"]
        if fails:
            raise CitynodeError("; ".join("%s: %s" % (c["check"], c["reason"]) for c in fails))
        return "PASS (%d checks)" % len(rep["checks"])

    try:
        usb_ok = step("flash", do_flash) and step("deploy", do_deploy) and step("config", do_config)
    finally:
        if dev.t is not None and dev.in_raw and not transport.interrupted():
            try:
                fieldtest.restart(dev)  # a failed step leaves the node running, not in the REPL
            except CitynodeError:
                pass
        if dev.t is None and dev.held and transport.interrupted():
            # flashed, stopped before the deploy opened the port: the flasher's reset set it going
            transport.report_interrupt(port, dev.state, "MicroPython running, no firmware yet (the flash was erased)"
                                       if opts["erase"] else "node running (reset after the flash)")
        dev.close()
    if usb_ok:
        step("test", do_test)
    row["seconds"] = round(time.monotonic() - t0, 1)
    return row


def provision(inventory, ports, firmware=None, nodes=None, defaults=None, skip_flash=False, erase=False,
              samples=3, broker=None, user=None, password=None, tls=False, report_dir=None, online_s=30.0,
              timeout=10.0, src=None, log=None, secrets=None, reset_calibration=False):
    """Provision every port at once; one row per node (in port order). `src`: a tree holding
    firmware/ and boards/ to deploy (default: this checkout). `secrets`: the fleet's (citynode
    broker): each node gets its own login and the CA, and the field test logs in as the operator
    and verifies the broker with the fleet's CA, unless `user` and `tls` are given. A node's
    calibrations (offset_cm, r0_kohm) are kept unless `reset_calibration`."""
    work = plan(inventory, ports, nodes, defaults, secrets)
    if secrets:
        from . import broker as brokerlib
        if not user:
            op = brokerlib.operator(secrets)
            user, password = op["username"], op["password"]
        if not isinstance(tls, monitor.TLS):
            tls = monitor.TLS(os.path.join(secrets, "ca.crt"))
    if not skip_flash and firmware:
        flash.image_chip_id(flash.read_image(firmware), firmware)
    elif not skip_flash:
        from . import images
        if not any(images.verified(i) for i in images.IMAGES):
            raise BadInput("no firmware image to flash: none in the cache (%s; run `citynode firmware download`);"
                           " give one, or skip flashing" % images.cache_dir(), param="firmware")
    # One broker check up front: an unreachable broker would otherwise fail every node's test
    # after minutes of flashing.
    brokers = {str(monitor.parse_broker(broker))} if broker else \
        {"%s:%d" % (w[2]["mqtt"]["host"], fw.validate(w[2])["mqtt"]["port"]) for w in work}
    for b in sorted(brokers):
        monitor._stop(monitor.connect(monitor.parse_broker(b, user, password, tls)))
    deploy.build(root=src)  # compile once into the cache, not once per worker
    opts = {"firmware": firmware, "skip_flash": skip_flash, "erase": erase, "samples": samples, "broker": broker,
            "user": user, "password": password, "tls": tls, "report_dir": report_dir, "online_s": online_s,
            "timeout": timeout, "src": src, "reset_calibration": reset_calibration}
    lock = threading.Lock()

    def say(node_id, port, msg):
        if log:
            with lock:
                log("[%s %s] %s" % (node_id, port, msg))

    # esptool and mpremote print to sys.stdout, one object for every thread: silence it while the
    # workers run (their results come back as rows; progress goes to `log`).
    saved = sys.stdout
    sys.stdout = open(os.devnull, "w")
    try:
        with ThreadPoolExecutor(max_workers=len(work)) as ex:
            futs = [ex.submit(_one, p, nid, cfg, files, opts, say) for p, nid, cfg, files in work]
            rows = [f.result() for f in futs]
    finally:
        sys.stdout.close()
        sys.stdout = saved
    return rows

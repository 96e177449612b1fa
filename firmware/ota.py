"""Over-the-air update of the firmware's files: receive a signed bundle in chunks over MQTT,
check it, stage it beside the running firmware, switch with one rename. Imported by node.py only
when the first message arrives on {prefix}/{node_id}/ota.

    u = ota.Receiver(pubkey_hex, running="", fw="0.3.1", log=print)
    u.offer({"op": "offer", "id": "9f2c...", "size": 61234})   # -> {"held": 0}
    u.data(offset, chunk)                                        # -> {"held": n} ... {"switch": True}

The bundle (host_tools/citynode/ota.py writes it; docs/ota.md has the byte layout):
    b"CNOTA\\x01" | u16 BE manifest length | manifest JSON | Ed25519 signature (64) | files...
The signature covers b"citynode-ota-1\\x00" + SHA-256(everything before it), so a node verifies
it as soon as the header has arrived, before one byte of a file is written, and checks each
file's SHA-256 (in the signed manifest) on the flash once all have arrived.

On the flash: firmware versions other than the one deployed over USB (at the root) live in
fw/a, fw/b, fw/c. fw.json says which one runs, which one is the fallback, and whether the one
that runs is on trial; main.py reads it at boot. A bundle is written into the slot that is
neither, so the running and the fallback firmware are never touched; the switch is one
persist.write_json of fw.json (a rename). A transfer cut off resumes from what the slot holds:
its file sizes are the offset, so nothing else has to be kept up to date on the flash.
"""
import asyncio
import binascii
import hashlib
import json
import os
import sys

import persist

MAGIC = b"CNOTA\x01"
CONTEXT = b"citynode-ota-1\x00"
POINTER = "fw.json"
SLOTS = ("fw/a", "fw/b", "fw/c")
_ID = ".id"
_HEAD = ".head"
_MAX_MANIFEST = 8192
_MARGIN = 8192  # free flash left after staging: the outbox and the config must still be written


class Refused(Exception):
    """The bundle is not installed; args[0] says why, in one line."""


def version_tuple(v):
    """"0.4.0" -> (0, 4, 0); a pre-release part ("0.4.0-rc1") counts below its release."""
    out = []
    for part in str(v).replace("-", ".").split("."):
        n = ""
        for c in part:
            if "0" <= c <= "9":
                n += c
            else:
                break
        out.append(int(n) if n else -1)
    while len(out) < 4:     # "0.4" == "0.4.0" and (0, 4, 0, -1) for an rc sorts below it
        out.append(0)
    return tuple(out)


def pointer():
    p = persist.read_json(POINTER)
    return p if isinstance(p, dict) else {}


def _size(path):
    try:
        return os.stat(path)[6]
    except OSError:
        return -1


def rmtree(path):
    try:
        names = os.listdir(path)
    except OSError:
        return
    for n in names:
        p = path + "/" + n
        if os.stat(p)[0] & 0x4000:
            rmtree(p)
        else:
            persist.remove(p)
    try:
        os.rmdir(path)
    except OSError:
        pass


def _mkdirs(path):
    d = ""
    for part in path.split("/"):
        d = d + "/" + part if d else part
        try:
            os.mkdir(d)
        except OSError:
            pass


def free_bytes():
    try:
        s = os.statvfs("")
        return s[0] * s[4]
    except (AttributeError, OSError):
        return -1


def sha256_file(path):
    h = hashlib.sha256()
    buf = bytearray(512)
    mv = memoryview(buf)
    with open(path, "rb") as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(mv[:n])
    return binascii.hexlify(h.digest()).decode()


def clean(keep):
    """Remove every slot that is not in keep (dir names without the trailing /)."""
    for s in SLOTS:
        if s not in keep:
            rmtree(s)


def parse_header(head, pubkey):
    """(manifest, header length) from the header's bytes, its signature checked first: nothing
    unsigned is parsed. Refused if it is not signed by pubkey or malformed."""
    if head[:6] != MAGIC:
        raise Refused("not a citynode OTA bundle")
    n = (head[6] << 8) | head[7]
    if n > _MAX_MANIFEST or len(head) < 8 + n + 64:
        raise Refused("manifest too large")
    mv = memoryview(head)
    digest = hashlib.sha256(mv[:8 + n]).digest()
    import ed25519
    ok = ed25519.verify(pubkey, CONTEXT + digest, mv[8 + n:8 + n + 64])
    del sys.modules["ed25519"]   # ~7 KB of code and constants, needed once per update
    if not ok:
        raise Refused("signature: not signed by this node's ota.pubkey")
    try:
        m = json.loads(bytes(mv[8:8 + n]))
    except ValueError:
        raise Refused("manifest: malformed JSON")
    if not isinstance(m, dict) or not isinstance(m.get("files"), list) or not isinstance(m.get("version"), str):
        raise Refused("manifest: missing fields")
    for f in m["files"]:
        if not (isinstance(f, list) and len(f) in (3, 4) and isinstance(f[0], str) and isinstance(f[1], int)
                and f[1] >= 0 and isinstance(f[2], str)) or ".." in f[0] or f[0][:1] in "/.":
            raise Refused("manifest: bad file entry")
    return m, 8 + n + 64


def check(m, fw, downgrade):
    """What else can refuse a signed bundle before its files arrive. Raises Refused. An image
    (ota_image.py) brings its own MicroPython, but must load the .mpy files on the flash."""
    impl = sys.implementation
    mpy = getattr(impl, "_mpy", 0)
    have = "%d.%d" % (mpy & 0xFF, (mpy >> 8) & 3)
    if m.get("mpy") != have:
        raise Refused("abi: bundle needs .mpy %s, node loads %s" % (m.get("mpy"), have))
    arch = m.get("arch") or 0
    if arch and arch != mpy >> 10:
        raise Refused("abi: bundle needs native arch %d, node is %d" % (arch, mpy >> 10))
    image = m.get("kind") == "image"
    mp = "%d.%d" % impl.version[:2]
    if not image and m.get("micropython") != mp:
        raise Refused("micropython: bundle needs %s, node runs %s" % (m.get("micropython"), mp))
    if not downgrade and version_tuple(m["version"]) < version_tuple(fw):
        raise Refused("version %s is older than the running %s (a downgrade must be allowed by the sender)" % (m["version"], fw))
    need = sum(f[1] for f in m["files"])
    free = free_bytes()
    if not image and 0 <= free < need + _MARGIN:
        raise Refused("flash: %d bytes needed, %d free" % (need + _MARGIN, free))


class Receiver:
    def __init__(self, pubkey, running="", fw="0", log=print, esp32=None):
        self.pubkey = binascii.unhexlify(pubkey) if pubkey else None
        self.running = running.rstrip("/")
        self.fw = fw
        self.log = log
        self.slot = ""         # the directory the offer's files go to
        self.id = None
        self.size = 0
        self.held = 0
        self.downgrade = False
        self.m = None          # the manifest once the header is in and checked
        self.hlen = 0
        self.ends = []         # bundle offset where each file in the stream ends
        self.stream = []       # the files whose bytes are in the bundle (the rest are copied)
        self.esp32 = esp32     # the seam for images: esp32 module or a fake
        self.sink = None       # ota_image.ImageSink when the bundle is a whole image

    def _base(self, name):
        return self.running + "/" + name if self.running else name

    def _pick(self):
        p = pointer()
        busy = (self.running, (p.get("prev") or "").rstrip("/"))
        for s in SLOTS:
            if s not in busy:
                return s
        raise Refused("offer: no free slot")   # three slots, at most two busy: not reached

    def offer(self, d):
        """A new (or resumed) transfer: {"id": bundle id, "size": bytes, "downgrade": bool}.
        {"held": n, "offer": 1}; with "switch" as data() says when the slot held every byte."""
        if self.pubkey is None:
            raise Refused("no ota.pubkey in this node's config (set it over USB: citynode config push)")
        if pointer().get("trial"):
            raise Refused("this node runs a version on trial; try again once it has committed")
        bid, size = d.get("id"), d.get("size")
        if not isinstance(bid, str) or not 8 <= len(bid) <= 64 or not isinstance(size, int) or size < 72:
            raise Refused("offer: expected id and size")
        self.downgrade = d.get("downgrade") is True
        self.sink = None     # a whole image's sink from a cut or refused transfer must not take this one
        self.slot = s = self._pick()
        clean((self.running, (pointer().get("prev") or "").rstrip("/"), s))
        if persist.read_json(s + "/" + _ID) != [bid, size]:
            rmtree(s)
            _mkdirs(s)
            persist.write_json(s + "/" + _ID, [bid, size])
        self.id, self.size, self.m, self.ends = bid, size, None, []
        self.held = self._held()
        r = self._done()
        r["offer"] = 1
        return r

    def _held(self):
        """What the slot holds, as an offset into the bundle (after a cut: whatever got written)."""
        hs = max(_size(self.slot + "/" + _HEAD), 0)
        if hs < 8:
            return hs
        with open(self.slot + "/" + _HEAD, "rb") as f:
            head = f.read()
        n = 8 + ((head[6] << 8) | head[7]) + 64
        if hs < n:
            return hs
        self._header(head, True)
        if self.sink is not None:
            return self.hlen + self.sink.held()
        off = self.hlen
        for i, f in enumerate(self.stream):
            got = _size(self.slot + "/" + f[0])
            if got > f[1]:
                # Longer than its entry (a write that failed part-way, then came again): corrupt.
                # It starts over, with what was written after it (files of 0 bytes are right).
                for g in self.stream[i:]:
                    if g[1]:
                        persist.remove(self.slot + "/" + g[0])
                got = 0
            if got < f[1]:
                return off + max(got, 0)
            off += f[1]
        return off

    def _header(self, head, resume=False):
        m, n = parse_header(head, self.pubkey)
        check(m, self.fw, self.downgrade)
        stream = [f for f in m["files"] if len(f) == 3 or not f[3]]
        if n + sum(f[1] for f in stream) != self.size:
            raise Refused("size: the offer does not match the manifest")
        for f in m["files"]:
            # A delta bundle (ota bundle --base) leaves out what the running firmware has already.
            if len(f) == 4 and f[3]:
                p = self._base(f[0])
                if _size(p) != f[1] or sha256_file(p) != f[2]:
                    raise Refused("delta: the running firmware has another %s than the bundle's base" % f[0])
        self.m, self.hlen, self.stream = m, n, stream
        if m.get("kind") == "image":
            if len(stream) != 1:
                raise Refused("manifest: an image bundle carries one image")
            import ota_image
            try:
                self.sink = ota_image.ImageSink(ota_image.next_partition(self.esp32), self.id, stream[0][1],
                                                stream[0][2], self.log, resume)
            except (ImportError, OSError, ValueError) as e:
                raise Refused("image: %s" % (e if not isinstance(e, ImportError) else "this board has no OTA partitions"))
        ends, off = [], n
        for f in stream:
            off += f[1]
            ends.append(off)
        self.ends = ends

    def data(self, off, chunk):
        """Bytes at offset `off` of the bundle. {"held": n}; {"held": n, "gap": 1, "at": off} when
        off is not where the node is (a chunk before it was lost: the sender goes back to n; or
        this one came twice); {"held": size, "switch": slot} once the bundle is complete,
        verified and switched to. Refused: the slot is wiped."""
        if self.id is None:
            raise Refused("no transfer offered")
        if off != self.held:
            return {"held": self.held, "gap": 1, "at": off}
        return self._done(chunk)

    def _done(self, chunk=None):
        # Also on an offer: a cut after the last byte (while hashing) leaves nothing to send, so
        # the offer that resumes it must verify and switch, or both sides would wait for ever.
        try:
            if chunk is not None:
                self._write(chunk)
            if self.held >= self.size:
                self.finish()
                return {"held": self.held, "switch": self.slot}
        except Refused:
            rmtree(self.slot)
            self.id = None
            raise
        return {"held": self.held}

    def _write(self, chunk):
        mv = memoryview(chunk)
        while len(mv):
            if self.held + len(mv) > self.size:
                raise Refused("size: more bytes than offered")
            if self.m is None:
                # The header: kept on the flash too, so a resumed transfer can re-read it.
                hs = self.held
                want = 8 - hs if hs < 8 else None
                if want is None:
                    with open(self.slot + "/" + _HEAD, "rb") as f:
                        f.seek(6)
                        b = f.read(2)
                    want = 8 + ((b[0] << 8) | b[1]) + 64 - hs
                k = min(want, len(mv))
                with open(self.slot + "/" + _HEAD, "ab") as f:
                    f.write(mv[:k])
                self.held += k
                mv = mv[k:]
                if hs + k >= 8:
                    with open(self.slot + "/" + _HEAD, "rb") as f:
                        head = f.read()
                    if hs < 8 and (head[:6] != MAGIC or (head[6] << 8 | head[7]) > _MAX_MANIFEST):
                        raise Refused("not a citynode OTA bundle")   # before its header fills the flash
                    if len(head) >= 8 + ((head[6] << 8) | head[7]) + 64:
                        self._header(head)
                        for f in self.stream:   # a file of 0 bytes must exist too
                            if f[1] == 0:
                                self._file(f[0], b"")
                continue
            if self.sink is not None:
                self.sink.write(mv)
                self.held += len(mv)
                break
            i = 0
            while self.ends[i] <= self.held:
                i += 1
            k = min(self.ends[i] - self.held, len(mv))
            self._file(self.stream[i][0], mv[:k])
            self.held += k
            mv = mv[k:]

    def _file(self, name, b):
        p = self.slot + "/" + name
        if "/" in name:
            _mkdirs(p.rsplit("/", 1)[0])
        # Opened and closed per chunk: what a power cut leaves is what the file sizes say.
        with open(p, "ab") as f:
            f.write(b)

    def finish(self):
        """The files a delta takes from the running firmware, every file's hash on the flash,
        then the one switching write."""
        if self.m is None:
            raise Refused("finish: no header yet")
        if self.sink is not None:
            try:
                self.sink.finish()
            except ValueError as e:
                raise Refused(str(e))
            rmtree(self.slot)
            self.sink.switch(self.m["version"], self.fw)
            self.log("ota: image %s written; rebooting into it on trial" % self.m["version"])
            return
        buf = bytearray(512)
        for f in self.m["files"]:
            if len(f) == 4 and f[3]:
                p = self.slot + "/" + f[0]
                if "/" in f[0]:
                    _mkdirs(p.rsplit("/", 1)[0])
                with open(self._base(f[0]), "rb") as src, open(p, "wb") as dst:
                    while True:
                        k = src.readinto(buf)
                        if not k:
                            break
                        dst.write(memoryview(buf)[:k])
        for f in self.m["files"]:
            name, size, digest = f[0], f[1], f[2]
            p = self.slot + "/" + name
            if _size(p) != size or sha256_file(p) != digest:
                raise Refused("hash: %s does not match the manifest" % name)
        for x in (_ID, _HEAD):
            persist.remove(self.slot + "/" + x)
        persist.write_json(POINTER, {"run": self.slot + "/", "prev": self.running + "/" if self.running else "",
                                     "trial": True, "tries": 0, "version": self.m["version"], "from": self.fw})
        self.log("ota: %s staged in %s; rebooting into it on trial" % (self.m["version"], self.slot))


# --- the node's side of the conversation ---------------------------------------------------------

_QUEUE = 8   # chunks waiting (each <= the MQTT buffer's 512 B); the sender keeps 4 in flight


class Updater:
    """The messages on {prefix}/{node_id}/ota, one at a time, answered on `reply`: made by the
    node when the first one arrives, so a node that is never updated never loads this module."""

    def __init__(self, node):
        self.node = node
        self.q = []
        self.ev = asyncio.Event()
        import board
        from version import VERSION
        self.rx = Receiver(node.cfg["ota"].get("pubkey"), board.FW, VERSION, node.log, node.esp32)

    def on_message(self, payload, size):
        # Dropped when full or cut by the MQTT buffer: the next answer says where the node is,
        # and the sender goes back there.
        if len(self.q) < _QUEUE and len(payload) == size:
            self.q.append(payload)
            self.ev.set()

    async def task(self):
        n = self.node
        cid = None
        while True:
            if not self.q:
                self.ev.clear()
                await self.ev.wait()
                continue
            msg = self.q.pop(0)
            ok, res, err = False, None, None
            try:
                if msg[:1] == b"{":
                    d = json.loads(msg)
                    if not isinstance(d, dict):
                        raise Refused("offer: expected a JSON object")
                    cid = "ota-%s" % d.get("id")
                    res = self.rx.offer(d)
                elif msg[:1] == b"D" and len(msg) > 5:
                    res = self.rx.data(int.from_bytes(msg[1:5], "big"), memoryview(msg)[5:])
                else:
                    raise Refused("unknown OTA message")
                ok = True
            except Refused as e:
                err = str(e)
                n.log("ota: refused: %s" % err)
            except Exception as e:  # the flash refused a write: say so, change nothing
                err = "failed: %r" % (e,)
                n.log("ota: %s" % err)
            import telemetry
            out = telemetry.reply(cid, ok, res, err)
            c = n.link.client
            if ok and res is not None and not res.get("switch") and c is not None:
                # Progress at QoS 0: a lost one costs the sender a timeout and an offer, which
                # says where the node is; waiting for each PUBACK would halve the rate.
                try:
                    await c.publish(n.t_reply, out, 0)
                except Exception:
                    pass
            else:
                await n.commands.reply(out)
            if ok and res is not None and res.get("switch"):
                await n.reboot()
            await asyncio.sleep_ms(0)


async def trial(node, limit_ms):
    """A new version's first boot: committed once its birth is out (link up); else the node
    resets, and the previous version runs on the next boot (main.py, or the bootloader)."""
    try:
        await asyncio.wait_for_ms(node.link.up.wait(), limit_ms)
    except asyncio.TimeoutError:
        persist.write_json("ota.fail", {"reason": "no_birth", "limit_s": limit_ms // 1000})
        node.log("ota: no birth within %d s on trial; resetting" % (limit_ms // 1000))
        node.flush()
        node.hw.reset()
        return
    commit_trial(node)
    try:   # the retained status says so at once, not only from the next session on
        t, p = node.birth()
        await node.link.client.publish(t, p, 1, True)
    except Exception:
        pass


def commit_trial(node):
    if node.trial == "image":
        import ota_image
        ota_image.commit(node.esp32)
    elif node.trial:
        commit()
    node.trial = False
    node.link.birth = node.birth()   # the next session's birth says so
    from version import VERSION
    node.log("ota: %s committed" % VERSION)


def image_boot(node):
    """After a whole-image update: its trial starts, or the bootloader's rollback is reported."""
    try:
        import ota_image
        r = ota_image.boot_check(node.esp32)
    except ImportError:   # no esp32 module: not a board with OTA partitions
        return
    if r == "trial":
        node.trial = "image"
        node.link.birth = node.birth()
    elif r:
        node.event("ota_rollback", r)


def commit(p=None):
    """After a trial boot has published its birth: the version stays, the previous one is the
    fallback, every other slot goes."""
    p = p or pointer()
    if not p.get("trial"):
        return False
    q = {"run": p.get("run", ""), "prev": p.get("prev", ""), "trial": False, "version": p.get("version")}
    persist.write_json(POINTER, q)
    clean((q["run"].rstrip("/"), q["prev"].rstrip("/")))
    return True

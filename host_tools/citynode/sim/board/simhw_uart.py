"""The sim board's serial sensors: the bytes a PMS5003, an SDS011 or an A02YYUW puts on a UART.

simhw.SimPeripherals.uart() hands out its Uart when a driver opens a UART. A UART does not know what
is wired to it until the driver writes: `42 4D ...` makes it a PMS5003, `AA B4 ...` an SDS011,
and until then it streams A02YYUW frames (that sensor never writes). Frames come at the chip's
rate (A02YYUW every 100 ms; PMS/SDS in active mode every second, in passive/query mode when
asked), answer the command frames as the datasheets say, and trickle in at the baud rate; a
receive buffer of 96 bytes drops the frames that do not fit, as a real UART does.

    u = simhw_uart.Uart(sim, 9600)       # sim: the simhw.SimPeripherals (world, unplugged sensors)
    u.write(pms5003.command(0xE2, 0))    # a PMS5003 now: its 32-byte frame is on its way
    u.readinto(buf)                      # the bytes that have arrived by now, None if none
"""
import random
import time

try:
    from micropython import const
except ImportError:
    const = lambda x: x  # noqa: E731

_A02_MS = const(100)           # A02YYUW: one frame every 100 ms
_PM_MS = const(1000)           # PMS5003 / SDS011 in active mode: about one frame a second
_Q = const(96)                 # receive buffer: older frames are dropped


class Uart:
    def __init__(self, sim, baud):
        self._sim = sim
        self._baud = baud
        self._q = bytearray(_Q)
        self._n = 0                  # bytes queued
        self._t = 0                  # ticks_ms when the first queued byte started on the wire
        self._f = bytearray(32)      # the frame being built
        self.chip = "a02yyuw"        # until the driver speaks: A02YYUW never writes
        self._awake = True
        self._passive = False        # PMS5003 and SDS011 power up in active mode
        self._next = time.ticks_ms()

    def _pump(self):
        # Unsolicited frames: the A02YYUW stream, or a PMS/SDS in active mode.
        now = time.ticks_ms()
        a02 = self.chip == "a02yyuw"
        if self._sim.gone(self.chip) or not self._awake or (self._passive and not a02):
            self._next = now
            return
        period = _A02_MS if a02 else _PM_MS
        if time.ticks_diff(now, self._next) > 3 * period:
            self._next = now         # nobody listened for a while: no backlog beyond the buffer
        while time.ticks_diff(now, self._next) >= 0:
            self._frame()
            self._next = time.ticks_add(self._next, period)

    def _frame(self):
        # One data frame, as the chip measures now.
        f = self._f
        if self.chip == "a02yyuw":   # FF H L SUM, distance in mm
            mm = int(self._sim.range_cm("a02yyuw") * 10)
            f[0], f[1], f[2] = 0xFF, mm >> 8, mm & 0xFF
            f[3] = (0xFF + f[1] + f[2]) & 0xFF
            self._put(4)
            return
        pm = self._sim.world()[4] * random.uniform(0.9, 1.1)
        if self.chip == "sds011":   # PM2.5 and PM10 in 0.1 µg/m³, little-endian; the scale ends at 999.9
            a, b = min(int(pm * 10), 9999), min(int(pm * 16), 9999)
            self._sds(0xC0, a & 0xFF, a >> 8, b & 0xFF, b >> 8)
            return
        for i in range(32):
            f[i] = 0
        f[3], f[28] = 28, 0x97       # length 28; version 0x97, error 0
        for i in range(9):
            # CF=1 PM1.0/2.5/10 (reading higher in dense air), atmospheric, counts > 0.3..2.5 µm
            v = int(pm * (0.75, 1, 1.6, 0.75, 1, 1.6, 600, 180, 40)[i])
            if i < 3 and v > 30:
                v += v // 8
            f[4 + 2 * i], f[5 + 2 * i] = (v >> 8) & 0xFF, v & 0xFF
        self._pms(32)

    def _pms(self, n):
        # 42 4D, the n - 4 bytes already in the frame, then the 16-bit sum of all before it.
        f = self._f
        f[0], f[1] = 0x42, 0x4D
        s = 0
        for i in range(n - 2):
            s += f[i]
        f[n - 2], f[n - 1] = (s >> 8) & 0xFF, s & 0xFF
        self._put(n)

    def _sds(self, kind, b2, b3, b4, b5):
        # AA kind b2..b5, device id A1 60, the low byte of the sum of bytes 2-7, AB.
        f = self._f
        f[0], f[1], f[2] = 0xAA, kind, b2
        f[3], f[4], f[5] = b3, b4, b5
        f[6], f[7], f[9] = 0xA1, 0x60, 0xAB
        f[8] = (b2 + b3 + b4 + b5 + 0xA1 + 0x60) & 0xFF
        self._put(10)

    def _put(self, n):
        if self._n + n > _Q:
            return                   # receive buffer full: the frame is lost, as on a real UART
        if not self._n:
            self._t = time.ticks_ms()
        q = self._q
        for i in range(n):
            q[self._n + i] = self._f[i]
        self._n += n

    def write(self, buf):
        n = len(buf)
        if n >= 7 and buf[0] == 0x42 and buf[1] == 0x4D:
            self.chip = "pms5003"
            if (buf[5] << 8 | buf[6]) != buf[0] + buf[1] + buf[2] + buf[3] + buf[4] or self._sim.gone(self.chip):
                return n
            cmd, d = buf[2], buf[4]
            if cmd == 0xE4 and d == 1:
                self._awake = True                      # wake-up: no answer
            elif not self._awake:
                pass                                    # asleep: deaf to the rest
            elif cmd == 0xE2:
                if self._passive:
                    self._frame()
            elif cmd in (0xE1, 0xE4):
                if cmd == 0xE1:
                    self._passive = d == 0
                else:
                    self._awake = False
                f = self._f
                f[2], f[3] = 0, 4                       # the reply: length 4, the command echoed
                f[4], f[5] = cmd, d
                self._pms(8)
        elif n >= 19 and buf[0] == 0xAA and buf[1] == 0xB4 and buf[18] == 0xAB:
            self.chip = "sds011"
            s = 0
            for i in range(2, 17):
                s += buf[i]
            if s & 0xFF != buf[17] or self._sim.gone(self.chip):
                return n
            cmd, st, v = buf[2], buf[3], buf[4]
            if not self._awake and not (cmd == 6 and st == 1 and v == 1):
                return n                                # asleep: only "work" is heard
            if cmd == 4:
                self._frame()
                return n
            if cmd == 6 and st:
                self._awake = v == 1
            elif cmd == 2 and st:
                self._passive = v == 1
            self._sds(0xC5, cmd, st, v, 0)
        return n

    def readinto(self, buf, nbytes=-1):
        self._pump()
        # What has arrived: 10 bits a byte since the first queued byte started.
        k = time.ticks_diff(time.ticks_ms(), self._t) * self._baud // 10000
        m = len(buf) if nbytes < 0 else nbytes
        if k > m:
            k = m
        if k > self._n:
            k = self._n
        if k <= 0:
            return None
        q = self._q
        for i in range(k):
            buf[i] = q[i]
        for i in range(k, self._n):
            q[i - k] = q[i]
        self._n -= k
        self._t = time.ticks_add(self._t, k * 10000 // self._baud)
        return k

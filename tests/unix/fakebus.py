# Fake buses for the driver tests and the driver benchmark on the MicroPython unix port.
# They allocate nothing per call once built, so the benchmark's heap figures are the drivers' own.
import time

import machine
import simhw


class FakeUart:
    """A UART whose bytes arrive in awkward chunks. `stream` is queued at the start (and again
    whenever the queue runs dry when `loop`); each write() queues the next of `replies`
    (cycled). readinto() hands out at most chunks[i] bytes, and returns None ("nothing yet")
    between chunks when `gaps`, as a real UART does between two bursts."""

    def __init__(self, stream=b"", replies=(), chunks=(1, 3, 7, 2, 5, 32), gaps=True, loop=False,
                 record=True, size=2048):
        self.q = bytearray(size)
        self.r = self.w = 0
        self.stream = stream
        self.replies = replies
        self.chunks = chunks
        self.gaps = gaps
        self.loop = loop
        self.writes = [] if record else None
        self._ci = 0
        self._ri = 0
        self._dry = False
        self._put(stream)

    def _put(self, data):
        q = self.q
        if self.w + len(data) > len(q):          # compact: move what is unread to the front
            n = self.w - self.r
            for i in range(n):
                q[i] = q[self.r + i]
            self.r, self.w = 0, n
        for i in range(len(data)):
            q[self.w + i] = data[i]
        self.w += len(data)

    def write(self, buf):
        if self.writes is not None:
            self.writes.append(bytes(buf))
        if self.replies:
            self._put(self.replies[self._ri % len(self.replies)])
            self._ri += 1
        return len(buf)

    def any(self):
        return self.w - self.r

    def readinto(self, buf, nbytes=-1):
        if self.gaps and self._dry:
            self._dry = False
            return None
        if self.r == self.w and self.loop and self.stream:
            self.r = self.w = 0
            self._put(self.stream)
        k = self.chunks[self._ci % len(self.chunks)]
        self._ci += 1
        m = len(buf) if nbytes < 0 else nbytes
        if k > m:
            k = m
        if k > self.w - self.r:
            k = self.w - self.r
        if not k:
            return None
        q = self.q
        for i in range(k):
            buf[i] = q[self.r + i]
        self.r += k
        self._dry = True
        return k


class FakeI2C:
    """Registers of one device at `addr`; `nack` makes every transfer raise OSError(19) as the
    ESP32 port does on a NACK; a write of forced mode to 0xF4 leaves status bit 3 (measuring)
    set for `busy` reads of 0xF3."""

    def __init__(self, addr=0x76, nack=False, busy=1):
        self.addr = addr
        self.nack = nack
        self.busy = busy
        self.regs = bytearray(256)
        self._left = 0
        self.log = []

    def _check(self, addr):
        if self.nack or addr != self.addr:
            raise OSError(19)

    def readfrom_mem_into(self, addr, reg, buf):
        self._check(addr)
        for i in range(len(buf)):
            buf[i] = self.regs[(reg + i) & 0xFF]
        if reg == 0xF3:
            if self._left > 0:
                self._left -= 1
                buf[0] |= 0x08
            else:
                buf[0] &= ~0x08

    def writeto_mem(self, addr, reg, buf):
        self._check(addr)
        if len(self.log) < 64:
            self.log.append((reg, buf[0]))
        for i in range(len(buf)):
            self.regs[(reg + i) & 0xFF] = buf[i]
        if reg == 0xF4 and buf[0] & 3 in (1, 2):
            self._left = self.busy


class FakeAdc:
    """An ESP32 ADC at 11 dB: read_uv calibrated, read_u16 the raw count (full scale at `top_uv`,
    the module's calibrated top)."""

    def __init__(self, uv, top_uv=3300000):
        self.uv, self.top_uv = uv, top_uv

    def read_uv(self):
        return min(self.uv, self.top_uv)

    def read_u16(self):
        return 65535 if self.uv >= self.top_uv else self.uv * 65535 // self.top_uv


class FakeDht:
    def __init__(self, t=25.5, h=60.2, err=None):
        self.t, self.h, self.err = t, h, err
        self.calls = 0

    def measure(self):
        self.calls += 1
        if isinstance(self.err, str):
            raise Exception(self.err)       # the ESP32's dht.py: Exception("checksum error")
        if self.err is not None:
            raise OSError(self.err)

    def temperature(self):
        return self.t

    def humidity(self):
        return self.h


class Trig(machine.PinBase):
    # HC-SR04 TRIG: the falling edge of a pulse starts the next scripted echo.
    def __init__(self, echo):
        self.echo = echo
        self.v = 0

    def value(self, v=None):
        if v is None:
            return self.v
        if self.v and not v:
            self.echo.fire()
        self.v = 1 if v else 0


class Echo(machine.PinBase):
    """HC-SR04 ECHO: after each trigger, high for the next width of `widths` (µs, cycled), 300 µs
    after the trigger; None = no echo at all (unplugged); a width beyond the driver's timeout is
    the sensor's "nothing in range" pulse."""

    def __init__(self, widths):
        self.widths = widths
        self.i = 0
        self.pulse = simhw.EchoPulse()      # the virtual node's model of the line

    def fire(self):
        w = self.widths[self.i % len(self.widths)]
        self.i += 1
        self.pulse.start(w, 300)

    def value(self, v=None):
        return self.pulse.level()


class FakeHw:
    """The board object the drivers see (board.Esp32's peripheral methods), handing out the
    fakes it was built with."""

    def __init__(self, uart=None, i2c=None, adc=None, widths=(None,), dht=None):
        self._uart, self._i2c, self._adc, self._dht = uart, i2c, adc, dht
        self.echo = Echo(widths)
        self.trig = Trig(self.echo)
        self.opened = []

    def uart(self, uid, rx, tx, baudrate=9600):
        self.opened.append(("uart", uid, rx, tx, baudrate))
        return self._uart

    def i2c(self, bus, sda, scl, freq=100000):
        self.opened.append(("i2c", bus, sda, scl))
        return self._i2c

    def adc(self, n):
        return self._adc

    def pin_out(self, n, value=0):
        return self.trig

    def pin_in(self, n, pull=None):
        return self.echo

    def pin(self, n):
        return self.trig

    def time_pulse_us(self, pin, level, timeout_us):
        return machine.time_pulse_us(pin, level, timeout_us)

    def dht22(self, n):
        return self._dht


def pms_frame(atm, cf1=None, counts=(0, 0, 0, 0, 0, 0), extra=0x9700):
    # A PMS5003 data frame built here, independently of the driver: 42 4D, length 28, 13 words, sum.
    cf1 = cf1 or atm
    words = tuple(cf1) + tuple(atm) + tuple(counts) + (extra,)
    f = bytearray(b"\x42\x4d\x00\x1c")
    for w in words:
        f.append(w >> 8)
        f.append(w & 0xFF)
    s = sum(f)
    f.append(s >> 8)
    f.append(s & 0xFF)
    return bytes(f)


def sds_frame(pm25_x10, pm10_x10, dev=b"\xa1\x60"):
    d = bytes((pm25_x10 & 0xFF, pm25_x10 >> 8, pm10_x10 & 0xFF, pm10_x10 >> 8)) + dev
    return b"\xaa\xc0" + d + bytes((sum(d) & 0xFF, 0xAB))


def a02_frame(mm):
    h, l = mm >> 8, mm & 0xFF
    return bytes((0xFF, h, l, (0xFF + h + l) & 0xFF))

"""The virtual node's `ntptime`, in place of the frozen one an ESP32 image has: the same calls
(`host`, `timeout`, `time()`, `settime()`), one SNTP exchange (RFC 4330) with the server in
CITYNODE_NTP (host:port; the supervisor's or a test's, on loopback) instead of `host`:123.

The unix port cannot set the host's clock, which is right already: settime() records how far the
server's answer is from it (`offset`) and, like the real one, raises when there is no answer, so
the firmware's clock is synced only once a server has answered.

    import ntptime
    ntptime.settime()       # OSError when no server answers within `timeout` seconds
"""
import os
import socket
import struct
import time as _time

host = "pool.ntp.org"   # set by clock.ntp_loop; the virtual node asks CITYNODE_NTP instead
timeout = 1
offset = None
_NTP_DELTA = 2208988800  # 1900-01-01 to 1970-01-01


def _server():
    hp = os.getenv("CITYNODE_NTP") or (host + ":123")
    h, p = hp.rsplit(":", 1)
    return socket.getaddrinfo(h, int(p), 0, socket.SOCK_DGRAM)[0][-1]


def time():
    q = bytearray(48)
    q[0] = 0x1B                      # LI 0, version 3, mode 3 (client)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.settimeout(timeout)
        s.sendto(q, _server())
        r = s.recv(48)
    finally:
        s.close()
    if len(r) < 48 or r[0] & 0x07 != 4:   # mode 4: a server's answer
        raise OSError("ntp: not a server's answer")
    secs = struct.unpack("!I", r[40:44])[0]   # transmit timestamp, seconds
    if not secs:
        raise OSError("ntp: no time in the answer")
    return secs - _NTP_DELTA


def settime():
    global offset
    t = time()
    offset = t - int(_time.time())


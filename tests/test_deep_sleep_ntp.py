"""A node in deep sleep on an ESP32 wakes with an unsynced clock each time. The virtual node, given
an NTP server (CITYNODE_NTP; here one of the test's own on loopback), starts unsynced the same
way: its readings carry a real `ts` only because the wake runs NTP before it reads. With no
server answering, the wake still reads and sleeps, with `ts: null`, within its bound."""
import socket
import struct
import threading
import time

from helpers import Sub, wait_for
from nodeproc import VNode, sim_config

NTP_DELTA = 2208988800


class NtpServer:
    """Answers SNTP client requests (mode 3) with the host's time, counting them."""

    def __init__(self):
        self.s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.s.bind(("127.0.0.1", 0))
        self.s.settimeout(0.2)
        self.port = self.s.getsockname()[1]
        self.queries = 0
        self._stop = False
        self.t = threading.Thread(target=self._serve, daemon=True)
        self.t.start()

    def _serve(self):
        while not self._stop:
            try:
                q, addr = self.s.recvfrom(512)
            except socket.timeout:
                continue
            if len(q) < 48 or q[0] & 0x07 != 3:
                continue
            self.queries += 1
            now = time.time() + NTP_DELTA
            secs, frac = int(now), int((now % 1) * 2**32)
            r = bytearray(48)
            r[0] = (0 << 6) | (4 << 3) | 4          # LI 0, version 4, mode 4 (server)
            r[1] = 2                                # stratum
            r[24:32] = q[40:48]                     # originate = the client's transmit
            struct.pack_into("!IIII", r, 32, secs, frac, secs, frac)   # receive, transmit
            self.s.sendto(bytes(r), addr)

    def close(self):
        self._stop = True
        self.t.join(2)
        self.s.close()


def sleepy(node_id):
    return sim_config(node_id, interval=1, keepalive=10, sensors=[{"name": "air", "type": "bme280"}],
                      power={"deep_sleep": True})


def test_a_deep_sleep_wake_syncs_from_ntp_before_it_reads(broker, tmp_path):
    ntp = NtpServer()
    cfg = sleepy("sleepy-ntp")
    try:
        with Sub(broker, "city/sleepy-ntp/telemetry") as sub:
            node = VNode(tmp_path, cfg, broker, env={"CITYNODE_NTP": "127.0.0.1:%d" % ntp.port}).start()
            try:
                wait_for(lambda: len(sub.json("/telemetry")) >= 2, 40, what="2 wakes")
            finally:
                node.kill()
            ts = sub.json("/telemetry")
    finally:
        ntp.close()
    # the first wake after power-up already has its time, and so has the next
    assert all(isinstance(d["ts"], int) and abs(d["ts"] - time.time()) < 120 for d in ts[:2]), ts
    assert ntp.queries >= 1


def test_without_an_answering_ntp_server_the_wake_reads_with_ts_null(broker, tmp_path):
    dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dead.bind(("127.0.0.1", 0))            # a port that takes the query and never answers
    cfg = sleepy("sleepy-nontp")
    try:
        with Sub(broker, "city/sleepy-nontp/telemetry") as sub:
            node = VNode(tmp_path, cfg, broker, env={"CITYNODE_NTP": "127.0.0.1:%d" % dead.getsockname()[1]}).start()
            try:
                wait_for(lambda: len(sub.json("/telemetry")) >= 1, 40, what="a wake")
            finally:
                node.kill()
            assert sub.json("/telemetry")[0]["ts"] is None
    finally:
        dead.close()

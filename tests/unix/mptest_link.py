# link.open_stream on the unix port, against sockets of the test's own on loopback: a connect
# has a bound (lwIP would retry a SYN for minutes), DNS is asked once per broker (getaddrinfo
# blocks every task), a refused connect says so and forgets the address.
import asyncio
import random
import socket

import link


def listener(backlog):
    """A listening socket on a free loopback port: (socket, port)."""
    for _ in range(50):
        port = random.randint(20000, 60000)
        s = socket.socket()
        try:
            s.bind(socket.getaddrinfo("127.0.0.1", port)[0][-1])
            s.listen(backlog)
            return s, port
        except OSError:
            s.close()
    raise OSError("no free port")


class Counting:
    def __init__(self):
        self.n = 0

    def __call__(self, host, port, *a):
        self.n += 1
        return socket.getaddrinfo(host, port, *a)


async def test_connect_has_a_timeout():
    # A listener whose accept queue is full drops further SYNs: the connect hangs, as to a
    # broker behind a dead route. It must end in OSError within the bound, not in minutes.
    srv, port = listener(0)
    held = []
    try:
        for _ in range(4):  # fill the accept queue (never accepted)
            c = socket.socket()
            c.setblocking(False)
            try:
                c.connect(socket.getaddrinfo("127.0.0.1", port)[0][-1])
            except OSError:
                pass
            held.append(c)
        await asyncio.sleep_ms(50)
        try:
            await link.open_stream("127.0.0.1", port, False, timeout_ms=300)
            raise AssertionError("connected to a full accept queue")
        except OSError as e:
            assert str(e) == "connect timeout", e
        assert ("127.0.0.1", port) not in link._addrs   # forgotten: the next try resolves again
    finally:
        for c in held:
            c.close()
        srv.close()


async def test_dns_once_per_broker_and_again_after_a_failure():
    srv, port = listener(4)
    dns = Counting()
    try:
        s1 = await link.open_stream("localhost", port, False, getaddrinfo=dns)
        s2 = await link.open_stream("localhost", port, False, getaddrinfo=dns)
        assert dns.n == 1, dns.n
        for s in (s1, s2):
            s.s.close()
    finally:
        srv.close()
    try:
        await link.open_stream("localhost", port, False, getaddrinfo=dns)  # nobody listens now
        raise AssertionError("connected to a closed port")
    except OSError as e:
        assert str(e) in ("connect refused",) or e.errno == 111, e
    await asyncio.sleep_ms(0)
    assert ("localhost", port) not in link._addrs
    srv, port2 = listener(4)
    try:
        s3 = await link.open_stream("localhost", port2, False, getaddrinfo=dns)
        s3.s.close()
        assert dns.n == 2, dns.n
    finally:
        srv.close()

"""TLS for the link, imported only when the config says `mqtt.tls`: the broker is verified before
any MQTT byte (and so the password) leaves the node.

    opts = {"ca": "ca.crt"}
    s = await tlsconn.open_tls("broker.city", 8883, opts)   # the handshake runs on CONNECT
    ... tlsconn.why(opts, exc)   # "TLS: broker not verified: ..." when it failed there

- `ca`: a CA certificate (PEM file on flash); the broker's chain and its name (the host we dial,
  DNS name or IP address, against the certificate's SAN) are checked by mbedTLS.
- `pin_sha256`: hex SHA-256 of the broker's DER SubjectPublicKeyInfo, checked in the handshake's
  verify callback, before the handshake completes. Alone (no CA) it replaces the chain and name
  checks; with a CA, both must hold.
- `cert`/`key`: a client certificate (PEM files on flash).
- `insecure`: no verification at all (the caller logs it at every connect).

spki(), pin_of(), der_blocks() and why() are pure and run on CPython too.
"""
import binascii
import hashlib

_FATAL = -0x3000  # MBEDTLS_ERR_X509_FATAL_ERROR: not one of the codes CERT_OPTIONAL forgives


class TLSError(OSError):
    pass


def _tlv(b, i, end):
    """(tag, start of value, end of value) of the DER element at b[i:end]."""
    if i + 2 > end:
        raise ValueError("der")
    tag = b[i]
    n = b[i + 1]
    i += 2
    if n & 0x80:
        k = n & 0x7F
        if k < 1 or k > 3 or i + k > end:
            raise ValueError("der")
        n = 0
        for j in range(k):
            n = (n << 8) | b[i + j]
        i += k
    if i + n > end:
        raise ValueError("der")
    return tag, i, i + n


def spki(der):
    """The SubjectPublicKeyInfo (whole DER element) of an X.509 certificate in DER: the 7th field
    of tbsCertificate when it has a version ([0]), else the 6th. ValueError when malformed."""
    b = der
    tag, i, end = _tlv(b, 0, len(b))             # Certificate ::= SEQUENCE
    if tag != 0x30:
        raise ValueError("der")
    tag, i, end = _tlv(b, i, end)                # tbsCertificate ::= SEQUENCE
    if tag != 0x30:
        raise ValueError("der")
    fields = 0
    while i < end:
        tag, v, e = _tlv(b, i, end)
        if fields == 0 and tag == 0xA0:          # [0] version: not counted
            i = e
            continue
        if fields == 5:                          # serial, sigalg, issuer, validity, subject, spki
            if tag != 0x30:
                raise ValueError("der")
            return b[i:e]
        fields += 1
        i = e
    raise ValueError("der")


def pin_of(der):
    return binascii.hexlify(hashlib.sha256(bytes(spki(der))).digest()).decode()


def der_blocks(data):
    """PEM text -> [DER bytes] (one per BEGIN/END block); DER stays as it is. The board's mbedTLS
    may be built without a PEM parser, so PEM is decoded here."""
    if b"-----BEGIN" not in data:
        return [data]
    out, cur = [], None
    for line in data.split(b"\n"):
        line = line.strip()
        if line.startswith(b"-----BEGIN"):
            cur = []
        elif line.startswith(b"-----END"):
            if cur is not None:
                out.append(binascii.a2b_base64(b"".join(cur)))
            cur = None
        elif cur is not None and line:
            cur.append(line)
    if not out:
        raise ValueError("no PEM block")
    return out


def _read(path):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        raise TLSError("TLS: no file %r on the node" % path)
    try:
        return der_blocks(data)
    except ValueError:
        raise TLSError("TLS: %r is not PEM or DER" % path)


def context(opts):
    """An SSLContext for opts ("ca", "pin_sha256", "cert", "key", "insecure"). A pin mismatch is
    recorded in opts["mismatch"], so that why() can name the failure."""
    import tls
    # The ESP32 stubs' SSLContext has no verify_mode or verify_callback; MicroPython's has both
    # (extmod/modtls_mbedtls.c): the assignments below carry a pyright ignore for that alone.
    ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
    ca, pin = opts.get("ca"), opts.get("pin_sha256")
    if ca:
        for der in _read(ca):
            ctx.load_verify_locations(der)
        ctx.verify_mode = tls.CERT_REQUIRED  # pyright: ignore[reportAttributeAccessIssue]
    elif pin:
        # The chain is not checked (no CA): the callback's pin is. OPTIONAL makes mbedTLS call it.
        ctx.verify_mode = tls.CERT_OPTIONAL  # pyright: ignore[reportAttributeAccessIssue]
    else:
        ctx.verify_mode = tls.CERT_NONE  # pyright: ignore[reportAttributeAccessIssue]
    opts["mismatch"] = None
    if pin:
        def check(cert, depth):
            # Called by mbedTLS for each certificate of the chain, the broker's own at depth 0,
            # before the handshake can finish. An exception must not escape into C: any doubt
            # is a refusal.
            if depth:
                return 0
            try:
                got = pin_of(cert)
            except Exception:
                got = "unparseable certificate"
            if got == pin:
                return 0
            opts["mismatch"] = got
            return _FATAL
        ctx.verify_callback = check  # pyright: ignore[reportAttributeAccessIssue]
    if opts.get("cert"):
        ctx.load_cert_chain(_read(opts["cert"])[0], _read(opts["key"])[0])
    return ctx


async def open_tls(host, port, opts):
    """A Stream to the broker over TLS. The handshake runs on the first write (asyncio's way):
    our CONNECT is encrypted and sent only once the broker has been verified, so nothing, the
    password least of all, reaches a broker that fails. why() names such a failure."""
    import asyncio
    ctx = context(opts)
    return (await asyncio.open_connection(host, port, ssl=ctx, server_hostname=host))[0]


def why(opts, cause):
    """A one-line reason for a TLS session that ended in its handshake, or None if `cause` (the
    exception under the MQTT client's "closed") was not the handshake's."""
    if opts.get("mismatch"):
        return "TLS: the broker's key %s... is not mqtt.pin_sha256" % opts["mismatch"][:16]
    msg = str(cause).strip().replace("\n", "; ") if cause is not None else ""
    if isinstance(cause, ValueError):       # mbedTLS's verify result: CA, name, dates
        return "TLS: broker not verified: %s" % (msg or "certificate")
    if isinstance(cause, OSError) and cause.args and isinstance(cause.args[0], int) and cause.args[0] < 0:
        return "TLS: handshake failed: %s" % msg   # a negative code is mbedTLS's, not the socket's
    return None

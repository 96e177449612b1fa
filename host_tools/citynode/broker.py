"""The fleet's side of the broker, generated: a CA, the broker's certificate, the operators' and
every node's own credentials, and a Mosquitto config that lets each node touch only its topics.

    from citynode import broker
    broker.init("secrets", ["broker.city.example", "10.0.0.5"])     # CA, server cert, operator.json
    broker.config("fleet.csv", "secrets", "mosq", listen="0.0.0.0:8883")
    # mosquitto -c mosq/mosquitto.conf

The secrets directory (mode 0700, files 0600) holds:
  ca.key ca.crt             the fleet's CA; nodes trust ca.crt (`mqtt.ca` on their flash)
  server.key server.crt     the broker's key and certificate (SANs: the --host names)
  operator.json             {"username": ..., "password": ...} for monitor, test, provision
  nodes/<node_id>.json      each node's own {"username": node_id, "password": ...}
  nodes/<node_id>.crt/.key  its client certificate (CN = node_id), with client certificates
Nothing secret is printed; the returned summaries name files, never their contents.
"""
import base64
import datetime
import hashlib
import ipaddress
import json
import os
import secrets as _random
from pathlib import Path

from . import configtool
from .errors import BadInput, CheckFailed

OPERATOR = "operator.json"
NODES = "nodes"
# mosquitto_passwd's format in Mosquitto 2: $7$<iterations>$<base64 salt>$<base64 PBKDF2-SHA512>.
PASSWD_ITERATIONS = 101
PASSWD_SALT = 12
# Certificates are valid from the epoch of an ESP32 whose clock is not set yet (2000-01-01): a
# node checks dates before NTP has answered, and must not find its broker "not yet valid".
NOT_BEFORE = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
CA_YEARS = 30
CERT_YEARS = 20
ACL_KINDS_NODE_WRITES = ("status", "telemetry", "event", "reply")
ACL_KINDS_NODE_READS = ("cmd", "ota")     # what operators send a node: commands, updates (docs/ota.md)


# --- small file helpers ------------------------------------------------------------------------

def _private_dir(d):
    d = Path(d)
    try:
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, 0o700)
    except OSError as e:
        raise CheckFailed("%s: %s" % (d, e.strerror or e))
    return d


def _write(path, data, secret=False):
    """Whole or not at all: a temporary file, then a rename; secrets are 0600 from the start."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())
    os.replace(tmp, path)
    return path


def _read_creds(path):
    try:
        d = json.loads(Path(path).read_text())
    except OSError as e:
        raise CheckFailed("%s: %s" % (path, e.strerror or e))
    except ValueError:
        raise CheckFailed("%s: not valid JSON" % path)
    if not isinstance(d, dict) or not isinstance(d.get("username"), str) or not isinstance(d.get("password"), str):
        raise CheckFailed('%s: expected {"username": ..., "password": ...}' % path)
    return d


def new_password():
    """24 random bytes as URL-safe base64: 192 bits, no quoting trouble in JSON or a shell."""
    return _random.token_urlsafe(24)


# --- mosquitto_passwd ----------------------------------------------------------------------------

def passwd_hash(password, salt=None, iterations=PASSWD_ITERATIONS):
    """The line Mosquitto 2's mosquitto_passwd writes after "user:"."""
    salt = os.urandom(PASSWD_SALT) if salt is None else salt
    dk = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return "$7$%d$%s$%s" % (iterations, base64.b64encode(salt).decode(), base64.b64encode(dk).decode())


def passwd_check(line_hash, password):
    """True when `password` matches a `$7$` hash (what the broker does at CONNECT)."""
    parts = line_hash.split("$")
    if len(parts) != 5 or parts[1] != "7":
        raise ValueError("not a $7$ (PBKDF2-SHA512) hash")
    dk = hashlib.pbkdf2_hmac("sha512", password.encode(), base64.b64decode(parts[3]), int(parts[2]))
    return _random.compare_digest(base64.b64encode(dk).decode(), parts[4])


# --- certificates --------------------------------------------------------------------------------

def _x509():
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    return x509, hashes, serialization, ec, ExtendedKeyUsageOID, NameOID


def _key_pem(key):
    _, _, ser, _, _, _ = _x509()
    return key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption())


def _load_key(path):
    _, _, ser, _, _, _ = _x509()
    return ser.load_pem_private_key(Path(path).read_bytes(), None)


def _load_cert(path):
    x509 = _x509()[0]
    return x509.load_pem_x509_certificate(Path(path).read_bytes())


def _new_key():
    ec = _x509()[3]
    # P-256: what the ESP32's mbedTLS verifies fastest, and small on the wire.
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn):
    x509, _, _, _, _, NameOID = _x509()
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "citynode fleet"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _san(hosts):
    x509 = _x509()[0]
    out = []
    for h in hosts:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            out.append(x509.DNSName(h))
    return x509.SubjectAlternativeName(out)


def check_host(h):
    """A DNS name or an IP address for the broker's certificate; BadInput (exit 2) if not."""
    try:
        ipaddress.ip_address(h)
        return h
    except ValueError:
        pass
    labels = h.rstrip(".").split(".") if h else []
    ok = bool(labels) and len(h) <= 253 and all(
        0 < len(x) <= 63 and x[0] != "-" and x[-1] != "-" and all(c.isalnum() and c.isascii() or c == "-" for c in x)
        for x in labels)
    if not ok:
        raise BadInput("%r: not a DNS name or an IP address" % h, param="host")
    return h.lower()


def _issue(subject_cn, key, issuer_cert, issuer_key, years, ca=False, server_hosts=None, client=False):
    x509, hashes, _, _, EKU, _ = _x509()
    b = (x509.CertificateBuilder()
         .subject_name(_name(subject_cn))
         .issuer_name(issuer_cert.subject if issuer_cert is not None else _name(subject_cn))
         .public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(NOT_BEFORE)
         .not_valid_after(datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=365 * years))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    if ca:
        b = b.add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                          data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                          crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
    else:
        b = b.add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                          data_encipherment=False, key_agreement=True, key_cert_sign=False,
                                          crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        b = b.add_extension(x509.ExtendedKeyUsage([EKU.SERVER_AUTH if server_hosts else EKU.CLIENT_AUTH]), critical=False)
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    if server_hosts:
        b = b.add_extension(_san(server_hosts), critical=False)
    return b.sign(issuer_key if issuer_key is not None else key, hashes.SHA256())


def _cert_pem(cert):
    ser = _x509()[2]
    return cert.public_bytes(ser.Encoding.PEM)


def spki_sha256(cert):
    """Hex SHA-256 of the certificate's SubjectPublicKeyInfo (DER): the node's `mqtt.pin_sha256`."""
    ser = _x509()[2]
    der = cert.public_key().public_bytes(ser.Encoding.DER, ser.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def init(secrets_dir, hosts):
    """Make (or complete) a fleet's secrets: the CA, the broker's certificate for `hosts`, the
    operators' credentials. An existing CA, server key and operator.json are kept, so running it
    again with other hosts re-issues the broker's certificate only: nodes trust the same CA, and a
    pinned key stays valid. Returns a summary with file names and the broker key's pin."""
    if not hosts:
        raise BadInput("the broker's name is needed (a DNS name or an IP address)", param="host")
    hosts = [check_host(h) for h in hosts]
    d = _private_dir(secrets_dir)
    made = []
    if (d / "ca.key").exists() and (d / "ca.crt").exists():
        ca_key, ca = _load_key(d / "ca.key"), _load_cert(d / "ca.crt")
    else:
        ca_key = _new_key()
        ca = _issue("citynode fleet CA", ca_key, None, None, CA_YEARS, ca=True)
        _write(d / "ca.key", _key_pem(ca_key), secret=True)
        _write(d / "ca.crt", _cert_pem(ca))
        made += ["ca.key", "ca.crt"]
    if (d / "server.key").exists():
        s_key = _load_key(d / "server.key")
    else:
        s_key = _new_key()
        _write(d / "server.key", _key_pem(s_key), secret=True)
        made.append("server.key")
    server = _issue(hosts[0], s_key, ca, ca_key, CERT_YEARS, server_hosts=hosts)
    _write(d / "server.crt", _cert_pem(server))
    made.append("server.crt")
    if not (d / OPERATOR).exists():
        _write(d / OPERATOR, json.dumps({"username": "operator", "password": new_password()}) + "\n", secret=True)
        made.append(OPERATOR)
    return {"secrets": str(d), "hosts": hosts, "written": made, "ca": str(d / "ca.crt"),
            "pin_sha256": spki_sha256(server)}


def _require_init(d):
    for f in ("ca.key", "ca.crt", "server.key", "server.crt", OPERATOR):
        if not (d / f).exists():
            raise CheckFailed("%s: no %s: not a fleet's secrets yet (broker init makes them)" % (d, f))


def node_credentials(secrets_dir, node_id, client_cert=False):
    """The node's own {"username", "password"}, made (and its client certificate, if asked) the
    first time; a node that has them keeps them."""
    d = Path(secrets_dir)
    nd = _private_dir(d / NODES)
    p = nd / (node_id + ".json")
    if p.exists():
        creds = _read_creds(p)
    else:
        creds = {"username": node_id, "password": new_password()}
        _write(p, json.dumps(creds) + "\n", secret=True)
    if client_cert and not (nd / (node_id + ".crt")).exists():
        _client_cert(d, nd / node_id, node_id)
    return creds


def _client_cert(d, stem, cn):
    ca_key, ca = _load_key(d / "ca.key"), _load_cert(d / "ca.crt")
    key = _new_key()
    _write(str(stem) + ".key", _key_pem(key), secret=True)
    _write(str(stem) + ".crt", _cert_pem(_issue(cn, key, ca, ca_key, CERT_YEARS, client=True)))


def node_files(secrets_dir, node_id):
    """What goes on a node's flash from the secrets: {"creds": {...}, "ca": PEM text,
    "cert"/"key": PEM text when it has a client certificate}. CheckFailed when the node has no
    credentials yet (run `broker config` first)."""
    d = Path(secrets_dir)
    p = d / NODES / (node_id + ".json")
    if not p.exists():
        raise CheckFailed("%s: no credentials for %s (broker config makes them for every node of its inventory)"
                          % (d, node_id))
    out = {"creds": _read_creds(p), "ca": (d / "ca.crt").read_text()}
    crt, key = d / NODES / (node_id + ".crt"), d / NODES / (node_id + ".key")
    if crt.exists() and key.exists():
        out["cert"], out["key"] = crt.read_text(), key.read_text()
    return out


# --- the broker's config -------------------------------------------------------------------------

def parse_listen(text):
    """"HOST:PORT" or "[v6]:PORT" -> (host, port); BadInput (exit 2) when malformed."""
    t = (text or "").strip()
    if t.startswith("["):
        host, _, rest = t[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = t.rpartition(":")
    try:
        ipaddress.ip_address(host)
        port = int(port)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise BadInput("%r: expected IP:PORT, e.g. 0.0.0.0:8883" % text, param="listen")
    return host, port


def acl_text(operator, nodes):
    """Mosquitto's acl_file. `nodes`: [(username, prefix, node_id)]. A node writes only its own
    status, telemetry, event and reply and reads only its own cmd and ota (updates); operators
    read everything and write every node's cmd and ota. Anything not granted is denied."""
    lines = ["# Generated by `citynode broker config`; edits are lost on the next run.", "",
             "user %s" % operator, "topic read #"]
    for p in sorted({p for _, p, _ in nodes}):
        lines += ["topic write %s/+/%s" % (p, k) for k in ACL_KINDS_NODE_READS]
    for user, prefix, nid in nodes:
        base = "%s/%s/" % (prefix, nid)
        lines += ["", "user %s" % user]
        lines += ["topic write %s%s" % (base, k) for k in ACL_KINDS_NODE_WRITES]
        lines += ["topic read %s%s" % (base, k) for k in ACL_KINDS_NODE_READS]
    return "\n".join(lines) + "\n"


def mosquitto_conf(out, host, port, client_certs=False):
    o = Path(out).resolve()
    lines = ["# Generated by `citynode broker config`: the fleet's broker. Run: mosquitto -c %s" % (o / "mosquitto.conf"),
             "per_listener_settings false",
             "allow_anonymous false",
             "password_file %s" % (o / "passwd"),
             "acl_file %s" % (o / "acl"),
             "",
             "listener %d %s" % (port, host),
             "cafile %s" % (o / "ca.crt"),
             "certfile %s" % (o / "server.crt"),
             "keyfile %s" % (o / "server.key"),
             "tls_version tlsv1.2"]
    if client_certs:
        # Every client shows a certificate of the fleet's CA; its CN is the user the ACL knows.
        lines += ["require_certificate true", "use_identity_as_username true"]
    return "\n".join(lines) + "\n"


def config(inventory, secrets_dir, out, listen="0.0.0.0:8883", client_certs=False, defaults=None):
    """Credentials for every node of the inventory that lacks them, and OUT/ with what Mosquitto
    needs: mosquitto.conf, passwd, acl, ca.crt, server.crt, server.key. Returns a summary."""
    host, port = parse_listen(listen)
    d = Path(secrets_dir)
    _require_init(d)
    rows = configtool.read_inventory(inventory)
    nodes, new = [], []
    for line, row in rows:
        nid = row.get("node_id", "")
        where = "%s line %d: " % (inventory, line)
        if not nid or len(nid) > 32 or any(not (c.islower() or c.isdigit() or c == "-") or not c.isascii() for c in nid):
            raise CheckFailed(where + "node_id %r: expected 1 to 32 characters of a-z, 0-9, -" % nid)
        try:
            cfg = configtool.row_config(row, defaults)
        except ValueError as e:
            raise CheckFailed(where + str(e))
        m = cfg.get("mqtt") if isinstance(cfg.get("mqtt"), dict) else {}
        prefix = m.get("prefix", "city")
        if any(nid == n for _, _, n in nodes):
            raise CheckFailed(where + "node_id %r is listed twice" % nid)
        if not (d / NODES / (nid + ".json")).exists():
            new.append(nid)
        creds = node_credentials(d, nid, client_certs)
        nodes.append((creds["username"], prefix, nid))
    if not nodes:
        raise CheckFailed("%s: no nodes in the inventory" % inventory)
    op = _read_creds(d / OPERATOR)
    if client_certs and not (d / "operator.crt").exists():
        _client_cert(d, d / "operator", op["username"])
    o = _private_dir(out)
    pw = [op["username"] + ":" + passwd_hash(op["password"])]
    for nid in [n for _, _, n in nodes]:
        c = _read_creds(d / NODES / (nid + ".json"))
        pw.append(c["username"] + ":" + passwd_hash(c["password"]))
    _write(o / "passwd", "\n".join(pw) + "\n", secret=True)
    _write(o / "acl", acl_text(op["username"], nodes))
    _write(o / "ca.crt", (d / "ca.crt").read_bytes())
    _write(o / "server.crt", (d / "server.crt").read_bytes())
    _write(o / "server.key", (d / "server.key").read_bytes(), secret=True)
    _write(o / "mosquitto.conf", mosquitto_conf(o, host, port, client_certs))
    return {"out": str(o), "conf": str(o / "mosquitto.conf"), "listen": "%s:%d" % (host, port),
            "nodes": len(nodes), "new_credentials": new, "client_certs": client_certs}


def operator(secrets_dir):
    """The operators' {"username", "password"} (for the host commands' --secrets)."""
    return _read_creds(Path(secrets_dir) / OPERATOR)

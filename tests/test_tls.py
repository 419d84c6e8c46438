"""Client TLS: secureClientPort, mutual TLS, the x509 ACL scheme, port unification, reloads.

Certificates (a CA, servers and clients: valid, expired, from an untrusted CA, for the wrong
host) are made at test time with `cryptography`; real `fastzk serve` processes load them from
zoo.cfg, and kazoo (use_ssl), Python's ssl and `openssl s_client` connect on loopback.
"""

from __future__ import annotations

import datetime
import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from certs import NOW, Issuer, key_pem, pem
from conftest import stop_client
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID
from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError
from kazoo.security import make_acl

from fastzk import config
from fastzk.nemesis.servers import LOOPBACK, ServerProcess, free_port, start_server
from fastzk.runtime.tls import openssl_cipher, x509_id

pytestmark = pytest.mark.skipif(
    os.environ.get("FASTZK_DIFF_REFERENCE_ONLY") == "1",
    reason="fastzk's own TLS listener")

ALICE = "CN=alice,OU=clients,O=fastzk"
BOB = "CN=bob,OU=clients,O=fastzk"
ADMIN = "CN=admin,OU=operators,O=fastzk"
CAROL = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
                   x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme, Inc."),
                   x509.NameAttribute(NameOID.EMAIL_ADDRESS, "carol@example.org"),
                   x509.NameAttribute(NameOID.COMMON_NAME, "carol")])
HANDSHAKE_TIMEOUT_MS = 1000


class Certs:
    """Files in one directory: ca.pem, server.pem (key + chain, ZooKeeper's PEM key store),
    and <name>.crt/<name>.key per client."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ca = Issuer("fastzk test CA")
        self.rogue = Issuer("rogue CA")
        (root / "ca.pem").write_bytes(pem(self.ca.cert))
        self.server_serial = self.server("server.pem")
        self.client("alice", self.ca.issue(ALICE))
        self.client("bob", self.ca.issue(BOB))
        self.client("admin", self.ca.issue(ADMIN))
        self.client("expired", self.ca.issue("CN=expired,O=fastzk", expired=True))
        self.client("untrusted", self.rogue.issue("CN=mallory,O=fastzk"))
        # a comma to escape and an attribute Java's RFC 2253 form has no keyword for
        self.client("carol", self.ca.issue(CAROL))

    def server(self, name: str, hosts: tuple[str, ...] = ("localhost",)) -> int:
        key, cert = self.ca.issue("CN=server,O=fastzk", hosts)
        (self.root / name).write_bytes(key_pem(key) + pem(cert) + pem(self.ca.cert))
        return cert.serial_number

    def server_p12(self, name: str) -> int:
        key, cert = self.ca.issue("CN=server,O=fastzk")
        blob = pkcs12.serialize_key_and_certificates(
            b"server", key, cert, [self.ca.cert],
            serialization.BestAvailableEncryption(b"secret"))
        tmp = self.root / (name + ".tmp")
        tmp.write_bytes(blob)
        tmp.replace(self.root / name)
        return cert.serial_number

    def client(self, name: str, pair: tuple[ec.EllipticCurvePrivateKey, x509.Certificate]
               ) -> None:
        (self.root / f"{name}.key").write_bytes(key_pem(pair[0]))
        (self.root / f"{name}.crt").write_bytes(pem(pair[1]))

    def tls_keys(self, **extra: Any) -> dict[str, Any]:
        keys = {"secureClientPort": free_port(),
                "serverCnxnFactory": "org.apache.zookeeper.server.NettyServerCnxnFactory",
                "ssl.keyStore.location": self.root / "server.pem",
                "ssl.trustStore.location": self.root / "ca.pem",
                "ssl.handshakeDetectionTimeoutMillis": HANDSHAKE_TIMEOUT_MS}
        keys.update(extra)
        return keys

    def context(self, client: str | None = None) -> ssl.SSLContext:
        """A client context trusting the test CA (without host name checks unless asked)."""
        context = ssl.create_default_context(cafile=str(self.root / "ca.pem"))
        context.check_hostname = False
        if client is not None:
            context.load_cert_chain(self.root / f"{client}.crt", self.root / f"{client}.key")
        return context


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return Certs(tmp_path_factory.mktemp("certs"))


def secure(proc: ServerProcess) -> str:
    return f"{LOOPBACK}:{proc.cfg['secureClientPort']}"


def tls_kazoo(certs: Certs, hosts: str, name: str | None = "alice",
              **kw: Any) -> KazooClient:
    files = {"certfile": str(certs.root / f"{name}.crt"),
             "keyfile": str(certs.root / f"{name}.key")} if name else {}
    return KazooClient(hosts=hosts, use_ssl=True, ca=str(certs.root / "ca.pem"),
                       verify_certs=True, timeout=10.0, **files, **kw)


@pytest.fixture
def clients() -> Iterator[Callable[..., KazooClient]]:
    """Starts kazoo clients (bounded) and stops them all at teardown."""
    started: list[KazooClient] = []

    def start(client: KazooClient, timeout: float = 10.0) -> KazooClient:
        started.append(client)
        client.start(timeout=timeout)
        return client

    yield start
    for client in started:
        stop_client(client)


def wait_for_log(proc: ServerProcess, text: str, timeout_s: float = 5.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        log = proc.log_text()
        if text in log:
            return log
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not in the server log:\n{proc.log_text()[-3000:]}")


def handshake(certs: Certs, port: int, client: str | None) -> ssl.SSLSocket:
    """A TLS connection; with TLS 1.3 the server's verdict on the client certificate comes
    after the client's handshake, so a refusal shows up on the first read."""
    raw = socket.create_connection((LOOPBACK, port), timeout=5)
    return certs.context(client).wrap_socket(raw, server_hostname="localhost")


def serves(certs: Certs, port: int) -> bool:
    """Whether a complete ZooKeeper handshake over TLS gets its ConnectResponse."""
    with handshake(certs, port, "alice") as conn:
        conn.sendall(b"ruok")
        return conn.recv(16) == b"imok"


# --- configuration ---------------------------------------------------------------------------

def test_config_keys(tmp_path: Path) -> None:
    base = {"dataDir": str(tmp_path)}
    cfg = config.from_properties({**base, "secureClientPort": "2281",
                                  "zookeeper.ssl.keyStore.location": "k.pem",
                                  "ssl.trustStore.location": "/t.p12",
                                  "ssl.trustStore.password": "pw",
                                  "serverCnxnFactory": "org.apache.zookeeper.server."
                                                       "NettyServerCnxnFactory"},
                                 "zoo.cfg", tmp_path)
    assert cfg.secure_client_port == 2281 and not cfg.plain_client_port
    assert cfg.warnings == ()
    assert cfg.tls is not None and cfg.tls.key_store == tmp_path / "k.pem"
    assert (cfg.tls.key_store_type, cfg.tls.trust_store_type) == ("PEM", "PKCS12")
    assert cfg.tls.client_auth == "need" and cfg.tls.protocols == ("TLSv1.3", "TLSv1.2")
    both = config.from_properties({**base, "clientPort": "2181", "secureClientPort": "2281",
                                   "ssl.keyStore.location": "/k.pem", "ssl.clientAuth": "want",
                                   "ssl.enabledProtocols": "TLSv1.2"}, "zoo.cfg", tmp_path)
    assert both.plain_client_port and both.tls is not None and both.warnings == ()
    assert both.tls.protocols == ("TLSv1.2",) and both.tls.client_auth == "want"
    assert config.from_properties(base, "zoo.cfg", tmp_path).tls is None
    checked = config.from_properties({**base, "ssl.keyStore.location": "/k.pem",
                                      "ssl.clientHostnameVerification": "true"}, "z", tmp_path)
    assert "does not match client certificates to the client's host" in checked.warnings[0]
    with pytest.raises(config.ConfigError, match="need ssl.keyStore.location"):
        config.from_properties({**base, "secureClientPort": "2281"}, "zoo.cfg", tmp_path)
    bad = {
        "ssl.keyStore.location": ("/k.jks", "JKS is not supported: convert it with keytool"),
        "ssl.clientAuth": ("maybe", "ssl.clientAuth: need, want or none"),
        "ssl.protocol": ("SSLv3", "unknown protocol 'SSLv3'"),
        "ssl.handshakeDetectionTimeoutMillis": ("soon", "not an integer"),
        "ssl.authProvider": ("sasl", "only x509"),
    }
    for key, (value, message) in bad.items():
        props = {**base, "ssl.keyStore.location": "/k.pem", key: value}
        with pytest.raises(config.ConfigError, match=message):
            config.from_properties(props, "zoo.cfg", tmp_path)
    with pytest.raises(config.ConfigError, match="ssl.keyStore.type: not given"):
        config.from_properties({**base, "ssl.keyStore.location": "/k.store"}, "z", tmp_path)


def test_names() -> None:
    assert openssl_cipher("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256") == \
        "ECDHE-RSA-AES128-GCM-SHA256"
    assert openssl_cipher("TLS_RSA_WITH_AES_256_CBC_SHA256") == "AES256-SHA256"
    assert openssl_cipher("TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256") == \
        "ECDHE-ECDSA-CHACHA20-POLY1305"
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme, Inc."),
                      x509.NameAttribute(NameOID.EMAIL_ADDRESS, "a@b"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "alice")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1).not_valid_before(NOW)
            .not_valid_after(NOW + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    # as Java's X500Principal.getName() writes it: last RDN first, unknown keywords as hex DER
    assert x509_id(cert.public_bytes(serialization.Encoding.DER)) == \
        "CN=alice,1.2.840.113549.1.9.1=#1603614062,O=Acme\\, Inc.,C=DE"


def test_missing_or_broken_store_is_a_configuration_error(certs: Certs, tmp_path: Path) -> None:
    (tmp_path / "empty.pem").write_text("")
    for store, message in ((tmp_path / "absent.pem", "absent.pem: no such file"),
                           (tmp_path / "empty.pem", "TLS: ")):
        cfg = tmp_path / "zoo.cfg"
        cfg.write_text(f"dataDir={tmp_path / 'data'}\nclientPort={free_port()}\n"
                       f"secureClientPort={free_port()}\nssl.keyStore.location={store}\n"
                       "admin.enableServer=false\n")
        run = subprocess.run([sys.executable, "-m", "fastzk", "serve", str(cfg)],
                             capture_output=True, text=True, timeout=30, cwd=tmp_path)
        assert run.returncode == 2, run.stderr
        assert "configuration error" in run.stderr and message in run.stderr, run.stderr


def test_secure_port_alone(certs: Certs, tmp_path: Path) -> None:
    """secureClientPort without clientPort: only the TLS port listens, as in ZooKeeper."""
    port = free_port()
    cfg = tmp_path / "zoo.cfg"
    cfg.write_text(f"dataDir={tmp_path / 'data'}\nsecureClientPort={port}\n"
                   f"ssl.keyStore.location={certs.root / 'server.pem'}\n"
                   f"ssl.trustStore.location={certs.root / 'ca.pem'}\n"
                   "admin.enableServer=false\n4lw.commands.whitelist=*\n")
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        server = subprocess.Popen([sys.executable, "-m", "fastzk", "serve", str(cfg)],
                                  stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 20
        while "fastzk serving TLS" not in log.read_text():
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        assert serves(certs, port)
        assert "fastzk serving on" not in log.read_text()
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(5)


# --- mutual TLS ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mtls(certs: Certs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_server("fastzk", tmp_path_factory.mktemp("mtls"), **certs.tls_keys(
        **{"X509AuthenticationProvider.superUser": ADMIN}))
    yield proc
    proc.stop()


def test_kazoo_over_tls(certs: Certs, mtls: ServerProcess,
                        clients: Callable[..., KazooClient]) -> None:
    client = clients(tls_kazoo(certs, secure(mtls)))
    events = []
    client.create("/tls", b"one")
    assert client.get("/tls", watch=events.append)[0] == b"one"
    other = clients(tls_kazoo(certs, secure(mtls), "bob"))
    other.set("/tls", b"two")
    deadline = time.monotonic() + 5
    while not events and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [e.type for e in events] == ["CHANGED"]
    assert client.get("/tls")[0] == b"two"


def test_x509_acl(certs: Certs, mtls: ServerProcess,
                  clients: Callable[..., KazooClient]) -> None:
    alice = clients(tls_kazoo(certs, secure(mtls)))
    bob = clients(tls_kazoo(certs, secure(mtls), "bob"))
    alice.create("/alice", b"mine", acl=[make_acl("x509", ALICE, all=True)])
    assert alice.get("/alice")[0] == b"mine"
    with pytest.raises(NoAuthError):
        bob.get("/alice")
    # `auth` stands for the connection's certificate identity, as in ZooKeeper
    bob.create("/bob", b"", acl=[make_acl("auth", "", all=True)])
    assert [(a.id.scheme, a.id.id) for a in bob.get_acls("/bob")[0]] == [("x509", BOB)]
    with pytest.raises(NoAuthError):
        alice.get("/bob")
    admin = clients(tls_kazoo(certs, secure(mtls), "admin"))  # the x509 super user
    assert admin.get("/alice")[0] == b"mine" and admin.get("/bob")[0] == b""


def test_openssl_s_client(certs: Certs, mtls: ServerProcess) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command")
    run = subprocess.run(
        ["openssl", "s_client", "-connect", secure(mtls), "-CAfile", str(certs.root / "ca.pem"),
         "-cert", str(certs.root / "alice.crt"), "-key", str(certs.root / "alice.key"),
         "-verify_return_error", "-quiet"],
        input=b"ruok", capture_output=True, timeout=20)
    assert run.stdout == b"imok", run.stderr


def test_renegotiation_refused(certs: Certs, mtls: ServerProcess) -> None:
    """A TLS 1.2 client asking to renegotiate (s_client's R command) is refused; the server
    goes on serving."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command")
    client = subprocess.Popen(
        ["openssl", "s_client", "-tls1_2", "-connect", secure(mtls),
         "-CAfile", str(certs.root / "ca.pem"), "-cert", str(certs.root / "alice.crt"),
         "-key", str(certs.root / "alice.key")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert client.stdin is not None and client.stdout is not None
        deadline = time.monotonic() + 10
        output = b""
        while b"Verify return code" not in output and time.monotonic() < deadline:
            output += client.stdout.readline()
        client.stdin.write(b"R\n")
        client.stdin.flush()
        output += client.communicate(timeout=10)[0]
    finally:
        if client.poll() is None:
            client.kill()
            client.wait(5)
    assert b"RENEGOTIATING" in output and b"no renegotiation" in output, output[-2000:]
    assert serves(certs, mtls.cfg["secureClientPort"])


@pytest.mark.parametrize("client, reason", [
    ("untrusted", "certificate refused: unable to get local issuer certificate"),
    ("expired", "certificate refused: certificate has expired"),
    (None, "the client sent no certificate (ssl.clientAuth=need)"),
])
def test_bad_client_certificate_refused(certs: Certs, mtls: ServerProcess,
                                        client: str | None, reason: str) -> None:
    port = mtls.cfg["secureClientPort"]
    with pytest.raises((ssl.SSLError, ConnectionError)):  # noqa: PT012
        with handshake(certs, port, client) as conn:
            conn.sendall(b"ruok")
            if conn.recv(16) == b"":
                raise ConnectionResetError("closed")
    wait_for_log(mtls, reason)
    assert serves(certs, port)


def test_bad_bytes_close_that_connection_only(certs: Certs, mtls: ServerProcess,
                                              clients: Callable[..., KazooClient]) -> None:
    port = mtls.cfg["secureClientPort"]
    client = clients(tls_kazoo(certs, secure(mtls)))
    client.ensure_path("/bad-bytes")
    payloads = [b"\x00\x00\x00\x2c" + bytes(44),  # a plaintext ConnectRequest
                b"\x16\x03\x01\x00\x05garbage-and-more",  # a broken handshake record
                b""]  # nothing at all: closed after ssl.handshakeDetectionTimeoutMillis
    for payload in payloads:
        with socket.create_connection((LOOPBACK, port), timeout=5) as raw:
            started = time.monotonic()
            raw.sendall(payload)
            try:
                reply = raw.recv(4096)
            except ConnectionResetError:
                reply = b""
            # a TLS alert at most, then the close
            assert reply[:1] in (b"", b"\x15"), reply
            if reply:
                assert raw.recv(4096) == b""
            assert time.monotonic() - started < HANDSHAKE_TIMEOUT_MS / 1000 + 3
    wait_for_log(mtls, "TLS handshake with 127.0.0.1")
    assert client.exists("/bad-bytes") is not None
    assert serves(certs, port)


def test_wrong_host_certificate_refused_by_the_client(
        certs: Certs, tmp_path: Path, clients: Callable[..., KazooClient]) -> None:
    certs.server("wronghost.pem", hosts=("elsewhere.example",))
    proc = start_server("fastzk", tmp_path, **certs.tls_keys(
        **{"ssl.keyStore.location": certs.root / "wronghost.pem", "ssl.clientAuth": "none"}))
    try:
        context = certs.context()
        context.check_hostname = True
        with socket.create_connection((LOOPBACK, proc.cfg["secureClientPort"]), timeout=5) \
                as raw, pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
            context.wrap_socket(raw, server_hostname="localhost")
        anonymous = clients(tls_kazoo(certs, secure(proc), None))  # clientAuth=none
        assert anonymous.exists("/") is not None
    finally:
        proc.stop()


# --- port unification and reload -------------------------------------------------------------

def test_port_unification(certs: Certs, tmp_path: Path,
                          clients: Callable[..., KazooClient]) -> None:
    keys = certs.tls_keys(**{"client.portUnification": "true", "ssl.clientAuth": "want"})
    del keys["secureClientPort"]
    proc = start_server("fastzk", tmp_path, **keys)
    try:
        plain = clients(KazooClient(hosts=proc.connect_string, timeout=10.0))
        tls = clients(tls_kazoo(certs, proc.connect_string))
        tls.create("/unified", b"tls", acl=[make_acl("x509", ALICE, all=True)])
        with pytest.raises(NoAuthError):
            plain.get("/unified")
        plain.create("/plain", b"plain")
        assert tls.get("/plain")[0] == b"plain"
        with socket.create_connection((LOOPBACK, proc.port), timeout=5) as raw:
            started = time.monotonic()
            assert raw.recv(16) == b""  # silent: closed after the detection timeout
            assert time.monotonic() - started < HANDSHAKE_TIMEOUT_MS / 1000 + 3
        wait_for_log(proc, "sent nothing within ssl.handshakeDetectionTimeoutMillis")
        assert plain.exists("/plain") is not None
    finally:
        proc.stop()


def test_pkcs12_stores_reloaded_on_change(certs: Certs, tmp_path: Path,
                                          clients: Callable[..., KazooClient]) -> None:
    first = certs.server_p12("server.p12")
    trust = tmp_path / "trust.p12"
    trust.write_bytes(pkcs12.serialize_key_and_certificates(
        None, None, None, [certs.ca.cert], serialization.BestAvailableEncryption(b"secret")))
    proc = start_server("fastzk", tmp_path, tickTime=200, **certs.tls_keys(**{
        "ssl.keyStore.location": certs.root / "server.p12", "ssl.keyStore.password": "secret",
        "ssl.trustStore.location": trust, "ssl.trustStore.password": "secret"}))
    port = proc.cfg["secureClientPort"]

    def serial() -> int:
        with handshake(certs, port, "alice") as conn:
            der = conn.getpeercert(binary_form=True)
            assert der is not None
            return x509.load_der_x509_certificate(der).serial_number

    try:
        old = clients(tls_kazoo(certs, secure(proc)))
        old.create("/before", b"")
        assert serial() == first
        second = certs.server_p12("server.p12")
        wait_for_log(proc, "TLS certificate files reloaded")
        assert serial() == second
        old.create("/after", b"")  # the established connection goes on
        assert old.client_state == "CONNECTED" and old.exists("/before") is not None
    finally:
        proc.stop()


def test_x509_ids_as_zookeeper_gives_them(certs: Certs, mtls: ServerProcess, tmp_path: Path,
                                          clients: Callable[..., KazooClient]) -> None:
    """Apache ZooKeeper (Netty, the same PEM files) adds the verified certificate's subject to
    the connection's identities; an `auth` ACL shows it. fastzk must name it the same."""
    if shutil.which("java") is None or not Path("/usr/share/java/zookeeper.jar").exists():
        pytest.skip("no Apache ZooKeeper to compare with")
    reference = start_server("zookeeper", tmp_path, **certs.tls_keys())
    try:
        ids = []
        for proc in (reference, mtls):
            for name in ("alice", "carol"):
                client = clients(tls_kazoo(certs, secure(proc), name), timeout=20.0)
                path = client.create(f"/auth-{name}-", acl=[make_acl("auth", "", all=True)],
                                     sequence=True)
                ids.append([(a.id.scheme, a.id.id) for a in client.get_acls(path)[0]])
        assert ids[:2] == ids[2:], ids
        assert ids[0] == [("x509", ALICE)]
    finally:
        reference.stop()


def test_java_client(certs: Certs, mtls: ServerProcess) -> None:
    """ZooKeeper's own client over TLS (Netty, zookeeper.client.secure=true, a PEM key store
    with key and certificate), as Kafka or Solr connect."""
    from test_zkcli import ZKCLI, _cli_env
    if not ZKCLI.exists() or shutil.which("java") is None:
        pytest.skip("zkCli.sh and java are required")
    store = certs.root / "alice.pem"
    store.write_bytes((certs.root / "alice.key").read_bytes()
                      + (certs.root / "alice.crt").read_bytes())
    env = _cli_env()
    # zkCli.sh's class path lacks the Netty jars the Netty client needs; a later -cp wins
    env["CLIENT_JVMFLAGS"] += (
        " -cp /etc/zookeeper/conf:/usr/share/java/zookeeper.jar:"
        "/usr/share/java/netty-codec.jar:/usr/share/java/netty-resolver.jar"
        " -Dzookeeper.client.secure=true"
        " -Dzookeeper.clientCnxnSocket=org.apache.zookeeper.ClientCnxnSocketNetty"
        f" -Dzookeeper.ssl.keyStore.location={store}"
        f" -Dzookeeper.ssl.trustStore.location={certs.root / 'ca.pem'}")
    run = subprocess.run([str(ZKCLI), "-server", secure(mtls), "create", "/java", "from-java"],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60,
                         start_new_session=True)
    assert b"Created /java" in run.stdout, run.stdout.decode()[-3000:]


def test_load_generator_over_mutual_tls(certs: Certs, mtls: ServerProcess) -> None:
    """`fastzk load --tls-ca/--tls-cert/--tls-key` (what bench/tls.py measures with): a run
    over the secure port completes; without a client certificate the server refuses it."""
    base = [sys.executable, "-m", "fastzk", "load", "--server", secure(mtls), "--op", "get",
            "--ops", "500", "--sessions", "2", "--root", "/load-tls",
            "--tls-ca", str(certs.root / "ca.pem")]
    done = subprocess.run(base + ["--tls-cert", str(certs.root / "alice.crt"),
                                  "--tls-key", str(certs.root / "alice.key")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    refused = subprocess.run(base, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0


def _admin_get(port: int, path: str, context: ssl.SSLContext | None) -> tuple[int, bytes]:
    """One request to the admin endpoint, over HTTPS when given a context."""
    conn = (http.client.HTTPSConnection(LOOPBACK, port, timeout=10, context=context)
            if context is not None else http.client.HTTPConnection(LOOPBACK, port, timeout=10))
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_admin_endpoint_over_https(certs: Certs, tmp_path: Path,
                                   clients: Callable[..., KazooClient]) -> None:
    """ZooKeeper's AdminServer keys: admin.forceHttps with the ssl.quorum.* stores refuses
    plain HTTP; admin.needClientAuth refuses a client without a certificate, and a verified
    certificate's x509 subject is an identity for the commands that need every permission on
    "/"; admin.portUnification serves HTTP and HTTPS on one port."""
    stores = {"ssl.quorum.keyStore.location": certs.root / "server.pem",
              "ssl.quorum.trustStore.location": certs.root / "ca.pem",
              "ssl.quorum.handshakeDetectionTimeoutMillis": HANDSHAKE_TIMEOUT_MS}
    proc = start_server("fastzk", tmp_path / "forced", **stores,
                        **{"admin.forceHttps": "true", "admin.needClientAuth": "true"})
    try:
        port = proc.admin_port
        assert port is not None
        status, body = _admin_get(port, "/commands/ruok", certs.context("alice"))
        assert status == 200 and json.loads(body)["command"] == "ruok"
        for context in (None, certs.context()):  # plain HTTP; HTTPS without a certificate
            with pytest.raises((OSError, http.client.HTTPException)):
                _admin_get(port, "/commands/ruok", context)
        wait_for_log(proc, "TLS handshake with")
        zk = clients(KazooClient(hosts=proc.connect_string, timeout=10.0))
        zk.set_acls("/", [make_acl("x509", ALICE, all=True)])
        assert _admin_get(port, "/commands/dump", certs.context("alice"))[0] == 200
        assert _admin_get(port, "/commands/dump", certs.context("bob"))[0] == 403
    finally:
        proc.stop()
    unified = start_server("fastzk", tmp_path / "unified", **stores,
                           **{"admin.portUnification": "true"})
    try:
        port = unified.admin_port
        assert port is not None
        for context in (None, certs.context()):
            assert _admin_get(port, "/commands/ruok", context)[0] == 200
    finally:
        unified.stop()
    with pytest.raises(config.ConfigError, match="needs HTTPS on the admin port"):
        config.from_properties({"dataDir": str(tmp_path), "admin.needClientAuth": "true"},
                               "zoo.cfg", tmp_path)
    with pytest.raises(config.ConfigError, match="need ssl.quorum.keyStore.location"):
        config.from_properties({"dataDir": str(tmp_path), "admin.forceHttps": "true"},
                               "zoo.cfg", tmp_path)

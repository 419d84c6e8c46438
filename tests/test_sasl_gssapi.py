"""SASL GSSAPI (Kerberos V5) against Apache ZooKeeper 3.8 and fastzk, on a real KDC.

A throwaway MIT Kerberos realm (k5test: kdb5_util, kadmin.local and krb5kdc in a temp dir,
the KDC on a free loopback port, stopped by PID at the end) holds the service principal
zookeeper/localhost and a few clients. Both servers get the same JAAS `Server` section
(Krb5LoginModule, keyTab, principal); clients are kazoo (pure-sasl over pykerberos), raw
GSS-API exchanges on the wire (pykerberos) and zkCli (the JDK's Kerberos client, with a JAAS
`Client` section and its own keytab). Each action runs against both servers and the outcomes
must be equal: identities, ACL decisions, the bytes of refusals. Unit tests cover the pure
state machine (fastzk/server/sasl.py's GssapiServer) with a scripted acceptor.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import socket
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import wire
from kazoo.client import KazooClient
from kazoo.exceptions import AuthFailedError, NoAuthError
from kazoo.security import make_acl

from fastzk import config, jaas
from fastzk.nemesis.servers import ServerProcess, start_server
from fastzk.server import sasl

KINDS = ["zookeeper", "fastzk"]
OP_SASL = 102
AUTH_FAILED = -115
SASL_PROVIDER = "org.apache.zookeeper.server.auth.SASLAuthenticationProvider"
SERVICE = "zookeeper/localhost"
KRB5_MODULE = "com.sun.security.auth.module.Krb5LoginModule"
ZKCLI = Path("/usr/share/zookeeper/bin/zkCli.sh")
KDC_TOOLS = ("krb5kdc", "kdb5_util", "kadmin.local", "kinit")


# --- unit: the pure GSSAPI state machine -----------------------------------------------------


@dataclass
class ScriptedAcceptor:
    """A GSS acceptor that needs `rounds` tokens and "wraps" by prefixing W (checkable)."""

    rounds: int = 1
    reply: bytes | None = b"ap-rep"
    fail_on: bytes = b"bad"
    seen: list[bytes] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return len(self.seen) >= self.rounds

    @property
    def initiator(self) -> str:
        return "zkcli/host.example@EXAMPLE.COM"

    def step(self, token: bytes) -> bytes | None:
        if token == self.fail_on:
            raise sasl.SaslError("GSSAPI: defective token")
        self.seen.append(token)
        return self.reply

    def wrap(self, data: bytes) -> bytes:
        return b"W" + data

    def unwrap(self, data: bytes) -> bytes:
        if not data.startswith(b"W"):
            raise sasl.SaslError("GSSAPI: bad checksum")
        return data[1:]


NAMES = sasl.KerberosNames("EXAMPLE.COM")


def test_gssapi_exchange_offers_no_layer_and_names_the_principal() -> None:
    server = sasl.GssapiServer(ScriptedAcceptor(rounds=2), NAMES)
    assert server.evaluate(b"t1") == b"ap-rep" and server.principal is None
    assert server.evaluate(b"t2") == b"ap-rep"  # established with a reply: the AP-REP
    assert server.principal == "zkcli/host.example@EXAMPLE.COM" and server.user is None
    assert server.evaluate(b"") == b"W\x01\x01\x00\x00"  # no layer, 65536 bytes
    assert server.evaluate(b"W\x01\x00\x10\x00someone-else") is None
    assert server.user == "zkcli/host.example@EXAMPLE.COM"  # the authzid changes nothing
    with pytest.raises(sasl.SaslError, match="over"):
        server.evaluate(b"")


def test_gssapi_without_mutual_auth_reply_goes_straight_to_the_offer() -> None:
    server = sasl.GssapiServer(ScriptedAcceptor(reply=None), NAMES)
    assert server.evaluate(b"t") == b"W\x01\x01\x00\x00"


@pytest.mark.parametrize("tokens, message", [
    ([b""], "empty initial token"),
    ([b"bad"], "defective"),
    ([b"t", b"unexpected"], "empty token"),
    ([b"t", b"", b"not-wrapped"], "checksum"),
    ([b"t", b"", b"W\x01\x00"], "at least 4"),
    ([b"t", b"", b"W\x04\x00\x10\x00"], "security layer 0x4"),
    ([b"x" * (sasl.MAX_GSS_TOKEN_BYTES + 1)], "at most"),
], ids=["empty", "defective", "extra-token", "unwrap", "short-choice", "privacy", "oversized"])
def test_gssapi_refusals_are_final(tokens: list[bytes], message: str) -> None:
    server = sasl.GssapiServer(ScriptedAcceptor(), NAMES)
    with pytest.raises(sasl.SaslError, match=message):
        for token in tokens:
            server.evaluate(token)
    assert server.user is None
    with pytest.raises(sasl.SaslError):
        server.evaluate(b"t")


@pytest.mark.parametrize("principal, host, realm, identity", [
    ("client@EXAMPLE.COM", False, False, "client@EXAMPLE.COM"),
    ("zkcli/h.example@EXAMPLE.COM", False, False, "zkcli/h.example@EXAMPLE.COM"),
    ("zkcli/h.example@EXAMPLE.COM", True, False, "zkcli@EXAMPLE.COM"),
    ("zkcli/h.example@EXAMPLE.COM", False, True, "zkcli/h.example"),
    ("zkcli/h.example@EXAMPLE.COM", True, True, "zkcli"),
    ("zkcli/h.example@OTHER.ORG", True, True, "zkcli/h.example@OTHER.ORG"),
])
def test_kerberos_names(principal: str, host: bool, realm: bool, identity: str) -> None:
    assert sasl.KerberosNames("EXAMPLE.COM", host, realm).identity(principal) == identity


def test_jaas_server_kerberos() -> None:
    text = (f'Server {{ {KRB5_MODULE} required useKeyTab=true storeKey=true '
            'keyTab="/k/zk.keytab" principal="zookeeper/h@R"; };')
    assert jaas.server_kerberos(text) == jaas.KerberosLogin("zookeeper/h@R", "/k/zk.keytab")
    assert jaas.server_kerberos('Server { a.DigestLoginModule required user_x="y"; };') is None
    with pytest.raises(jaas.JaasError, match="no principal"):
        jaas.server_kerberos(f"Server {{ {KRB5_MODULE} required useKeyTab=true; }};")
    with pytest.raises(jaas.JaasError, match="useKeyTab=true"):
        jaas.server_kerberos(f'Server {{ {KRB5_MODULE} required principal="p@R"; }};')


# --- the realm -------------------------------------------------------------------------------


def _kerberos_missing() -> str | None:
    """Why the Kerberos tests cannot run here (None: they can)."""
    missing = [tool for tool in KDC_TOOLS if shutil.which(tool, path=os.environ.get(
        "PATH", "") + ":/usr/sbin:/sbin") is None]
    if missing:
        return (f"Kerberos tools missing ({', '.join(missing)}): Debian krb5-kdc "
                "krb5-admin-server krb5-user (`make test` installs them)")
    for module in ("gssapi", "k5test", "kerberos"):
        try:
            __import__(module)
        except ImportError as error:
            return f"Python package {module} missing (pip install -e '.[test]'): {error}"
    return None


def _free_tcp_udp_port() -> int:
    """A port free for both TCP and UDP: the KDC listens on both."""
    for _ in range(50):
        with socket.socket() as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no port free for both TCP and UDP")


@dataclass
class Realm:
    name: str
    tmp: Path
    krb5_conf: Path
    server_keytab: Path
    client_keytab: Path  # client@REALM's keys, for the JDK client

    def principal(self, name: str) -> str:
        return f"{name}@{self.name}"


@pytest.fixture(scope="module")
def realm() -> Iterator[Realm]:
    reason = _kerberos_missing()
    if reason is not None:
        pytest.skip(reason)
    from k5test import K5Realm

    kdc = K5Realm(portbase=_free_tcp_udp_port(), create_user=False, create_host=False,
                  get_creds=False)
    try:
        tmp = Path(kdc.tmpdir)
        found = Realm(kdc.realm, tmp, tmp / "krb5.conf", tmp / "zookeeper.keytab",
                      tmp / "client.keytab")
        kdc.addprinc(found.principal(SERVICE))
        kdc.extract_keytab(found.principal(SERVICE), str(found.server_keytab))
        kdc.addprinc(found.principal("other/localhost"))  # a service that is not ZooKeeper
        (tmp / "ccaches").mkdir()
        ccache = f"DIR:{tmp / 'ccaches'}"  # one cache per client principal, chosen by name
        for name in ("client", "zkcli/localhost", "eve"):
            kdc.addprinc(found.principal(name), kdc.password(name))
            kdc.kinit(found.principal(name), kdc.password(name),
                      env=dict(kdc.env, KRB5CCNAME=ccache))
        kdc.extract_keytab(found.principal("client"), str(found.client_keytab))
        with pytest.MonkeyPatch.context() as patch:
            for key, value in dict(kdc.env, KRB5CCNAME=ccache).items():
                if key != "KRB5_KTNAME":  # the servers name their keytab in the JAAS file
                    patch.setenv(key, value)
            yield found
    finally:
        kdc.stop()  # terminates the krb5kdc process it started, removes the temp dir


def _jaas(realm: Realm) -> str:
    return (f"Server {{\n  {KRB5_MODULE} required\n  useKeyTab=true\n"
            f'  keyTab="{realm.server_keytab}"\n  storeKey=true\n  useTicketCache=false\n'
            f'  principal="{realm.principal(SERVICE)}";\n}};\n')


def _start(kind: str, realm: Realm, workdir: Path, **cfg: str) -> ServerProcess:
    """A server with the Kerberos JAAS file; ZooKeeper also gets the realm's krb5.conf."""
    workdir.mkdir(parents=True, exist_ok=True)
    jaas_path = workdir / "jaas.conf"
    jaas_path.write_text(_jaas(realm))
    keys = {"authProvider.1": SASL_PROVIDER, "java.security.auth.login.config": str(jaas_path),
            **cfg}
    flags = [f"-Djava.security.auth.login.config={jaas_path}",
             f"-Djava.security.krb5.conf={realm.krb5_conf}"]
    return start_server(kind, workdir, jvm_flags=flags, **keys)  # type: ignore[arg-type]


@contextlib.contextmanager
def _servers(realm: Realm, tmp: Path, **cfg: str) -> Iterator[dict[str, ServerProcess]]:
    started: dict[str, ServerProcess] = {}
    try:
        for kind in KINDS:
            started[kind] = _start(kind, realm, tmp / kind, **cfg)
        yield started
    finally:
        for proc in started.values():
            proc.stop()


@pytest.fixture(scope="module")
def servers(realm: Realm, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[dict[str, ServerProcess]]:
    with _servers(realm, tmp_path_factory.mktemp("gssapi")) as started:
        yield started


def _same(servers: dict[str, ServerProcess], action: Callable[[ServerProcess], object]
          ) -> object:
    results = {kind: action(server) for kind, server in servers.items()}
    for server in servers.values():
        assert wire.fresh_session_ping(server.host, server.port).err == 0, (
            f"{server.kind} stopped serving")
    assert results["fastzk"] == results["zookeeper"], results
    return results["fastzk"]


@contextlib.contextmanager
def kazoo(server: ServerProcess, principal: str | None = None, service: str = "zookeeper"
          ) -> Iterator[KazooClient]:
    """kazoo on localhost (pure-sasl asks for a ticket to <service>/<host of the connect
    string>), as `principal` from the realm's cache collection."""
    options = None if principal is None else {"mechanism": "GSSAPI", "principal": principal,
                                              "service": service}
    client = KazooClient(f"localhost:{server.port}", sasl_options=options, timeout=5,
                         connection_retry={"max_tries": 0})
    try:
        client.start(timeout=10)
        yield client
    finally:
        client.stop()
        client.close()


def _acl(client: KazooClient, path: str) -> list[tuple[int, str, str]]:
    return [(a.perms, a.id.scheme, a.id.id) for a in client.get_acls(path)[0]]


# --- both servers ----------------------------------------------------------------------------


def test_kazoo_gssapi_identities_and_sasl_acls(realm: Realm,
                                               servers: dict[str, ServerProcess]) -> None:
    """The identity is the full principal (ZooKeeper's default KerberosName rule keeps the
    instance and realm): an `auth` ACL expands to it, `sasl:<principal>` admits only it."""
    client, zkcli = realm.principal("client"), realm.principal("zkcli/localhost")

    def action(server: ServerProcess) -> tuple:
        with kazoo(server, client) as session:
            session.create("/krb", b"k", acl=[make_acl("auth", "", all=True)])
            created = _acl(session, "/krb")
            data = session.get("/krb")[0]
        with kazoo(server, zkcli) as session:
            session.create("/krb-host", acl=[make_acl("auth", "", read=True)])
            host_acl = _acl(session, "/krb-host")
        outcomes = []
        for who in (zkcli, realm.principal("eve"), None):
            with kazoo(server, who) as other:
                try:
                    other.get("/krb")
                    outcomes.append("read")
                except NoAuthError:
                    outcomes.append("NoAuth")
        return created, data, host_acl, outcomes

    assert _same(servers, action) == (
        [(31, "sasl", client)], b"k", [(1, "sasl", zkcli)], ["NoAuth"] * 3)


@pytest.mark.parametrize("flag, expected", [
    ("kerberos.removeHostFromPrincipal", ["client@{R}", "zkcli@{R}"]),
    ("kerberos.removeRealmFromPrincipal", ["client", "zkcli/localhost"]),
])
def test_principal_shaping(realm: Realm, tmp_path: Path, flag: str,
                           expected: list[str]) -> None:
    """The zoo.cfg keys kerberos.removeHostFromPrincipal / removeRealmFromPrincipal (ZooKeeper
    turns unknown zoo.cfg keys into zookeeper.* system properties, which its SASL callback
    reads) strip parts of the identity."""
    def action(server: ServerProcess) -> list[str]:
        ids = []
        for who in ("client", "zkcli/localhost"):
            with kazoo(server, realm.principal(who)) as session:
                path = "/shaped-" + who.replace("/", "-")
                session.create(path, acl=[make_acl("auth", "", all=True)])
                ids.append(_acl(session, path)[0][2])
        return ids

    with _servers(realm, tmp_path, **{flag: "true"}) as pair:
        assert _same(pair, action) == [e.format(R=realm.name) for e in expected]


def _gss_client(realm: Realm, service: str = "zookeeper@localhost",
                who: str = "client") -> object:
    import kerberos

    return kerberos.authGSSClientInit(service=service, principal=realm.principal(who))[1]


def _gss_step(ctx: object, token: bytes | None) -> bytes:
    import kerberos

    kerberos.authGSSClientStep(ctx, base64.b64encode(token or b"").decode())
    return base64.b64decode(kerberos.authGSSClientResponse(ctx) or "")


def _sasl(sock: socket.socket, xid: int, token: bytes | None) -> tuple[wire.ReplyHeader, bytes]:
    sock.sendall(wire.request(xid, OP_SASL, wire.p_buffer(token)))
    return wire.read_reply(sock)


def _refused(sock: socket.socket, xid: int) -> tuple[int, int, int, bytes, bool]:
    hdr, body = wire.read_reply(sock)
    closed, rest = wire.recv_until_closed(sock, 5.0)
    return hdr.xid, hdr.zxid, hdr.err, body + rest, closed


def test_raw_exchange_on_the_wire(realm: Realm, servers: dict[str, ServerProcess]) -> None:
    """Each step's reply header and token shape, and the unwrapped security layer offer:
    AP-REP, then the wrapped offer (no security layer, 65536 bytes), then a null token."""
    import kerberos

    def action(server: ServerProcess) -> tuple:
        ctx = _gss_client(realm)
        sock, _ = wire.handshake(server.host, server.port)
        with sock:
            hdr1, body = _sasl(sock, 1, _gss_step(ctx, None))
            ap_rep = wire.parse_buffer(body)[0]
            _gss_step(ctx, ap_rep)
            hdr2, body = _sasl(sock, 2, b"")
            wrapped = wire.parse_buffer(body)[0] or b""
            kerberos.authGSSClientUnwrap(ctx, base64.b64encode(wrapped).decode())
            offer = base64.b64decode(kerberos.authGSSClientResponse(ctx))
            choice = struct.pack("!I", 1 << 24 | 65536) + realm.principal("client").encode()
            kerberos.authGSSClientWrap(ctx, base64.b64encode(choice).decode())
            hdr3, body3 = _sasl(sock, 3, base64.b64decode(kerberos.authGSSClientResponse(ctx)))
            sock.sendall(wire.exists_request(4, "/"))
            after = wire.read_reply(sock)[0].err
        return ([(h.xid, h.zxid, h.err) for h in (hdr1, hdr2, hdr3)],
                ap_rep is not None and ap_rep[:1] == b"\x60", offer, body3, after)

    assert _same(servers, action) == ([(1, 0, 0), (2, 0, 0), (3, 0, 0)], True,
                                      b"\x01\x01\x00\x00", wire.p_buffer(None), 0)


@pytest.mark.parametrize("case", ["garbage", "empty", "truncated", "other-service",
                                  "bad-choice", "replay"])
def test_bad_tokens_are_refused(realm: Realm, servers: dict[str, ServerProcess],
                                case: str) -> None:
    """AuthFailed (zxid 0, a null token), then the connection closes; fastzk logs why."""
    replays: dict[str, bytes] = {}

    def action(server: ServerProcess) -> tuple:
        sock, _ = wire.handshake(server.host, server.port)
        with sock:
            if case == "bad-choice":
                ctx = _gss_client(realm)
                _gss_step(ctx, wire.parse_buffer(_sasl(sock, 1, _gss_step(ctx, None))[1])[0])
                _sasl(sock, 2, b"")
                sock.sendall(wire.request(3, OP_SASL, wire.p_buffer(b"\x05\x04garbage")))
                return _refused(sock, 3)
            if case == "replay":  # an AP-REQ that another connection already used
                ap_req = _gss_step(_gss_client(realm), None)
                with contextlib.closing(wire.handshake(server.host, server.port)[0]) as first:
                    assert _sasl(first, 1, ap_req)[0].err == 0
                replays[server.kind] = ap_req
                token = ap_req
            else:
                token = {
                    "garbage": lambda: b"\x60\x82garbage" * 9,
                    "empty": lambda: b"",  # what a DIGEST-MD5 client sends first
                    "truncated": lambda: _gss_step(_gss_client(realm), None)[:200],
                    "other-service": lambda: _gss_step(
                        _gss_client(realm, "other@localhost"), None),
                }[case]()
            sock.sendall(wire.request(1, OP_SASL, wire.p_buffer(token)))
            return _refused(sock, 1)

    result = _same(servers, action)
    assert result[1:] == (0, AUTH_FAILED, wire.p_buffer(None), True)  # type: ignore[index]
    assert "GSSAPI" in servers["fastzk"].log_text().split("SASL authentication failed")[-1]


@pytest.mark.parametrize("service", ["other", None])
def test_kazoo_refused(realm: Realm, servers: dict[str, ServerProcess],
                       service: str | None) -> None:
    """A ticket for another service, and a DIGEST-MD5 client on a Kerberos server: both
    AuthFailed."""
    def action(server: ServerProcess) -> str:
        options = ({"mechanism": "DIGEST-MD5", "username": "bob", "password": "x"}
                   if service is None else {"mechanism": "GSSAPI", "service": service,
                                            "principal": realm.principal("client")})
        client = KazooClient(f"localhost:{server.port}", sasl_options=options, timeout=5,
                             connection_retry={"max_tries": 0})
        try:
            client.start(timeout=10)
            client.exists("/")  # kazoo's start returns on AuthFailed; the next call raises
        except AuthFailedError:
            return "AuthFailed"
        finally:
            client.stop()
            client.close()
        return "connected"

    assert _same(servers, action) == "AuthFailed"


@pytest.mark.skipif(not ZKCLI.exists() or shutil.which("java") is None,
                    reason="Debian zookeeper package (zkCli.sh) and java are required")
def test_java_client_with_a_kerberos_jaas_client_section(
        realm: Realm, servers: dict[str, ServerProcess], tmp_path: Path) -> None:
    """zkCli with a Krb5LoginModule `Client` section and a keytab: SaslAuthenticated and the
    same identity on both servers."""
    client_jaas = tmp_path / "client.jaas"
    client_jaas.write_text(
        f"Client {{\n  {KRB5_MODULE} required\n  useKeyTab=true\n"
        f'  keyTab="{realm.client_keytab}"\n  storeKey=true\n  useTicketCache=false\n'
        f'  principal="{realm.principal("client")}";\n}};\n')
    env = dict(os.environ, ZOO_LOG_DIR=str(tmp_path), TZ="UTC",
               CLIENT_JVMFLAGS="-XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Xshare:auto "
                               f"-Djava.security.auth.login.config={client_jaas} "
                               f"-Djava.security.krb5.conf={realm.krb5_conf}")
    env.pop("JAVA_TOOL_OPTIONS", None)

    def action(server: ServerProcess) -> list[str]:
        proc = subprocess.Popen([str(ZKCLI), "-server", f"localhost:{server.port}", "whoami"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=40)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
                proc.wait(5)
        return sorted({line.strip() for line in out.decode("utf-8", "replace").splitlines()
                       if line.startswith(("WatchedEvent state:", "sasl:", "Auth scheme"))})

    result = _same(servers, action)
    assert "WatchedEvent state:SaslAuthenticated type:None path:null" in result  # type: ignore[operator]
    assert f"sasl: {realm.principal('client')}" in result  # type: ignore[operator]


# --- fastzk's configuration ------------------------------------------------------------------


@pytest.mark.parametrize("principal, keytab, message", [
    ("zookeeper/elsewhere", "server", "No key table entry found"),
    (SERVICE, "missing", "not found"),
    (SERVICE, "not-a-keytab", "format"),
])
def test_unusable_keytab_is_a_config_error(realm: Realm, tmp_path: Path, principal: str,
                                           keytab: str, message: str) -> None:
    paths = {"server": realm.server_keytab, "missing": tmp_path / "missing.keytab",
             "not-a-keytab": realm.krb5_conf}
    (tmp_path / "jaas.conf").write_text(
        f'Server {{ {KRB5_MODULE} required useKeyTab=true keyTab="{paths[keytab]}" '
        f'principal="{realm.principal(principal)}"; }};')
    props = {"dataDir": str(tmp_path), "java.security.auth.login.config": "jaas.conf"}
    with pytest.raises(config.ConfigError, match=message) as caught:
        config.from_properties(props, "test", tmp_path)
    assert "\n" not in str(caught.value) and realm.principal(principal) in str(caught.value)


def test_serve_refuses_an_unusable_keytab(realm: Realm, tmp_path: Path) -> None:
    """`fastzk serve` prints one configuration error and exits 2: no traceback."""
    (tmp_path / "jaas.conf").write_text(
        f'Server {{ {KRB5_MODULE} required useKeyTab=true keyTab="{tmp_path / "none"}" '
        f'principal="{realm.principal(SERVICE)}"; }};')
    (tmp_path / "zoo.cfg").write_text(f"dataDir={tmp_path / 'data'}\nclientPort=0\n"
                                      "java.security.auth.login.config=jaas.conf\n")
    proc = subprocess.run([sys.executable, "-m", "fastzk", "serve", str(tmp_path / "zoo.cfg")],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "configuration error" in proc.stderr and "none" in proc.stderr


def test_kerberos_without_the_gssapi_package_is_a_config_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Krb5LoginModule section on a machine without python-gssapi: one line saying what to
    install, not an ImportError."""
    monkeypatch.setitem(sys.modules, "gssapi", None)  # makes `import gssapi` fail
    (tmp_path / "jaas.conf").write_text(
        f'Server {{ {KRB5_MODULE} required useKeyTab=true principal="zookeeper/h@R"; }};')
    props = {"dataDir": str(tmp_path), "java.security.auth.login.config": "jaas.conf"}
    with pytest.raises(config.ConfigError, match="pip install gssapi"):
        config.from_properties(props, "test", tmp_path)

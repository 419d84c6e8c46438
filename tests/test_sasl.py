"""SASL DIGEST-MD5, enforced authentication and skipACL, against Apache ZooKeeper 3.8 and fastzk.

Unit tests check fastzk/server/sasl.py and the JAAS/zoo.cfg reading on their own, with
known-answer vectors computed here (RFC 2831's worked example, and a digest computed with
hashlib independently of the module). The rest starts both servers configured alike (zoo.cfg
keys for fastzk, the same keys plus the JAAS file as JVM system properties for ZooKeeper) and
asserts that the same client actions have the same outcomes, byte for byte on the wire where
the bytes matter: kazoo's SASL path, `sasl:NAME` ACLs, a wrong password, an unknown mechanism,
malformed, oversized and replayed tokens, enforce.auth and skipACL.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import wire
from kazoo.client import KazooClient
from kazoo.exceptions import AuthFailedError, InvalidACLError, NoAuthError
from kazoo.security import make_acl

from fastzk import config, jaas
from fastzk.nemesis.cluster import Cluster
from fastzk.nemesis.servers import ServerProcess, start_server
from fastzk.server import sasl

KINDS = ["zookeeper", "fastzk"]
OP_SASL = 102
OP_GET_ACL = 6
AUTH_FAILED = -115
SESSION_CLOSED_REQUIRE_SASL_AUTH = -124
NO_AUTH = -102
SASL_PROVIDER = "org.apache.zookeeper.server.auth.SASLAuthenticationProvider"
JAAS = """/* the users of both servers */
Server {
    org.apache.zookeeper.server.auth.DigestLoginModule required
    user_super="adminsecret"   // unused by the tests
    user_bob="bobsecret"
    user_alice="alicesecret";
};
Client {
    org.apache.zookeeper.server.auth.DigestLoginModule required
    username="bob" password="bobsecret";
};
"""


# --- an independent DIGEST-MD5 client computation -------------------------------------------


def _h(data: bytes) -> bytes:
    return hashlib.md5(data).digest()


def _hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def digest_response(user: str, password: str, realm: str, nonce: str, cnonce: str,
                    uri: str, rspauth: bool = False) -> str:
    """RFC 2831 2.1.2.1 with qop=auth, nc=00000001, no authzid."""
    a1 = _h(f"{user}:{realm}:{password}".encode()) + f":{nonce}:{cnonce}".encode()
    a2 = (":" if rspauth else "AUTHENTICATE:") + uri
    return _hex(f"{_hex(a1)}:{nonce}:00000001:{cnonce}:auth:{_hex(a2.encode())}".encode())


def client_token(challenge: bytes, user: str, password: str, cnonce: str = "c0ffee") -> bytes:
    """The response a DIGEST-MD5 client sends to `challenge` (parsed here with a regex-free
    split, independent of the server's parser)."""
    fields = dict(part.split("=", 1) for part in challenge.decode().split(","))
    nonce = fields["nonce"].strip('"')
    realm = fields["realm"].strip('"')
    uri = f"zookeeper/{realm}"
    response = digest_response(user, password, realm, nonce, cnonce, uri)
    return (f'charset=utf-8,username="{user}",realm="{realm}",nonce="{nonce}",nc=00000001,'
            f'cnonce="{cnonce}",digest-uri="{uri}",maxbuf=65536,response={response},'
            "qop=auth").encode()


# --- unit: the DIGEST-MD5 module -------------------------------------------------------------


def test_rfc2831_worked_example() -> None:
    """RFC 2831 section 4: the digest and rspauth of its IMAP example."""
    args = ("chris", "secret", "elwood.innosoft.com", "OA6MG9tEQGm2hh", "OA6MHXh6VqTrRk",
            "00000001", "auth", "imap/elwood.innosoft.com", None, False)
    assert sasl.response_value(*args, initial=True) == "d388dad90d4bbd760a152321f2143af7"
    assert sasl.response_value(*args, initial=False) == "ea40f60335c427b5527b84dbabcdfffd"


def _server(seed: int = 1) -> sasl.DigestMD5Server:
    return sasl.DigestMD5Server({"bob": "bobsecret"}, sasl.make_nonce(random.Random(seed)))


def test_exchange_accepts_the_right_password_and_proves_the_server_knows_it() -> None:
    server = _server()
    challenge = server.evaluate(b"")
    assert challenge == (f'realm="zk-sasl-md5",nonce="{server.nonce}",'
                         'charset=utf-8,algorithm=md5-sess').encode()
    final = server.evaluate(client_token(challenge, "bob", "bobsecret"))
    expected = digest_response("bob", "bobsecret", "zk-sasl-md5", server.nonce, "c0ffee",
                               "zookeeper/zk-sasl-md5", rspauth=True)
    assert final == f"rspauth={expected}".encode()
    assert server.user == "bob"


def test_nonce_comes_from_the_injected_rng() -> None:
    assert _server(7).nonce == _server(7).nonce != _server(8).nonce


@pytest.mark.parametrize("mutate", [
    pytest.param(lambda t: t.replace(b"response=", b"response=0"), id="bad-response"),
    pytest.param(lambda t: t.replace(b'username="bob"', b'username="eve"'), id="unknown-user"),
    pytest.param(lambda t: t.replace(b"nc=00000001", b"nc=00000002"), id="nonce-count"),
    pytest.param(lambda t: t.replace(b'nonce="', b'nonce="x'), id="other-nonce"),
    pytest.param(lambda t: t.replace(b"zookeeper/", b"imap/"), id="digest-uri"),
    pytest.param(lambda t: t.replace(b"qop=auth", b"qop=auth-conf"), id="qop"),
    pytest.param(lambda t: t + b',username="bob"', id="duplicate"),
    pytest.param(lambda t: t.replace(b'cnonce="c0ffee",', b""), id="no-cnonce"),
    pytest.param(lambda t: t + b',realm="unterminated', id="unterminated"),
    pytest.param(lambda t: b"\xff\xfe" + t, id="not-utf8"),
    pytest.param(lambda t: t + b"," + b"x" * 5000 + b"=1", id="oversized"),
    pytest.param(lambda t: b"garbage", id="garbage"),
])
def test_exchange_refuses_a_bad_response(mutate: object) -> None:
    server = _server()
    token = client_token(server.evaluate(b""), "bob", "bobsecret")
    with pytest.raises(sasl.SaslError):
        server.evaluate(mutate(token))  # type: ignore[operator]
    assert server.user is None
    with pytest.raises(sasl.SaslError):  # a failure is final
        server.evaluate(b"")


def test_wrong_password_is_refused() -> None:
    server = _server()
    with pytest.raises(sasl.SaslError, match="bad password"):
        server.evaluate(client_token(server.evaluate(b""), "bob", "wrong"))


def test_initial_token_is_ignored_and_replays_are_refused() -> None:
    """As the JDK's server: whatever the first token holds, the answer is the challenge."""
    server = _server()
    assert server.evaluate(b'username="bob"') == server.challenge()
    server = _server()
    token = client_token(server.evaluate(b""), "bob", "bobsecret")
    server.evaluate(token)
    with pytest.raises(sasl.SaslError, match="replayed"):
        server.evaluate(token)
    other = _server(2)  # another connection: another nonce
    other.evaluate(b"")
    with pytest.raises(sasl.SaslError, match="nonce"):
        other.evaluate(token)


# --- unit: JAAS and zoo.cfg ------------------------------------------------------------------


def test_jaas_server_section_users() -> None:
    assert jaas.server_users(JAAS) == (("alice", "alicesecret"), ("bob", "bobsecret"),
                                       ("super", "adminsecret"))
    with pytest.raises(jaas.JaasError, match="no Server section"):
        jaas.server_users("Client { a.B required; };")
    with pytest.raises(jaas.JaasError):
        jaas.server_users('Server { a.B required user_x="y" }')


def _cfg(tmp_path: Path, **keys: str) -> config.Config:
    props = {"dataDir": str(tmp_path), **keys}
    return config.from_properties(props, "test", tmp_path)


def test_config_reads_sasl_enforce_and_skipacl(tmp_path: Path) -> None:
    (tmp_path / "jaas.conf").write_text(JAAS)
    cfg = _cfg(tmp_path, **{"java.security.auth.login.config": "jaas.conf",
                            "authProvider.1": SASL_PROVIDER,
                            "enforce.auth.enabled": "true",
                            "enforce.auth.schemes": "sasl, digest",
                            "skipACL": "yes",
                            "zookeeper.superUser": "super",
                            "allowSaslFailedClients": "true",
                            "zookeeper.sasl.client.canonicalize.hostname": "false"})
    assert dict(cfg.sasl_users or ()) == {"alice": "alicesecret", "bob": "bobsecret",
                                          "super": "adminsecret"}
    assert cfg.enforce_auth_schemes == {"sasl", "digest"}
    assert cfg.skip_acl and cfg.allow_sasl_failed and cfg.sasl_super_user == "super"
    assert any("client option" in w for w in cfg.warnings)
    assert _cfg(tmp_path, **{"authProvider.1": SASL_PROVIDER,
                             "sessionRequireClientSASLAuth": "true"}).enforce_auth_schemes == {
        "sasl"}
    plain = _cfg(tmp_path)
    assert plain.sasl_users is None and not plain.skip_acl and not plain.enforce_auth_schemes
    # a file without a Server section (only the quorum's, say): ZooKeeper's server runs on
    # without SASL for clients, and so does fastzk, saying so
    (tmp_path / "quorum-only.conf").write_text("QuorumServer { a.B required; };")
    quorum_only = _cfg(tmp_path, **{"java.security.auth.login.config": "quorum-only.conf"})
    assert quorum_only.sasl_users is None
    assert any("no Server section" in w for w in quorum_only.warnings)


@pytest.mark.parametrize("keys, message", [
    ({"authProvider.1": "com.example.Nope"}, "unknown authentication provider"),
    ({"java.security.auth.login.config": "missing.conf"}, "cannot read"),
    ({"java.security.auth.login.config": "broken.conf"}, "unterminated string"),
    ({"enforce.auth.enabled": "true"}, "needs enforce.auth.schemes"),
    ({"enforce.auth.enabled": "true", "enforce.auth.schemes": "sasl"}, "not available"),
    ({"sessionRequireClientSASLAuth": "true"}, "not available"),
    ({"skipACL": "true"}, "exactly yes"),
    ({"enforce.auth.enabled": "maybe"}, "not a boolean"),
])
def test_config_errors_are_one_line(tmp_path: Path, keys: dict[str, str], message: str) -> None:
    (tmp_path / "broken.conf").write_text('Server { a.B required user_x="y; };')
    with pytest.raises(config.ConfigError, match=message) as caught:
        _cfg(tmp_path, **keys)
    assert "\n" not in str(caught.value)


def test_jaas_file_from_jvmflags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "jaas.conf").write_text(JAAS)
    (tmp_path / "zoo.cfg").write_text(f"dataDir={tmp_path}\n")
    monkeypatch.setenv("SERVER_JVMFLAGS",
                       f"-Xmx1g -Djava.security.auth.login.config={tmp_path / 'jaas.conf'}")
    assert config.load(tmp_path / "zoo.cfg").sasl_users is not None


# --- both servers ----------------------------------------------------------------------------


def _start(kind: str, workdir: Path, **cfg: object) -> ServerProcess:
    """A server with the JAAS file; ZooKeeper gets it (and the security keys, which it reads
    as system properties) as -D flags too."""
    jaas_path = workdir / "jaas.conf"
    workdir.mkdir(parents=True, exist_ok=True)
    jaas_path.write_text(JAAS)
    keys = {"authProvider.1": SASL_PROVIDER, "java.security.auth.login.config": str(jaas_path),
            **cfg}
    flags = [f"-Djava.security.auth.login.config={jaas_path}"]
    flags += [f"-Dzookeeper.{k}={v}" for k, v in keys.items() if k != "java.security.auth.login.config"]
    return start_server(kind, workdir, jvm_flags=flags, **keys)  # type: ignore[arg-type]


@contextlib.contextmanager
def _servers(tmp: Path, **cfg: object) -> Iterator[dict[str, ServerProcess]]:
    started: dict[str, ServerProcess] = {}
    try:
        for kind in KINDS:
            started[kind] = _start(kind, tmp / kind, **cfg)
        yield started
    finally:
        for proc in started.values():
            proc.stop()


@pytest.fixture(scope="module")
def sasl_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServerProcess]]:
    with _servers(tmp_path_factory.mktemp("sasl")) as servers:
        yield servers


@contextlib.contextmanager
def kazoo(server: ServerProcess, user: str | None = None, password: str = "",
          mechanism: str = "DIGEST-MD5") -> Iterator[KazooClient]:
    with kazoo_hosts(server.connect_string, user, password, mechanism) as client:
        yield client


@contextlib.contextmanager
def kazoo_hosts(hosts: str, user: str | None = None, password: str = "",
                mechanism: str = "DIGEST-MD5") -> Iterator[KazooClient]:
    options = None if user is None else {"mechanism": mechanism, "username": user,
                                         "password": password}
    client = KazooClient(hosts, sasl_options=options, timeout=5,
                         connection_retry={"max_tries": 0})
    try:
        client.start(timeout=10)
        yield client
    finally:
        client.stop()
        client.close()


def _sasl(sock: socket.socket, xid: int, token: bytes | None) -> tuple[wire.ReplyHeader, bytes]:
    sock.sendall(wire.request(xid, OP_SASL, wire.p_buffer(token)))
    return wire.read_reply(sock)


def _authenticate(sock: socket.socket, user: str = "bob", password: str = "bobsecret") -> bytes:
    """A full raw exchange; returns the response token it sent (for replays)."""
    hdr, body = _sasl(sock, 1, b"")
    assert (hdr.xid, hdr.zxid, hdr.err) == (1, 0, 0), hdr
    challenge, _ = wire.parse_buffer(body)
    assert challenge is not None
    token = client_token(challenge, user, password)
    hdr, body = _sasl(sock, 2, token)
    assert (hdr.xid, hdr.zxid, hdr.err) == (2, 0, 0), hdr
    assert (wire.parse_buffer(body)[0] or b"").startswith(b"rspauth=")
    return token


def _refused(sock: socket.socket, xid: int, err: int) -> tuple[int, int, int, bytes, bool]:
    """(xid, zxid, err, body, closed) of the refusal on the wire."""
    hdr, body = wire.read_reply(sock)
    closed, rest = wire.recv_until_closed(sock, 5.0)
    assert (hdr.xid, hdr.err) == (xid, err), hdr
    return hdr.xid, hdr.zxid, hdr.err, body + rest, closed


def _outcomes(servers: dict[str, ServerProcess], action: object) -> dict[str, object]:
    results = {kind: action(server) for kind, server in servers.items()}  # type: ignore[operator]
    for server in servers.values():
        hdr = wire.fresh_session_ping(server.host, server.port)
        assert hdr.err == 0, f"{server.kind} stopped serving"
    return results


def _same(results: dict[str, object]) -> object:
    assert results["fastzk"] == results["zookeeper"], results
    return results["fastzk"]


def test_kazoo_digest_md5_and_sasl_acls(sasl_servers: dict[str, ServerProcess]) -> None:
    def action(server: ServerProcess) -> tuple:
        path = "/sasl-acl"
        with kazoo(server, "bob", "bobsecret") as bob:
            bob.create(path, b"secret", acl=[make_acl("sasl", "bob", all=True)])
            acl = [(a.perms, a.id.scheme, a.id.id) for a in bob.get_acls(path)[0]]
            data = bob.get(path)[0]
            bob.create(path + "-auth", acl=[make_acl("auth", "", read=True, write=True)])
            auth_acl = [(a.perms, a.id.scheme, a.id.id) for a in bob.get_acls(path + "-auth")[0]]
        outcomes = []
        for user, password in ((None, ""), ("alice", "alicesecret")):
            with kazoo(server, user, password) as other:
                try:
                    other.get(path)
                    outcomes.append("read")
                except NoAuthError:
                    outcomes.append("NoAuth")
        return acl, data, auth_acl, outcomes

    assert _same(_outcomes(sasl_servers, action)) == (
        [(31, "sasl", "bob")], b"secret", [(3, "sasl", "bob")], ["NoAuth", "NoAuth"])


def _create_outcome(server: ServerProcess, path: str, ident: str) -> str:
    with kazoo(server) as client:
        try:
            client.create(path, acl=[make_acl("sasl", ident, read=True)])
        except InvalidACLError:
            return "InvalidACL"
        return "created"


@pytest.mark.parametrize("ident, outcome", [
    ("bob", "created"), ("bob/host@REALM", "created"), ("a@b@c", "InvalidACL"),
    ("x/y/z@R", "InvalidACL"), ("x/y/z", "created"),
])
def test_sasl_acl_ids_as_kerberos_names(sasl_servers: dict[str, ServerProcess], ident: str,
                                        outcome: str) -> None:
    """ZooKeeper validates sasl ids as Kerberos names: one with an @ must be name[/host]@REALM."""
    path = "/ident-" + hashlib.md5(ident.encode()).hexdigest()[:8]
    assert _same(_outcomes(sasl_servers,
                           lambda server: _create_outcome(server, path, ident))) == outcome


@pytest.mark.parametrize("kind", KINDS)
def test_sasl_acl_without_the_provider_is_invalid(kind: str, tmp_path: Path) -> None:
    server = start_server(kind, tmp_path)
    try:
        assert _create_outcome(server, "/no-provider", "bob") == "InvalidACL"
    finally:
        server.stop()


@pytest.mark.parametrize("mechanism, password, outcome", [
    ("DIGEST-MD5", "wrong", "AuthFailed"),
    # ZooKeeper's DIGEST-MD5 server ignores PLAIN's initial response and sends its challenge,
    # which kazoo's PLAIN takes as success: the client is connected but holds no sasl identity
    ("PLAIN", "bobsecret", "NoAuth"),
], ids=["wrong-password", "unknown-mechanism"])
def test_kazoo_refused(sasl_servers: dict[str, ServerProcess], mechanism: str,
                       password: str, outcome: str) -> None:
    def action(server: ServerProcess) -> str:
        with kazoo(server, "bob", "bobsecret") as bob:
            bob.ensure_path("/bob-only")
            bob.set_acls("/bob-only", [make_acl("sasl", "bob", all=True)])
        try:
            with kazoo(server, "bob", password, mechanism) as client:
                client.get("/bob-only")
        except AuthFailedError:
            return "AuthFailed"
        except NoAuthError:
            return "NoAuth"
        return "read"

    assert _same(_outcomes(sasl_servers, action)) == outcome


@pytest.mark.parametrize("case", ["wrong-password", "malformed", "oversized",
                                  "oversized-initial", "replay-same-connection",
                                  "replay-other-connection"])
def test_bad_tokens_on_the_wire(sasl_servers: dict[str, ServerProcess], case: str) -> None:
    """Each gets AuthFailed (zxid 0, a null SetSASLResponse body) and the connection closes."""
    replay: dict[str, bytes] = {}

    def action(server: ServerProcess) -> tuple:
        if case == "replay-other-connection":
            sock, _ = wire.handshake(server.host, server.port)
            with sock:
                replay["token"] = _authenticate(sock)
        sock, _ = wire.handshake(server.host, server.port)
        with sock:
            if case == "oversized-initial":
                sock.sendall(wire.request(1, OP_SASL, wire.p_buffer(b"x" * 5000)))
                return _refused(sock, 1, AUTH_FAILED)
            if case == "replay-same-connection":
                token = _authenticate(sock)
                sock.sendall(wire.request(3, OP_SASL, wire.p_buffer(token)))
                return _refused(sock, 3, AUTH_FAILED)
            hdr, body = _sasl(sock, 1, b"")
            challenge = wire.parse_buffer(body)[0] or b""
            token = {
                "wrong-password": lambda: client_token(challenge, "bob", "wrong"),
                "malformed": lambda: b'username="bob,nonce',
                "oversized": lambda: client_token(challenge, "bob", "bobsecret") + b"," + b"x" * 5000 + b"=1",
                "replay-other-connection": lambda: replay["token"],
            }[case]()
            sock.sendall(wire.request(2, OP_SASL, wire.p_buffer(token)))
            return _refused(sock, 2, AUTH_FAILED)

    result = _same(_outcomes(sasl_servers, action))
    assert result[1:] == (0, AUTH_FAILED, wire.p_buffer(None), True)  # type: ignore[index]


def test_response_before_the_challenge_gets_the_challenge(
        sasl_servers: dict[str, ServerProcess]) -> None:
    """A non-empty first token (a digest response sent before any challenge, or another
    mechanism's initial response) is ignored by ZooKeeper's DIGEST-MD5 server: the challenge
    comes back, and the exchange goes on from there."""
    def action(server: ServerProcess) -> tuple:
        sock, _ = wire.handshake(server.host, server.port)
        with sock:
            hdr, body = _sasl(sock, 1, b'username="bob",response=00')
            challenge = wire.parse_buffer(body)[0] or b""
            shape = [part.split("=", 1)[0] for part in challenge.decode().split(",")]
            hdr2, body2 = _sasl(sock, 2, client_token(challenge, "bob", "bobsecret"))
            return (hdr.zxid, hdr.err, shape, len(challenge), hdr2.err,
                    (wire.parse_buffer(body2)[0] or b"")[:8])

    assert _same(_outcomes(sasl_servers, action)) == (
        0, 0, ["realm", "nonce", "charset", "algorithm"], 101, 0, b"rspauth=")


def test_sasl_packet_before_the_handshake(sasl_servers: dict[str, ServerProcess]) -> None:
    """The first frame is read as a ConnectRequest: a sasl packet is too short for one."""
    def action(server: ServerProcess) -> tuple:
        with contextlib.closing(wire.connect(server.host, server.port)) as sock:
            sock.sendall(wire.request(1, OP_SASL, wire.p_buffer(b"")))
            return wire.recv_until_closed(sock, 5.0)

    assert _same(_outcomes(sasl_servers, action)) == (True, b"")


def test_sasl_pipelined_behind_the_connect_request(sasl_servers: dict[str, ServerProcess]) -> None:
    """A sasl packet sent right behind the ConnectRequest, before its answer, waits for the
    session and is then answered with the challenge."""
    def action(server: ServerProcess) -> tuple:
        with contextlib.closing(wire.connect(server.host, server.port)) as sock:
            sock.sendall(wire.connect_request() + wire.request(1, OP_SASL, wire.p_buffer(b"")))
            connected = wire.parse_connect_response(wire.read_frame(sock)).session_id != 0
            hdr, body = wire.read_reply(sock)
            challenge = wire.parse_buffer(body)[0] or b""
            return connected, hdr.xid, hdr.zxid, hdr.err, challenge.startswith(b'realm="')

    assert _same(_outcomes(sasl_servers, action)) == (True, 1, 0, 0, True)


def _get_data(sock: socket.socket, xid: int, path: str) -> wire.ReplyHeader:
    sock.sendall(wire.get_data_request(xid, path))
    return wire.read_reply(sock)[0]


def test_enforce_auth(tmp_path: Path) -> None:
    """enforce.auth.enabled: an unauthenticated request gets SessionClosedRequireAuth (zxid 0,
    no body) and the connection closes; after sasl or digest auth requests are served."""
    def action(server: ServerProcess) -> tuple:
        results: list[object] = []
        sock, _ = wire.handshake(server.host, server.port)
        with sock:
            sock.sendall(wire.get_data_request(1, "/"))
            results.append(_refused(sock, 1, SESSION_CLOSED_REQUIRE_SASL_AUTH))
        sock, _ = wire.handshake(server.host, server.port)
        with sock:
            sock.sendall(wire.ping_request())
            results.append(_refused(sock, wire.XID_PING, SESSION_CLOSED_REQUIRE_SASL_AUTH))
        sock, _ = wire.handshake(server.host, server.port)
        with sock:
            _authenticate(sock)
            results.append(_get_data(sock, 3, "/").err)
            results.append(wire.ping(sock).err)
        sock, _ = wire.handshake(server.host, server.port)
        with sock:
            sock.sendall(wire.request(wire.XID_AUTH, wire.OP_AUTH, wire.p_int(0)
                                      + wire.p_ustring("digest") + wire.p_buffer(b"u:p")))
            results.append(wire.read_reply(sock)[0].err)
            results.append(_get_data(sock, 1, "/").err)
        sock, _ = wire.handshake(server.host, server.port)
        with sock:  # a failed exchange: the error says authentication is required
            hdr, body = _sasl(sock, 1, b"")
            sock.sendall(wire.request(2, OP_SASL, wire.p_buffer(
                client_token(wire.parse_buffer(body)[0] or b"", "bob", "wrong"))))
            results.append(_refused(sock, 2, SESSION_CLOSED_REQUIRE_SASL_AUTH))
        return tuple(results)

    with _servers(tmp_path, **{"enforce.auth.enabled": "true",
                               "enforce.auth.schemes": "sasl,digest"}) as servers:
        result = _same(_outcomes_unauthenticated(servers, action))
    assert result == ((1, 0, SESSION_CLOSED_REQUIRE_SASL_AUTH, b"", True),
                      (wire.XID_PING, 0, SESSION_CLOSED_REQUIRE_SASL_AUTH, b"", True),
                      0, 0, 0, 0,
                      (2, 0, SESSION_CLOSED_REQUIRE_SASL_AUTH, wire.p_buffer(None), True))


def test_allow_sasl_failed_clients(tmp_path: Path) -> None:
    """allowSaslFailedClients=true: a wrong password gets err 0 and a null token, and the
    connection stays open without a sasl identity."""
    def action(server: ServerProcess) -> tuple:
        sock, _ = wire.handshake(server.host, server.port)
        with sock:
            create = wire.create_request(1, "/guarded", b"",
                                         acl=wire.p_int(1) + wire.p_acl(1, "sasl", "bob"))
            sock.sendall(create)
            created = wire.read_reply(sock)[0].err
            hdr, body = _sasl(sock, 2, b"")
            hdr, body = _sasl(sock, 3, client_token(wire.parse_buffer(body)[0] or b"", "bob",
                                                     "wrong"))
            return created, hdr.zxid, hdr.err, body, _get_data(sock, 4, "/guarded").err

    with _servers(tmp_path, allowSaslFailedClients="true") as servers:
        assert _same(_outcomes(servers, action)) == (0, 0, 0, wire.p_buffer(None), NO_AUTH)


def test_session_require_client_sasl_auth(tmp_path: Path) -> None:
    """sessionRequireClientSASLAuth=true is enforce.auth with the sasl scheme alone: a digest
    identity does not count."""
    def action(server: ServerProcess) -> tuple:
        sock, _ = wire.handshake(server.host, server.port)
        with sock:
            sock.sendall(wire.request(wire.XID_AUTH, wire.OP_AUTH, wire.p_int(0)
                                      + wire.p_ustring("digest") + wire.p_buffer(b"u:p")))
            auth = wire.read_reply(sock)[0].err
            sock.sendall(wire.exists_request(1, "/"))
            return auth, _refused(sock, 1, SESSION_CLOSED_REQUIRE_SASL_AUTH)

    with _servers(tmp_path, sessionRequireClientSASLAuth="true") as servers:
        assert _same(_outcomes_unauthenticated(servers, action)) == (
            0, (1, 0, SESSION_CLOSED_REQUIRE_SASL_AUTH, b"", True))


def _outcomes_unauthenticated(servers: dict[str, ServerProcess], action: object) -> dict:
    """As _outcomes, but the still-serving check authenticates first (enforce.auth is on)."""
    results = {kind: action(server) for kind, server in servers.items()}  # type: ignore[operator]
    for server in servers.values():
        sock, _ = wire.handshake(server.host, server.port)
        with sock:
            _authenticate(sock, "alice", "alicesecret")
            assert wire.ping(sock).err == 0
    return results


def test_sasl_super_user(tmp_path: Path) -> None:
    """superUser=NAME: that SASL user passes every ACL check (ZooKeeper's isSaslSuperUser)."""
    def action(server: ServerProcess) -> tuple:
        with kazoo(server, "bob", "bobsecret") as bob:
            bob.create("/bobs", b"x", acl=[make_acl("sasl", "bob", read=True)])
        outcomes = []
        for user, password in (("super", "adminsecret"), ("alice", "alicesecret")):
            with kazoo(server, user, password) as client:
                try:
                    outcomes.append(client.get("/bobs")[0])
                except NoAuthError:
                    outcomes.append("NoAuth")
        return tuple(outcomes)

    with _servers(tmp_path, superUser="super") as servers:
        assert _same(_outcomes(servers, action)) == (b"x", "NoAuth")


def test_skip_acl(tmp_path: Path) -> None:
    """skipACL=yes: a node only bob may touch is read, its ACL shown and deleted by anyone."""
    def action(server: ServerProcess) -> tuple:
        with kazoo(server, "bob", "bobsecret") as bob:
            bob.create("/private", b"x", acl=[make_acl("sasl", "bob", all=True)])
        with kazoo(server) as anyone:
            data = anyone.get("/private")[0]
            acl = [(a.perms, a.id.scheme, a.id.id) for a in anyone.get_acls("/private")[0]]
            anyone.delete("/private")
        return data, acl

    with _servers(tmp_path, skipACL="yes") as servers:
        assert _same(_outcomes(servers, action)) == (b"x", [(31, "sasl", "bob")])


def test_fastzk_ensemble_forwards_sasl_identities(tmp_path: Path) -> None:
    """On a 3-member fastzk ensemble with enforce.auth: a write of a SASL user on a follower is
    decided by the leader with that user's identity; ACLs hold on every member."""
    jaas_path = tmp_path / "jaas.conf"
    jaas_path.write_text(JAAS)
    cfg = {"authProvider.1": SASL_PROVIDER, "java.security.auth.login.config": str(jaas_path),
           "enforce.auth.enabled": "true", "enforce.auth.schemes": "sasl"}
    with Cluster("fastzk", 3, cfg=cfg, parent_dir=tmp_path) as cluster:
        cluster.wait_for_leader()
        follower, other = cluster.followers()[0], cluster.members[0]
        with kazoo_hosts(follower.connect_string(), "bob", "bobsecret") as bob:
            bob.create("/ens", b"b", acl=[make_acl("sasl", "bob", all=True)])
            bob.sync("/ens")
        with kazoo_hosts(other.connect_string(), "bob", "bobsecret") as bob:
            bob.sync("/ens")
            assert bob.get("/ens")[0] == b"b"
        with kazoo_hosts(other.connect_string(), "alice", "alicesecret") as alice:
            alice.sync("/")
            with pytest.raises(NoAuthError):
                alice.get("/ens")
        host, port = follower.connect_string().rsplit(":", 1)
        sock, _ = wire.handshake(host, int(port))
        with sock:
            sock.sendall(wire.exists_request(1, "/ens"))
            assert _refused(sock, 1, SESSION_CLOSED_REQUIRE_SASL_AUTH)[1:] == (
                0, SESSION_CLOSED_REQUIRE_SASL_AUTH, b"", True)


ZKCLI = Path("/usr/share/zookeeper/bin/zkCli.sh")


@pytest.mark.skipif(not ZKCLI.exists() or shutil.which("java") is None,
                    reason="Debian zookeeper package (zkCli.sh) and java are required")
@pytest.mark.parametrize("password", ["bobsecret", "wrong"])
def test_java_client_with_a_jaas_client_section(sasl_servers: dict[str, ServerProcess],
                                                 tmp_path: Path, password: str) -> None:
    """zkCli (the JDK's DIGEST-MD5 client, which also checks the server's rspauth) with a JAAS
    `Client` section: the same events and identities on both servers."""
    client_jaas = tmp_path / "client.jaas"
    client_jaas.write_text("Client {\n  org.apache.zookeeper.server.auth.DigestLoginModule "
                           f'required\n  username="bob"\n  password="{password}";\n}};\n')
    env = dict(os.environ, ZOO_LOG_DIR=str(tmp_path), TZ="UTC",
               CLIENT_JVMFLAGS="-XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Xshare:auto "
                               f"-Djava.security.auth.login.config={client_jaas}")
    env.pop("JAVA_TOOL_OPTIONS", None)

    def action(server: ServerProcess) -> list[str]:
        proc = subprocess.Popen([str(ZKCLI), "-server", server.connect_string, "whoami"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=40)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
                proc.wait(5)
        lines = out.decode("utf-8", "replace").splitlines()
        # the watcher's events and the command's output interleave as threads run: compare
        # which lines appear, not their order
        return sorted({line.strip() for line in lines
                       if line.startswith(("WatchedEvent state:", "sasl:", "ip:", "Auth scheme"))})

    result = _same(_outcomes(sasl_servers, action))
    if password == "bobsecret":
        assert "WatchedEvent state:SaslAuthenticated type:None path:null" in result
        assert "sasl: bob" in result  # type: ignore[operator]
    else:
        assert "WatchedEvent state:AuthFailed type:None path:null" in result

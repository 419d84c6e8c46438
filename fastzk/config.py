"""The one place that reads configuration: a ZooKeeper-style zoo.cfg, or the embedded default.

Every limit the server enforces is read and validated here, once. Keys ZooKeeper knows but
fastzk does not use yet, and keys nobody knows, are reported as warnings rather than silently
dropped, so an operator can point fastzk at the zoo.cfg they already have and see what differs.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from fastzk import jaas
from fastzk.server.sasl import GssapiLogin

DEFAULT_4LW = frozenset({"srvr", "stat", "ruok", "isro", "mntr", "conf", "wchs", "dirs"})
ALL_4LW = frozenset(
    {"ruok", "isro", "srvr", "stat", "conf", "cons", "crst", "srst", "envi", "dirs", "wchs",
     "wchc", "wchp", "dump", "mntr", "gtmk", "stmk", "hash"}
)

# Keys of Apache ZooKeeper's zoo.cfg that fastzk accepts but does not act on yet.
KNOWN_UNUSED = frozenset(
    {
        "autopurge.purgeInterval", "reconfigEnabled",
        "metricsProvider.className", "metricsProvider.httpPort",
        "quorumListenOnAllIPs", "syncEnabled", "clientPortListenBacklog",
        "forceSync", "leaderServes", "cnxTimeout", "audit.enable",
        "localSessionsEnabled", "localSessionsUpgradingEnabled",
        "dynamicConfigFile", "maxResponseCacheSize",
    }
)


CRASH_POINTS = frozenset({"log-truncated", "snapshot-written", "snapshot-renamed",
                          "log-dropped"})


class ConfigError(ValueError):
    pass


# Client TLS keys as ZooKeeper names them (also with its system properties' `zookeeper.`
# prefix); read by `_tls`. serverCnxnFactory must name Netty for ZooKeeper's TLS: fastzk
# has one connection layer and ignores it.
TLS_KEYS = frozenset(
    {"secureClientPort", "secureClientPortAddress", "client.portUnification",
     "serverCnxnFactory", "ssl.keyStore.location", "ssl.keyStore.password",
     "ssl.keyStore.type", "ssl.trustStore.location", "ssl.trustStore.password",
     "ssl.trustStore.type", "ssl.clientAuth", "ssl.protocol", "ssl.enabledProtocols",
     "ssl.ciphersuites", "ssl.handshakeDetectionTimeoutMillis", "ssl.authProvider",
     "ssl.hostnameVerification", "ssl.clientHostnameVerification",
     "X509AuthenticationProvider.superUser",
     # the quorum's (mutual TLS between members): read by `_quorum_tls`
     "sslQuorum", "ssl.quorum.keyStore.location", "ssl.quorum.keyStore.password",
     "ssl.quorum.keyStore.type", "ssl.quorum.trustStore.location",
     "ssl.quorum.trustStore.password", "ssl.quorum.trustStore.type", "ssl.quorum.protocol",
     "ssl.quorum.enabledProtocols", "ssl.quorum.ciphersuites",
     "ssl.quorum.handshakeDetectionTimeoutMillis", "ssl.quorum.hostnameVerification",
     # the admin endpoint's HTTPS (with the ssl.quorum.* stores): read by `_admin_tls`
     "admin.forceHttps", "admin.portUnification", "admin.needClientAuth"}
)
STORE_TYPES = {".pem": "PEM", ".crt": "PEM", ".key": "PEM", ".p12": "PKCS12",
               ".pfx": "PKCS12", ".pkcs12": "PKCS12", ".jks": "JKS"}
TLS_VERSIONS = ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")


@dataclass(frozen=True)
class TlsSettings:
    """The client port's TLS, as ZooKeeper's ssl.* keys give it, or the quorum's
    (ssl.quorum.*); runtime/tls.py turns it into SSL contexts (and reloads the client port's
    when the files change)."""

    key_store: Path
    key_store_type: str  # PEM or PKCS12
    trust_store: Path | None = None  # None: the system's CA certificates
    trust_store_type: str = "PEM"
    key_store_password: str | None = None
    trust_store_password: str | None = None
    client_auth: str = "need"  # need, want or none (ssl.clientAuth)
    protocols: tuple[str, ...] = ("TLSv1.2", "TLSv1.3")
    ciphersuites: tuple[str, ...] = ()  # empty: OpenSSL's defaults
    handshake_timeout_ms: int = 5000  # ssl.handshakeDetectionTimeoutMillis
    x509_super_user: str | None = None  # X509AuthenticationProvider.superUser
    prefix: str = "ssl."  # where its keys come from, for error messages
    # ssl.quorum.hostnameVerification: a member's certificate must name its server.N address
    hostname_verification: bool = False


@dataclass(frozen=True)
class Member:
    """One `server.N` line: where a member listens for its peers, and its client address."""

    server_id: int
    host: str
    quorum_port: int
    election_port: int
    observer: bool = False
    client_host: str | None = None
    client_port: int | None = None

    def spec(self) -> str:
        """The line's value as ZooKeeper writes it in /zookeeper/config."""
        role = "observer" if self.observer else "participant"
        text = f"{self.host}:{self.quorum_port}:{self.election_port}:{role}"
        if self.client_port is not None:
            text += f";{self.client_host or '0.0.0.0'}:{self.client_port}"
        return text


@dataclass(frozen=True)
class QuorumAuth:
    """What a member proves itself with on peer links (runtime/peers.py's handshake): the
    user name and key it dials with, the keys it accepts by user name, and whether a peer that
    does not authenticate is refused when it dials us (`server_required`) or when we dial it
    (`learner_required`). The shared secret is one nameless user; ZooKeeper's quorum.auth.*
    keys give named users from the JAAS QuorumServer and QuorumLearner sections."""

    user: str
    key: bytes
    keys: tuple[tuple[str, bytes], ...]
    server_required: bool = True
    learner_required: bool = True
    origin: str = "fastzk.quorumSecretFile"  # what an operator should look at when refused


@dataclass(frozen=True)
class Config:
    data_dir: Path = Path("fastzk-data")
    tick_time: int = 2000
    client_port: int = 2181
    client_port_address: str = "127.0.0.1"
    plain_client_port: bool = True  # False: secureClientPort without clientPort
    secure_client_port: int | None = None  # secureClientPort
    secure_client_port_address: str = "127.0.0.1"  # secureClientPortAddress
    port_unification: bool = False  # client.portUnification: TLS and plaintext on clientPort
    tls: TlsSettings | None = None
    quorum_tls: TlsSettings | None = None  # sslQuorum: mutual TLS between members
    min_session_timeout: int = 4000
    max_session_timeout: int = 40000
    max_client_cnxns: int = 60
    jute_max_buffer: int = 0xFFFFF
    four_letter_words: frozenset[str] = DEFAULT_4LW
    # resource limits: reading from a connection pauses while one of them is reached
    max_outstanding: int = 1000  # fastzk.clientOutstandingLimit: requests in flight per connection
    client_outstanding_limit_bytes: int = 16 << 20  # fastzk.clientOutstandingLimitBytes
    global_outstanding_limit: int = 1000  # globalOutstandingLimit: requests in flight, all clients
    large_request_max_bytes: int = 100 << 20  # largeRequestMaxBytes: their bytes, all clients
    large_request_threshold: int = -1  # largeRequestThreshold: only larger requests count (-1: all)
    client_output_limit_bytes: int = 4 << 20  # fastzk.clientOutputLimitBytes: unsent replies
    client_output_hard_limit_bytes: int = 64 << 20  # fastzk.clientOutputHardLimitBytes: closed
    super_digest: str | None = None
    ttl_enabled: bool = True  # extendedTypesEnabled: on by default (ZooKeeper: off)
    admin_enabled: bool = True
    admin_address: str = "127.0.0.1"
    admin_port: int = 8080
    # HTTPS on the admin port (admin.forceHttps, or admin.portUnification: both on one port),
    # with the quorum's stores as ZooKeeper's AdminServer takes them
    admin_tls: TlsSettings | None = None
    admin_unified: bool = False
    handshake_timeout_ms: int = 10000
    container_check_interval_ms: int = 60000
    container_max_per_minute: int = 10000
    # durability (runtime/storage.py, wal.py, snapshot.py)
    data_log_dir: Path | None = None  # dataLogDir: the WAL's directory (default: dataDir)
    snap_count: int = 100000  # snapCount: txns between snapshots (with jitter, as ZooKeeper)
    snap_size_limit_kb: int = 4194304  # snapSizeLimitInKb: log KB between snapshots (0: off)
    snap_retain_count: int = 3  # autopurge.snapRetainCount: snapshots kept, with their log
    prealloc_kb: int = 65536  # preAllocSize: KB per log segment (preallocated, roll size)
    wal_max_batch_bytes: int = 8 * 1024 * 1024  # fastzk.walMaxBatchBytes: bytes per write
    snapshot_chunk_nodes: int = 1000  # fastzk.snapshotChunkNodes: nodes per loop callback
    # fastzk.archiveDir: a copy of every closed log segment and snapshot, made before
    # retention may delete them (backup/archive.py); None: no archiving
    archive_dir: Path | None = None
    # TESTING ONLY: acknowledge writes before they are durable, and write them
    # unsafe_write_delay_ms later, so that a crash loses acknowledged writes (the crash
    # test's negative control). Never set this on a server whose data matters.
    unsafe_ack_before_sync: bool = False  # fastzk.unsafeAckBeforeSync
    unsafe_write_delay_ms: int = 500  # fastzk.unsafeWriteDelayMs
    # ensemble (server.N lines, dataDir/myid)
    server_id: int = 1  # myid; 1 when standalone
    members: tuple[Member, ...] = ()  # empty: standalone
    init_limit: int = 10  # initLimit: ticks a (re)joining server may take to sync
    sync_limit: int = 5  # syncLimit: ticks without the leader before a new election
    sync_window_txns: int = 20000  # fastzk.syncWindowTxns: log kept in memory to catch up peers
    read_only_enabled: bool = False  # readonlymode.enabled (also zookeeper.readonlymode.enabled)
    # TESTING ONLY: the zxid counter each epoch starts at, so that a test reaches the end of
    # the 32-bit counter (and the move to the next epoch) in a few hundred writes
    first_zxid_counter: int = 1  # fastzk.firstZxidCounter
    # TESTING ONLY: named points in log truncation and snapshot installation where the
    # process dies (once per data dir), for the crash-in-the-middle tests of follower sync
    crash_points: frozenset[str] = frozenset()  # fastzk.crashPoints
    # how members prove who they are before a peer connection carries anything
    # (fastzk.quorumSecretFile or quorum.auth.*); None: told apart by their address only
    quorum_auth: QuorumAuth | None = None
    # security: SASL users from the JAAS Server section (None: no SASL), the auth schemes with
    # a provider (authProvider.N), enforce.auth.schemes (empty: off), skipACL
    sasl_users: tuple[tuple[str, str], ...] | None = None
    # SASL GSSAPI instead, when the Server section is a Krb5LoginModule: the acceptor
    # credentials (acquired at load time) and kerberos.removeHost/RealmFromPrincipal
    sasl_gssapi: GssapiLogin | None = None
    auth_providers: frozenset[str] = frozenset({"ip", "digest"})
    enforce_auth_schemes: frozenset[str] = frozenset()
    skip_acl: bool = False
    sasl_super_user: str | None = None  # superUser: this SASL user is also ("super", "")
    allow_sasl_failed: bool = False  # allowSaslFailedClients: a failed exchange keeps its connection
    source: str = "embedded default"
    warnings: tuple[str, ...] = field(default=())

    @property
    def ensemble(self) -> bool:
        return bool(self.members)

    @property
    def voters(self) -> tuple[int, ...]:
        return tuple(m.server_id for m in self.members if not m.observer) or (self.server_id,)

    @property
    def observers(self) -> tuple[int, ...]:
        return tuple(m.server_id for m in self.members if m.observer)

    def member(self, server_id: int) -> Member:
        return next(m for m in self.members if m.server_id == server_id)

    @property
    def membership(self) -> str:
        """The ensemble as ZooKeeper shows it in `conf` and in /zookeeper/config."""
        if not self.members:
            return ""
        return "".join(f"server.{m.server_id}={m.spec()}\n" for m in self.members) + "version=0"


def _int(key: str, value: str, minimum: int = 0) -> int:
    try:
        number = int(value, 0)
    except ValueError:
        raise ConfigError(f"{key}: not an integer: {value!r}") from None
    if number < minimum:
        raise ConfigError(f"{key}: must be >= {minimum}, got {number}")
    return number


def _bool(key: str, value: str) -> bool:
    if value.lower() in ("true", "yes", "1"):
        return True
    if value.lower() in ("false", "no", "0"):
        return False
    raise ConfigError(f"{key}: not a boolean: {value!r}")


def parse_properties(text: str) -> dict[str, str]:
    """Java .properties lines: key=value, key: value or key value; # and ! comments."""
    result: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#!":
            continue
        for index, char in enumerate(line):
            if char in "=: \t":
                key, value = line[:index], line[index + 1:].strip()
                if char in " \t" and value[:1] in ("=", ":"):
                    value = value[1:].strip()
                break
        else:
            key, value = line, ""
        result[key] = value
    return result


def _port(key: str, text: str) -> int:
    port = _int(key, text, 1)
    if port > 65535:
        raise ConfigError(f"{key}: port {port} out of range")
    return port


def _member(key: str, value: str) -> Member:
    """`server.N=host:quorumPort:electionPort[:participant|:observer][;[clientHost:]clientPort]`"""
    try:
        server_id = int(key.removeprefix("server."))
    except ValueError:
        raise ConfigError(f"{key}: the server id must be a number") from None
    if not 0 < server_id < 256:
        raise ConfigError(f"{key}: server ids go from 1 to 255 (they are the top byte of "
                          "session ids)")
    address, _, client = value.partition(";")
    parts = address.strip().split(":")
    if parts and parts[0].startswith("[") and "]" in address:  # [ipv6]:port:port
        host, _, rest = address.strip()[1:].partition("]")
        parts = [host] + rest.lstrip(":").split(":")
    if len(parts) not in (3, 4) or not parts[0]:
        raise ConfigError(f"{key}={value}: expected host:quorumPort:electionPort"
                          "[:participant|:observer][;[clientHost:]clientPort]")
    role = parts[3] if len(parts) == 4 else "participant"
    if role not in ("participant", "observer"):
        raise ConfigError(f"{key}={value}: role must be participant or observer, not {role!r}")
    client_host = client_port = None
    if client.strip():
        host_part, sep, port_part = client.strip().rpartition(":")
        client_host = host_part if sep else None
        client_port = _port(key, port_part)
    return Member(server_id, parts[0], _port(key, parts[1]), _port(key, parts[2]),
                  role == "observer", client_host, client_port)


def _ensemble(values: dict[str, object], members: list[Member], props: dict[str, str],
              data_dir: Path | None, warnings: list[str]) -> None:
    """Validates the server list and reads myid; every mistake is one clear line."""
    seen: dict[tuple[str, int], int] = {}
    for m in members:
        for port in (m.quorum_port, m.election_port):
            other = seen.setdefault((m.host, port), m.server_id)
            if other != m.server_id or m.quorum_port == m.election_port:
                raise ConfigError(f"server.{m.server_id}: port {port} on {m.host} is also used "
                                  f"by server.{other}")
    voters = [m for m in members if not m.observer]
    if not voters:
        raise ConfigError("server.N: no participant (every server is an observer)")
    if len(voters) % 2 == 0:
        warnings.append(f"{len(voters)} voting servers: an even number tolerates no more "
                        f"failures than {len(voters) - 1}, and needs a larger majority")
    standalone_ok = props.get("standaloneEnabled", "true").lower() != "false"
    if len(members) == 1 and standalone_ok:
        warnings.append("one server.N line and standaloneEnabled=true: running standalone")
        return
    if data_dir is None:
        return  # reported as a missing dataDir
    myid_path = data_dir / "myid"
    try:
        text = myid_path.read_text().strip()
    except OSError as error:
        raise ConfigError(f"{myid_path}: cannot read this server's id ({error.strerror}); "
                          "write its number from the server.N lines into that file") from None
    try:
        server_id = int(text)
    except ValueError:
        raise ConfigError(f"{myid_path}: not a number: {text!r}") from None
    me = next((m for m in members if m.server_id == server_id), None)
    if me is None:
        raise ConfigError(f"{myid_path} says {server_id}, which has no server.{server_id} line")
    if props.get("peerType") == "observer" and not me.observer:
        raise ConfigError(f"peerType=observer but server.{server_id} is a participant "
                          "(add :observer to its line)")
    values["server_id"] = server_id
    values["members"] = tuple(members)
    if "clientPort" not in props and me.client_port is not None:
        values["client_port"] = me.client_port
        if me.client_host is not None:
            values["client_port_address"] = me.client_host


def _whitelist(value: str) -> frozenset[str]:
    words = {word.strip() for word in value.split(",") if word.strip()}
    if "*" in words:
        return ALL_4LW
    unknown = words - ALL_4LW
    if unknown:
        raise ConfigError(f"4lw.commands.whitelist: unknown commands {sorted(unknown)}")
    return frozenset(words)


def _secret(key: str, value: str, base: Path, warnings: list[str]) -> bytes:
    """The shared quorum secret: the file's bytes without trailing line ends."""
    path = Path(value) if Path(value).is_absolute() else base / value
    try:
        secret = path.read_bytes().rstrip(b"\r\n")
        mode = path.stat().st_mode
    except OSError as error:
        raise ConfigError(f"{key}: cannot read {path}: {error.strerror}") from None
    if len(secret) < 16:
        raise ConfigError(f"{key}: {path} holds {len(secret)} bytes; use at least 16 random "
                          "bytes (e.g. `head -c 32 /dev/urandom | base64 > FILE`)")
    if mode & 0o077:
        warnings.append(f"{key}: {path} is readable by other users (chmod 600 it)")
    return secret


# ZooKeeper's authentication provider classes (authProvider.N) and the scheme each serves
AUTH_PROVIDERS = {
    "org.apache.zookeeper.server.auth.SASLAuthenticationProvider": "sasl",
    "org.apache.zookeeper.server.auth.DigestAuthenticationProvider": "digest",
    "org.apache.zookeeper.server.auth.IPAuthenticationProvider": "ip",
    "org.apache.zookeeper.server.auth.X509AuthenticationProvider": "x509",
}
JAAS_KEY = "java.security.auth.login.config"
# options of ZooKeeper's clients (system properties there), which no server reads
CLIENT_SASL_KEYS = frozenset({
    "sasl.client", "sasl.clientconfig", "sasl.client.canonicalize.hostname",
    "sasl.client.username", "server.principal", "server.realm",
})


# ZooKeeper's keys for SASL between members (system properties there, zoo.cfg keys too)
QUORUM_AUTH_KEYS = frozenset({
    "quorum.auth.enableSasl", "quorum.auth.learnerRequireSasl",
    "quorum.auth.serverRequireSasl", "quorum.auth.learner.saslLoginContext",
    "quorum.auth.server.saslLoginContext", "quorum.auth.kerberos.servicePrincipal",
    "quorum.cnxn.threads.size",
})


def _quorum_auth(values: dict[str, object], props: dict[str, str], base: Path,
                 warnings: list[str]) -> None:
    """quorum.auth.*: members authenticate with the DIGEST users of the JAAS file, a member
    dialing with its QuorumLearner user and password, a member accepting the QuorumServer
    users. fastzk proves the password with its HMAC handshake (runtime/peers.py) rather than
    SASL DIGEST-MD5 messages; what is refused is what ZooKeeper refuses."""
    enabled = _bool("quorum.auth.enableSasl", props.get("quorum.auth.enableSasl", "false"))
    required = {name: _bool(f"quorum.auth.{name}RequireSasl",
                            props.get(f"quorum.auth.{name}RequireSasl", "false"))
                for name in ("server", "learner")}
    if not enabled:
        for name, value in required.items():
            if value:
                raise ConfigError(f"quorum.auth.{name}RequireSasl=true needs "
                                  "quorum.auth.enableSasl=true")
        return
    if values.get("quorum_auth") is not None:
        raise ConfigError("fastzk.quorumSecretFile and quorum.auth.enableSasl both "
                          "authenticate members: configure one of them")
    if "quorum.auth.kerberos.servicePrincipal" in props:
        warnings.append("quorum.auth.kerberos.servicePrincipal: Kerberos between members is "
                        "not supported (DIGEST users only): ignored")
    if JAAS_KEY not in props:
        raise ConfigError("quorum.auth.enableSasl=true needs the JAAS file "
                          f"({JAAS_KEY}) with the QuorumServer and QuorumLearner sections")
    path = Path(props[JAAS_KEY])
    path = path if path.is_absolute() else base / path
    server = props.get("quorum.auth.server.saslLoginContext", "QuorumServer")
    learner = props.get("quorum.auth.learner.saslLoginContext", "QuorumLearner")
    try:
        text = path.read_text(encoding="utf-8")
        users = jaas.server_users(text, server)
        user, password = jaas.digest_login(text, learner)
    except OSError as error:
        raise ConfigError(f"{JAAS_KEY}: cannot read {path}: {error.strerror}") from None
    except jaas.JaasError as error:
        raise ConfigError(f"{JAAS_KEY}: {path}: {error}") from None
    if any(len(name.encode()) > 255 for name, _ in ((user, ""), *users)):
        raise ConfigError(f"{JAAS_KEY}: {path}: quorum user names are at most 255 bytes")
    if not users:
        raise ConfigError(f"{JAAS_KEY}: {path}: section {server} has no user_NAME=\"password\" "
                          "entry, so no member could authenticate to this one")
    if not required["server"]:
        warnings.append("quorum.auth.serverRequireSasl=false: members that do not "
                        "authenticate are still accepted (a rolling upgrade's first step); set "
                        "it to true once every member has quorum.auth.enableSasl=true")
    values["quorum_auth"] = QuorumAuth(
        user=user, key=password.encode(), keys=tuple((name, pw.encode()) for name, pw in users),
        server_required=required["server"], learner_required=required["learner"],
        origin=f"quorum.auth.* (JAAS {server}/{learner} in {path})")


def _security_key(key: str) -> bool:
    bare = key.removeprefix("zookeeper.")
    return (key == JAAS_KEY or bare.startswith("authProvider.") or bare in CLIENT_SASL_KEYS
            or bare in ("sasl.serverconfig", "enforce.auth.enabled", "enforce.auth.schemes",
                        "sessionRequireClientSASLAuth", "skipACL", "superUser",
                        "allowSaslFailedClients", "kerberos.removeHostFromPrincipal",
                        "kerberos.removeRealmFromPrincipal"))


def _security(values: dict[str, object], props: dict[str, str], base: Path,
              warnings: list[str]) -> None:
    """SASL users, providers, enforced authentication and skipACL, checked together: each
    inconsistency is one start-up error, as ZooKeeper's are."""
    bare = {key.removeprefix("zookeeper."): (key, value) for key, value in props.items()}
    providers = {"ip", "digest"}
    for name, (key, value) in sorted(bare.items()):
        if name.startswith("authProvider."):
            scheme = AUTH_PROVIDERS.get(value.strip())
            if scheme is None:
                raise ConfigError(f"{key}: unknown authentication provider class {value!r} "
                                  f"(known: {', '.join(sorted(AUTH_PROVIDERS))})")
            providers.add(scheme)
        elif name in CLIENT_SASL_KEYS:
            warnings.append(f"{key}: a client option; servers ignore it (as ZooKeeper's do)")
    values["auth_providers"] = frozenset(providers)
    if "superUser" in bare:
        values["sasl_super_user"] = bare["superUser"][1].strip()
    if "allowSaslFailedClients" in bare:
        values["allow_sasl_failed"] = _bool(*bare["allowSaslFailedClients"])
    if JAAS_KEY in props:
        path = Path(props[JAAS_KEY])
        path = path if path.is_absolute() else base / path
        section = bare.get("sasl.serverconfig", ("", "Server"))[1]
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise ConfigError(f"{JAAS_KEY}: cannot read {path}: {error.strerror}") from None
        kerberos = None
        try:  # a file without the section (only the quorum's, say): no SASL for clients,
            # as ZooKeeper's server goes on without it
            if section not in jaas.parse(text):
                warnings.append(f"{JAAS_KEY}: {path} has no {section} section: no SASL for "
                                "clients")
            else:
                kerberos = jaas.server_kerberos(text, section)
                if kerberos is None:
                    values["sasl_users"] = jaas.server_users(text, section)
        except jaas.JaasError as error:
            raise ConfigError(f"{JAAS_KEY}: {path}: {error}") from None
        if kerberos is not None:
            values["sasl_gssapi"] = _gssapi_login(kerberos, bare)
    if "skipACL" in bare:
        key, value = bare["skipACL"]
        if value.strip() not in ("yes", "no"):
            raise ConfigError(f"{key}: yes or no, not {value!r} (ZooKeeper skips ACLs only "
                              "on exactly yes)")
        values["skip_acl"] = value.strip() == "yes"
        if values["skip_acl"]:
            warnings.append(f"{key}=yes: NO ACL is checked; every client may read, change "
                            "and delete every znode")
    schemes: set[str] = set()
    if "sessionRequireClientSASLAuth" in bare:
        key, value = bare["sessionRequireClientSASLAuth"]
        if _bool(key, value):
            schemes = {"sasl"}
    if not schemes and "enforce.auth.enabled" in bare and _bool(*bare["enforce.auth.enabled"]):
        listed = bare.get("enforce.auth.schemes", ("", ""))[1]
        schemes = {scheme.strip() for scheme in listed.split(",") if scheme.strip()}
        if not schemes:
            raise ConfigError("enforce.auth.enabled=true needs enforce.auth.schemes "
                              "(e.g. sasl,digest)")
    for scheme in sorted(schemes):
        if scheme not in providers:
            raise ConfigError(f"enforce.auth.schemes: authentication scheme {scheme} is not "
                              "available (add its authProvider.N line)")
    values["enforce_auth_schemes"] = frozenset(schemes)


def _gssapi_login(kerberos: jaas.KerberosLogin,
                  bare: dict[str, tuple[str, str]]) -> GssapiLogin:
    """The Kerberos acceptor, acquired now so that an unusable keytab or principal stops the
    start with the library's reason. The gssapi package is imported only here: a server
    without Kerberos in its JAAS file runs without it."""
    from fastzk.server import gss

    flags = {name: _bool(*bare[name]) if name in bare else False
             for name in ("kerberos.removeHostFromPrincipal",
                          "kerberos.removeRealmFromPrincipal")}
    try:
        return gss.login(kerberos.principal, kerberos.keytab,
                         remove_host=flags["kerberos.removeHostFromPrincipal"],
                         remove_realm=flags["kerberos.removeRealmFromPrincipal"])
    except gss.GssUnavailable as error:
        raise ConfigError(f"{JAAS_KEY}: Krb5LoginModule: {error}") from None


def _jaas_from_env(environ: dict[str, str] | os._Environ[str]) -> str | None:
    """ZooKeeper's scripts pass the JAAS file as -Djava.security.auth.login.config=... in
    SERVER_JVMFLAGS or JVMFLAGS; the same variables work here."""
    for name in ("SERVER_JVMFLAGS", "JVMFLAGS"):
        found = re.search(r"-D" + re.escape(JAAS_KEY) + r"=(\S+)", environ.get(name, ""))
        if found:
            return str(Path(found.group(1)).absolute())
    return None


def load(path: str | Path | None) -> Config:
    if path is None:
        return Config()
    path = Path(path)
    try:
        props = parse_properties(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror}") from None
    if JAAS_KEY not in props:
        from_env = _jaas_from_env(os.environ)
        if from_env is not None:
            props[JAAS_KEY] = from_env
    return from_properties(props, source=str(path), base=path.parent)


def from_properties(props: dict[str, str], source: str, base: Path) -> Config:
    values: dict[str, object] = {"source": source}
    warnings: list[str] = []
    tick = _int("tickTime", props.get("tickTime", "2000"), 1)
    values["tick_time"] = tick
    min_timeout = max_timeout = None
    members: list[Member] = []
    for key, value in props.items():
        bare = key.removeprefix("zookeeper.")
        if key == "tickTime":
            continue
        if key == "dataDir":
            data_dir = Path(value)
            values["data_dir"] = data_dir if data_dir.is_absolute() else base / data_dir
        elif key == "clientPort":
            values["client_port"] = _int(key, value, 0)
        elif key == "clientPortAddress":
            values["client_port_address"] = value
        elif key == "minSessionTimeout":
            min_timeout = _int(key, value, -1)
        elif key == "maxSessionTimeout":
            max_timeout = _int(key, value, -1)
        elif key == "maxClientCnxns":
            values["max_client_cnxns"] = _int(key, value, 0)
        elif key == "fastzk.clientOutstandingLimit":
            values["max_outstanding"] = _int(key, value, 1)
        elif key == "fastzk.clientOutstandingLimitBytes":
            values["client_outstanding_limit_bytes"] = _int(key, value, 1)
        elif bare == "globalOutstandingLimit":
            values["global_outstanding_limit"] = _int(key, value, 1)
        elif bare == "largeRequestMaxBytes":
            values["large_request_max_bytes"] = _int(key, value, 1)
        elif bare == "largeRequestThreshold":
            values["large_request_threshold"] = _int(key, value, -1)
        elif key == "fastzk.clientOutputLimitBytes":
            values["client_output_limit_bytes"] = _int(key, value, 1)
        elif key == "fastzk.clientOutputHardLimitBytes":
            values["client_output_hard_limit_bytes"] = _int(key, value, 1)
        elif bare == "jute.maxbuffer":
            values["jute_max_buffer"] = _int(key, value, 1024)
        elif key == "4lw.commands.whitelist":
            values["four_letter_words"] = _whitelist(value)
        elif bare == "DigestAuthenticationProvider.superDigest":
            values["super_digest"] = value
        elif bare == "znode.container.checkIntervalMs":
            values["container_check_interval_ms"] = _int(key, value, 1)
        elif bare == "znode.container.maxPerMinute":
            values["container_max_per_minute"] = _int(key, value, 1)
        elif key == "admin.enableServer":
            values["admin_enabled"] = _bool(key, value)
        elif key == "admin.serverAddress":
            values["admin_address"] = value
        elif key == "admin.serverPort":
            values["admin_port"] = _int(key, value, 0)
        elif key == "dataLogDir":
            log_dir = Path(value)
            values["data_log_dir"] = log_dir if log_dir.is_absolute() else base / log_dir
        elif bare == "snapCount":
            values["snap_count"] = _int(key, value, 2)
        elif bare == "snapSizeLimitInKb":
            values["snap_size_limit_kb"] = _int(key, value, -1)
        elif key == "autopurge.snapRetainCount":
            values["snap_retain_count"] = _int(key, value, 1)
        elif bare == "preAllocSize":
            values["prealloc_kb"] = _int(key, value, 1)
        elif key == "fastzk.walMaxBatchBytes":
            values["wal_max_batch_bytes"] = _int(key, value, 4096)
        elif key == "fastzk.snapshotChunkNodes":
            values["snapshot_chunk_nodes"] = _int(key, value, 1)
        elif key == "fastzk.archiveDir":
            archive = Path(value)
            values["archive_dir"] = archive if archive.is_absolute() else base / archive
        elif key == "fastzk.unsafeAckBeforeSync":
            values["unsafe_ack_before_sync"] = _bool(key, value)
            if values["unsafe_ack_before_sync"]:
                warnings.append(f"{key}=true: writes are acknowledged BEFORE they are durable; "
                                "a crash loses them. For testing only.")
        elif key == "fastzk.unsafeWriteDelayMs":
            values["unsafe_write_delay_ms"] = _int(key, value, 0)
        elif bare == "extendedTypesEnabled":
            values["ttl_enabled"] = _bool(key, value)
        elif key.startswith("server."):
            members.append(_member(key, value))
        elif key == "initLimit":
            values["init_limit"] = _int(key, value, 1)
        elif key == "syncLimit":
            values["sync_limit"] = _int(key, value, 1)
        elif key == "electionAlg":
            if value.strip() != "3":
                raise ConfigError(f"electionAlg={value}: only 3 (fast leader election, the only "
                                  "one ZooKeeper 3.4+ has) is supported")
        elif key == "peerType":
            if value not in ("participant", "observer"):
                raise ConfigError(f"peerType: participant or observer, not {value!r}")
        elif key == "standaloneEnabled":
            _bool(key, value)
        elif bare == "readonlymode.enabled":
            values["read_only_enabled"] = _bool(key, value)
        elif key == "fastzk.syncWindowTxns":
            values["sync_window_txns"] = _int(key, value, 100)
        elif key == "fastzk.crashPoints":
            names = frozenset(n.strip() for n in value.split(",") if n.strip())
            unknown = names - CRASH_POINTS
            if unknown:
                raise ConfigError(f"{key}: unknown crash points {sorted(unknown)}; known: "
                                  f"{sorted(CRASH_POINTS)}")
            values["crash_points"] = names
            warnings.append(f"{key}={value}: the server kills itself at these points. For "
                            "testing only.")
        elif key == "fastzk.quorumSecretFile":
            secret = _secret(key, value, base, warnings)
            values["quorum_auth"] = QuorumAuth(user="", key=secret, keys=(("", secret),),
                                               origin=key)
        elif key == "fastzk.firstZxidCounter":
            counter = _int(key, value, 1)
            if counter > 0xFFFFFFF0:
                raise ConfigError(f"{key}: at most {0xFFFFFFF0:#x}")
            values["first_zxid_counter"] = counter
            warnings.append(f"{key}={value}: every epoch starts near the end of its zxid "
                            "counter. For testing only.")
        elif bare in TLS_KEYS:
            continue  # read by _tls, all together
        elif key in QUORUM_AUTH_KEYS:
            continue  # read by _quorum_auth
        elif _security_key(key):
            continue  # read by _security
        elif key in KNOWN_UNUSED:
            warnings.append(f"{key}: accepted but not used by fastzk yet (ignored)")
        else:
            warnings.append(f"{key}: unknown key (ignored)")
    values["min_session_timeout"] = (
        2 * tick if min_timeout in (None, -1) else min_timeout
    )
    values["max_session_timeout"] = (
        20 * tick if max_timeout in (None, -1) else max_timeout
    )
    if values["min_session_timeout"] > values["max_session_timeout"]:
        raise ConfigError("minSessionTimeout must not exceed maxSessionTimeout")
    if "dataDir" not in props:
        raise ConfigError("dataDir is not set")
    if members:
        members.sort(key=lambda m: m.server_id)
        ids = [m.server_id for m in members]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ConfigError(f"server.{duplicates[0]} is given twice")
        _ensemble(values, members, props, values.get("data_dir"), warnings)  # type: ignore[arg-type]
    bare_props = {k.removeprefix("zookeeper."): v for k, v in props.items()}
    _tls(values, bare_props, base, warnings)
    _quorum_tls(values, bare_props, base)
    _admin_tls(values, bare_props, base)
    _security(values, props, base, warnings)
    _quorum_auth(values, props, base, warnings)
    values["warnings"] = tuple(warnings)
    cfg = Config(**values)  # type: ignore[arg-type]
    if cfg.client_output_hard_limit_bytes < cfg.client_output_limit_bytes:
        raise ConfigError("fastzk.clientOutputHardLimitBytes must not be below "
                          "fastzk.clientOutputLimitBytes")
    return cfg


def _store(props: dict[str, str], name: str, base: Path,
           prefix: str = "ssl.") -> tuple[Path, str, str | None]:
    """<prefix><name>.location/type/password; the type comes from the file's name when not
    given, as ZooKeeper guesses it."""
    name = f"{prefix.removeprefix('ssl.')}{name}"
    location = Path(props[f"ssl.{name}.location"])
    if not location.is_absolute():
        location = base / location
    kind = props.get(f"ssl.{name}.type", "").upper() or STORE_TYPES.get(location.suffix.lower())
    if kind is None:
        raise ConfigError(f"ssl.{name}.type: not given, and {location.name} does not say it "
                          "(.pem, .p12, .pfx or .jks)")
    if kind == "JKS":
        raise ConfigError(f"ssl.{name}: JKS is not supported: convert it with keytool "
                          f"-importkeystore -srckeystore {location.name} -deststoretype PKCS12 "
                          "-destkeystore store.p12")
    if kind not in ("PEM", "PKCS12"):
        raise ConfigError(f"ssl.{name}.type: PEM or PKCS12, not {kind!r}")
    return location, kind, props.get(f"ssl.{name}.password") or None


def _tls_common(props: dict[str, str], prefix: str) -> dict[str, object]:
    """Protocols, cipher suites and the handshake timeout under `prefix` (ssl. or
    ssl.quorum.)."""
    protocol = props.get(f"{prefix}protocol", "TLSv1.3")
    enabled = props.get(f"{prefix}enabledProtocols")
    if enabled:
        protocols = tuple(p.strip() for p in enabled.split(",") if p.strip())
    else:  # ZooKeeper's default: TLSv1.3 also enables TLSv1.2
        protocols = (protocol, "TLSv1.2") if protocol == "TLSv1.3" else (protocol,)
    if protocols == ("TLS",):
        protocols = TLS_VERSIONS
    unknown = [p for p in protocols if p not in TLS_VERSIONS]
    if unknown or not protocols:
        raise ConfigError(f"{prefix}protocol/{prefix}enabledProtocols: unknown protocol "
                          f"{unknown[0] if unknown else ''!r}; known: TLS, "
                          f"{', '.join(TLS_VERSIONS)}")
    suites = props.get(f"{prefix}ciphersuites", "")
    timeout_key = f"{prefix}handshakeDetectionTimeoutMillis"
    return {"protocols": protocols,
            "ciphersuites": tuple(s.strip() for s in suites.split(",") if s.strip()),
            "handshake_timeout_ms": _int(timeout_key, props.get(timeout_key, "5000"), 1)}


def _quorum_tls(values: dict[str, object], props: dict[str, str], base: Path) -> None:
    """sslQuorum and the ssl.quorum.* keys: mutual TLS between members, both stores
    required (every member presents a certificate the others' trust store verifies)."""
    if not _bool("sslQuorum", props.get("sslQuorum", "false")):
        return
    for name in ("keyStore", "trustStore"):
        if f"ssl.quorum.{name}.location" not in props:
            raise ConfigError(f"sslQuorum=true needs ssl.quorum.{name}.location")
    verify = _bool("ssl.quorum.hostnameVerification",
                   props.get("ssl.quorum.hostnameVerification", "true"))
    key_store, key_type, key_password = _store(props, "keyStore", base, "ssl.quorum.")
    trust, trust_type, trust_password = _store(props, "trustStore", base, "ssl.quorum.")
    values["quorum_tls"] = TlsSettings(
        key_store=key_store, key_store_type=key_type, key_store_password=key_password,
        trust_store=trust, trust_store_type=trust_type, trust_store_password=trust_password,
        client_auth="need", prefix="ssl.quorum.", hostname_verification=verify,
        **_tls_common(props, "ssl.quorum."))  # type: ignore[arg-type]


def _admin_tls(values: dict[str, object], props: dict[str, str], base: Path) -> None:
    """admin.forceHttps (HTTPS only) or admin.portUnification (HTTP and HTTPS on the admin
    port), with the server's certificate from ssl.quorum.keyStore and, for
    admin.needClientAuth, clients' certificates verified against ssl.quorum.trustStore: the
    stores ZooKeeper's AdminServer uses."""
    force = _bool("admin.forceHttps", props.get("admin.forceHttps", "false"))
    unified = _bool("admin.portUnification", props.get("admin.portUnification", "false"))
    need = _bool("admin.needClientAuth", props.get("admin.needClientAuth", "false"))
    if not force and not unified:
        if need:
            raise ConfigError("admin.needClientAuth=true needs HTTPS on the admin port "
                              "(admin.forceHttps=true or admin.portUnification=true)")
        return
    if "ssl.quorum.keyStore.location" not in props:
        raise ConfigError("admin.forceHttps and admin.portUnification need "
                          "ssl.quorum.keyStore.location (the admin server's key and "
                          "certificate, as in ZooKeeper)")
    if need and "ssl.quorum.trustStore.location" not in props:
        raise ConfigError("admin.needClientAuth=true needs ssl.quorum.trustStore.location "
                          "(to verify clients' certificates)")
    key_store, key_type, key_password = _store(props, "keyStore", base, "ssl.quorum.")
    trust: dict[str, object] = {}
    if "ssl.quorum.trustStore.location" in props:
        location, kind, password = _store(props, "trustStore", base, "ssl.quorum.")
        trust = {"trust_store": location, "trust_store_type": kind,
                 "trust_store_password": password}
    values["admin_tls"] = TlsSettings(
        key_store=key_store, key_store_type=key_type, key_store_password=key_password,
        client_auth="need" if need else "none", prefix="ssl.quorum.",
        **trust, **_tls_common(props, "ssl.quorum."))  # type: ignore[arg-type]
    values["admin_unified"] = unified and not force  # forceHttps wins, as in ZooKeeper


def _tls(values: dict[str, object], props: dict[str, str], base: Path,
         warnings: list[str]) -> None:
    """secureClientPort and the ssl.* keys (`zookeeper.` prefix already removed)."""
    # ZooKeeper's server never matches a client's certificate to its host name on the client
    # port (ssl.hostnameVerification is for its clients); 3.9's
    # ssl.clientHostnameVerification asks for it, which fastzk does not do
    _bool("ssl.hostnameVerification", props.get("ssl.hostnameVerification", "true"))
    key = "ssl.clientHostnameVerification"
    if key in props and _bool(key, props[key]):
        warnings.append(f"{key}=true: fastzk does not match client certificates to the "
                        "client's host name (it verifies them against the trust store)")
    if "secureClientPort" in props:
        values["secure_client_port"] = _port("secureClientPort", props["secureClientPort"])
        if "client_port" not in values:
            values["plain_client_port"] = False
    values["secure_client_port_address"] = props.get(
        "secureClientPortAddress", values.get("client_port_address", "127.0.0.1"))
    unified = _bool("client.portUnification", props.get("client.portUnification", "false"))
    values["port_unification"] = unified
    if "ssl.keyStore.location" not in props:
        if "secure_client_port" in values or unified:
            raise ConfigError("secureClientPort and client.portUnification need "
                              "ssl.keyStore.location (the server's key and certificate)")
        return
    key_store, key_type, key_password = _store(props, "keyStore", base)
    settings: dict[str, object] = {"key_store": key_store, "key_store_type": key_type,
                                   "key_store_password": key_password}
    if "ssl.trustStore.location" in props:
        trust, trust_type, trust_password = _store(props, "trustStore", base)
        settings.update(trust_store=trust, trust_store_type=trust_type,
                        trust_store_password=trust_password)
    client_auth = props.get("ssl.clientAuth", "need").lower()
    if client_auth not in ("need", "want", "none"):
        raise ConfigError(f"ssl.clientAuth: need, want or none, not {client_auth!r}")
    settings["client_auth"] = client_auth
    settings.update(_tls_common(props, "ssl."))
    provider = props.get("ssl.authProvider", "x509")
    if provider != "x509" and not provider.endswith("X509AuthenticationProvider"):
        raise ConfigError(f"ssl.authProvider: only x509 (ZooKeeper's "
                          f"X509AuthenticationProvider) is supported, not {provider!r}")
    settings["x509_super_user"] = props.get("X509AuthenticationProvider.superUser")
    values["tls"] = TlsSettings(**settings)  # type: ignore[arg-type]

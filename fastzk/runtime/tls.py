"""TLS for the client port and between members: SSL contexts from ZooKeeper's key and trust
stores, their reload when the files change, host name checks of members' certificates, and the
x509 identity of a verified client certificate.

A context is built once per change of the files, never per connection: established
connections keep the context they were accepted with (ZooKeeper's FileChangeWatcher does the
same), new ones get the new certificate.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import secrets
import socket
import ssl
import tempfile
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from fastzk.config import ConfigError, TlsSettings

log = logging.getLogger("fastzk")

TLS_HANDSHAKE = 0x16  # the first byte of a TLS record carrying a handshake (ClientHello)
ACCEPTS_PER_WAKEUP = 64  # connections taken per readable listening socket before yielding
ACCEPT_PAUSE_S = 0.1  # the rest a TLS listener takes after a failed accept (the fd limit)
ACCEPT_ERROR_LOG_INTERVAL_S = 60.0  # at most one "cannot accept" line per interval

VERSIONS = {"TLSv1": ssl.TLSVersion.TLSv1, "TLSv1.1": ssl.TLSVersion.TLSv1_1,
            "TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}
CLIENT_AUTH = {"need": ssl.CERT_REQUIRED, "want": ssl.CERT_OPTIONAL, "none": ssl.CERT_NONE}
# Java's key exchange names in IANA cipher suite names, and OpenSSL's
KEY_EXCHANGES = {"RSA": "", "ECDHE_RSA": "ECDHE-RSA", "ECDHE_ECDSA": "ECDHE-ECDSA",
                 "DHE_RSA": "DHE-RSA"}
# the attribute keywords Java's X500Principal.getName() (RFC 2253) writes; any other
# attribute is written as its OID and the hex of its DER value
RFC2253_KEYWORDS = {NameOID.COMMON_NAME: "CN", NameOID.COUNTRY_NAME: "C",
                    NameOID.LOCALITY_NAME: "L", NameOID.STATE_OR_PROVINCE_NAME: "ST",
                    NameOID.ORGANIZATION_NAME: "O", NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
                    NameOID.STREET_ADDRESS: "STREET", NameOID.DOMAIN_COMPONENT: "DC",
                    NameOID.USER_ID: "UID"}
STRING_ENCODINGS = {30: "utf-16-be", 28: "utf-32-be"}  # BMPString, UniversalString


def openssl_cipher(name: str) -> str:
    """A cipher suite as OpenSSL names it: Java's (IANA) names, e.g.
    TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, are what ZooKeeper's ssl.ciphersuites holds."""
    if not name.startswith("TLS_") or "_WITH_" not in name:
        return name
    exchange, _, cipher = name[4:].partition("_WITH_")
    prefix = KEY_EXCHANGES.get(exchange)
    parts = cipher.split("_")
    if prefix is None:
        return name
    if parts[:2] == ["CHACHA20", "POLY1305"]:
        body = "CHACHA20-POLY1305"
    elif len(parts) == 4 and parts[0] == "AES" and parts[2] in ("GCM", "CBC"):
        mode = "-GCM" if parts[2] == "GCM" else ""
        body = f"AES{parts[1]}{mode}-{parts[3]}"
    else:
        return name
    return f"{prefix}-{body}" if prefix else body


def _pkcs12(path: Path, password: str | None) -> tuple[object, x509.Certificate | None,
                                                         list[x509.Certificate]]:
    try:
        return pkcs12.load_key_and_certificates(  # type: ignore[return-value]
            path.read_bytes(), password.encode() if password is not None else None)
    except ValueError as error:
        raise ConfigError(f"{path}: not a PKCS12 file, or the wrong password ({error})") \
            from None


def _load_key_store(context: ssl.SSLContext, settings: TlsSettings) -> None:
    path, password = settings.key_store, settings.key_store_password
    if settings.key_store_type == "PEM":
        context.load_cert_chain(path, password=password)
        return
    key, cert, chain = _pkcs12(path, password)
    if key is None or cert is None:
        raise ConfigError(f"ssl.keyStore {path}: holds no private key with its certificate")
    # ssl reads keys only from files: a temporary one (0600, removed at once) whose key is
    # encrypted with a password that exists only here
    one_time = secrets.token_hex(16).encode()
    pem = key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(one_time))
    pem += b"".join(c.public_bytes(serialization.Encoding.PEM) for c in [cert, *chain])
    fd, name = tempfile.mkstemp(suffix=".pem")
    try:
        os.write(fd, pem)
        os.close(fd)
        context.load_cert_chain(name, password=one_time)
    finally:
        os.unlink(name)


def build_context(settings: TlsSettings, server_side: bool = True) -> ssl.SSLContext:
    """A server-side context, or (for a member dialing its peers) a client-side one that
    presents the same certificate and verifies the peer's against the trust store (and its
    host name with ssl.quorum.hostnameVerification); every error is a ConfigError naming the
    file and the cause."""
    prefix = settings.prefix
    for key, path in ((f"{prefix}keyStore", settings.key_store),
                      (f"{prefix}trustStore", settings.trust_store)):
        if path is not None and not os.access(path, os.R_OK):
            reason = "no such file" if not path.exists() else "cannot read it"
            raise ConfigError(f"{key}.location {path}: {reason}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server_side
                             else ssl.PROTOCOL_TLS_CLIENT)
    versions = sorted(VERSIONS[p] for p in settings.protocols)
    try:
        context.minimum_version = versions[0]
        context.maximum_version = versions[-1]
        if not server_side:  # the dialer names the member it expects (server_hostname)
            context.check_hostname = settings.hostname_verification
        context.verify_mode = CLIENT_AUTH[settings.client_auth]
        context.options |= ssl.OP_NO_RENEGOTIATION
        _load_key_store(context, settings)
        if settings.trust_store is None:
            context.load_default_certs(ssl.Purpose.CLIENT_AUTH if server_side
                                       else ssl.Purpose.SERVER_AUTH)
        elif settings.trust_store_type == "PEM":
            context.load_verify_locations(cafile=settings.trust_store)
        else:
            _, cert, chain = _pkcs12(settings.trust_store, settings.trust_store_password)
            certs = ([cert] if cert is not None else []) + chain
            if not certs:
                raise ConfigError(f"ssl.trustStore {settings.trust_store}: no certificate")
            context.load_verify_locations(cadata="".join(
                c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in certs))
        suites = [openssl_cipher(s) for s in settings.ciphersuites
                  if not s.startswith(("TLS_AES_", "TLS_CHACHA20_"))]  # TLS 1.3: fixed set
        if suites:
            context.set_ciphers(":".join(suites))
    except ssl.SSLError as error:
        raise ConfigError(f"TLS: {error.reason or error} ({prefix}keyStore "
                          f"{settings.key_store}, {prefix}trustStore {settings.trust_store}, "
                          f"{prefix}ciphersuites {','.join(settings.ciphersuites)})") from None
    except OSError as error:  # replaced while being read
        raise ConfigError(f"TLS stores: {error}") from None
    return context


class Contexts:
    """The contexts new connections get, swapped when a store file changes on disk (checked
    once a tick: a stat of two files). Members also dial with a client-side context of the
    same stores (`client`)."""

    def __init__(self, settings: TlsSettings, dialing: bool = False) -> None:
        self.settings = settings
        self.dialing = dialing
        self.context, self.client = self._build()
        self._stamps = self._stat()

    def _build(self) -> tuple[ssl.SSLContext, ssl.SSLContext | None]:
        return (build_context(self.settings),
                build_context(self.settings, server_side=False) if self.dialing else None)

    def _stat(self) -> tuple[tuple[int, int, int] | None, ...]:
        stamps = []
        for path in (self.settings.key_store, self.settings.trust_store):
            try:
                st = os.stat(path) if path is not None else None
            except OSError:
                st = None
            stamps.append((st.st_mtime_ns, st.st_size, st.st_ino) if st is not None else None)
        return tuple(stamps)

    def reload_if_changed(self) -> bool:
        """Rebuilds the context when a file changed; a file caught half-written (or broken)
        keeps the old context and is tried again at the next check."""
        stamps = self._stat()
        if stamps == self._stamps:
            return False
        try:
            self.context, self.client = self._build()
        except ConfigError as error:
            log.warning("TLS certificate files changed but cannot be loaded (keeping the "
                        "previous ones): %s", error)
            return False
        self._stamps = stamps
        log.info("TLS certificate files reloaded (%s): new connections use them",
                 self.settings.key_store)
        return True


def names_host(cert: dict, host: str) -> bool:
    """Whether a verified certificate (`getpeercert()`'s dict) is for `host`, as a TLS client
    checks a server (RFC 6125): an IP address against its IP SANs; a name against its DNS SANs
    (a leftmost `*` stands for one label), or its CN when it has none."""
    sans = cert.get("subjectAltName", ())
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None:
        return any(kind == "IP Address" and ipaddress.ip_address(value.strip()) == address
                   for kind, value in sans)
    names = [value for kind, value in sans if kind == "DNS"]
    if not names:
        names = [value for rdn in cert.get("subject", ()) for key, value in rdn
                 if key == "commonName"]
    host = host.lower().rstrip(".")
    for name in names:
        name = name.lower().rstrip(".")
        if name == host:
            return True
        if name.startswith("*.") and "." in host and host.split(".", 1)[1] == name[2:]:
            return True
    return False


def _der_value(attribute: x509.NameAttribute) -> bytes:
    value = attribute.value
    data = value if isinstance(value, bytes) else value.encode(
        STRING_ENCODINGS.get(attribute._type.value, "utf-8"))
    size = len(data)
    length = bytes([size]) if size < 128 else bytes([0x80 | ((size.bit_length() + 7) // 8)]) \
        + size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([attribute._type.value]) + length + data


def _escape(value: str) -> str:
    out = "".join("\\" + c if c in ',+"\\<>;' else c for c in value)
    if out.startswith(("#", " ")):
        out = "\\" + out
    if out.endswith(" ") and not out.endswith("\\ "):
        out = out[:-1] + "\\ "
    return out


def x509_id(der: bytes) -> str:
    """The certificate's subject as ZooKeeper's X509AuthenticationProvider names it:
    Java's X500Principal.getName(), RFC 2253 (last RDN first)."""
    subject = x509.load_der_x509_certificate(der).subject
    rdns = []
    for rdn in reversed(subject.rdns):
        parts = []
        for attribute in rdn:
            keyword = RFC2253_KEYWORDS.get(attribute.oid)
            if keyword is None:
                parts.append(f"{attribute.oid.dotted_string}=#{_der_value(attribute).hex()}")
            else:
                parts.append(f"{keyword}={_escape(str(attribute.value))}")
        rdns.append("+".join(parts))
    return ",".join(rdns)


# OpenSSL's reasons for the refusals an operator most often has to explain
REASONS = {
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "the client sent no certificate (ssl.clientAuth=need)",
    "WRONG_VERSION_NUMBER": "not a TLS handshake (a plaintext client on the TLS port?)",
    "HTTP_REQUEST": "an HTTP request on the TLS port",
    "UNSUPPORTED_PROTOCOL": "the client's TLS versions are not in ssl.enabledProtocols",
    "NO_SHARED_CIPHER": "no cipher suite in common (ssl.ciphersuites)",
}


def _reason(error: BaseException) -> str:
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"certificate refused: {error.verify_message}"
    if isinstance(error, ssl.SSLError):
        reason = error.reason or str(error)
        return f"{REASONS[reason]} ({reason})" if reason in REASONS else reason
    return str(error) or type(error).__name__


class SecureListener:
    """A TLS client port (or, with client.portUnification, a port for both: the first byte
    0x16 opens a TLS handshake, anything else is plaintext). It accepts connections itself
    rather than through create_server(ssl=...), so that a failed handshake raises here and is
    logged with its cause (asyncio logs those only in debug mode). Once a handshake is done,
    uvloop's TLS transport feeds the same protocol class (and batching) as the plaintext
    port."""

    def __init__(self, loop: asyncio.AbstractEventLoop, contexts: Contexts,
                 factory: Callable[[], asyncio.BaseProtocol], unified: bool) -> None:
        self.loop = loop
        self.contexts = contexts
        self.factory = factory
        self.unified = unified
        self.timeout_s = contexts.settings.handshake_timeout_ms / 1000
        self.sock: socket.socket | None = None
        self.admitting: set[asyncio.Task[None]] = set()
        self.paused: asyncio.TimerHandle | None = None  # accepting again after a failed accept
        self.refused_logged_at: float | None = None

    def start(self, host: str | None, port: int) -> None:
        """Listens (raises OSError when the port is taken)."""
        self.sock = socket.create_server((host or "", port), backlog=1024)
        self.sock.setblocking(False)
        self.loop.add_reader(self.sock.fileno(), self._accept)

    def close(self) -> None:
        if self.paused is not None:
            self.paused.cancel()
            self.paused = None
        if self.sock is not None:
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None
        for task in list(self.admitting):
            task.cancel()

    def _accept(self) -> None:
        assert self.sock is not None
        for _ in range(ACCEPTS_PER_WAKEUP):
            try:
                conn, address = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                self._pause(error)
                return
            conn.setblocking(False)
            task = self.loop.create_task(self._admit(conn, address))
            self.admitting.add(task)
            task.add_done_callback(self.admitting.discard)

    def _pause(self, error: OSError) -> None:
        """An accept failed (EMFILE at the open-file limit, ENFILE, ENOBUFS...): the connection
        waits in the backlog and the socket stays readable, so accepting again at once would
        spin on the event loop and log on every turn. The listener rests ACCEPT_PAUSE_S and
        logs at most once per ACCEPT_ERROR_LOG_INTERVAL_S."""
        assert self.sock is not None
        self.loop.remove_reader(self.sock.fileno())
        self.paused = self.loop.call_later(ACCEPT_PAUSE_S, self._resume)
        now = self.loop.time()
        if self.refused_logged_at is None \
                or now - self.refused_logged_at >= ACCEPT_ERROR_LOG_INTERVAL_S:
            self.refused_logged_at = now
            log.warning("cannot accept a TLS connection: %s; new connections wait until some "
                        "close (at the open-file limit: raise it, ulimit -n)", error)

    def _resume(self) -> None:
        self.paused = None
        if self.sock is not None:
            self.loop.add_reader(self.sock.fileno(), self._accept)

    async def _admit(self, conn: socket.socket, address: tuple[str, int]) -> None:
        peer = f"{address[0]}:{address[1]}"
        try:
            if self.unified:
                first = await self._first_byte(conn)
                if first is None:
                    log.warning("closing %s: closed or sent nothing within "
                                "ssl.handshakeDetectionTimeoutMillis", peer)
                    conn.close()
                    return
                if first != TLS_HANDSHAKE:
                    await self.loop.connect_accepted_socket(self.factory, conn)
                    return
            await self.loop.connect_accepted_socket(
                self.factory, conn, ssl=self.contexts.context,
                ssl_handshake_timeout=self.timeout_s)
        except (TimeoutError, OSError) as error:
            log.warning("TLS handshake with %s failed: %s", peer, _reason(error))
            conn.close()
        except asyncio.CancelledError:  # the server stops
            conn.close()
            raise

    async def _first_byte(self, conn: socket.socket) -> int | None:
        """The connection's first byte, left in the socket (MSG_PEEK); None if it closes or
        sends nothing within the handshake timeout."""
        readable = self.loop.create_future()
        fd = conn.fileno()
        self.loop.add_reader(fd, lambda: readable.done() or readable.set_result(None))
        try:
            await asyncio.wait_for(readable, self.timeout_s)
        except TimeoutError:
            return None
        finally:
            self.loop.remove_reader(fd)
        try:
            data = conn.recv(1, socket.MSG_PEEK)
        except OSError:
            return None
        return data[0] if data else None

"""The server side of SASL as ZooKeeper's server runs it: DIGEST-MD5 (RFC 2831) and GSSAPI
(Kerberos V5, RFC 4752).

ZooKeeper's server has one mechanism per connection, chosen by its own login: DIGEST-MD5 when
the JAAS `Server` section holds `user_NAME="password"` entries, GSSAPI when it is a
Krb5LoginModule with a keytab. The client never names a mechanism on the wire, it just sends
tokens in `sasl` (102) requests.

DIGEST-MD5:

1. the client sends a token (empty from every DIGEST-MD5 client; the JDK ignores what it
   holds, so a client of another mechanism gets the challenge too); the server answers a
   challenge (realm "zk-sasl-md5", a fresh nonce, charset utf-8, algorithm md5-sess; no qop
   directive, which means qop "auth" only);
2. the client sends its digest response; the server checks it against the user's password and
   answers `rspauth=...`, proving it knows the password too. The connection then holds the
   identity ("sasl", user name), which `sasl:NAME` ACL entries match.

GSSAPI (`GssapiServer`): GSS-API context tokens go back and forth until the context is
established (one round for Kerberos: AP-REQ in, AP-REP out); the client then sends an empty
token, the server answers a wrapped 4-byte offer (security layers: "none" only, as ZooKeeper's
server offers; its receive buffer size), and the client answers a wrapped choice followed by an
optional authorization id. The identity is the authenticated principal, shaped as ZooKeeper's
KerberosName shapes it (`KerberosNames`). The GSS-API calls sit behind `Acceptor`, so that this
state machine stays pure; fastzk/server/gss.py implements it with python-gssapi.

Anything else (a malformed or oversized token, a wrong password, an unknown user, a ticket
the server cannot decrypt, a second response after completion: a replay) raises `SaslError`,
which the node answers as ZooKeeper does: AuthFailed, then the connection is closed.

Pure and deterministic: the nonce comes from the caller's rng, there is no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

REALM = "zk-sasl-md5"  # ZooKeeper creates its DIGEST-MD5 server with this server name
PROTOCOL = "zookeeper"
MAX_RESPONSE_BYTES = 4096  # the JDK's DIGEST-MD5 server refuses longer responses
NONCE_BYTES = 30

_INITIAL, _CHALLENGED, _DONE = range(3)


class SaslError(Exception):
    """The exchange failed; the message says why, for the server log."""


def make_nonce(rng: random.Random) -> str:
    """A base64 nonce (no quotes, commas or backslashes, so it needs no escaping)."""
    return base64.b64encode(rng.randbytes(NONCE_BYTES)).decode("ascii")


def parse_directives(token: bytes) -> dict[str, str]:
    """`key=value` or `key="quoted \\"value\\""` pairs separated by commas (RFC 2831 2.1).
    A directive given twice, a missing `=` or an unterminated quote is an error."""
    try:
        text = token.decode("utf-8")
    except UnicodeDecodeError:
        raise SaslError("response is not UTF-8") from None
    result: dict[str, str] = {}
    index, length = 0, len(text)
    while index < length:
        while index < length and text[index] in " \t\r\n,":
            index += 1
        if index >= length:
            break
        equals = text.find("=", index)
        if equals < 0:
            raise SaslError(f"directive without a value at byte {index}")
        key = text[index:equals].strip().lower()
        if not key or any(c in key for c in ' ",\t'):
            raise SaslError(f"malformed directive name {key!r}")
        index = equals + 1
        if index < length and text[index] == '"':
            index += 1
            chars: list[str] = []
            while True:
                if index >= length:
                    raise SaslError(f"unterminated quoted value of {key}")
                char = text[index]
                if char == "\\" and index + 1 < length:
                    chars.append(text[index + 1])
                    index += 2
                elif char == '"':
                    index += 1
                    break
                else:
                    chars.append(char)
                    index += 1
            value = "".join(chars)
            while index < length and text[index] in " \t\r\n":
                index += 1
            if index < length and text[index] != ",":
                raise SaslError(f"garbage after the quoted value of {key}")
        else:
            comma = text.find(",", index)
            end = length if comma < 0 else comma
            value = text[index:end].strip()
            index = end
        if key in result:
            raise SaslError(f"directive {key} given twice")
        result[key] = value
    return result


def _bytes(text: str, utf8: bool) -> bytes:
    """As the JDK: ISO-8859-1 unless the client said charset=utf-8 (or a character does not
    fit in it)."""
    if not utf8:
        try:
            return text.encode("latin-1")
        except UnicodeEncodeError:
            pass
    return text.encode("utf-8")


def _md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def response_value(user: str, password: str, realm: str, nonce: str, cnonce: str, nc: str,
                   qop: str, digest_uri: str, authzid: str | None, utf8: bool,
                   initial: bool) -> str:
    """RFC 2831 2.1.2.1: `response` (initial=True, A2 starts with AUTHENTICATE) or `rspauth`."""
    secret = hashlib.md5(_bytes(f"{user}:{realm}:{password}", utf8)).digest()
    a1 = secret + f":{nonce}:{cnonce}".encode()
    if authzid:
        a1 += b":" + authzid.encode("utf-8")
    a2 = ("AUTHENTICATE:" if initial else ":") + digest_uri
    kd = f"{_md5_hex(a1)}:{nonce}:{nc}:{cnonce}:{qop}:{_md5_hex(a2.encode())}"
    return _md5_hex(kd.encode())


class DigestMD5Server:
    """One connection's exchange. `evaluate` takes each client token in turn and returns the
    server's token; once `user` is set the client is authenticated."""

    def __init__(self, users: Mapping[str, str], nonce: str) -> None:
        self.users = users
        self.nonce = nonce
        self.state = _INITIAL
        self.user: str | None = None

    def challenge(self) -> bytes:
        return (f'realm="{REALM}",nonce="{self.nonce}",charset=utf-8,'
                "algorithm=md5-sess").encode("ascii")

    def evaluate(self, token: bytes) -> bytes:
        if len(token) > MAX_RESPONSE_BYTES:
            self.state = _DONE
            raise SaslError(f"DIGEST-MD5: token of {len(token)} bytes "
                            f"(at most {MAX_RESPONSE_BYTES})")
        if self.state == _INITIAL:
            self.state = _CHALLENGED
            return self.challenge()
        if self.state == _DONE:
            raise SaslError("DIGEST-MD5: the exchange is over (a replayed response?)")
        self.state = _DONE  # one response only: a failure is final, as in the JDK
        return self._verify(token)

    def _verify(self, token: bytes) -> bytes:
        fields = parse_directives(token)
        charset = fields.get("charset")
        if charset is not None and charset.lower() != "utf-8":
            raise SaslError(f"DIGEST-MD5: charset {charset!r} (only utf-8 is allowed)")
        utf8 = charset is not None
        for name in ("username", "nonce", "cnonce", "nc", "digest-uri", "response"):
            if name not in fields:
                raise SaslError(f"DIGEST-MD5: the response lacks {name}")
        realm = fields.get("realm", "")
        if realm not in ("", REALM):
            raise SaslError(f"DIGEST-MD5: unknown realm {realm!r}")
        if not hmac.compare_digest(fields["nonce"].encode(), self.nonce.encode()):
            raise SaslError("DIGEST-MD5: nonce does not match")
        if fields["nc"] != "00000001":
            raise SaslError(f"DIGEST-MD5: nonce count {fields['nc']!r} (expected 00000001)")
        qop = fields.get("qop", "auth")
        if qop != "auth":
            raise SaslError(f"DIGEST-MD5: qop {qop!r} was not offered (only auth)")
        protocol, _, host = fields["digest-uri"].partition("/")
        if protocol.lower() != PROTOCOL or host.partition("/")[0].lower() != REALM:
            raise SaslError(f"DIGEST-MD5: digest-uri {fields['digest-uri']!r} "
                            f"(expected {PROTOCOL}/{REALM})")
        user = fields["username"]
        password = self.users.get(user)
        if password is None:
            raise SaslError(f"DIGEST-MD5: no password for user {user!r}")
        args = (user, password, realm, self.nonce, fields["cnonce"], fields["nc"], qop,
                fields["digest-uri"], fields.get("authzid"), utf8)
        expected = response_value(*args, initial=True)
        if not hmac.compare_digest(fields["response"].lower().encode(), expected.encode()):
            raise SaslError(f"DIGEST-MD5: wrong response for user {user!r} (bad password)")
        self.user = user
        return f"rspauth={response_value(*args, initial=False)}".encode("ascii")


# --- GSSAPI (RFC 4752) ---------------------------------------------------------------------

NO_SECURITY_LAYER = 1  # RFC 4752 3.3: the bit of the only layer ZooKeeper's server offers
MAX_RECEIVE_BYTES = 65536  # the JDK server's default receive buffer size, sent in the offer
MAX_GSS_TOKEN_BYTES = 65536  # a Kerberos AP-REQ is a few kilobytes; refuse absurd tokens early


class Acceptor(Protocol):
    """One GSS-API acceptor context (RFC 2743), bound to the server's own credentials. Every
    method raises SaslError when the GSS-API call fails."""

    @property
    def complete(self) -> bool:
        """The context is established."""
        ...

    @property
    def initiator(self) -> str:
        """The authenticated client principal, `name[/instance]@REALM` (once complete)."""
        ...

    def step(self, token: bytes) -> bytes | None:
        """gss_accept_sec_context: the token for the client, if any."""
        ...

    def wrap(self, data: bytes) -> bytes:
        """gss_wrap with integrity only (no confidentiality), as the JDK wraps the offer."""
        ...

    def unwrap(self, data: bytes) -> bytes:
        ...


@dataclass(frozen=True)
class KerberosNames:
    """How ZooKeeper's server turns the authenticated principal into the `sasl` identity: its
    default auth_to_local rule keeps the first component of a principal of the default realm,
    then puts back `/instance` unless kerberos.removeHostFromPrincipal and `@REALM` unless
    kerberos.removeRealmFromPrincipal. A principal of another realm matches no rule; ZooKeeper
    then logs an error and keeps the name the client asked for (its authorization id, which
    ZooKeeper's clients leave to the principal), so fastzk keeps the full principal."""

    default_realm: str
    remove_host: bool = False
    remove_realm: bool = False

    def identity(self, principal: str) -> str:
        name, at, realm = principal.rpartition("@")
        if not at:
            name, realm = principal, ""
        if realm != self.default_realm:
            return principal
        primary, slash, instance = name.partition("/")
        result = primary
        if slash and not self.remove_host:
            result += "/" + instance
        if not self.remove_realm:
            result += "@" + realm
        return result


@dataclass(frozen=True)
class GssapiLogin:
    """The server's Kerberos login: a fresh acceptor per connection, and the naming rules."""

    new_acceptor: Callable[[], Acceptor]
    names: KerberosNames


_ACCEPTING, _ESTABLISHED, _OFFERED = range(3, 6)


class GssapiServer:
    """One connection's GSSAPI exchange, as the JDK's GSSAPI server runs it for ZooKeeper.
    `evaluate` takes each client token in turn and returns the server's token (None: a null
    token on the wire); once `user` is set the client is authenticated."""

    def __init__(self, acceptor: Acceptor, names: KerberosNames) -> None:
        self.acceptor = acceptor
        self.names = names
        self.state = _ACCEPTING
        self.principal: str | None = None  # the authenticated principal, once established
        self.user: str | None = None

    def evaluate(self, token: bytes) -> bytes | None:
        if len(token) > MAX_GSS_TOKEN_BYTES:
            self.state = _DONE
            raise SaslError(f"GSSAPI: token of {len(token)} bytes "
                            f"(at most {MAX_GSS_TOKEN_BYTES})")
        state, self.state = self.state, _DONE  # any failure below is final
        if state == _ACCEPTING:
            if not token:
                raise SaslError("GSSAPI: empty initial token (a client of another "
                                "mechanism? the server is configured for Kerberos)")
            reply = self.acceptor.step(token)
            if not self.acceptor.complete:
                self.state = _ACCEPTING
                return reply or b""
            self.principal = self.acceptor.initiator
            if reply:  # the AP-REP of mutual authentication; the client answers with nothing
                self.state = _ESTABLISHED
                return reply
            return self._offer()
        if state == _ESTABLISHED:
            if token:
                raise SaslError(f"GSSAPI: {len(token)} bytes where the client had to send "
                                "an empty token after the context was established")
            return self._offer()
        if state == _OFFERED:
            return self._choose(token)
        raise SaslError("GSSAPI: the exchange is over (a replayed token?)")

    def _offer(self) -> bytes:
        """RFC 4752 3.1: the security layers offered and the receive buffer size, wrapped."""
        self.state = _OFFERED
        offer = bytes([NO_SECURITY_LAYER]) + MAX_RECEIVE_BYTES.to_bytes(3, "big")
        return self.acceptor.wrap(offer)

    def _choose(self, token: bytes) -> None:
        """The client's wrapped choice: its layer, its buffer size, an optional authzid (which,
        as in ZooKeeper, does not change the identity: that is the authenticated principal)."""
        choice = self.acceptor.unwrap(token)
        if len(choice) < 4:
            raise SaslError(f"GSSAPI: the client's security layer choice has {len(choice)} "
                            "bytes (at least 4)")
        if not choice[0] & NO_SECURITY_LAYER:
            raise SaslError(f"GSSAPI: the client chose security layer {choice[0]:#x}; only "
                            "no security layer (0x1) was offered")
        assert self.principal is not None
        self.user = self.names.identity(self.principal)
        return None

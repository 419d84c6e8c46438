"""Links between ensemble members: TCP on each member's quorum port, one connection per
direction (a server sends on the connection it dialed and receives on those it accepted), so
that messages from one server to another arrive in the order they were sent.

Wire format (ours; only client compatibility with ZooKeeper matters): the dialer opens with a
20-byte hello (`FZKPEER1`, u32 version, i32 its id, i32 the id it expects to reach); then each
message is a u32 length and a value of fastzk's tagged value encoding (the WAL's): a tuple of
the message kind and its fields. The receiver checks everything before it acts: an unknown or
impostor id (not in the config, ours, or from another address than the member's), a bad hello,
an oversized frame or a message that does not decode to the shape of its kind closes that
connection with a log line. A link whose send buffer passes its bound (the peer stopped reading)
is closed as well; the replication core resends what was lost once the link is back.

With `sslQuorum=true` every connection is mutual TLS (ssl.quorum.* stores, reloaded when the
files change): a member must present a certificate that the others' trust store verifies and,
with ssl.quorum.hostnameVerification (the default), that names the address of its server.N
line: the dialer checks the member it dials, the receiver the member the hello claims to be.
The hello travels inside.
With authentication (a shared secret, `fastzk.quorumSecretFile`, or ZooKeeper's
`quorum.auth.*` keys with the JAAS QuorumServer/QuorumLearner users) an address proves nothing:
the hello says version 2 and is followed by the dialer's 16-byte nonce and its user name (a
length byte and UTF-8; empty for the shared secret); the receiver looks the user's key up and
answers with its own nonce and HMAC-SHA256(key, "fzk-accept" | hello | user | both nonces),
which the dialer checks (it will not send its messages to an impostor either), and the dialer
answers with HMAC-SHA256(key, "fzk-dial" | hello | user | both nonces). Only then does the
receiver take messages. Fresh nonces on both sides make a recorded handshake useless; a process
without the key, or claiming another member's id (the id is inside what is signed), is refused
with a log line on both ends. A receiver without authentication answers an authenticating
hello with 48 zero bytes, and one with quorum.auth.serverRequireSasl=false takes version-1
hellos: that is how ZooKeeper's rolling upgrade to quorum SASL works (a dialer with
learnerRequireSasl=true, or the shared secret, refuses such a receiver).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import os
import ssl
import struct
from collections.abc import Callable, Iterable, Iterator
from operator import attrgetter
from typing import Any

from fastzk._core import decode_value, encode_value, txn_body, txn_from_body
from fastzk.config import Config, Member
from fastzk.quorum import messages as msgs
from fastzk.runtime.tls import Contexts, SecureListener, names_host
from fastzk.server.prep import Txn

log = logging.getLogger("fastzk.peers")

MAGIC = b"FZKPEER1"
VERSION = 1
AUTH_VERSION = 2  # the hello is followed by the authentication handshake
NONCE_BYTES = 16
MAC_BYTES = 32
NO_AUTH = bytes(NONCE_BYTES + MAC_BYTES)  # the answer of a receiver that authenticates nobody
HELLO = struct.Struct(">8sIii")
LENGTH = struct.Struct(">I")
RETRY_S = 0.05
AUTH_RETRY_S = 1.0
REJECT_LOG_INTERVAL_S = 10.0
MAX_REJECTION_KEYS = 1000
HELLO_TIMEOUT_S = 5.0
SEND_BUFFER_LIMIT = 64 * 1024 * 1024
PACED_BUFFER_BYTES = 4 * 1024 * 1024  # bulk messages wait while more than this is queued
PACED_POLL_S = 0.002

KINDS: tuple[type, ...] = msgs.QUORUM_MESSAGES + msgs.HOST_MESSAGES
CODES = {kind: code for code, kind in enumerate(KINDS)}
FIELDS = {kind: kind.__slots__ for kind in KINDS}


class PeerMessageError(ValueError):
    """A frame that is not a well-formed message."""


# --- codec -------------------------------------------------------------------------------------
def _int(value: Any) -> int:
    if type(value) is not int:
        raise PeerMessageError(f"expected an integer, got {type(value).__name__}")
    return value


def _ints(value: Any) -> tuple[int, ...]:
    if type(value) is not tuple:
        raise PeerMessageError("expected a tuple of integers")
    return tuple(_int(v) for v in value)


def _optional_ints(value: Any) -> tuple[int, ...] | None:
    return None if value is None else _ints(value)


def _identities(value: Any) -> tuple[tuple[str, str], ...]:
    if not all(type(i) is tuple and len(i) == 2 and type(i[0]) is str and type(i[1]) is str
               for i in value):
        raise PeerMessageError("Forward.identities: expected (scheme, id) pairs")
    return value


def _forwards(value: Any) -> tuple[msgs.Forward, ...]:
    """(session id, frame, identities) triples; a run of them usually shares its identities,
    which are checked once."""
    if type(value) is not tuple:
        raise PeerMessageError("Forwards.forwards: expected a tuple")
    checked: dict[Any, tuple[tuple[str, str], ...]] = {}
    forwards = []
    for item in value:
        if type(item) is not tuple or len(item) != 3 or type(item[0]) is not int \
                or type(item[1]) is not bytes or type(item[2]) is not tuple:
            raise PeerMessageError("Forwards.forwards: expected (session id, frame, "
                                   "identities) triples")
        try:
            identities = checked.get(item[2])
        except TypeError:  # unhashable: holds a list, never a valid identity
            identities = None
        if identities is None:
            identities = checked[item[2]] = _identities(item[2])
        forwards.append(msgs.Forward(item[0], item[1], identities))
    return tuple(forwards)


def _entries(value: Any) -> tuple[tuple[int, Txn], ...]:
    if type(value) is not tuple:
        raise PeerMessageError("Append.entries: expected a tuple")
    entries = []
    for item in value:
        if type(item) is not tuple or len(item) != 2 or type(item[1]) is not bytes:
            raise PeerMessageError("Append.entries: expected (zxid, txn body) pairs")
        zxid = _int(item[0])
        try:
            entries.append((zxid, txn_from_body(zxid, item[1])))
        except (ValueError, OverflowError) as error:
            raise PeerMessageError(f"Append.entries: {error}") from None
    return tuple(entries)


SIMPLE = {"int": int, "bool": bool, "bytes": bytes}
#: the fields that are not a plain int, bool or bytes: what checks and converts them, and the
#: type they usually have (any other is left to the converter, which may refuse it)
CONVERTERS: dict[str, tuple[Callable[[Any], Any], type]] = {
    "entries": (_entries, tuple),
    "forwards": (_forwards, tuple),
    "multi_errors": (_optional_ints, type(None)),
    "session_ids": (_ints, tuple),
}


class _Spec:
    """How one kind travels: its fields read in one call, and the checks of a decoded one."""

    __slots__ = ("kind", "code", "names", "get", "types", "converters")

    def __init__(self, kind: type) -> None:
        self.kind = kind
        self.code = CODES[kind]
        self.names: tuple[str, ...] = FIELDS[kind]
        many = attrgetter(*self.names)
        self.get: Callable[[Any], tuple[Any, ...]] = many if len(self.names) > 1 else (
            lambda message: (many(message),))
        hints = {name: str(hint) for name, hint in kind.__annotations__.items()}
        types: list[type] = []
        converters: list[tuple[int, Callable[[Any], Any]]] = []
        for index, name in enumerate(self.names):
            if hints[name] in SIMPLE:
                types.append(SIMPLE[hints[name]])
            else:
                convert, usual = CONVERTERS[name]
                types.append(usual)
                converters.append((index, convert))
        self.types = tuple(types)
        self.converters = tuple(converters)

    def check(self, fields: tuple[Any, ...]) -> None:
        """Why fields whose types are not the usual ones are refused (a converter judges
        its own field)."""
        converted = {index for index, _ in self.converters}
        for index, (name, want) in enumerate(zip(self.names, self.types, strict=True)):
            value = fields[index]
            if index in converted or type(value) is want:
                continue
            what = {int: "an integer", bool: "a boolean", bytes: "bytes"}[want]
            raise PeerMessageError(f"{self.kind.__name__}.{name}: expected {what}, got "
                                   f"{type(value).__name__}")


SPECS = tuple(_Spec(kind) for kind in KINDS)
SPEC_OF = {spec.kind: spec for spec in SPECS}


def _body(message: Any) -> bytes:
    spec = SPEC_OF[type(message)]
    values = spec.get(message)
    if spec.kind is msgs.Append:
        # each txn's body as its log record holds it: encoded once for every follower and for
        # the leader's own log, and written as received by the followers
        entries = tuple([(zxid, txn_body(t)) for zxid, t in values[2]])
        return encode_value((spec.code, values[0], values[1], entries, values[3]))
    if spec.kind is msgs.Forwards:
        return encode_value((spec.code, tuple([(f.session_id, f.frame, f.identities)
                                               for f in values[0]])))
    return encode_value((spec.code, *values))


AppendBodies = dict[tuple[int, int, int, int, int], bytes]


def _frames(messages: Iterable[Any], appends: AppendBodies) -> Iterator[bytes]:
    """Frame bodies: a run of Forwards travels as one `Forwards`, and equal Appends (a
    leader sends the same entries to every follower in step) are encoded once: `appends`
    keeps them."""
    run: list[msgs.Forward] = []
    for message in messages:
        kind = type(message)
        if kind is msgs.Forward:
            run.append(message)
            continue
        if run:
            yield _body(msgs.Forwards(tuple(run)))
            run = []
        if kind is msgs.Append and message.entries:
            # a zxid names one entry of one leader's log: these fields fix the whole message
            key = (message.epoch, message.prev_zxid, message.entries[-1][0],
                   len(message.entries), message.commit_zxid)
            body = appends.get(key)
            if body is None:
                body = appends[key] = _body(message)
            yield body
        else:
            yield _body(message)
    if run:
        yield _body(msgs.Forwards(tuple(run)))


def encode(message: Any) -> bytes:
    """One message's frame."""
    return encode_all((message,), {})


def encode_all(messages: Iterable[Any], appends: AppendBodies) -> bytes:
    """Frames of messages bound for one server, in order, as one string of bytes; `appends`
    may be shared by the calls for several servers."""
    parts = []
    for body in _frames(messages, appends):
        parts.append(LENGTH.pack(len(body)))
        parts.append(body)
    return b"".join(parts)


def decode(payload: bytes) -> Any:
    try:
        value = decode_value(payload)
    except ValueError as error:
        raise PeerMessageError(f"undecodable message: {error}") from None
    if type(value) is not tuple or not value or type(value[0]) is not int \
            or not 0 <= value[0] < len(SPECS):
        raise PeerMessageError("not a message (unknown kind)")
    spec = SPECS[value[0]]
    fields = value[1:]
    if len(fields) != len(spec.types):
        raise PeerMessageError(f"{spec.kind.__name__}: {len(fields)} fields, expected "
                               f"{len(spec.types)}")
    if tuple(map(type, fields)) != spec.types:
        spec.check(fields)
    if spec.converters:
        converted = list(fields)
        for index, convert in spec.converters:
            converted[index] = convert(converted[index])
        return spec.kind(*converted)
    return spec.kind(*fields)


# --- connections -----------------------------------------------------------------------------
def _mac(key: bytes, role: bytes, signed: bytes, dialer_nonce: bytes,
         acceptor_nonce: bytes) -> bytes:
    """`signed` is the hello and the user field, everything the dialer claims."""
    return hmac.new(key, role + signed + dialer_nonce + acceptor_nonce,
                    hashlib.sha256).digest()


class _Inbound(asyncio.Protocol):
    """A connection another member dialed: hello (and the authentication handshake), then its
    messages to us."""

    def __init__(self, network: PeerNetwork) -> None:
        self.network = network
        self.buf = bytearray()
        self.peer: int | None = None
        self.claimed: int | None = None  # the id of a hello whose handshake is not done
        self.hello = b""
        self.expected_mac = b""  # the dialer's answer, once our challenge is sent
        self.transport: asyncio.Transport | None = None
        self.address = ""
        self.timer: asyncio.TimerHandle

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peername = transport.get_extra_info("peername")
        self.address = peername[0] if peername else "?"
        self.timer = asyncio.get_running_loop().call_later(HELLO_TIMEOUT_S, self._no_hello)

    def _no_hello(self) -> None:
        if self.peer is None and self.transport is not None:
            self._reject(f"no hello and handshake within {HELLO_TIMEOUT_S:.0f}s")

    def _reject(self, reason: str) -> None:
        self.network.log_rejection(self.address, reason)
        assert self.transport is not None
        self.transport.abort()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        network = self.network
        if self.peer is None and not self._handshake():
            return
        buf = self.buf
        pos = 0
        try:
            while len(buf) - pos >= LENGTH.size:
                (length,) = LENGTH.unpack_from(buf, pos)
                if length > network.max_frame:
                    raise PeerMessageError(f"frame of {length} bytes exceeds the limit of "
                                           f"{network.max_frame}")
                if len(buf) - pos - LENGTH.size < length:
                    break
                start = pos + LENGTH.size
                message = decode(bytes(buf[start:start + length]))
                pos = start + length
                network.on_message(self.peer, message)
                if self.transport is None or self.transport.is_closing():
                    return
        except PeerMessageError as error:
            self._reject(f"server.{self.peer}: {error}")
            return
        finally:
            del buf[:pos]
        network.after_input()

    def _handshake(self) -> bool:
        """Consumes the hello (and, when it authenticates, the nonce and user and later the
        dialer's proof); True once the peer is known and its messages may be taken."""
        network = self.network
        buf = self.buf
        if self.claimed is None:
            if not MAGIC.startswith(bytes(buf[:len(MAGIC)])):
                self._reject("not a fastzk peer (bad hello)")
                return False
            if len(buf) < HELLO.size:
                return False
            magic, version, sender, receiver = HELLO.unpack_from(buf)
            reason = network.check_hello(magic, version, sender, receiver, self.address)
            if reason is not None:
                self._reject(reason)
                return False
            if not network.certificate_names(sender, self.transport):
                self._reject(f"it claims to be server.{sender}, but its certificate is not for "
                             f"{network.members[sender].host} "
                             "(ssl.quorum.hostnameVerification)")
                return False
            if version == VERSION:
                del buf[:HELLO.size]
            elif not self._challenge(sender):
                return False
            self.claimed = sender
        if self.expected_mac:
            if len(buf) < MAC_BYTES:
                return False
            proof = bytes(buf[:MAC_BYTES])
            del buf[:MAC_BYTES]
            if not hmac.compare_digest(proof, self.expected_mac):
                self._reject(f"it claims to be server.{self.claimed} but does not know the "
                             f"key of its user ({self.network.auth_origin()})")
                return False
        self.peer = self.claimed
        self.timer.cancel()
        network.inbound_opened(self.peer, self)
        return True

    def _challenge(self, sender: int) -> bool:
        """An authenticating hello: once nonce and user are in, answers with our nonce and
        proof (or NO_AUTH when this server authenticates nobody)."""
        buf = self.buf
        start = HELLO.size + NONCE_BYTES + 1
        if len(buf) < start or len(buf) < start + buf[start - 1]:
            return False
        end = start + buf[start - 1]
        signed = bytes(buf[:HELLO.size]) + bytes(buf[start - 1:end])
        dialer_nonce = bytes(buf[HELLO.size:start - 1])
        raw_user = bytes(buf[start:end])
        del buf[:end]
        assert self.transport is not None
        auth = self.network.cfg.quorum_auth
        if auth is None:
            self.transport.write(NO_AUTH)
            return True
        key = self.network.auth_keys.get(raw_user)
        if key is None:
            self._reject(f"server.{sender} authenticates as user "
                         f"{raw_user.decode('utf-8', 'replace')!r}, which is not one of this "
                         f"server's ({auth.origin})")
            return False
        nonce = os.urandom(NONCE_BYTES)
        self.transport.write(nonce + _mac(key, b"fzk-accept", signed, dialer_nonce, nonce))
        self.expected_mac = _mac(key, b"fzk-dial", signed, dialer_nonce, nonce)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.timer.cancel()
        if self.peer is not None:
            self.network.inbound_closed(self.peer, self)


class _Outbound(asyncio.Protocol):
    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[None] = loop.create_future()
        # the acceptor's nonce and proof: all a member ever sends on a connection it accepted
        self.challenge: asyncio.Future[bytes] = loop.create_future()
        self.buf = bytearray()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) >= NONCE_BYTES + MAC_BYTES and not self.challenge.done():
            self.challenge.set_result(bytes(self.buf[:NONCE_BYTES + MAC_BYTES]))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class PeerNetwork:
    """The member's listener and one dialing link per peer. Callbacks run on the loop:
    `on_message(sender, message)`, `on_up(peer)` when the link we send on opens,
    `on_down(peer)` when it or the connection we receive on from that peer closes,
    `after_input()` after a batch of messages."""

    def __init__(self, cfg: Config, loop: asyncio.AbstractEventLoop,
                 on_message: Callable[[int, Any], None], on_up: Callable[[int], None],
                 on_down: Callable[[int], None], after_input: Callable[[], None]) -> None:
        self.cfg = cfg
        self.loop = loop
        self.me = cfg.member(cfg.server_id)
        self.members = {m.server_id: m for m in cfg.members}
        self.on_message = on_message
        self.on_up = on_up
        self.on_down = on_down
        self.after_input = after_input
        self.max_frame = max(16 * 1024 * 1024, 4 * cfg.jute_max_buffer)
        auth = cfg.quorum_auth
        self.auth_keys = {} if auth is None else {
            name.encode(): key for name, key in auth.keys}
        self.links: dict[int, asyncio.Transport | None] = {
            peer: None for peer in self.members if peer != cfg.server_id}
        self.inbound: dict[int, _Inbound] = {}
        self._server: asyncio.base_events.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._rejections: dict[str, tuple[float | None, int]] = {}  # see log_rejection
        # sslQuorum: members accept and dial over mutual TLS
        self.tls = Contexts(cfg.quorum_tls, dialing=True) if cfg.quorum_tls is not None else None
        self._listener: SecureListener | None = None

    async def start(self) -> None:
        """Listens on this member's quorum port (raises OSError when it is taken), then dials
        every peer in the background."""
        if self.tls is not None:
            self._listener = SecureListener(self.loop, self.tls, lambda: _Inbound(self),
                                            unified=False)
            self._listener.start(self.me.host, self.me.quorum_port)
        else:
            self._server = await self.loop.create_server(
                lambda: _Inbound(self), host=self.me.host, port=self.me.quorum_port,
                reuse_address=True)
        for peer in sorted(self.links):
            self._tasks.append(self.loop.create_task(self._dial(self.members[peer])))

    async def close(self) -> None:
        self._closing = True
        for task in self._tasks:
            task.cancel()
        for transport in list(self.links.values()):
            if transport is not None:
                transport.abort()
        for protocol in list(self.inbound.values()):
            if protocol.transport is not None:
                protocol.transport.abort()
        if self._listener is not None:
            self._listener.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _dial(self, member: Member) -> None:
        peer = member.server_id
        while not self._closing:
            try:
                tls = self.tls.client if self.tls is not None else None
                transport, protocol = await self.loop.create_connection(
                    _Outbound, host=member.host, port=member.quorum_port, ssl=tls,
                    server_hostname=member.host if tls is not None else None,
                    ssl_handshake_timeout=HELLO_TIMEOUT_S if tls is not None else None)
            except ssl.SSLError as error:
                reason = error.verify_message if isinstance(
                    error, ssl.SSLCertVerificationError) else ""
                log.warning("server.%d (%s:%d): TLS handshake failed: %s%s", peer, member.host,
                            member.quorum_port, error.reason or error,
                            f" ({reason})" if reason else "")
                await asyncio.sleep(AUTH_RETRY_S)
                continue
            except (TimeoutError, OSError):
                await asyncio.sleep(RETRY_S)
                continue
            if not await self._introduce(member, transport, protocol):
                transport.abort()
                await protocol.closed
                await asyncio.sleep(AUTH_RETRY_S)  # a misconfigured peer: log once a second
                continue
            self.links[peer] = transport
            self.on_up(peer)
            self.after_input()
            await protocol.closed
            self.links[peer] = None
            if not self._closing:
                self.on_down(peer)
                self.after_input()
                await asyncio.sleep(RETRY_S)

    async def _introduce(self, member: Member, transport: asyncio.Transport,
                         protocol: _Outbound) -> bool:
        """Sends the hello and, when members authenticate, completes the handshake: the
        acceptor must prove it knows our user's key before this server sends it anything."""
        auth = self.cfg.quorum_auth
        hello = HELLO.pack(MAGIC, VERSION if auth is None else AUTH_VERSION,
                           self.cfg.server_id, member.server_id)
        if auth is None:
            transport.write(hello)
            return True
        user = auth.user.encode()
        signed = hello + bytes([len(user)]) + user
        nonce = os.urandom(NONCE_BYTES)
        transport.write(hello + nonce + signed[HELLO.size:])
        closed = protocol.closed
        done, _ = await asyncio.wait((protocol.challenge, closed), timeout=HELLO_TIMEOUT_S,
                                     return_when=asyncio.FIRST_COMPLETED)
        if protocol.challenge not in done:
            return False  # refused (its log says why) or silent
        challenge = protocol.challenge.result()
        where = f"server.{member.server_id} ({member.host}:{member.quorum_port})"
        if challenge == NO_AUTH:
            if auth.learner_required:
                log.warning("%s does not authenticate members: not connecting to it (%s)",
                            where, auth.origin)
                return False
            log.info("%s does not authenticate members; connecting anyway "
                     "(quorum.auth.learnerRequireSasl=false)", where)
            return True
        theirs, proof = challenge[:NONCE_BYTES], challenge[NONCE_BYTES:]
        if not hmac.compare_digest(proof, _mac(auth.key, b"fzk-accept", signed, nonce, theirs)):
            log.warning("%s does not know the key of user %r (%s): not connecting to it",
                        where, auth.user, auth.origin)
            return False
        transport.write(_mac(auth.key, b"fzk-dial", signed, nonce, theirs))
        return True

    def send_paced(self, peer: int, messages: Iterator[Any],
                   done: Callable[[], None]) -> None:
        """Bulk messages (a snapshot) sent as the link drains, with at most PACED_BUFFER_BYTES
        queued: they neither trip the link's bound nor hold the replication messages behind
        them for long. Given up when the link closes (the replication core asks again);
        `done()` once the last one is queued."""
        task = self.loop.create_task(self._paced(peer, messages, done))
        self._tasks.append(task)
        task.add_done_callback(self._tasks.remove)

    async def _paced(self, peer: int, messages: Iterator[Any],
                     done: Callable[[], None]) -> None:
        transport = self.links.get(peer)
        for message in messages:
            while True:
                if transport is None or transport.is_closing() \
                        or self.links.get(peer) is not transport:
                    return
                if transport.get_write_buffer_size() < PACED_BUFFER_BYTES:
                    break
                await asyncio.sleep(PACED_POLL_S)
            self.send(peer, message)
        done()

    def send(self, peer: int, message: Any) -> None:
        self.send_all([(peer, message)])

    def send_all(self, messages: list[tuple[int, Any]]) -> None:
        """A step's messages, in order per peer, with one write per peer: a loopback write
        runs the receiver's TCP input too, and one write per message cost a leader under
        load a third of its time."""
        batches: dict[int, list[Any]] = {}
        for peer, message in messages:
            batch = batches.get(peer)
            if batch is None:
                batches[peer] = batch = []
            batch.append(message)
        appends: AppendBodies = {}
        for peer, batch in batches.items():
            transport = self.links.get(peer)
            if transport is None or transport.is_closing():
                continue  # lost with the link: the replication core resends, the host gives up
            transport.write(encode_all(batch, appends))
            if transport.get_write_buffer_size() > SEND_BUFFER_LIMIT:
                log.warning("server.%d is not reading (more than %d MB queued): link closed",
                            peer, SEND_BUFFER_LIMIT >> 20)
                transport.abort()

    def check_hello(self, magic: bytes, version: int, sender: int, receiver: int,
                    address: str) -> str | None:
        if magic != MAGIC:
            return "not a fastzk peer (bad hello)"
        if version not in (VERSION, AUTH_VERSION):
            return f"peer protocol version {version}, this server speaks {VERSION} and " \
                f"{AUTH_VERSION}"
        auth = self.cfg.quorum_auth
        if version == VERSION and auth is not None and auth.server_required:
            return f"it does not authenticate and this server requires members to ({auth.origin})"
        if receiver != self.cfg.server_id:
            return f"it wants server.{receiver}, this is server.{self.cfg.server_id}"
        member = self.members.get(sender)
        if member is None or sender == self.cfg.server_id:
            return f"server id {sender} is not a peer in this server's configuration"
        try:
            expected = ipaddress.ip_address(member.host)
        except ValueError:
            return None  # a host name: any of its addresses may dial
        if ipaddress.ip_address(address) != expected and not (
                expected.is_loopback and ipaddress.ip_address(address).is_loopback):
            return f"server.{sender} is {member.host}, not {address}"
        return None

    def certificate_names(self, sender: int, transport: asyncio.BaseTransport | None) -> bool:
        """With ssl.quorum.hostnameVerification, whether the peer's certificate names the
        address of the member it claims to be (so one member's certificate cannot speak for
        another); always true otherwise."""
        if self.tls is None or not self.tls.settings.hostname_verification:
            return True
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        cert = ssl_object.getpeercert() if ssl_object is not None else None
        return bool(cert) and names_host(cert, self.members[sender].host)

    def reload_tls(self) -> None:
        """New peer connections (dialed or accepted) use changed certificate files; the
        established ones keep theirs."""
        if self.tls is not None:
            self.tls.reload_if_changed()

    def log_rejection(self, address: str, reason: str) -> None:
        """One log line per address and reason every REJECT_LOG_INTERVAL_S: a peer that is
        refused redials 20 times a second (as fast as any member reconnects after a blip), and
        its refusals must not flood the log."""
        key = f"{address}: {reason}"
        now = self.loop.time()
        last, suppressed = self._rejections.get(key, (None, 0))
        if last is not None and now - last < REJECT_LOG_INTERVAL_S:
            self._rejections[key] = (last, suppressed + 1)
            return
        if len(self._rejections) >= MAX_REJECTION_KEYS:
            self._rejections.clear()
        self._rejections[key] = (now, 0)
        log.warning("peer connection from %s rejected: %s%s", address, reason,
                    f" ({suppressed} more since the last report)" if suppressed else "")

    def auth_origin(self) -> str:
        auth = self.cfg.quorum_auth
        return auth.origin if auth is not None else "no quorum authentication"

    def inbound_opened(self, peer: int, protocol: _Inbound) -> None:
        old = self.inbound.get(peer)
        self.inbound[peer] = protocol
        if old is not None and old.transport is not None:
            old.transport.abort()  # the peer restarted: its new connection wins

    def inbound_closed(self, peer: int, protocol: _Inbound) -> None:
        """Messages from `peer` may have been lost with the connection (a verdict, a sync
        reply): the node treats it like the loss of the link it sends on."""
        if self.inbound.get(peer) is protocol:
            del self.inbound[peer]
            if not self._closing:
                self.on_down(peer)
                self.after_input()

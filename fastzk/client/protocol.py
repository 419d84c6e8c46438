"""An asyncio ZooKeeper client connection: handshake, pipelined requests, watches, pings.

Design, and why:

* One TCP connection is one session; every request gets the next xid and a Future that
  waits in a FIFO queue. The server must answer ordinary requests in order (spec 3.4), so
  matching is ``popleft()`` plus a check that the xid is the expected one -- no dict.
  A mismatch is a protocol violation by the server and closes the connection, like the
  Java client's "Xid out of order".
* Requests issued in the same event-loop iteration are corked into one ``transport.write``
  (flushed with ``call_soon``), so a caller that pipelines N requests costs one syscall,
  not N.
* Replies are read with a BufferedProtocol into a reusable buffer and every complete frame
  in it is parsed per callback; the load path in ``load.py`` uses the same buffer class.
* Pings (xid -2) go out every third of the negotiated timeout when nothing else was sent;
  their replies, and notifications (xid -1), bypass the pending queue.
* Failures raise :class:`ZKError` carrying the numeric ZooKeeper code; a lost connection
  fails every pending request with CONNECTIONLOSS (-4). There is no reconnect: this client
  is for tests and measurements, where a silent reconnect would hide server bugs.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from fastzk.client.codec import (
    ACL,
    CONNECTION_LOSS,
    INT,
    NO_NODE,
    OPEN_ACL_UNSAFE,
    PING_FRAME,
    REPLY,
    SESSION_EXPIRED,
    XID_NOTIFICATION,
    XID_PING,
    CreateMode,
    MultiOp,
    MultiResult,
    Op,
    Stat,
    WatchEvent,
    ZKError,
    connect_request,
    create_body,
    decode_connect_response,
    decode_multi,
    decode_watch_event,
    delete_body,
    frame,
    multi_body,
    path_watch,
    read_buffer,
    read_stat,
    read_string_vector,
    read_ustring,
    set_body,
    ustring,
)

Decoder = Callable[[bytes], Any]
Watcher = Callable[[WatchEvent], None]

#: Largest frame we accept from a server (spec 1.1: jute.maxbuffer, plus slack for headers).
MAX_FRAME = 0xFFFFF + 1024


class ReadBuffer:
    """A receive buffer for ``asyncio.BufferedProtocol``: the kernel writes straight into it.

    Frames are parsed in place between ``start`` and ``end``; the unparsed tail is moved
    to the front only when the free space runs low, so a typical read costs no copy at all.
    The buffer grows (by replacement, never by resizing an exported bytearray) when one
    frame does not fit.
    """

    __slots__ = ("data", "start", "end", "min_free")

    def __init__(self, size: int = 256 * 1024, min_free: int = 64 * 1024) -> None:
        self.data = bytearray(size)
        self.start = 0
        self.end = 0
        self.min_free = min_free

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """Free space for the next read (called by the transport)."""
        want = max(sizehint, self.min_free)
        if len(self.data) - self.end < want:
            pending = self.end - self.start
            if pending + want > len(self.data):
                grown = bytearray(max(len(self.data) * 2, pending + want))
                grown[:pending] = self.data[self.start : self.end]
                self.data = grown
            elif pending:
                self.data[:pending] = self.data[self.start : self.end]
            self.start, self.end = 0, pending
        return memoryview(self.data)[self.end :]

    def consumed(self, pos: int) -> None:
        """Mark everything before *pos* as parsed; an empty buffer rewinds to 0 for free."""
        if pos >= self.end:
            self.start = self.end = 0
        else:
            self.start = pos


def _decode_get(body: bytes) -> tuple[bytes | None, Stat]:
    data, off = read_buffer(body, 0)
    stat, _ = read_stat(body, off)
    return data, stat


def _decode_stat(body: bytes) -> Stat:
    return read_stat(body, 0)[0]


def _decode_path(body: bytes) -> str:
    return read_ustring(body, 0)[0]


def _decode_children(body: bytes) -> list[str]:
    return read_string_vector(body, 0)[0]


class _Pending:
    """One outstanding request: its xid, the future to complete and the body decoder."""

    __slots__ = ("xid", "future", "decoder")

    def __init__(self, xid: int, future: asyncio.Future[Any], decoder: Decoder | None) -> None:
        self.xid = xid
        self.future = future
        self.decoder = decoder


class _ClientProtocol(asyncio.BufferedProtocol):
    """Frame splitter; hands every complete frame to the owning :class:`ZKClient`."""

    def __init__(self, client: ZKClient) -> None:
        self.client = client
        self.buf = ReadBuffer()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.client._transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.buf.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        buf = self.buf
        buf.end += nbytes
        data, pos, end = buf.data, buf.start, buf.end
        client = self.client
        while end - pos >= 4:
            (length,) = INT.unpack_from(data, pos)
            if length < 0 or length > MAX_FRAME:
                buf.consumed(end)
                client._fail(ZKError(CONNECTION_LOSS, f"bad frame length {length}"))
                return
            if end - pos - 4 < length:
                break
            client._on_frame(bytes(data[pos + 4 : pos + 4 + length]))
            pos += 4 + length
        buf.consumed(pos)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client._fail(ZKError(CONNECTION_LOSS, str(exc) if exc else "connection closed"))


class ZKClient:
    """One ZooKeeper session over one connection; create with :meth:`connect`.

    All request methods may be called concurrently (``asyncio.gather``) to keep many
    requests in flight; replies complete their futures in request order.
    """

    def __init__(self, watcher: Watcher | None = None) -> None:
        self.watcher = watcher
        self.session_id = 0
        self.passwd = b"\x00" * 16
        self.timeout_ms = 0
        self.last_zxid = 0
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._pending: deque[_Pending] = deque()
        self._xid = 0
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._last_send = 0.0
        self._handshake: asyncio.Future[bytes] = self._loop.create_future()
        self._closed: ZKError | None = None
        self._ping_task: asyncio.Task[None] | None = None

    # --- connection lifecycle ----------------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        host: str = "127.0.0.1",
        port: int = 2181,
        *,
        session_timeout_ms: int = 10_000,
        watcher: Watcher | None = None,
        connect_timeout: float = 10.0,
        tls: ssl.SSLContext | None = None,
    ) -> ZKClient:
        """Open a connection (over TLS with `tls`), run the handshake and start pinging.

        Raises ZKError(SESSIONEXPIRED) when the server refuses the session (timeout 0),
        ZKError(CONNECTIONLOSS) when it closes the socket, and TimeoutError.
        """
        client = cls(watcher)
        loop = client._loop
        await asyncio.wait_for(
            loop.create_connection(lambda: _ClientProtocol(client), host, port, ssl=tls),
            connect_timeout
        )
        assert client._transport is not None
        client._transport.write(connect_request(session_timeout_ms))
        client._last_send = time.monotonic()
        try:
            body = await asyncio.wait_for(client._handshake, connect_timeout)
        except BaseException:
            client._transport.abort()
            raise
        resp = decode_connect_response(body)
        if resp.timeout_ms <= 0 or resp.session_id == 0:
            client._transport.abort()
            raise ZKError(SESSION_EXPIRED, "server refused the session")
        client.session_id = resp.session_id
        client.passwd = resp.passwd
        client.timeout_ms = resp.timeout_ms
        client._ping_task = loop.create_task(client._ping_loop())
        return client

    @property
    def connected(self) -> bool:
        """True until the connection is lost or closed."""
        return self._closed is None and self._transport is not None

    async def close(self, timeout: float = 5.0) -> None:
        """closeSession (-11): the server drops ephemerals, replies, then closes the socket.

        Bounded by *timeout*; the socket is closed whatever happens.
        """
        if self._closed is None:
            with contextlib.suppress(ZKError, TimeoutError):
                await asyncio.wait_for(self._request(Op.CLOSE, b""), timeout)
        self._shutdown(ZKError(CONNECTION_LOSS, "closed by client"))

    async def __aenter__(self) -> ZKClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _shutdown(self, reason: ZKError) -> None:
        if self._ping_task is not None:
            self._ping_task.cancel()
            self._ping_task = None
        self._fail(reason)
        if self._transport is not None:
            self._transport.close()

    def _fail(self, reason: ZKError) -> None:
        """Connection is gone: fail the handshake and every pending request."""
        if self._closed is None:
            self._closed = reason
        if not self._handshake.done():
            self._handshake.set_exception(reason)
        pending, self._pending = self._pending, deque()
        for item in pending:
            if not item.future.done():
                item.future.set_exception(ZKError(reason.code, str(reason)))
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    async def _ping_loop(self) -> None:
        """Keep the session alive: ping when nothing was sent for a third of the timeout."""
        interval = max(self.timeout_ms / 3000.0, 0.05)
        while self._closed is None:
            await asyncio.sleep(interval)
            if self._closed is None and time.monotonic() - self._last_send >= interval * 0.9:
                self._write(PING_FRAME)

    # --- sending -----------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out, self._out = self._out, []
        if out and self._transport is not None and self._closed is None:
            self._transport.write(b"".join(out) if len(out) > 1 else out[0])
            self._last_send = time.monotonic()

    def _request(self, op: int, body: bytes, decoder: Decoder | None = None) -> asyncio.Future[Any]:
        """Queue one request; the returned future completes with the decoded reply."""
        fut: asyncio.Future[Any] = self._loop.create_future()
        if self._closed is not None:
            fut.set_exception(ZKError(self._closed.code, str(self._closed)))
            return fut
        self._xid = self._xid % 0x7FFFFFFF + 1
        self._pending.append(_Pending(self._xid, fut, decoder))
        self._write(frame(self._xid, op, body))
        return fut

    async def request(self, op: int, body: bytes, decoder: Decoder | None = None) -> Any:
        """Send any request type with a pre-encoded body (escape hatch for tests)."""
        return await self._request(op, body, decoder)

    # --- receiving ---------------------------------------------------------------------------

    def _on_frame(self, payload: bytes) -> None:
        if not self._handshake.done():
            self._handshake.set_result(payload)
            return
        xid, zxid, err = REPLY.unpack_from(payload, 0)
        if xid == XID_NOTIFICATION:
            if self.watcher is not None:
                self.watcher(decode_watch_event(payload[16:]))
            return
        if zxid > self.last_zxid:
            self.last_zxid = zxid
        if xid == XID_PING:
            return
        if not self._pending:
            self._shutdown(ZKError(CONNECTION_LOSS, f"unexpected reply xid {xid}"))
            return
        item = self._pending.popleft()
        if item.xid != xid:
            self._shutdown(
                ZKError(CONNECTION_LOSS, f"xid out of order: got {xid}, want {item.xid}")
            )
            return
        fut = item.future
        if fut.done():  # the caller gave up (cancelled); the reply still had to be consumed
            return
        if err:
            fut.set_exception(ZKError(err))
        elif item.decoder is None:
            fut.set_result(None)
        else:
            try:
                fut.set_result(item.decoder(payload[16:]))
            except Exception as e:  # noqa: BLE001 - a malformed reply fails only its request
                fut.set_exception(ZKError(-5, f"cannot decode reply: {e!r}"))

    # --- the API -----------------------------------------------------------------------------

    async def get(self, path: str, watch: bool = False) -> tuple[bytes | None, Stat]:
        """getData: (data, stat); data is None when the node holds null."""
        return await self._request(Op.GET_DATA, path_watch(path, watch), _decode_get)

    async def exists(self, path: str, watch: bool = False) -> Stat | None:
        """exists: the Stat, or None for a missing node (the watch is still set then)."""
        try:
            return await self._request(Op.EXISTS, path_watch(path, watch), _decode_stat)
        except ZKError as e:
            if e.code == NO_NODE:
                return None
            raise

    async def set(self, path: str, data: bytes | None, version: int = -1) -> Stat:
        """setData; version -1 matches any version."""
        return await self._request(Op.SET_DATA, set_body(path, data, version), _decode_stat)

    async def create(
        self,
        path: str,
        data: bytes | None = b"",
        mode: int = CreateMode.PERSISTENT,
        acl: Sequence[ACL] = OPEN_ACL_UNSAFE,
    ) -> str:
        """create (opcode 1); returns the actual path (with a sequence suffix if any)."""
        return await self._request(Op.CREATE, create_body(path, data, acl, mode), _decode_path)

    async def delete(self, path: str, version: int = -1) -> None:
        """delete; version -1 matches any version."""
        await self._request(Op.DELETE, delete_body(path, version))

    async def get_children(self, path: str, watch: bool = False) -> list[str]:
        """getChildren: child names (not paths), in server order."""
        return await self._request(Op.GET_CHILDREN, path_watch(path, watch), _decode_children)

    async def sync(self, path: str) -> str:
        """sync: a no-op barrier on one server; returns the echoed path."""
        return await self._request(Op.SYNC, ustring(path), _decode_path)

    async def multi(self, ops: Sequence[MultiOp]) -> list[MultiResult]:
        """multi (14): all-or-nothing. On failure the list holds ZKError entries (code 0 =
        rolled back) and the failing op's real code; no exception is raised, so callers
        can see which op failed."""
        return await self._request(Op.MULTI, multi_body(ops), decode_multi)

    async def ping(self) -> None:
        """Send a ping now (replies are not matched; this only refreshes the session)."""
        self._write(PING_FRAME)

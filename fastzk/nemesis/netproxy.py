"""A loopback TCP proxy whose links a test can cut, black-hole and heal.

Replication tests need network faults between servers that run on one
machine: every server-to-server connection is routed through a :class:`Link`
(one listening port forwarding to one target), and the test flips the link's
state.  All links of a :class:`NetProxy` share one asyncio event loop in a
background thread; the public methods are called from the test thread and
return only once the change has taken effect, so a test never needs a sleep
to be sure a cut has happened.

Link states:

* ``up``: bytes are forwarded both ways.  A connection that arrives while
  the target is not listening is held (the target is retried) for up to
  :data:`CONNECT_GRACE`, then reset: a proxy cannot refuse it any more.
* ``cut``: every connection carried is closed (with a reset, as a crashed
  peer's kernel would) and new connections are reset as soon as they are
  accepted -- the peer sees a refused/failed connection at once.
* ``blackhole``: connections stay open but nothing is delivered either way
  (bytes are read and discarded, so nothing piles up); new connections are
  accepted and swallowed.  This is a silent partition: only the servers'
  own timeouts can notice it.

Healing a black-holed link resets the connections it swallowed bytes of
(their streams are no longer intact) and those accepted while black-holed
(they have no upstream), so the peers reconnect cleanly.

Independently of the state, a link can be slowed down (:meth:`Link.delay`): every chunk
waits that long before it is forwarded, in order -- the latency ``tc netem`` would add,
which this machine's kernel lacks.  Healing sets the delay back to zero.

Memory is bounded: a connection holds at most one read chunk plus the
transport's write buffer, because each direction waits for ``drain()``
(backpressure) before it reads more.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

__all__ = ["Link", "LinkState", "NetProxy"]

LinkState = Literal["up", "cut", "blackhole"]

LOOPBACK = "127.0.0.1"
#: Bytes read from one side before they are written (and drained) to the other.
CHUNK = 64 * 1024
#: How long a connection accepted while the target refuses is held (retrying) before it is
#: reset, and the pause between attempts (see Link._connect_upstream).
CONNECT_GRACE = 1.0
CONNECT_RETRY = 0.02
#: How long a call from the test thread may wait for the proxy's event loop.
CALL_TIMEOUT = 10.0

_T = TypeVar("_T")


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST (SO_LINGER 0) rather than a FIN: the peer gets ECONNRESET at once."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


class _Connection:
    """One accepted connection and (unless it arrived while black-holed) its upstream."""

    def __init__(self, downstream: asyncio.StreamWriter) -> None:
        self.downstream = downstream
        self.upstream: asyncio.StreamWriter | None = None
        #: Set once a byte was discarded or when accepted while black-holed (no upstream):
        #: the stream can never be delivered intact, so heal() resets it.
        self.broken = False
        self.tasks: list[asyncio.Task[None]] = []

    def abort(self) -> None:
        for task in self.tasks:
            task.cancel()
        for writer in (self.downstream, self.upstream):
            if writer is not None:
                _reset(writer)


class Link:
    """One proxied address: ``127.0.0.1:port`` forwards to ``target``.

    Create links with :meth:`NetProxy.add_link`; the state-changing methods
    are thread-safe and synchronous.
    """

    def __init__(self, proxy: NetProxy, name: str, target: tuple[str, int]) -> None:
        self.name = name
        self.target = target
        self.port = 0
        self._proxy = proxy
        self._state: LinkState = "up"
        self._delay_s = 0.0
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[_Connection] = set()

    def __repr__(self) -> str:
        return (
            f"<Link {self.name} :{self.port}->{self.target[0]}:{self.target[1]} "
            f"{self._state} delay={self._delay_s}s conns={len(self._connections)}>"
        )

    @property
    def state(self) -> LinkState:
        """The current state (``up``, ``cut`` or ``blackhole``)."""
        return self._state

    @property
    def connections(self) -> int:
        """Number of connections the link carries now (for tests of the proxy)."""
        return len(self._connections)

    def cut(self) -> None:
        """Reset every carried connection and reset new ones until healed."""
        self._proxy.call(self._set_state("cut"))

    def blackhole(self) -> None:
        """Keep connections open but deliver nothing, and swallow new ones, until healed."""
        self._proxy.call(self._set_state("blackhole"))

    @property
    def delay_s(self) -> float:
        """Seconds each chunk waits before it is forwarded (0: none)."""
        return self._delay_s

    def delay(self, delay_s: float) -> None:
        """Hold every chunk *delay_s* seconds before forwarding it, until healed."""
        if delay_s < 0:
            raise ValueError("a delay cannot be negative")
        self._delay_s = delay_s

    def heal(self) -> None:
        """Forward again without delay; connections that lost bytes while black-holed are
        reset."""
        self._delay_s = 0.0
        self._proxy.call(self._set_state("up"))

    # -- event-loop side ---------------------------------------------------------------

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, LOOPBACK, 0, limit=CHUNK)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _set_state(self, state: LinkState) -> None:
        self._state = state
        for conn in list(self._connections):
            if state == "cut" or (state == "up" and conn.broken):
                self._drop(conn)

    def _drop(self, conn: _Connection) -> None:
        conn.abort()
        self._connections.discard(conn)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._state == "cut":
            _reset(writer)
            return
        conn = _Connection(writer)
        self._connections.add(conn)
        try:
            up_reader = await self._connect_upstream(conn)
            if conn not in self._connections:  # cut while connecting
                return
            if up_reader is not None and conn.upstream is not None:
                conn.tasks = [
                    asyncio.ensure_future(self._pump(conn, reader, conn.upstream)),
                    asyncio.ensure_future(self._pump(conn, up_reader, writer)),
                ]
            elif self._state == "blackhole":  # never connect upstream, swallow what arrives
                conn.broken = True
                conn.tasks = [asyncio.ensure_future(self._pump(conn, reader, None))]
            else:
                return  # target down: the client's connection is reset
            await asyncio.wait(conn.tasks, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            pass
        finally:
            self._drop(conn)

    async def _connect_upstream(self, conn: _Connection) -> asyncio.StreamReader | None:
        """Connect to the target while the link is up, retrying for :data:`CONNECT_GRACE`.

        A proxy cannot refuse a connection it has already accepted; resetting
        it at once would turn "not listening yet" into "connected, then reset",
        which ZooKeeper's learner treats as a failed leader (back to election,
        and the new leader waits initLimit ticks for it) where a refused
        connect is simply retried.  Holding the client while the target
        comes up keeps the servers' behaviour close to a direct connection.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONNECT_GRACE
        while self._state == "up" and conn in self._connections:
            try:
                reader, conn.upstream = await asyncio.open_connection(*self.target, limit=CHUNK)
                return reader
            except OSError:
                if loop.time() >= deadline:
                    return None
                await asyncio.sleep(CONNECT_RETRY)
        return None

    async def _pump(
        self,
        conn: _Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter | None,
    ) -> None:
        """Copy one direction until EOF or error; the caller then closes both sides.

        Half-closes are not propagated: the servers under test never use them,
        and closing both sides on the first EOF keeps the state machine trivial.
        """
        try:
            while data := await reader.read(CHUNK):
                if self._state == "blackhole" or writer is None:
                    conn.broken = True
                    continue
                if self._delay_s > 0:
                    await asyncio.sleep(self._delay_s)
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass


class NetProxy:
    """Owns the event-loop thread and every :class:`Link`; a context manager.

    ``stop()`` resets every connection and closes every listening socket, so
    the servers behind it see their peers vanish, exactly like a cut.
    """

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="netproxy", daemon=True)
        self._links: list[Link] = []
        self._thread.start()

    def __enter__(self) -> NetProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def links(self) -> list[Link]:
        """Every link created so far."""
        return list(self._links)

    def call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Run *coro* on the proxy's loop and return its result (bounded wait)."""
        if not self._thread.is_alive():
            coro.close()
            raise RuntimeError("the proxy is stopped")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(CALL_TIMEOUT)

    def add_link(self, name: str, target: tuple[str, int]) -> Link:
        """Listen on a fresh loopback port that forwards to *target*; return the link.

        The port is bound before this returns (no window in which another
        process could take it).
        """
        link = Link(self, name, target)
        self.call(link._listen())
        self._links.append(link)
        return link

    def stop(self) -> None:
        """Close every listener and connection, then end the loop thread.  Idempotent."""
        if not self._thread.is_alive():
            return

        async def shutdown() -> None:
            for link in self._links:
                await link._set_state("cut")
                if link._server is not None:
                    link._server.close()
            pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

        try:
            self.call(shutdown())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(CALL_TIMEOUT)
            if not self._thread.is_alive():
                self._loop.close()

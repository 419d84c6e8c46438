"""The asyncio (uvloop) shell around Node: sockets, peer links, clocks, the log stage, signals.

Per loop iteration: each connection decodes and answers every complete frame it has (reads in
bulk through `_core.serve_reads`), writes are proposed (leader) or forwarded (elsewhere), peer
messages are stepped into the node, and one scheduled callback per iteration (`_step`) executes
the node's `Output`: the epoch file first, then the log writes (group commit: everything
proposed or received in the iteration shares one write and one fdatasync), then the peer
messages. Durable log writes come back as `Node.persisted`; commits are applied inside the
node. Each connection's replies leave in one `transport.write` per iteration.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import random
import re
import resource
import signal
import ssl
import sys
import time
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path

from fastzk._core import FrameError, ReadBuffer, serve_reads
from fastzk.config import ALL_4LW, Config, ConfigError
from fastzk.node import Client, Limits, Node, State
from fastzk.quorum import messages as msgs
from fastzk.quorum.replica import QuorumConfig
from fastzk.runtime import admin
from fastzk.runtime import snapshot as snapshots
from fastzk.runtime.http import AdminListener
from fastzk.runtime.peers import PeerNetwork
from fastzk.runtime.stages import WriteStages
from fastzk.runtime.storage import Storage
from fastzk.runtime.tls import Contexts, SecureListener, x509_id
from fastzk.runtime.wal import RecoveryError
from fastzk.server.prep import Txn
from fastzk.zkfiles.takeover import import_on_start

log = logging.getLogger("fastzk")

FAST_PATH_BATCH = 256  # frames per serve_reads call: bounds the work done between pause checks
QUORUM_TICKS_PER_TICK = 10  # replication runs on tenths of tickTime
SNAPSHOT_CHUNK_BYTES = 1 << 20  # snapshot bytes per peer message
WRITE_HIGH_WATER_BYTES = 65536  # asyncio's default high-water mark, kept for large limits
LONE_SURROGATE = re.compile("[\ud800-\udfff]")
FD_LIMIT_LOG_INTERVAL_S = 60.0  # at most one "open-file limit reached" line per interval
TRIM_AFTER_BYTES = 16 << 20  # requests in flight or replies at once that make a burst
FOUR_LETTER_WORDS = frozenset(word.encode("ascii") for word in ALL_4LW)
# how long a thread may hold the GIL while another waits for it (Python's default: 5 ms). The
# WAL writer needs the GIL for a moment before each write and after each fdatasync; while the
# loop is busy it waited up to the whole interval each time, which fixed-rate writes paid as
# tail latency and, with few requests in flight, throughput (setData through ZooKeeper's Java
# client, 8 sessions x 32 in flight, three alternating pairs on a busy machine: 31k/11k/28k
# requests/s at 5 ms, 44k/21k/39k at 0.2 ms).
GIL_SWITCH_INTERVAL_S = 0.0002


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None (another libc): after a burst of large requests or replies
    glibc keeps their freed memory in its heap, where large values end up once its dynamic
    mmap threshold has grown; malloc_trim gives the free pages back to the system."""
    try:
        return ctypes.CDLL(None).malloc_trim  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


MALLOC_TRIM = _malloc_trim()


def _now(node: Node) -> None:
    node.set_time(int(time.time() * 1000), int(time.monotonic() * 1000))


class ClientProtocol(asyncio.BufferedProtocol):
    def __init__(self, server: Server) -> None:
        self.server = server
        self.node = server.node
        self.buf = ReadBuffer(server.cfg.jute_max_buffer)
        self.client: Client | None = None
        self.transport: asyncio.Transport | None = None
        self.ip = ""
        self.reading_paused = False
        self.writing_paused = False
        self.handshake_timer: asyncio.TimerHandle | None = None

    # --- asyncio callbacks -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.ip = peer[0] if peer else ""
        server = self.server
        sock = transport.get_extra_info("socket")
        if sock is not None:
            server.check_fd_limit(sock.fileno())
        limit = server.cfg.max_client_cnxns
        if limit and server.per_ip[self.ip] >= limit:
            log.warning("too many connections from %s (maxClientCnxns=%d)", self.ip, limit)
            transport.abort()
            return
        server.per_ip[self.ip] += 1
        # the transport pauses us (and resume_writing wakes us) well below the output limit,
        # so that whenever writing is not paused there is room to answer (see process)
        transport.set_write_buffer_limits(  # type: ignore[attr-defined]
            high=min(server.cfg.client_output_limit_bytes // 2, WRITE_HIGH_WATER_BYTES))
        self.client = Client(self.ip)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self._x509(ssl_object)
        self.client.established_ms = int(time.time() * 1000)
        server.protocols[self.client] = self
        self.node.connection_made(self.client)
        self.handshake_timer = server.loop.call_later(
            server.cfg.handshake_timeout_ms / 1000, self._handshake_expired
        )

    def _x509(self, ssl_object: ssl.SSLObject) -> None:
        """ZooKeeper's X509AuthenticationProvider: a verified client certificate's subject is
        the connection's ("x509", DN) identity, and ("super", "") when it is the configured
        super user."""
        assert self.client is not None and self.server.cfg.tls is not None
        der = ssl_object.getpeercert(binary_form=True)
        if not der:
            return
        subject = x509_id(der)
        self.client.identities[("x509", subject)] = None
        if subject == self.server.cfg.tls.x509_super_user:
            self.client.identities[("super", "")] = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.client is None:
            return
        if self.handshake_timer is not None:
            self.handshake_timer.cancel()
        server = self.server
        server.per_ip[self.ip] -= 1
        if not server.per_ip[self.ip]:
            del server.per_ip[self.ip]
        server.protocols.pop(self.client, None)
        server.throttled.pop(self, None)
        self.node.connection_lost(self.client)
        self.client = None

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.buf.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        self.buf.buffer_updated(nbytes)
        _now(self.node)
        self.process()
        self.server.after_input()

    def eof_received(self) -> bool:
        return False

    def pause_writing(self) -> None:
        """The peer is not reading its replies: stop reading its requests (back-pressure)."""
        self.writing_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.client is not None and self.transport is not None:
            self.client.unsent_bytes = self.transport.get_write_buffer_size()
        self._update_reading()
        self.process()
        self.server.after_input()

    # --- processing --------------------------------------------------------------------------
    def _handshake_expired(self) -> None:
        client = self.client
        if client is not None and client.state == State.HANDSHAKE and self.transport:
            self.transport.abort()

    def _blocked(self) -> bool:
        """Whether no request of this connection may be taken now (reading then pauses)."""
        client = self.client
        cfg = self.server.cfg
        return (
            client is None
            or client.closing
            or self.writing_paused
            or len(client.fifo) >= cfg.max_outstanding
            or client.fifo_bytes >= cfg.client_outstanding_limit_bytes
            or self in self.server.throttled
        )

    def _update_reading(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        should_pause = self._blocked() or self.buf.pending > 2 * self.server.cfg.jute_max_buffer
        if should_pause and not self.reading_paused:
            transport.pause_reading()
            self.reading_paused = True
        elif not should_pause and self.reading_paused:
            transport.resume_reading()
            self.reading_paused = False

    def process(self) -> None:
        """Handles every complete frame that may be handled now, then flushes replies."""
        client = self.client
        if client is None or self.transport is None:
            return
        node = self.node
        buf = self.buf
        try:
            if client.state == State.HANDSHAKE:
                head = buf.peek(4)
                if head is None:
                    return
                if head in FOUR_LETTER_WORDS:
                    self._four_letter_word(head.decode("ascii"))
                    return
                frame = buf.pop_frame()
                if frame is None:
                    return
                if self.handshake_timer is not None:
                    self.handshake_timer.cancel()
                    self.handshake_timer = None
                node.handle_connect(client, frame)
            while self._serve(client):
                # the output limit was reached: hand the replies to the transport; go on only
                # if the socket took enough of them (else resume_writing calls back)
                self.flush()
                if self.writing_paused or client.closing or self.transport.is_closing():
                    break
        except FrameError as error:
            size, limit = error.args[0], self.server.cfg.jute_max_buffer
            log.warning("closing %s: %s", self.ip,
                        f"frame length {size} exceeds jute.maxbuffer ({limit})" if size > 0
                        else f"invalid frame length {size}")
            client.out.take()
            self.transport.abort()
            return
        self.flush()
        self._update_reading()

    def _serve(self, client: Client) -> bool:
        """Answers every request that may be answered now while the connection's pending
        output (`client.out` plus what the transport still holds) is under
        `fastzk.clientOutputLimitBytes`; the limit is checked before each reply, not only after
        a flush, so a client that does not read cannot grow the server. Returns True when it
        stopped at that limit (more may be answered once the output is flushed)."""
        assert self.transport is not None
        node, buf, out, fifo = self.node, self.buf, client.out, client.fifo
        limit = self.server.cfg.client_output_limit_bytes
        client.unsent_bytes = self.transport.get_write_buffer_size()
        if node.replies_ready(client):
            node.drain(client)  # replies queued behind a write that the limit held back
        while client.state == State.READY and not self._blocked():
            room = limit - client.unsent_bytes
            if not fifo and (node.serving or client.read_only) and not client.must_authenticate:
                served = serve_reads(buf, node.tree, out, node.applied_zxid, FAST_PATH_BATCH,
                                     room, node.watches.tables, client)
                if served:
                    node.touch(client, served)
                    if served == FAST_PATH_BATCH:
                        continue
            if len(out) >= room:
                return True
            if self.server.over_outstanding():
                self.server.throttled[self] = None  # resumed when requests in flight drop
                break
            cfg = self.server.cfg
            if node.serve_writes(
                    client, buf, min(FAST_PATH_BATCH, cfg.max_outstanding - len(fifo),
                                     cfg.global_outstanding_limit - node.inflight_writes),
                    cfg.client_outstanding_limit_bytes - client.fifo_bytes,
                    cfg.large_request_max_bytes - node.inflight_write_bytes):
                continue
            frame = buf.pop_frame()
            if frame is None:
                break
            node.handle_request(client, frame)
        return False

    def flush(self) -> None:
        client = self.client
        transport = self.transport
        if client is None or transport is None:
            return
        if transport.is_closing():
            if len(client.out):
                client.out.take()  # closed, or being closed: nobody will read it
            return
        if len(client.out):
            if len(client.out) >= TRIM_AFTER_BYTES:
                self.server.burst = True
            transport.write(client.out.take())
            client.unsent_bytes = unsent = transport.get_write_buffer_size()
            hard_limit = self.server.cfg.client_output_hard_limit_bytes
            if unsent > hard_limit:
                # only output that cannot wait gets here (watch events, write replies): a
                # client this far behind is hopeless; closed, it reconnects and its client
                # library re-registers its watches (setWatches reports what it missed)
                log.warning(
                    "closing %s (session %#x): %d bytes of replies and watch events not read "
                    "(fastzk.clientOutputHardLimitBytes=%d)",
                    self.ip, client.session_id, unsent, hard_limit)
                transport.abort()
                return
        if client.closing and not transport.is_closing():
            transport.close()

    def _four_letter_word(self, word: str) -> None:
        assert self.transport is not None
        argument = b""
        if word == "stmk":  # followed by an 8-byte trace mask
            whole = self.buf.peek(12)
            if whole is None:
                return
            argument = whole[4:]
        self.buf.consume(4 + len(argument))
        if word not in self.server.cfg.four_letter_words:
            text = f"{word} is not executed because it is not in the whitelist.\n"
        else:
            text = admin.four_letter_word(word, self.server, argument)
        # a path may hold a lone surrogate (CESU-8 from a Java client): ZooKeeper's decoder
        # made it U+FFFD, so that is what it prints
        self.transport.write(LONE_SURROGATE.sub("\ufffd", text).encode("utf-8"))
        self.transport.close()


def quorum_config(cfg: Config) -> QuorumConfig:
    """Replication timing from ZooKeeper's keys: a follower that hears nothing from its leader
    for syncLimit ticks (randomised up to twice that) starts an election, a leader that hears
    no majority for syncLimit ticks steps down, a snapshot transfer may take initLimit ticks."""
    per_tick = QUORUM_TICKS_PER_TICK
    return QuorumConfig(
        server_id=cfg.server_id,
        voters=cfg.voters,
        observers=cfg.observers,
        election_ticks=cfg.sync_limit * per_tick,
        looking_ticks=per_tick // 2,  # half a tick: a few round trips, even on a busy machine
        check_quorum_ticks=cfg.sync_limit * per_tick,
        snapshot_ticks=cfg.init_limit * per_tick,
        first_counter=cfg.first_zxid_counter,
    )


class Server:
    def __init__(self, cfg: Config, loop: asyncio.AbstractEventLoop) -> None:
        self.cfg = cfg
        self.loop = loop
        self.started_ms = int(time.time() * 1000)
        limits = Limits(
            tick_ms=cfg.tick_time,
            min_session_timeout=cfg.min_session_timeout,
            max_session_timeout=cfg.max_session_timeout,
            super_digest=cfg.super_digest,
            ttl_enabled=cfg.ttl_enabled,
            sync_window_txns=cfg.sync_window_txns,
            read_only_enabled=cfg.read_only_enabled,
            output_limit_bytes=cfg.client_output_limit_bytes,
            large_request_threshold=cfg.large_request_threshold,
            sasl_users=cfg.sasl_users,
            sasl_gssapi=cfg.sasl_gssapi,
            sasl_acls="sasl" in cfg.auth_providers,
            sasl_super_user=cfg.sasl_super_user,
            allow_sasl_failed=cfg.allow_sasl_failed,
            enforce_auth_schemes=cfg.enforce_auth_schemes,
            skip_acl=cfg.skip_acl,
        )
        self.node = Node(limits, random.SystemRandom(), server_id=cfg.server_id,
                         start_ms=self.started_ms, quorum=quorum_config(cfg),
                         membership=cfg.membership.encode())
        _now(self.node)
        self.protocols: dict[Client, ClientProtocol] = {}
        # connections that stopped taking requests at the server-wide limits on writes in flight
        self.throttled: dict[ClientProtocol, None] = {}  # an ordered set: resumed in order
        self._fd_limit_logged_at: float | None = None
        self.burst = False  # many bytes were in flight at once: trim the heap once it drains
        self.per_ip: Counter[str] = Counter()
        self._step_scheduled = False
        self._tcp: asyncio.base_events.Server | None = None
        self._admin: AdminListener | None = None
        self.tls = Contexts(cfg.tls) if cfg.tls is not None else None
        self.secure_listeners: list[SecureListener] = []
        self.trace_mask = admin.TRACE_MASK
        self.serving = False
        self.log_failure: str | None = None  # set when the log stage cannot make writes durable
        # the snapshot jitter differs between members and is the same on every run
        self.storage = Storage(cfg, self.node, loop, self._durable, self._log_failed,
                               random.Random(cfg.server_id))
        self.peers: PeerNetwork | None = None
        if cfg.ensemble:
            self.peers = PeerNetwork(cfg, loop, self._peer_message, self.node.peer_up,
                                     self.node.peer_down, self.after_input)
        self._writes: deque[tuple[int, int]] = deque()  # (gen, last zxid) per log submit
        self.stages = WriteStages()
        self._log_waiting_since: int | None = None  # mono ms of the oldest uncommitted txn
        self.exit_status: asyncio.Future[int] = loop.create_future()
        self.role = self.node.role
        self.role_changes = 0
        self._digest_mismatches_logged = 0
        self.role_since = time.monotonic()

    def after_input(self) -> None:
        """Called after every event that may have produced output or log entries."""
        if not self._step_scheduled:
            self._step_scheduled = True
            self.stages.input()
            self.loop.call_soon(self._step)
        self.flush_dirty()

    def _step(self) -> None:
        """Executes the node's output (see the module docstring). Its log writes are this
        iteration's group commit: replies and watch events follow once a quorum has them."""
        self._step_scheduled = False
        node = self.node
        applied_before = node.applied_txns
        started_ns = time.perf_counter_ns()
        out = node.take_output()
        applied = node.applied_txns - applied_before
        if applied:
            self.stages.applied(node.applied_zxid, applied, started_ns, time.perf_counter_ns())
        if out.hard_state is not None:
            self.storage.save_hard_state(*out.hard_state)
        batch: list[Txn] = []
        for op, argument in out.log_ops:
            if op == "append":
                batch.extend(payload for _, payload in argument)
                continue
            if batch:
                self._submit(batch, out.gen)
                batch = []
            self.stages.truncated(argument)
            self.storage.truncate_after(argument)
        if batch:
            self._submit(batch, out.gen)
        if node.inflight_write_bytes >= TRIM_AFTER_BYTES:
            self.burst = True
        if node.role != self.role:
            self._role_changed()
        if len(node.digest_mismatches) > self._digest_mismatches_logged:
            for zxid, mine, leader in node.digest_mismatches[self._digest_mismatches_logged:]:
                log.error("DIGEST MISMATCH at zxid %#x: this server's tree digest is %d, the "
                          "leader's %d. The replicas diverged: this server is not ready until "
                          "restarted (it then syncs from the leader).", zxid, mine, leader)
            self._digest_mismatches_logged = len(node.digest_mismatches)
        peers = self.peers
        if peers is not None:
            peers.send_all(out.messages)
            for peer in out.snapshots:
                self._send_snapshot(peer)
        flush_ns = time.perf_counter_ns()
        self.flush_dirty()
        if applied:
            self.stages.flushed(applied, flush_ns)

    def _role_changed(self) -> None:
        node = self.node
        now = time.monotonic()
        log.info("server.%d: %s -> %s (epoch %d, leader %s, zxid %#x) after %.3fs",
                 node.server_id, self.role, node.role, node.replica.epoch,
                 node.replica.leader_id, node.applied_zxid, now - self.role_since)
        self.role = node.role
        self.role_since = now
        self.role_changes += 1

    def _submit(self, txns: list[Txn], gen: int) -> None:
        self._writes.append((gen, txns[-1].zxid))
        self.stages.submitted(txns[-1].zxid, len(txns))
        self.storage.submit(txns)

    def _durable(self, groups: list[list[Txn]]) -> None:
        """On the loop, from the writer thread: txns are on disk (fdatasync returned)."""
        _now(self.node)
        for _ in groups:
            gen, zxid = self._writes.popleft()
            self.stages.durable()
            self.node.persisted(gen, zxid)
        # commit and answer now rather than a loop iteration later: that iteration is latency
        # every write pays (and, with many in flight, throughput)
        self._step()

    def _log_failed(self, txns: list[Txn], error: OSError) -> None:
        """The WAL cannot make txns durable (EIO, ENOSPC...): they are never acknowledged, their
        connections are closed (the client sees a connection loss), and from now on every
        write fails the same way while reads go on; `ready` reports the failure. A member of
        an ensemble stops instead (exit status 4): a server that cannot keep its log must
        neither acknowledge nor vote; the others go on without it."""
        self.log_failure = f"{error}"
        self.node.abandon()
        self.flush_dirty()
        if self.cfg.ensemble and not self.exit_status.done():
            log.error("stopping: this server's log failed (%s); restart it once the disk is "
                      "fixed and it will catch up from the leader", error)
            self.exit_status.set_result(4)

    # --- peers -----------------------------------------------------------------------------------
    def _peer_message(self, sender: int, message: object) -> None:
        _now(self.node)
        if type(message) is msgs.SnapshotChunk:
            self._snapshot_chunk(sender, message)
        else:
            self.node.peer_message(sender, message)

    def _send_snapshot(self, peer: int) -> None:
        """The leader's applied state for a follower its log cannot catch up: serialized at
        once (blocking the loop for as long as that takes), sent in chunks as the link drains.
        The follower has initLimit ticks from the start and again from the last chunk to
        acknowledge it, or it is sent again."""
        assert self.peers is not None
        node = self.node
        zxid = node.applied_zxid
        data = snapshots.serialize(node, self.cfg.snapshot_chunk_nodes)
        log.info("sending server.%d a snapshot at zxid %#x (%d bytes)", peer, zxid, len(data))
        epoch = node.replica.epoch
        chunks = (msgs.SnapshotChunk(epoch, zxid, offset,
                                     data[offset:offset + SNAPSHOT_CHUNK_BYTES],
                                     offset + SNAPSHOT_CHUNK_BYTES >= len(data))
                  for offset in range(0, len(data), SNAPSHOT_CHUNK_BYTES))
        node.replica.snapshot_sent(peer, zxid)
        self.peers.send_paced(peer, chunks, lambda: node.replica.snapshot_sent(peer, zxid))

    def _snapshot_chunk(self, sender: int, chunk: msgs.SnapshotChunk) -> None:
        data = self.node.snapshot_chunk(sender, chunk)
        if data is None:
            return
        log.info("installing a snapshot at zxid %#x from server.%d (%d bytes)", chunk.zxid,
                 sender, len(data))

        def installed(path: object, error: BaseException | None) -> None:
            if error is not None:
                log.error("snapshot from server.%d not installed: %s", sender, error)
                return
            assert isinstance(path, Path)
            info, tree = snapshots.summary(path)
            _now(self.node)
            self.node.install_snapshot(sender, chunk.epoch, info.zxid, tree, info.sessions)
            self.after_input()

        self.storage.install_snapshot(chunk.zxid, data, installed)

    def flush_dirty(self) -> None:
        node = self.node
        if self.throttled and not self.over_outstanding():
            # first, so that connections that hit the server-wide limits get their turn before
            # the ones whose replies just went out take the room again
            throttled = list(self.throttled)
            self.throttled.clear()
            for protocol in throttled:
                protocol.process()
        while node.dirty:
            dirty = list(node.dirty)
            node.dirty.clear()
            for client in dirty:
                protocol = self.protocols.get(client)
                if protocol is None:
                    continue
                protocol.flush()
                # a connection whose handshake or queued writes just completed may now
                # handle frames it had to leave buffered, or replies the output limit held
                if client.state == State.READY and (
                    protocol.buf.pending or node.replies_ready(client)
                ):
                    protocol.process()
                else:
                    protocol._update_reading()
        if (node.proposals or node.outbox or node.replica.has_ready()) \
                and not self._step_scheduled:
            self._step_scheduled = True
            self.loop.call_soon(self._step)

    def check_fd_limit(self, fd: int) -> None:
        """Logs (once per interval) when a connection took one of the last file descriptors:
        the event loop then accepts and closes every further connection without telling us,
        so this is the only place the refusals can be reported. File descriptors are handed
        out lowest first, so a connection's fd number shows how close the limit is."""
        soft_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft_limit == resource.RLIM_INFINITY or fd < soft_limit - 2:
            return
        now = time.monotonic()
        if self._fd_limit_logged_at is None or now - self._fd_limit_logged_at >= (
            FD_LIMIT_LOG_INTERVAL_S
        ):
            self._fd_limit_logged_at = now
            log.warning("open-file limit reached (%d connections, RLIMIT_NOFILE %d): new "
                        "connections are refused until some close; raise the limit (ulimit -n)",
                        len(self.protocols), soft_limit)

    def over_outstanding(self) -> bool:
        """The server-wide bounds on writes in flight (globalOutstandingLimit, and
        largeRequestMaxBytes for their bytes): once reached, connections stop taking requests
        until commits bring the totals down. Nothing is refused or dropped."""
        node, cfg = self.node, self.cfg
        return (node.inflight_writes >= cfg.global_outstanding_limit
                or node.inflight_write_bytes >= cfg.large_request_max_bytes)

    def _tick(self) -> None:
        _now(self.node)
        self.node.tick()
        self.after_input()
        self.storage.sizes.refresh(self.loop)
        if self.tls is not None:
            self.tls.reload_if_changed()
        if self.peers is not None:
            self.peers.reload_tls()
        if self._admin is not None:
            self._admin.reload_tls()
        if self.burst and not self.node.inflight_write_bytes and MALLOC_TRIM is not None:
            self.burst = False  # it has drained: return its memory to the system
            MALLOC_TRIM(0)
        self.loop.call_later(self.cfg.tick_time / 1000, self._tick)

    def _quorum_tick(self) -> None:
        _now(self.node)
        self.node.quorum_tick()
        self.after_input()
        self.loop.call_later(self.cfg.tick_time / 1000 / QUORUM_TICKS_PER_TICK,
                             self._quorum_tick)

    def _reap(self) -> None:
        """ZooKeeper's container manager: a bounded number of deletes per check interval."""
        interval = self.cfg.container_check_interval_ms
        _now(self.node)
        self.node.reap(max(1, self.cfg.container_max_per_minute * interval // 60000))
        self.after_input()
        self.loop.call_later(interval / 1000, self._reap)

    async def start(self) -> None:
        """Recovers the durable state (raises RecoveryError when it cannot be trusted), then
        listens (raises OSError when a port is taken)."""
        _now(self.node)
        report = self.storage.open(adopt=import_on_start)  # Apache ZooKeeper's files, if any
        self.storage.sizes.refresh(self.loop)
        log.info(
            "recovered zxid %#x in %.3fs: snapshot %s (zxid %#x), %d txns read, %d znodes, "
            "%d sessions, digest %d",
            report.last_zxid, report.seconds,
            report.snapshot.name if report.snapshot else "none", report.snapshot_zxid,
            report.replayed, report.nodes, report.sessions, self.node.tree.digest(),
        )
        if self.peers is not None:
            await self.peers.start()
        self.node.start()
        self._step()
        if not self.cfg.ensemble:
            # alone, this server leads at once: listen once its epoch's barrier is durable
            deadline = time.monotonic() + 60
            while not self.node.serving and self.log_failure is None:
                if time.monotonic() > deadline:
                    raise RecoveryError("the first write after start-up never became durable")
                await asyncio.sleep(0.001)
            await self.storage.snapshot_at_start()
        # everything allocated so far (modules, config, recovery) lives as long as the
        # process: out of the cyclic collector's reach, a full collection scans only what
        # serving allocates (it scanned ~30,000 objects, ~10 ms, every few seconds under load)
        gc.collect()
        gc.freeze()
        await self._listen()
        self.loop.call_later(self.cfg.tick_time / 1000, self._tick)
        self.loop.call_later(self.cfg.tick_time / 1000 / QUORUM_TICKS_PER_TICK,
                             self._quorum_tick)
        self.loop.call_later(self.cfg.container_check_interval_ms / 1000, self._reap)
        if self.cfg.admin_enabled:
            self._admin = AdminListener(self)
            await self._admin.start()
        self.serving = True
        self.stages.recording = True  # recovery's replay was no client's write

    async def _listen(self) -> None:
        """The client ports: plaintext, TLS (secureClientPort) or both on one
        (client.portUnification)."""
        cfg = self.cfg
        if self.tls is not None:
            for host, port, unified in (
                (cfg.secure_client_port_address, cfg.secure_client_port, False),
                (cfg.client_port_address, cfg.client_port if cfg.port_unification else None,
                 True),
            ):
                if port is not None:
                    listener = SecureListener(self.loop, self.tls,
                                              lambda: ClientProtocol(self), unified)
                    self.secure_listeners.append(listener)
                    listener.start(host or None, port)
        if cfg.plain_client_port and not cfg.port_unification:
            self._tcp = await self.loop.create_server(
                lambda: ClientProtocol(self),
                host=cfg.client_port_address or None,
                port=cfg.client_port,
                reuse_address=True,
                backlog=1024,
            )

    def ready(self) -> tuple[bool, str]:
        """Whether a write sent now would be served: listening, in a quorum and synced, the
        log stage healthy and not stalled (no txn has waited for its commit longer than two
        ticks)."""
        if not self.serving:
            return False, "not serving client requests"
        if self.log_failure is not None:
            return False, f"log stage failed: {self.log_failure}"
        writer = self.storage.writer
        if writer is not None and writer.waiting is not None:
            return False, writer.waiting
        node = self.node
        if not node.serving:
            return False, f"not in a quorum (state: {node.role})"
        if node.digest_mismatches:
            zxid = node.digest_mismatches[0][0]
            return False, f"tree digest differs from the leader's at zxid {zxid:#x}"
        if node.proposals or node.waiting:
            if self._log_waiting_since is None:
                self._log_waiting_since = int(time.monotonic() * 1000)
            elif int(time.monotonic() * 1000) - self._log_waiting_since > 2 * self.cfg.tick_time:
                return False, "writes are waiting for the log stage"
        else:
            self._log_waiting_since = None
        if writer is not None and writer.low_space is not None:
            return True, f"serving reads and writes; {writer.low_space}"
        return True, "serving reads and writes"

    async def stop(self) -> None:
        self.serving = False
        if self._admin is not None:
            self._admin.close()
        if self._tcp is not None:
            self._tcp.close()
        for listener in self.secure_listeners:
            listener.close()
        for protocol in list(self.protocols.values()):
            if protocol.transport is not None:
                protocol.transport.abort()
        if self._tcp is not None:
            await self._tcp.wait_closed()
        if self.peers is not None:
            await self.peers.close()
        await self.storage.close()


async def _serve(cfg: Config) -> int:
    loop = asyncio.get_running_loop()
    try:
        server = Server(cfg, loop)
    except ConfigError as error:  # the TLS key or trust store cannot be loaded
        log.error("configuration error: %s", error)
        return 2
    try:
        await server.start()
    except RecoveryError as error:
        log.error("cannot start: %s", error)
        return 3
    except OSError as error:
        log.error("cannot start: %s (is another server using the port?)", error)
        await server.stop()
        return 2
    if cfg.plain_client_port or cfg.port_unification:
        log.info("fastzk serving on %s:%d%s (config: %s, dataDir: %s)",
                 cfg.client_port_address or "0.0.0.0", cfg.client_port,
                 " (TLS and plaintext)" if cfg.port_unification else "", cfg.source,
                 cfg.data_dir)
    if cfg.secure_client_port is not None:
        log.info("fastzk serving TLS on %s:%d", cfg.secure_client_port_address or "0.0.0.0",
                 cfg.secure_client_port)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _stop_with, server.exit_status, 0)
    status = await server.exit_status
    log.info("fastzk shutting down")
    await server.stop()
    return status


def _stop_with(status: asyncio.Future[int], code: int) -> None:
    if not status.done():
        status.set_result(code)


def run(cfg: Config, log_level: str = "INFO") -> int:
    logging.basicConfig(
        level=log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for warning in cfg.warnings:
        log.warning("config %s: %s", cfg.source, warning)
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    import uvloop

    return uvloop.run(_serve(cfg))

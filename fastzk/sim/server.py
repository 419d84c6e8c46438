"""One simulated server: the production `Node` (host, pipeline, replication core) inside a
shell that does what fastzk/runtime/server.py and storage.py do, but against the simulated
network, disk and clock, and with no event loop of its own.

The shell executes each `Output` in the runtime's order (epoch file first, then log
operations in order, messages, snapshots), reports `persisted(gen, zxid)` when the simulated
fsync completes, serves client connections through the same read buffer and fast read path
(`serve_reads`) as the runtime, and takes fuzzy snapshots that it recovers from exactly as
storage.recover does: the newest snapshot whose walk the log covers, then the log.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Any

from fastzk._core import DataTree, ReadBuffer, serve_reads
from fastzk.node import Client, Limits, Node, State
from fastzk.quorum import messages as msgs
from fastzk.quorum.replica import LEADER, QuorumConfig
from fastzk.runtime import snapshot as snapshots
from fastzk.server.prep import BARRIER, Txn
from fastzk.sim.disk import DiskOp, SimDisk, Snap
from fastzk.sim.parts import ClientEnd, ServerChecks, ServerWorld

EPOCH_MS = 1_780_000_000_000  # wall clock at simulated time zero
TICK_MS = 500  # tickTime
QUORUM_TICK_US = 50_000  # a tenth of tickTime, as the runtime's
FAST_PATH_BATCH = 64
SNAPSHOT_CHUNK_NODES = 16
SNAPSHOT_CHUNK_BYTES = 2048


class SimNode(Node):
    """The production node; the simulator only watches what it applies."""

    checks: ServerChecks  # set right after construction

    def _apply(self, txns: list[Txn]) -> None:
        self.checks.world.trace_event("apply", self.server_id,
                                      " ".join(f"{t.zxid:#x}" for t in txns))
        self.checks.before_apply(self.server_id, txns)
        super()._apply(txns)
        self.checks.after_apply(self.server_id, self.applied_zxid, self.tree.digest())


class SimConn:
    """The server's end of one client connection (ClientProtocol's job)."""

    __slots__ = ("server", "boot", "client", "buf", "sim_client", "open")

    def __init__(self, server: SimServer, sim_client: ClientEnd) -> None:
        self.server = server
        self.boot = server.boot
        self.sim_client = sim_client
        self.client = Client("127.0.0.1")
        self.buf = ReadBuffer(1 << 20)
        self.open = True

    def received(self, data: bytes) -> None:
        if not self.open or self.server.boot != self.boot:
            return
        view = self.buf.get_buffer(len(data))
        view[:len(data)] = data
        self.buf.buffer_updated(len(data))
        self.server.set_time()
        self.process()
        self.server.step()

    def process(self) -> None:
        client, node, buf = self.client, self.server.node, self.buf
        assert node is not None
        if client.state == State.HANDSHAKE:
            frame = buf.pop_frame()
            if frame is None:
                return
            node.handle_connect(client, frame)
        while client.state == State.READY and not client.closing:
            if not client.fifo and (node.serving or client.read_only):
                served = serve_reads(buf, node.tree, client.out, node.applied_zxid,
                                     FAST_PATH_BATCH, 1 << 30)
                if served:
                    node.touch(client, served)
                    if served == FAST_PATH_BATCH:
                        continue
            if node.serve_writes(client, buf, FAST_PATH_BATCH, 1 << 30, 1 << 30):
                continue
            frame = buf.pop_frame()
            if frame is None:
                break
            node.handle_request(client, frame)


class SimServer:
    def __init__(self, world: ServerWorld, sid: int, quorum: QuorumConfig, limits: Limits,
                 shell_bugs: frozenset[str]) -> None:
        self.world = world
        self.sid = sid
        self.quorum = quorum
        self.limits = limits
        self.ack_before_fsync = "ack-before-fsync" in shell_bugs
        self.disk = SimDisk()
        self.node: SimNode | None = None
        self.boot = 0
        self.conns: dict[Client, SimConn] = {}
        self.conn_ids: dict[Client, int] = {}
        self.writes: deque[tuple[int, int]] = deque()  # (gen, last zxid) per append in flight
        self.disk_busy = False
        self.paused_until_us = 0
        self.rate = 1.0  # clock rate (drift)
        self.mono_anchor = (0, 0)  # (sim us, mono us) where the rate last changed
        self.wall_offset_ms = 0
        self.crash_at: str | None = None  # crash right after this kind of disk op completes
        self.snapshot_every = 0
        self.applied_at_snapshot = 0
        self.snapshot_start: tuple[int, bytes] | None = None
        self.next_conn = 0

    # --- time -----------------------------------------------------------------------------
    def mono_us(self) -> int:
        anchor_now, anchor_mono = self.mono_anchor
        return anchor_mono + int((self.world.now_us - anchor_now) * self.rate)

    def set_rate(self, rate: float) -> None:
        self.mono_anchor = (self.world.now_us, self.mono_us())
        self.rate = rate

    def set_time(self) -> None:
        assert self.node is not None
        self.node.set_time(EPOCH_MS + self.world.now_us // 1000 + self.wall_offset_ms,
                           self.mono_us() // 1000)

    def _timer(self, period_us: int, boot: int, fire: Any) -> None:
        if self.boot != boot or self.node is None:
            return
        self.set_time()
        fire()
        self.step()
        self.world.at(int(period_us / self.rate), self._timer, period_us, boot, fire,
                      target=self)

    # --- life ------------------------------------------------------------------------------
    def start(self) -> None:
        """Starts (or restarts) the server from its disk, as storage.recover does."""
        world = self.world
        self.boot += 1
        self.set_rate(self.rate)
        node = SimNode(self.limits, random.Random(world.rng.getrandbits(64)),
                       server_id=self.sid, start_ms=EPOCH_MS + world.now_us // 1000,
                       quorum=self.quorum, membership=world.membership)
        node.checks = world.checks
        self.node = node
        self.set_time()
        self.writes = deque()
        self.disk_busy = False
        self.snapshot_start = None
        self.snapshot_every = world.rng.randrange(20, 200)
        disk = self.disk
        reach = disk.zxids[-1] if disk.zxids else 0
        chosen = None
        for snap in sorted(disk.snapshots, key=lambda s: s.zxid, reverse=True):
            if max(reach, snap.zxid) >= snap.end_zxid:
                chosen = snap
                break
        base, sessions, fuzzy_until = 0, [], 0
        if chosen is not None:
            info = snapshots.load_bytes(chosen.data, f"server.{self.sid} snapshot", node.tree)
            base, sessions, fuzzy_until = info.zxid, info.sessions, info.end_zxid
        elif disk.txns and disk.txns[0].changes[:1] != [(BARRIER, 0)]:
            world.checks.fail("recovery", f"server.{self.sid}: no usable snapshot and the log "
                              f"starts at {disk.zxids[0]:#x}")
        epoch, voted_for = disk.hard_state
        txns = [t for z, t in zip(disk.zxids, disk.txns, strict=True) if z > base]
        node.recover(base, sessions, txns, fuzzy_until=fuzzy_until, epoch=epoch,
                     voted_for=voted_for)
        world.checks.state_loaded(self.sid, node.applied_zxid, node.tree.digest())
        self.applied_at_snapshot = node.applied_zxid
        node.start()
        self.step()
        boot = self.boot
        world.at(QUORUM_TICK_US, self._timer, QUORUM_TICK_US, boot, node.quorum_tick,
                 target=self)
        world.at(TICK_MS * 1000, self._timer, TICK_MS * 1000, boot, node.tick, target=self)
        world.net.server_up(self.sid, boot)

    def crash(self, torn: bool = False) -> None:
        """kill -9 (or power loss, with `torn`): memory is gone, the disk keeps what was
        fsynced."""
        if self.node is None:
            return
        world = self.world
        world.trace_event("crash", self.sid, "torn" if torn else "")
        self.node = None
        self.boot += 1
        self.crash_at = None
        self.paused_until_us = 0
        self.disk.crash(world.rng, torn)
        conns = [self.conns[c] for c in sorted(self.conns, key=self.conn_ids.__getitem__)]
        self.conns.clear()
        self.conn_ids.clear()
        for conn in conns:
            conn.open = False
            world.at(world.rng.randrange(100, 2000), conn.sim_client.connection_lost, conn)
        world.net.server_down(self.sid)

    # --- clients ---------------------------------------------------------------------------
    def accept(self, sim_client: ClientEnd) -> SimConn | None:
        node = self.node
        if node is None:
            return None
        conn = SimConn(self, sim_client)
        self.conns[conn.client] = conn
        self.next_conn += 1
        self.conn_ids[conn.client] = self.next_conn
        node.connection_made(conn.client)
        return conn

    def disconnect(self, conn: SimConn) -> None:
        """The client closed its end (or its connection died)."""
        if not conn.open or conn.boot != self.boot or self.node is None:
            return
        conn.open = False
        self.set_time()
        self.conns.pop(conn.client, None)
        self.conn_ids.pop(conn.client, None)
        self.node.connection_lost(conn.client)
        self.step()

    def flush(self) -> None:
        """runtime's flush_dirty: replies to their clients, closing connections closed."""
        node = self.node
        assert node is not None
        world = self.world
        while node.dirty:
            dirty = sorted(node.dirty, key=lambda c: self.conn_ids.get(c, 0))
            node.dirty.clear()
            for client in dirty:
                conn = self.conns.get(client)
                if conn is None:
                    continue
                data = client.out.take()
                if data:
                    conn.sim_client.deliver(conn, data)
                if client.closing:
                    conn.open = False
                    del self.conns[client]
                    del self.conn_ids[client]
                    node.connection_lost(client)
                    world.at(world.rng.randrange(100, 1000), conn.sim_client.connection_lost,
                             conn)
                elif client.state == State.READY and (conn.buf.pending
                                                      or node.replies_ready(client)):
                    conn.process()

    # --- peers -----------------------------------------------------------------------------
    def peer_message(self, sender: int, message: Any) -> None:
        node = self.node
        assert node is not None
        self.set_time()
        if type(message) is msgs.SnapshotChunk:
            data = node.snapshot_chunk(sender, message)
            if data is not None:
                self.snapshot_start = None  # the runtime aborts a snapshot in progress too
                self._submit(DiskOp("install", (Snap(message.zxid, message.zxid, data),),
                                    (sender, message.epoch)))
        else:
            node.peer_message(sender, message)
        self.step()

    def peer_up(self, peer: int) -> None:
        assert self.node is not None
        self.set_time()
        self.node.peer_up(peer)
        self.step()

    def link_down(self, peer: int, boot: int) -> None:
        if self.node is None or self.boot != boot:
            return
        self.set_time()
        self.node.peer_down(peer)
        self.step()

    def _send_snapshot(self, peer: int) -> None:
        node = self.node
        assert node is not None
        zxid = node.applied_zxid
        data = snapshots.serialize(node, SNAPSHOT_CHUNK_NODES)
        node.replica.snapshot_sent(peer, zxid)
        epoch = node.replica.epoch
        net = self.world.net
        for offset in range(0, len(data), SNAPSHOT_CHUNK_BYTES):
            net.send(self.sid, peer, msgs.SnapshotChunk(
                epoch, zxid, offset, data[offset:offset + SNAPSHOT_CHUNK_BYTES],
                offset + SNAPSHOT_CHUNK_BYTES >= len(data)))
        node.replica.snapshot_sent(peer, zxid)

    # --- the step: execute the node's output -------------------------------------------------
    def step(self) -> None:
        node = self.node
        if node is None:
            return
        out = node.take_output()
        if out.hard_state is not None:
            self.disk.hard_state = out.hard_state  # written and fsynced before anything leaves
        batch: list[tuple[int, Txn]] = []
        for kind, argument in out.log_ops:
            if kind == "append":
                batch.extend(argument)
                continue
            if batch:
                self._append(batch, out.gen)
                batch = []
            self._submit(DiskOp("truncate", (argument,)))
        if batch:
            self._append(batch, out.gen)
        replica = node.replica
        if replica.role == LEADER:
            self.world.checks.leader(replica.epoch, self.sid)
        net = self.world.net
        for peer, message in out.messages:
            net.send(self.sid, peer, message)
        for peer in out.snapshots:
            self._send_snapshot(peer)
        self.flush()
        self._maybe_snapshot()
        self._kick_disk()

    def _append(self, entries: list[tuple[int, Txn]], gen: int) -> None:
        self._submit(DiskOp("append", (entries, gen)))
        self.writes.append((gen, entries[-1][0]))
        if self.ack_before_fsync:  # planted bug: durable as soon as written
            assert self.node is not None
            self.node.persisted(gen, entries[-1][0])

    def _submit(self, op: DiskOp) -> None:
        self.disk.queue.append(op)

    def _maybe_snapshot(self) -> None:
        """Fuzzy snapshots, as the runtime takes them: the header (zxid, sessions) when one
        begins, the tree when it ends a little later, after more txns may have applied."""
        node = self.node
        assert node is not None
        if self.snapshot_start is None and not node.replica.installing and \
                node.applied_zxid - self.applied_at_snapshot >= self.snapshot_every:
            self.applied_at_snapshot = node.applied_zxid
            self.snapshot_start = (node.applied_zxid, snapshots.header(node))
            world = self.world
            world.at(world.rng.randrange(1000, 30_000), self._end_snapshot, self.boot,
                     target=self)

    def _end_snapshot(self, boot: int) -> None:
        node = self.node
        if node is None or boot != self.boot or self.snapshot_start is None:
            return
        zxid, start = self.snapshot_start
        self.snapshot_start = None
        data = snapshots.serialize(node, SNAPSHOT_CHUNK_NODES, start)
        self._submit(DiskOp("snapshot", (Snap(zxid, node.applied_zxid, data),)))
        self._kick_disk()

    def _kick_disk(self) -> None:
        disk = self.disk
        if self.disk_busy or not disk.queue:
            return
        self.disk_busy = True
        disk.writing, disk.queue = disk.queue, []
        world = self.world
        world.at(world.rng.randrange(500, 5000) * disk.slow, self._disk_done, self.boot,
                 target=self)

    def _disk_done(self, boot: int) -> None:
        node = self.node
        if node is None or boot != self.boot:
            return
        world = self.world
        disk = self.disk
        ops, disk.writing = disk.writing, []
        self.disk_busy = False
        if disk.fail_next is not None:
            # EIO/ENOSPC: the write may or may not have reached the disk; a member of an
            # ensemble whose log fails stops (exit status 4), to be restarted once fixed
            world.trace_event("disk-error", self.sid, disk.fail_next)
            disk.fail_next = None
            if world.rng.random() < 0.5:
                disk.complete(ops)
            self.crash()
            world.at(world.rng.randrange(200_000, 2_000_000), world.restart, self.sid)
            return
        disk.complete(ops)
        self.set_time()
        crash_kinds = {op.kind for op in ops}
        for op in ops:
            if op.kind == "append":
                node.persisted(*self.writes.popleft())
            elif op.kind == "install":
                sender, epoch = op.done
                snap = op.args[0]
                tree = DataTree()
                info = snapshots.load_bytes(snap.data, f"server.{self.sid} install", tree)
                node.install_snapshot(sender, epoch, info.zxid, tree, info.sessions)
                world.checks.state_loaded(self.sid, node.applied_zxid, node.tree.digest())
                self.applied_at_snapshot = node.applied_zxid
        if self.crash_at is not None and self.crash_at in crash_kinds:
            self.crash()
            world.at(world.rng.randrange(100_000, 1_000_000), world.restart, self.sid)
            return
        self.step()

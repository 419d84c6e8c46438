"""Three hosts wired together in one process, messages carried by hand: what a member does
with a client while it lags behind the leader, which real processes reach only by races.

The runtime's part is played here: every log write is durable at once, a step's messages
go through the peer codec and are delivered in order per link, and a link can be held (its
messages wait, in order).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from test_write_fastpath import (
    burst,
    feed,
    host_apply_only,
    run_fast,
    run_reference,
    state_of,
)
from wire import connect_request, parse_connect_response, split_frames

import fastzk.node as node_module
from fastzk._core import ReadBuffer
from fastzk.node import Client, Limits, Node, State
from fastzk.quorum.replica import LEADER, QuorumConfig
from fastzk.runtime.peers import decode, encode_all

TICK = 100
MEMBERS = (1, 2, 3)


class Ensemble:
    def __init__(self, seed: int) -> None:
        limits = Limits(tick_ms=TICK, min_session_timeout=2 * TICK,
                        max_session_timeout=100 * TICK)
        self.nodes = {
            sid: Node(limits, random.Random(seed * 10 + sid), server_id=sid, start_ms=1_000_000,
                      quorum=QuorumConfig(sid, MEMBERS))
            for sid in MEMBERS}
        self.held: set[tuple[int, int]] = set()  # (from, to) links whose messages wait
        self.waiting: list[tuple[int, int, Any]] = []
        self.now_ms = 1_000_000
        for sid, node in self.nodes.items():
            node.set_time(self.now_ms, self.now_ms)
            for peer in MEMBERS:
                if peer != sid:
                    node.peer_up(peer)
            node.start()

    def settle(self) -> None:
        """Runs every node's output until nothing moves (held messages stay queued)."""
        while True:
            moved = False
            for sid, node in self.nodes.items():
                out = node.take_output()
                appended = [z for op, arg in out.log_ops if op == "append" for z, _ in arg]
                if appended:
                    node.persisted(out.gen, appended[-1])
                    moved = True
                by_peer: dict[int, list[Any]] = {}
                for peer, message in out.messages:
                    by_peer.setdefault(peer, []).append(message)
                for peer, messages in by_peer.items():
                    # through the peer codec, as runtime/peers.py sends a step's messages
                    # (a run of forwarded writes becomes one Forwards)
                    data = encode_all(messages, {})
                    while data:
                        size = int.from_bytes(data[:4], "big")
                        self.waiting.append((sid, peer, decode(data[4:4 + size])))
                        data = data[4 + size:]
            deliver = [m for m in self.waiting if (m[0], m[1]) not in self.held]
            self.waiting = [m for m in self.waiting if (m[0], m[1]) in self.held]
            for sender, peer, message in deliver:
                self.nodes[peer].peer_message(sender, message)
                moved = True
            if not moved:
                return

    def tick(self, count: int = 1) -> None:
        for _ in range(count):
            self.now_ms += TICK // 10
            for node in self.nodes.values():
                node.set_time(self.now_ms, self.now_ms)
                node.quorum_tick()
            self.settle()

    def leader(self) -> int:
        for _ in range(500):
            leaders = [sid for sid, n in self.nodes.items()
                       if n.replica.role == LEADER and n.serving]
            if leaders and all(n.serving for n in self.nodes.values()):
                return leaders[0]
            self.tick()
        raise AssertionError("no leader elected")


def connect(node: Node, session_id: int = 0, passwd: bytes = bytes(16)) -> Client:
    client = Client("127.0.0.1")
    node.connection_made(client)
    node.handle_connect(client, connect_request(timeout_ms=4000, session_id=session_id,
                                                passwd=passwd)[4:])
    return client


def test_a_session_moving_to_a_member_that_has_not_applied_its_creation_resumes() -> None:
    """A client creates its session on one follower and, before the other follower has the
    createSession txn, moves there (its first connection broke). That member does not know
    the session yet; the leader does. It must ask the leader, not tell the client its session
    expired (which would drop its ephemerals' owner and watches for nothing)."""
    ensemble = Ensemble(seed=3)
    leader = ensemble.leader()
    first, second = (sid for sid in MEMBERS if sid != leader)
    ensemble.held.add((leader, second))  # `second` lags: the leader's messages wait
    created = connect(ensemble.nodes[first])
    ensemble.settle()
    assert created.state == State.READY  # the leader and `first` are a quorum
    response = parse_connect_response(split_frames(created.out.take())[0])
    assert ensemble.nodes[second].sessions.get(response.session_id) is None

    moved = connect(ensemble.nodes[second], response.session_id, response.passwd)
    ensemble.settle()
    assert moved.state == State.CONNECTING and not moved.out.take()  # waiting for the leader
    ensemble.held.clear()
    ensemble.settle()
    assert moved.state == State.READY
    resumed = parse_connect_response(split_frames(moved.out.take())[0])
    assert resumed.session_id == response.session_id and resumed.timeout_ms == 4000


def test_an_unknown_session_is_expired_by_the_leader_not_the_member() -> None:
    """The same question for a session nobody created gets the expired answer (session id 0),
    from the leader's word."""
    ensemble = Ensemble(seed=4)
    leader = ensemble.leader()
    follower = next(sid for sid in MEMBERS if sid != leader)
    ensemble.held.add((leader, follower))
    client = connect(ensemble.nodes[follower], 0x0123_4567, bytes(range(16)))
    ensemble.settle()
    assert client.state == State.CONNECTING and not client.out.take()
    ensemble.held.clear()
    ensemble.settle()
    frames = split_frames(client.out.take())
    assert parse_connect_response(frames[0]).session_id == 0
    assert client.closing


@contextmanager
def host_paths_only() -> Iterator[None]:
    """The reference ensemble: forwarded writes decided one by one by the host, and every
    committed txn applied by the host's Python applier."""
    real = node_module.decide_forwards
    node_module.decide_forwards = lambda prep, forwards, start, *rest: start
    try:
        with host_apply_only():
            yield
    finally:
        node_module.decide_forwards = real


@pytest.mark.parametrize("seed", range(12))
def test_fast_paths_on_every_member_answer_as_the_host(seed: int) -> None:
    """Random pipelined writes (and reads, watches, failures) from clients of the leader and
    of both followers: forwarded by `serve_forwards`, decided by `decide_forwards`, applied by
    `apply_plain` on one ensemble; by the host's per-request path on an identical one. Every
    connection's output and every member's state must be the same."""
    rng = random.Random(seed)
    ensembles = (Ensemble(seed=20 + seed), Ensemble(seed=20 + seed))
    leaders = {e.leader() for e in ensembles}
    assert len(leaders) == 1
    clients = [[connect(e.nodes[sid]) for sid in MEMBERS] for e in ensembles]
    for e in ensembles:
        e.settle()
    bufs = [[ReadBuffer(1 << 20) for _ in MEMBERS] for _ in ensembles]
    xids = [1] * len(MEMBERS)
    in_flight: list[list[int]] = [[] for _ in MEMBERS]
    for _ in range(25):
        for index in range(len(MEMBERS)):
            data = burst(rng, xids, in_flight, index, 10)
            for side in (0, 1):
                feed(bufs[side][index], data)
        fast, ref = ensembles
        for index, sid in enumerate(MEMBERS):
            run_fast(fast.nodes[sid], clients[0][index], bufs[0][index])
        fast.settle()
        with host_paths_only():
            for index, sid in enumerate(MEMBERS):
                run_reference(ref.nodes[sid], clients[1][index], bufs[1][index])
            ref.settle()
        for index, sid in enumerate(MEMBERS):
            assert clients[0][index].out.take() == clients[1][index].out.take(), sid
            in_flight[index] = in_flight[index][-3:]
            assert state_of(fast.nodes[sid], clients[0]) == state_of(ref.nodes[sid], clients[1])
        for index, sid in enumerate(MEMBERS):  # a closed connection is replaced, on both
            if clients[0][index].closing or clients[0][index].state == State.CLOSED:
                for side, e in enumerate(ensembles):
                    e.nodes[sid].connection_lost(clients[side][index])
                    clients[side][index] = connect(e.nodes[sid])
                    bufs[side][index] = ReadBuffer(1 << 20)
                    e.settle()
                xids[index], in_flight[index] = 1, []
    assert all(n.stats.packets_sent > 50 for n in ensembles[0].nodes.values())

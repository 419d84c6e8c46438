"""The host driven directly, with no sockets or clocks: ordering guarantees of the pipeline.

These pin the properties that the asyncio runtime relies on and that are hard to provoke
through a real client: replies in request order while writes wait for their commit,
notifications before the reply that follows them, prepared writes seeing each other before
they are applied, expiry on the server's own clock.
"""

from __future__ import annotations

import random

import pytest
from durable import settle
from wire import (
    OP_CREATE,
    close_session_request,
    connect_request,
    create_request,
    delete_request,
    get_data_request,
    parse_connect_response,
    parse_reply_header,
    set_data_request,
    split_frames,
)

from fastzk.node import Client, Limits, Node, State

TICK = 100


def payload(framed: bytes) -> bytes:
    """Strip the 4-byte length prefix: the host is handed frame payloads."""
    return framed[4:]


@pytest.fixture
def node() -> Node:
    limits = Limits(tick_ms=TICK, min_session_timeout=2 * TICK, max_session_timeout=20 * TICK)
    node = Node(limits, random.Random(7), start_ms=1_000_000)
    node.start()
    settle(node)
    assert node.serving
    return node


def proposed(node: Node) -> list:
    """The txns proposed since the last step, not yet logged."""
    return [txn for _, txn in node.proposals]


def connected(node: Node, timeout_ms: int = 1000) -> Client:
    client = Client("127.0.0.1")
    node.connection_made(client)
    node.handle_connect(client, payload(connect_request(timeout_ms=timeout_ms)))
    assert client.state == State.CONNECTING
    settle(node)
    assert client.state == State.READY
    response = parse_connect_response(split_frames(client.out.take())[0])
    assert response.session_id != 0 and response.timeout_ms == timeout_ms
    return client


def replies(client: Client) -> list[tuple[int, int]]:
    """(xid, err) of every frame written to the client so far, notifications as xid -1."""
    return [
        (header.xid, header.err)
        for header, _ in (parse_reply_header(f) for f in split_frames(client.out.take()))
    ]


def test_read_waits_behind_its_own_pending_write(node: Node) -> None:
    client = connected(node)
    node.handle_request(client, payload(create_request(1, "/a", b"v")))
    node.handle_request(client, payload(get_data_request(2, "/a")))
    assert replies(client) == []  # the read must not overtake the uncommitted create
    settle(node)
    assert replies(client) == [(1, 0), (2, 0)]


def test_pipelined_writes_see_each_other_before_commit(node: Node) -> None:
    client = connected(node)
    node.handle_request(client, payload(create_request(1, "/p")))
    node.handle_request(client, payload(create_request(2, "/p/c")))
    node.handle_request(client, payload(create_request(3, "/p")))
    node.handle_request(client, payload(delete_request(4, "/p")))
    batch = proposed(node)
    assert len(batch) == 2  # the failing create and delete are decided without a txn
    settle(node)
    assert replies(client) == [(1, 0), (2, 0), (3, -110), (4, -111)]
    assert node.tree.get_children("/p") == ["c"]


def test_notification_precedes_the_reply_of_the_write_that_fired_it(node: Node) -> None:
    writer = connected(node)
    watcher = connected(node)
    node.handle_request(writer, payload(create_request(1, "/w", b"0")))
    settle(node)
    replies(writer)
    node.handle_request(writer, payload(get_data_request(2, "/w", watch=True)))
    node.handle_request(watcher, payload(get_data_request(1, "/w", watch=True)))
    assert replies(writer) == [(2, 0)]
    assert replies(watcher) == [(1, 0)]
    node.handle_request(writer, payload(set_data_request(3, "/w", b"1")))
    settle(node)
    assert replies(writer) == [(-1, 0), (3, 0)]
    assert replies(watcher) == [(-1, 0)]


def test_failed_write_reply_keeps_request_order(node: Node) -> None:
    client = connected(node)
    node.handle_request(client, payload(create_request(1, "/x")))
    node.handle_request(client, payload(set_data_request(2, "/missing", b"")))
    assert replies(client) == []
    settle(node)
    assert replies(client) == [(1, 0), (2, -101)]


def test_failure_decided_on_another_sessions_pending_write_waits_for_it(node: Node) -> None:
    """A setData refused because of another session's uncommitted write is answered only once
    that write is applied: a read right after the refusal must see the version that made it
    fail (found by the nemesis history check: the read returned the version expected)."""
    writer = connected(node)
    reader = connected(node)
    node.handle_request(writer, payload(create_request(1, "/v", b"0")))
    settle(node)
    replies(writer)
    node.handle_request(writer, payload(set_data_request(2, "/v", b"1", version=0)))
    node.handle_request(reader, payload(set_data_request(1, "/v", b"x", version=0)))
    assert replies(reader) == []  # refused against the overlay, but the write is not applied
    settle(node)
    assert replies(writer) == [(2, 0)]
    assert replies(reader) == [(1, -103)]
    assert node.tree.stat("/v")[4] == 1  # dataVersion: the refusal followed the write


def test_session_expires_on_ticks_and_its_ephemerals_go(node: Node) -> None:
    owner = connected(node, timeout_ms=2 * TICK)
    watcher = connected(node, timeout_ms=20 * TICK)
    node.handle_request(
        owner, payload(create_request(1, "/e", flags=1, op=OP_CREATE))
    )
    settle(node)
    node.handle_request(watcher, payload(get_data_request(1, "/e", watch=True)))
    replies(watcher)
    node.set_time(node.now_ms + 2 * TICK, 2 * TICK)
    node.tick()
    assert proposed(node) == []  # not yet: deadlines are rounded up to a tick
    node.set_time(node.now_ms + TICK, 3 * TICK)
    node.tick()
    batch = proposed(node)
    assert [txn.session_id for txn in batch] == [owner.session_id]
    settle(node)
    assert not node.tree.exists("/e")
    assert owner.closing and owner.session_id not in node.sessions
    assert replies(watcher) == [(-1, 0)]


def test_close_session_deletes_ephemerals_then_replies_and_closes(node: Node) -> None:
    client = connected(node)
    node.handle_request(client, payload(create_request(1, "/eph", flags=1)))
    node.handle_request(client, payload(get_data_request(2, "/eph", watch=True)))
    node.handle_request(client, payload(close_session_request(3)))
    settle(node)
    # own watch fires before the close reply
    assert replies(client) == [(1, 0), (2, 0), (-1, 0), (3, 0)]
    assert client.closing and not node.tree.exists("/eph")


def test_resume_with_wrong_password_gets_the_invalid_session_reply(node: Node) -> None:
    first = connected(node)
    session_id = first.session_id
    intruder = Client("127.0.0.1")
    node.connection_made(intruder)
    node.handle_connect(
        intruder, payload(connect_request(session_id=session_id, passwd=b"\x01" * 16))
    )
    response = parse_connect_response(split_frames(intruder.out.take())[0])
    assert (response.timeout_ms, response.session_id, response.passwd) == (0, 0, bytes(16))
    assert intruder.closing and not first.closing


def test_resume_takes_the_session_over_from_the_old_connection(node: Node) -> None:
    first = connected(node)
    session = first.session
    assert session is not None
    second = Client("127.0.0.1")
    node.connection_made(second)
    node.handle_connect(
        second,
        payload(connect_request(session_id=session.session_id, passwd=session.passwd)),
    )
    response = parse_connect_response(split_frames(second.out.take())[0])
    assert response.session_id == session.session_id
    assert first.closing and len(first.out) == 0  # closed with no message
    assert session.conn is second


def test_client_ahead_of_the_server_is_refused_without_reply(node: Node) -> None:
    client = Client("127.0.0.1")
    node.connection_made(client)
    node.handle_connect(client, payload(connect_request(last_zxid_seen=node.applied_zxid + 1)))
    assert client.closing and len(client.out) == 0


def test_empty_container_is_reaped_only_after_it_had_a_child(node: Node) -> None:
    client = connected(node)
    node.handle_request(client, payload(create_request(1, "/c", op=19, flags=4)))
    node.handle_request(client, payload(create_request(2, "/never", op=19, flags=4)))
    node.handle_request(client, payload(create_request(3, "/c/child")))
    settle(node)
    assert node.reap(limit=10) == 0  # /c has a child, /never never had one
    node.handle_request(client, payload(delete_request(4, "/c/child")))
    settle(node)
    assert node.reap(limit=10) == 1
    settle(node)
    assert not node.tree.exists("/c") and node.tree.exists("/never")
    assert node.tree.stat("/never")[7] == 0  # containers show ephemeralOwner 0


def test_a_silent_new_session_expires_on_the_monotonic_clock(node: Node) -> None:
    """A session that never sends a request after its handshake still expires: its first
    deadline is taken from the monotonic clock, not from the txn's wall-clock time."""
    client = connected(node, timeout_ms=2 * TICK)
    node.set_time(node.now_ms + 5 * TICK, node.mono_ms + 5 * TICK)
    node.tick()
    assert [txn.session_id for txn in proposed(node)] == [client.session_id]


def test_writes_of_an_expiring_session_get_session_expired(node: Node) -> None:
    """Between the expiry decision and its commit, a write from the session is refused:
    an ephemeral created then would outlive its session."""
    client = connected(node, timeout_ms=2 * TICK)
    node.set_time(node.now_ms + 5 * TICK, node.mono_ms + 5 * TICK)
    node.tick()
    node.handle_request(client, payload(create_request(1, "/late", flags=1)))
    batch = proposed(node)
    assert [txn.op for txn in batch] == [-11]  # only the expiry's closeSession
    settle(node)
    assert replies(client) == [(1, -112)]
    assert not node.tree.exists("/late")


def test_a_replica_whose_digest_differs_from_the_leaders_is_caught() -> None:
    """The leader announces its digest at a zxid; a follower compares its own there, now or
    once it gets there, and records a mismatch (the runtime logs it and turns /ready off)."""
    from fastzk.quorum import messages as msgs
    from fastzk.quorum.replica import QuorumConfig

    limits = Limits(tick_ms=TICK, min_session_timeout=2 * TICK, max_session_timeout=20 * TICK)
    node = Node(limits, random.Random(1), server_id=2, quorum=QuorumConfig(2, (1, 2, 3)))
    node.replica.leader_id = 1
    good = node.tree.digest()
    node.peer_message(1, msgs.DigestCheck(node.applied_zxid, good))
    assert node.digests_compared == 1 and not node.digest_mismatches
    node.peer_message(3, msgs.DigestCheck(node.applied_zxid, good + 1))  # not the leader
    node.peer_message(1, msgs.DigestCheck(node.applied_zxid, good + 1))
    assert node.digest_mismatches == [(node.applied_zxid, good, good + 1)]
    node.peer_message(1, msgs.DigestCheck(node.applied_zxid + 5, good))  # not there yet
    assert node.digest_checks == {node.applied_zxid + 5: good}


def test_fast_path_reads_count_in_the_connections_figures(node: Node) -> None:
    """cons shows each connection's last zxid and its latency figures: reads answered by the
    runtime's fast path (`serve_reads`, then `Node.touch`) count there as the host's do."""
    from fastzk._core import ReadBuffer, serve_reads

    client = connected(node)
    node.handle_request(client, payload(create_request(1, "/r", b"v")))
    settle(node)
    client.out.take()
    before = client.latency_ms.count
    frames = b"".join(get_data_request(2 + i, "/r") for i in range(3))
    buf = ReadBuffer(1 << 20)
    view = buf.get_buffer(len(frames))
    view[:len(frames)] = frames
    del view
    buf.buffer_updated(len(frames))
    served = serve_reads(buf, node.tree, client.out, node.applied_zxid, 256, 1 << 30)
    assert served == 3
    node.touch(client, served)
    assert client.latency_ms.count == before + 3
    assert client.last_zxid == node.applied_zxid
    assert client.last_response_ms == node.now_ms

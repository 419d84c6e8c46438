"""The replication message codec (runtime/peers.py): an Append carries each txn's log record
body as it is, encoded once on the leader and logged as received by the followers, and a
malformed body from a peer is a clear error, never a crash or a wrong txn."""

from __future__ import annotations

import struct

import pytest

from fastzk._core import encode_txns, encode_value, txn_body, txn_from_body
from fastzk.quorum import messages as msgs
from fastzk.runtime import peers
from fastzk.server.prep import CREATE, DELETE, SET_DATA, Txn

OPEN = [(31, "world", "anyone")]


def _txns() -> list[Txn]:
    return [
        Txn(0x500000001, 1_700_000_000_000, 0x1234, 7, 1,
            [(CREATE, "/a", b"v" * 100, OPEN, 0, 3)]),
        Txn(0x500000002, 1_700_000_000_001, -5, 8, 5, [(SET_DATA, "/a", b"", 2)]),
        Txn(0x500000003, 1_700_000_000_002, 0x1234, 9, 14,
            [(1, (CREATE, "/b", b"x", OPEN, 0x1234, 4)), (2, (DELETE, "/a"))]),
    ]


def test_append_round_trip_keeps_each_body_and_logs_the_same_bytes() -> None:
    txns = _txns()
    plain = encode_txns(txns)  # the log's records, encoded from the fields
    message = msgs.Append(5, 0x500000000, tuple((t.zxid, t) for t in txns), 0x500000002)
    frame = peers.encode(message)
    assert all(t.record is not None for t in txns)  # the leader encoded each body once
    assert peers.encode(message) == frame
    received = peers.decode(frame[4:])
    assert received.epoch == 5 and received.commit_zxid == 0x500000002
    got = [t for _, t in received.entries]
    assert got == txns  # equal fields
    assert [t.record for t in got] == [t.record for t in txns]
    # a follower logs the bytes it received: the same records as encoding the fields
    assert encode_txns(got) == plain
    assert encode_txns(got, keep=True) == plain


def test_encode_txns_keeps_bodies_only_when_asked() -> None:
    txns = _txns()
    encode_txns(txns)
    assert all(t.record is None for t in txns)
    blob = encode_txns(txns, keep=True)
    assert [t.record for t in txns] == [txn_body(Txn(t.zxid, t.time_ms, t.session_id, t.xid,
                                                     t.op, t.changes)) for t in txns]
    assert encode_txns(txns) == blob  # now copied from the kept bodies


def _append_frame(entries: tuple) -> bytes:
    code = peers.CODES[msgs.Append]
    return encode_value((code, 5, 0, entries, 0))


BODY = struct.pack(">qqii", 1, 2, 3, 5)


@pytest.mark.parametrize(("entries", "message"), [
    (((1, (1, 2, 3, 5, [])),), r"expected \(zxid, txn body\) pairs"),
    (((1, BODY[:20]),), "too short"),
    (((1, BODY + encode_value([]) + b"\x00"),), "trailing bytes"),
    (((1, BODY + encode_value(("not", "a list"))),), "must be a list"),
    (((1, BODY + b"\xff\x00"),), "Append.entries"),
    ((("1", BODY + encode_value([])),), "expected an integer"),
    (((1 << 70, BODY + encode_value([])),), "Append.entries"),
])
def test_malformed_bodies_are_refused(entries: tuple, message: str) -> None:
    with pytest.raises(peers.PeerMessageError, match=message):
        peers.decode(_append_frame(entries))


def test_a_body_decodes_to_its_fields() -> None:
    txn = txn_from_body(9, BODY + encode_value([(SET_DATA, "/x", b"", 1)]))
    assert (txn.zxid, txn.time_ms, txn.session_id, txn.xid, txn.op) == (9, 1, 2, 3, 5)
    assert txn.changes == [(SET_DATA, "/x", b"", 1)]


def _frames(data: bytes) -> list:
    messages, pos = [], 0
    while pos < len(data):
        (length,) = peers.LENGTH.unpack_from(data, pos)
        messages.append(peers.decode(data[pos + 4:pos + 4 + length]))
        pos += 4 + length
    assert pos == len(data)
    return messages


def test_a_run_of_forwards_travels_as_one_message_in_order() -> None:
    ids = (("ip", "127.0.0.1"), ("digest", "u:x"))
    f1, f2, f3 = (msgs.Forward(0x10 + i, b"frame%d" % i, ids if i else ()) for i in range(3))
    data = peers.encode_all([f1, f2, msgs.SyncRequest(7), f3], {})
    got = _frames(data)
    assert got == [msgs.Forwards((f1, f2)), msgs.SyncRequest(7), msgs.Forwards((f3,))]
    assert _frames(peers.encode(f1)) == [msgs.Forwards((f1,))]


@pytest.mark.parametrize(("forwards", "message"), [
    ([(1, b"x")], "triples"),
    ([("1", b"x", ())], "triples"),
    ([(1, "x", ())], "triples"),
    ([(1, b"x", [("ip", "a")])], "triples"),
    ([(1, b"x", (("ip", 1),))], "identities"),
    ([(1, b"x", (["ip", "a"],))], "identities"),
    ([(1, b"x", (("ip", "a", "b"),))], "identities"),
    ([(1, b"x", (("ip", "a"),)), (2, b"y", (("ip", b"a"),))], "identities"),
])
def test_malformed_forwards_are_refused(forwards: list, message: str) -> None:
    frame = encode_value((peers.CODES[msgs.Forwards], tuple(forwards)))
    with pytest.raises(peers.PeerMessageError, match=message):
        peers.decode(frame)


def test_malformed_fields_are_refused_with_their_name() -> None:
    code = peers.CODES[msgs.AppendResp]
    with pytest.raises(peers.PeerMessageError, match="AppendResp.ok: expected a boolean"):
        peers.decode(encode_value((code, 1, 1, 2, 3, 4)))
    with pytest.raises(peers.PeerMessageError, match="AppendResp.epoch: expected an integer"):
        peers.decode(encode_value((code, True, True, 2, 3, 4)))
    with pytest.raises(peers.PeerMessageError, match="4 fields, expected 5"):
        peers.decode(encode_value((code, 1, True, 2, 3)))
    verdict = peers.CODES[msgs.Verdict]
    assert peers.decode(encode_value((verdict, 1, 2, 3, None, 4))).multi_errors is None
    assert peers.decode(encode_value((verdict, 1, 2, 3, (0, -2), 4))).multi_errors == (0, -2)
    with pytest.raises(peers.PeerMessageError, match="tuple of integers"):
        peers.decode(encode_value((verdict, 1, 2, 3, [0], 4)))


def test_equal_appends_to_several_followers_are_encoded_once() -> None:
    txns = _txns()
    entries = tuple((t.zxid, t) for t in txns)
    appends: dict = {}
    first = peers.encode_all([msgs.Append(5, 0x500000000, entries, 1)], appends)
    second = peers.encode_all([msgs.Append(5, 0x500000000, entries, 1)], appends)
    assert first == second and len(appends) == 1
    other = peers.encode_all([msgs.Append(5, 0x500000000, entries, 2)], appends)
    assert other != first and len(appends) == 2
    assert _frames(other)[0].commit_zxid == 2

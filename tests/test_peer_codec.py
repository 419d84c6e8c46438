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

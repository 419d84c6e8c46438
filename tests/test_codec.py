"""Framing, jute codec and read fast path of fastzk._core against the bytes of the protocol
spec (shared/zk-protocol.md) and against hostile input."""

import struct
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastzk._core import (
    DataTree,
    FrameError,
    JuteError,
    ReadBuffer,
    WriteBuffer,
    decode_connect,
    decode_request,
    serve_reads,
)

MAX_FRAME = 0xFFFFF
OPEN = [(31, "world", "anyone")]


def h(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


# --- a tiny independent jute encoder, used to build requests -----------------------------------


def i32(v):
    return struct.pack(">i", v)


def i64(v):
    return struct.pack(">q", v)


def boolean(v):
    return b"\x01" if v else b"\x00"


def buf(v):
    return i32(-1) if v is None else i32(len(v)) + v


def ustr(v):
    return buf(None if v is None else v.encode())


def strs(v):
    return i32(len(v)) + b"".join(ustr(s) for s in v)


def acls(v):
    return i32(len(v)) + b"".join(i32(p) + ustr(s) + ustr(i) for p, s, i in v)


def frame(payload: bytes) -> bytes:
    return i32(len(payload)) + payload


def request(xid, op, body=b""):
    return i32(xid) + i32(op) + body


def create_body(path, data, acl, flags):
    return ustr(path) + buf(data) + acls(acl) + i32(flags)


def multi_body(ops):
    out = b""
    for op, body in ops:
        out += i32(op) + boolean(False) + i32(-1) + body
    return out + i32(-1) + boolean(True) + i32(-1)


STAT = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11)
STAT_BYTES = struct.pack(">qqqqiiiqiiq", *STAT)

# (payload, decoded) for every request shape of the contract
REQUESTS = [
    (request(1, 1, create_body("/a", b"x", OPEN, 0)), (1, 1, ("/a", b"x", OPEN, 0))),
    (request(2, 15, create_body("/a", None, OPEN, 2)), (2, 15, ("/a", None, OPEN, 2))),
    (request(3, 19, create_body("/c", b"", OPEN, 4)), (3, 19, ("/c", b"", OPEN, 4))),
    (
        request(4, 21, create_body("/t", b"d", OPEN, 5) + i64(5000)),
        (4, 21, ("/t", b"d", OPEN, 5, 5000)),
    ),
    (request(5, 2, ustr("/a") + i32(-1)), (5, 2, ("/a", -1))),
    (request(6, 3, ustr("/a") + boolean(True)), (6, 3, ("/a", True))),
    (request(7, 4, ustr("/a") + boolean(False)), (7, 4, ("/a", False))),
    (request(8, 5, ustr("/a") + buf(b"v") + i32(3)), (8, 5, ("/a", b"v", 3))),
    (request(9, 6, ustr("/a")), (9, 6, "/a")),
    (
        request(10, 7, ustr("/a") + acls([(1, "digest", "u:h")]) + i32(0)),
        (10, 7, ("/a", [(1, "digest", "u:h")], 0)),
    ),
    (request(11, 8, ustr("/") + boolean(False)), (11, 8, ("/", False))),
    (request(12, 9, ustr("/s")), (12, 9, "/s")),
    (request(-2, 11), (-2, 11, None)),
    (request(13, 12, ustr("/") + boolean(True)), (13, 12, ("/", True))),
    (request(14, 13, ustr("/a") + i32(4)), (14, 13, ("/a", 4))),
    (
        request(
            15,
            14,
            multi_body(
                [
                    (13, ustr("/jp") + i32(0)),
                    (1, create_body("/jp/m", b"", OPEN, 0)),
                    (2, ustr("/jp/x") + i32(-1)),
                    (5, ustr("/jp") + buf(b"q") + i32(1)),
                    (15, create_body("/jp/n", b"", OPEN, 0)),
                    (19, create_body("/jp/c", b"", OPEN, 4)),
                    (21, create_body("/jp/t", b"", OPEN, 5) + i64(9)),
                ]
            ),
        ),
        (
            15,
            14,
            [
                (13, ("/jp", 0)),
                (1, ("/jp/m", b"", OPEN, 0)),
                (2, ("/jp/x", -1)),
                (5, ("/jp", b"q", 1)),
                (15, ("/jp/n", b"", OPEN, 0)),
                (19, ("/jp/c", b"", OPEN, 4)),
                (21, ("/jp/t", b"", OPEN, 5, 9)),
            ],
        ),
    ),
    (request(16, 14, multi_body([])), (16, 14, [])),
    (
        request(17, 22, multi_body([(4, ustr("/a") + boolean(False)), (8, ustr("/") + boolean(False))])),
        (17, 22, [(4, ("/a", False)), (8, ("/", False))]),
    ),
    (
        request(18, 16, ustr("server.2=h:1:2") + ustr(None) + ustr(None) + i64(-1)),
        (18, 16, ("server.2=h:1:2", None, None, -1)),
    ),
    (request(19, 17, ustr("/a") + i32(1)), (19, 17, ("/a", 1))),
    (request(20, 18, ustr("/a") + i32(3)), (20, 18, ("/a", 3))),
    (request(21, 20, ustr("/c")), (21, 20, "/c")),
    (request(-4, 100, i32(0) + ustr("digest") + buf(b"bob:secret")), (-4, 100, (0, "digest", b"bob:secret"))),
    (request(22, 102, buf(b"tok")), (22, 102, b"tok")),
    (request(23, 102, buf(None)), (23, 102, None)),
    (
        request(24, 101, i64(0x70) + strs(["/a"]) + strs(["/b", "/c"]) + strs([])),
        (24, 101, (0x70, ["/a"], ["/b", "/c"], [])),
    ),
    (
        request(25, 105, i64(0x70) + strs(["/jp"]) + strs(["/jp/none"]) + strs(["/jp"]) + strs([]) + strs(["/jp"])),
        (25, 105, (0x70, ["/jp"], ["/jp/none"], ["/jp"], [], ["/jp"])),
    ),
    (request(26, 103, ustr("/e")), (26, 103, "/e")),
    (request(27, 104, ustr("/")), (27, 104, "/")),
    (request(28, 106, ustr("/w") + i32(1)), (28, 106, ("/w", 1))),
    (request(29, 107), (29, 107, None)),
    (request(30, -11), (30, -11, None)),
    (request(31, 10), (31, 10, None)),
    (request(32, 0), (32, 0, None)),
]


# --- golden bytes from the spec ----------------------------------------------------------------

JAVA_CONNECT = h(
    "0000002d 00000000 0000000000000000 00001770 0000000000000000"
    " 00000010 00000000000000000000000000000000 00"
)


def test_java_connect_request_decodes_with_read_only_byte():
    rb = ReadBuffer(MAX_FRAME)
    feed(rb, JAVA_CONNECT)
    payload = rb.pop_frame()
    assert len(payload) == 45
    assert decode_connect(payload) == (0, 0, 6000, 0, bytes(16), False)


def test_connect_request_without_read_only_byte_reports_none():
    payload = JAVA_CONNECT[4:-1]
    assert decode_connect(payload) == (0, 0, 6000, 0, bytes(16), None)


def test_connect_request_read_only_true_and_resume():
    payload = i32(0) + i64(0x70) + i32(6000) + i64(0x0100000D992F0013) + buf(b"p" * 16) + b"\x01"
    assert decode_connect(payload) == (0, 0x70, 6000, 0x0100000D992F0013, b"p" * 16, True)


def test_connect_request_null_password_decodes_as_empty():
    payload = i32(0) + i64(0) + i32(6000) + i64(0) + i32(-1)
    assert decode_connect(payload) == (0, 0, 6000, 0, b"", None)


@pytest.mark.parametrize("cut", range(0, 44))
def test_truncated_connect_request_is_a_header_level_jute_error(cut):
    with pytest.raises(JuteError) as exc:
        decode_connect(JAVA_CONNECT[4 : 4 + cut])
    assert exc.value.args == ()


def test_connect_response_matches_capture():
    passwd = bytes(range(16))
    out = WriteBuffer()
    out.connect_response(6000, 0x0100000D992F0013, passwd, False)
    assert out.take() == h("00000025 00000000 00001770 0100000d992f0013 00000010") + passwd + b"\x00"


def test_connect_response_for_old_style_client_omits_read_only_byte():
    out = WriteBuffer()
    out.connect_response(0, 0, bytes(16), None)
    data = out.take()
    assert data == h("00000024 00000000 00000000 0000000000000000 00000010") + bytes(16)


def test_get_data_request_from_appendix_b():
    rb = ReadBuffer(MAX_FRAME)
    feed(rb, h("0000000f 00000007 00000004 00000002 2f61 01"))
    assert decode_request(rb.pop_frame()) == (7, 4, ("/a", True))


def test_get_data_reply_layout():
    out = WriteBuffer()
    out.begin(7, 0x1234, 0)
    out.write_buffer(b"hello")
    out.write_stat(STAT)
    out.end()
    body = h("00000007 0000000000001234 00000000") + buf(b"hello") + STAT_BYTES
    assert out.take() == frame(body)


def test_ping_reply_and_no_node_reply_from_appendix_b():
    out = WriteBuffer()
    out.reply_header(-2, 0x55, 0)
    out.reply_header(7, 0x55, -101)
    assert out.take() == h(
        "00000010 fffffffe 0000000000000055 00000000 00000010 00000007 0000000000000055 ffffff9b"
    )


def test_notification_matches_spec_example():
    out = WriteBuffer()
    out.notification(-1, 1, 3, "/jp/m")
    assert out.take() == h(
        "00000021 ffffffff ffffffffffffffff 00000000 00000001 00000003 00000005 2f6a702f6d"
    )


def test_multi_request_captured_from_java():
    create = create_body("/jp/m", b"", OPEN, 0)
    payload = request(9, 14, h("0000000d 00 ffffffff 00000003 2f6a70 00000000 00000001 00 ffffffff")
                      + create + h("ffffffff 01 ffffffff"))
    assert decode_request(payload) == (9, 14, [(13, ("/jp", 0)), (1, ("/jp/m", b"", OPEN, 0))])


# --- every request shape ------------------------------------------------------------------------


@pytest.mark.parametrize("payload,decoded", REQUESTS, ids=[str(d[:2]) for _, d in REQUESTS])
def test_request_decodes_to_contract_shape(payload, decoded):
    assert decode_request(payload) == decoded


@pytest.mark.parametrize("payload,decoded", REQUESTS, ids=[str(d[:2]) for _, d in REQUESTS])
def test_every_truncation_of_a_request_is_a_marshalling_error(payload, decoded):
    xid, op = decoded[:2]
    for cut in range(8, len(payload)):
        if decoded[2] is None:
            break
        with pytest.raises(JuteError) as exc:
            decode_request(payload[:cut])
        assert exc.value.args == (xid, op)
    for cut in range(0, 8):
        with pytest.raises(JuteError) as exc:
            decode_request(payload[:cut])
        assert exc.value.args == ()


ACL_ENTRY = st.tuples(st.integers(0, 31), st.text(max_size=8), st.text(max_size=12))


@settings(max_examples=150, deadline=None)
@given(
    xid=st.integers(-(2**31), 2**31 - 1),
    path=st.text(max_size=40),
    data=st.none() | st.binary(max_size=100),
    acl=st.lists(ACL_ENTRY, max_size=4),
    flags=st.integers(-(2**31), 2**31 - 1),
    ttl=st.none() | st.integers(-(2**63), 2**63 - 1),
)
def test_create_requests_round_trip(xid, path, data, acl, flags, ttl):
    """Built with WriteBuffer, decoded with decode_request: what goes out comes back."""
    out = WriteBuffer()
    out.begin(xid, 0, 0)        # a ReplyHeader-sized prefix we strip below
    out.write_ustring(path)
    out.write_buffer(data)
    out.write_acl_vector(acl)
    out.write_int(flags)
    if ttl is not None:
        out.write_long(ttl)
    out.end()
    body = out.take()[20:]
    op = 1 if ttl is None else 21
    want = (path, data, acl, flags) if ttl is None else (path, data, acl, flags, ttl)
    assert decode_request(request(xid, op, body)) == (xid, op, want)


@settings(max_examples=100, deadline=None)
@given(rel=st.integers(-(2**63), 2**63 - 1), watches=st.lists(st.lists(st.text(max_size=10), max_size=4), min_size=5, max_size=5))
def test_set_watches2_round_trips(rel, watches):
    out = WriteBuffer()
    out.begin(0, 0, 0)
    out.write_long(rel)
    for paths in watches:
        out.write_string_vector(paths)
    out.end()
    assert decode_request(request(3, 105, out.take()[20:])) == (3, 105, (rel, *watches))


def test_trailing_bytes_after_a_record_are_ignored():
    assert decode_request(request(7, 4, ustr("/a") + boolean(False) + b"junk")) == (7, 4, ("/a", False))


def test_null_path_is_a_marshalling_error_as_on_zookeeper():
    with pytest.raises(JuteError) as caught:
        decode_request(request(7, 4, i32(-1) + boolean(False)))
    assert caught.value.args == (7, 4)


def test_null_sync_path_decodes_as_empty_string():
    assert decode_request(request(7, 9, i32(-1))) == (7, 9, "")


def test_any_nonzero_boolean_byte_is_true():
    assert decode_request(request(7, 3, ustr("/a") + b"\x02")) == (7, 3, ("/a", True))


def test_null_vectors_decode_as_empty_lists():
    assert decode_request(request(7, 1, ustr("/a") + buf(b"") + i32(-1) + i32(0))) == (
        7, 1, ("/a", b"", [], 0))
    assert decode_request(request(8, 101, i64(1) + i32(-1) + i32(-1) + i32(-1))) == (
        8, 101, (1, [], [], []))


@pytest.mark.parametrize(
    "body",
    [
        i32(-2) + b"/a" + boolean(False),                   # length below -1
        i32(100) + b"/a" + boolean(False),                  # inner length beyond the frame
        i32(-0x80000000) + boolean(False),
    ],
)
def test_bad_string_lengths_are_marshalling_errors(body):
    with pytest.raises(JuteError) as exc:
        decode_request(request(7, 4, body))
    assert exc.value.args == (7, 4)


@pytest.mark.parametrize("count", [0x7FFFFFFF, 1000, -2])
def test_huge_or_negative_vector_counts_fail_without_allocating(count):
    payload = request(3, 1, ustr("/a") + buf(b"") + i32(count) + i32(31) + ustr("world") + ustr("anyone") + i32(0))
    tracemalloc.start()
    try:
        with pytest.raises(JuteError):
            decode_request(payload)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024


def test_huge_string_vector_count_fails():
    with pytest.raises(JuteError):
        decode_request(request(3, 101, i64(0) + i32(0x7FFFFFFF) + ustr("/a")))


@pytest.mark.parametrize(
    "op,inner",
    [
        (14, [(4, ustr("/a") + boolean(False))]),       # read inside multi
        (14, [(22, b"")]),
        (14, [(7, ustr("/a") + acls(OPEN) + i32(0))]),
        (22, [(1, create_body("/a", b"", OPEN, 0))]),   # write inside multiRead
        (22, [(3, ustr("/a") + boolean(False))]),
    ],
)
def test_multi_with_a_forbidden_op_type_is_a_marshalling_error(op, inner):
    with pytest.raises(JuteError) as exc:
        decode_request(request(5, op, multi_body(inner)))
    assert exc.value.args == (5, op)


def test_multi_without_terminator_is_a_marshalling_error():
    with pytest.raises(JuteError):
        decode_request(request(5, 14, i32(2) + boolean(False) + i32(-1) + ustr("/a") + i32(0)))


def test_invalid_utf8_decodes_with_replacement_character():
    assert decode_request(request(7, 4, buf(b"/\xff\xfe") + boolean(False)))[2] == ("/\ufffd\ufffd", False)


def test_cesu8_surrogate_pair_decodes_as_surrogates_and_encodes_back():
    cesu = "/\U0001F600".encode("utf-16-be").decode("utf-16-be", "surrogatepass")
    raw = b"/" + "\ud83d".encode("utf-8", "surrogatepass") + "\ude00".encode("utf-8", "surrogatepass")
    path = decode_request(request(7, 4, buf(raw) + boolean(False)))[2][0]
    assert path == "/\ud83d\ude00"
    assert len(path) == len(cesu) + 1
    out = WriteBuffer()
    out.write_ustring(path)
    assert out.take() == buf(raw)


def test_real_utf8_paths_round_trip():
    path = "/é/日本/\U0001F600"
    assert decode_request(request(7, 4, ustr(path) + boolean(False)))[2] == (path, False)


# --- WriteBuffer ----------------------------------------------------------------------------------


def test_write_buffer_fields_encode_big_endian():
    out = WriteBuffer()
    out.begin(1, -1, -5)
    out.write_int(-2)
    out.write_long(0x0102030405060708)
    out.write_bool(True)
    out.write_bool(0)
    out.write_buffer(None)
    out.write_buffer(b"")
    out.write_ustring(None)
    out.write_ustring("")
    out.write_string_vector(["a", "bc"])
    out.write_acl_vector([(31, "world", "anyone"), (1, "ip", "127.0.0.1")])
    out.end()
    body = (
        i32(1) + i64(-1) + i32(-5) + i32(-2) + i64(0x0102030405060708) + b"\x01\x00"
        + i32(-1) + i32(0) + i32(-1) + i32(0) + strs(["a", "bc"])
        + acls([(31, "world", "anyone"), (1, "ip", "127.0.0.1")])
    )
    assert len(out) == len(body) + 4
    assert out.take() == frame(body)
    assert len(out) == 0
    assert out.take() == b""


def test_write_buffer_grows_for_large_frames():
    out = WriteBuffer()
    big = bytes(range(256)) * 5000
    out.begin(1, 2, 0)
    out.write_buffer(big)
    out.end()
    out.reply_header(3, 4, 0)
    data = out.take()
    assert data == frame(i32(1) + i64(2) + i32(0) + buf(big)) + frame(i32(3) + i64(4) + i32(0))


def test_end_without_begin_is_refused():
    out = WriteBuffer()
    with pytest.raises(RuntimeError):
        out.end()


def test_stat_must_have_eleven_fields():
    with pytest.raises(ValueError):
        WriteBuffer().write_stat((1, 2, 3))


# --- ReadBuffer framing -------------------------------------------------------------------------


def feed(rb: ReadBuffer, data: bytes, hint: int = -1) -> None:
    while data:
        mv = rb.get_buffer(hint)
        n = min(len(mv), len(data))
        mv[:n] = data[:n]
        del mv
        rb.buffer_updated(n)
        data = data[n:]


def drain(rb: ReadBuffer) -> list:
    frames = []
    while (f := rb.pop_frame()) is not None:
        frames.append(f)
    return frames


STREAM_PAYLOADS = [JAVA_CONNECT[4:]] + [p for p, _ in REQUESTS] + [b""]
STREAM = b"".join(frame(p) for p in STREAM_PAYLOADS)


def test_stream_split_at_every_byte_boundary_yields_the_same_frames():
    for cut in range(len(STREAM) + 1):
        rb = ReadBuffer(MAX_FRAME)
        feed(rb, STREAM[:cut])
        got = drain(rb)
        feed(rb, STREAM[cut:])
        got += drain(rb)
        assert got == STREAM_PAYLOADS, cut
        assert rb.pending == 0


def test_stream_read_as_uvloop_reads_it():
    """uvloop keeps its view of the free space until buffer_updated and the frames it leads
    to are processed, then releases it (which frees an emptied buffer): whatever the reads'
    boundaries, the same frames, and an incomplete frame's bytes survive the release."""
    for cut in range(0, len(STREAM) + 1, 7):
        rb = ReadBuffer(MAX_FRAME)
        got = []
        for piece in (STREAM[:cut], STREAM[cut:], b"", STREAM):
            mv = rb.get_buffer(-1)
            mv[:len(piece)] = piece
            rb.buffer_updated(len(piece))
            got += drain(rb)
            mv.release()
        assert got == STREAM_PAYLOADS * 2, cut
        assert rb.pending == 0


def test_every_frame_split_at_every_byte_boundary():
    for payload in STREAM_PAYLOADS:
        data = frame(payload)
        for cut in range(len(data) + 1):
            rb = ReadBuffer(MAX_FRAME)
            feed(rb, data[:cut])
            first = rb.pop_frame()
            assert (first is None) == (cut < len(data))
            feed(rb, data[cut:])
            assert (rb.pop_frame() if first is None else first) == payload


def test_byte_at_a_time_feeding_with_small_hints():
    rb = ReadBuffer(MAX_FRAME)
    got = []
    for b in STREAM:
        mv = rb.get_buffer(1)
        mv[0] = b
        del mv
        rb.buffer_updated(1)
        got += drain(rb)
    assert got == STREAM_PAYLOADS


def test_get_buffer_offers_room_for_a_whole_large_frame():
    rb = ReadBuffer(MAX_FRAME)
    feed(rb, i32(500_000) + b"x" * 10)
    assert len(rb.get_buffer(-1)) >= 500_000 - 10


@pytest.mark.parametrize("prefix", [-1, -0x80000000, MAX_FRAME + 1, 0x7FFFFFFF])
def test_bad_length_prefix_is_refused_before_the_body(prefix):
    rb = ReadBuffer(MAX_FRAME)
    feed(rb, i32(prefix))
    with pytest.raises(FrameError):
        rb.pop_frame()
    with pytest.raises(FrameError):
        serve_reads(rb, DataTree(), WriteBuffer(), 0, 10, 1 << 30)


def test_frame_of_exactly_max_size_is_accepted():
    rb = ReadBuffer(100)
    feed(rb, frame(b"z" * 100))
    assert rb.pop_frame() == b"z" * 100


def test_peek_and_consume_for_four_letter_words():
    rb = ReadBuffer(MAX_FRAME)
    assert rb.peek(4) is None
    feed(rb, b"ruo")
    assert rb.peek(4) is None
    feed(rb, b"k")
    assert rb.peek(4) == b"ruok"
    assert rb.pending == 4
    rb.consume(4)
    assert rb.pending == 0
    with pytest.raises(ValueError):
        rb.consume(1)


def test_buffer_updated_beyond_handed_out_space_is_refused():
    rb = ReadBuffer(MAX_FRAME)
    n = len(rb.get_buffer(-1))
    with pytest.raises(ValueError):
        rb.buffer_updated(n + 1)


# --- read fast path -----------------------------------------------------------------------------


def fast_tree() -> DataTree:
    t = DataTree()
    t.create("/a", b"hello", OPEN, 0, 5, 1000, 1)
    t.create("/a/x", None, OPEN, 0, 6, 1001, 1)
    t.create("/a/y", b"", OPEN, 0x0100000D992F0013, 7, 1002, 2)
    t.create("/secret", b"s", [(31, "digest", "bob:xyz")], 0, 8, 1003, 2)
    t.create("/é", b"u", OPEN, 0, 9, 1004, 3)
    return t


def slow_reply(tree: DataTree, xid: int, op: int, path: str, zxid: int) -> bytes:
    """The reply the pipeline would build through the public API."""
    out = WriteBuffer()
    got = tree.get_data(path)
    if got is None:
        out.reply_header(xid, zxid, -101)
        return out.take()
    data, stat = got
    out.begin(xid, zxid, 0)
    if op == 4:
        out.write_buffer(data)
    if op in (8, 12):
        out.write_string_vector(tree.get_children(path))
    if op != 8:
        out.write_stat(stat)
    out.end()
    return out.take()


def served(tree, frames, zxid=0x42, limit=100):
    rb = ReadBuffer(MAX_FRAME)
    feed(rb, b"".join(frames))
    out = WriteBuffer()
    n = serve_reads(rb, tree, out, zxid, limit, 1 << 30)
    return n, out.take(), rb


@pytest.mark.parametrize("op", [3, 4, 8, 12])
@pytest.mark.parametrize("path", ["/a", "/a/x", "/a/y", "/", "/zookeeper", "/zookeeper/config", "/é", "/nope"])
def test_fast_path_reply_equals_slow_path_reply(op, path):
    tree = fast_tree()
    n, data, rb = served(tree, [frame(request(9, op, ustr(path) + boolean(False)))])
    assert n == 1 and rb.pending == 0
    assert data == slow_reply(tree, 9, op, path, 0x42)


def test_fast_path_stops_at_the_output_budget_but_finishes_a_started_reply():
    tree = fast_tree()
    frames = [frame(request(x, 4, ustr("/a") + boolean(False))) for x in range(1, 11)]
    one = len(served(tree, frames[:1])[1])
    rb = ReadBuffer(MAX_FRAME)
    feed(rb, b"".join(frames))
    out = WriteBuffer()
    assert serve_reads(rb, tree, out, 0x42, 100, 2 * one + 1) == 3  # the third one started
    assert len(out) == 3 * one
    assert serve_reads(rb, tree, out, 0x42, 100, 3 * one) == 0  # budget used: nothing more
    assert serve_reads(rb, tree, out, 0x42, 100, 1 << 30) == 7


def test_fast_path_answers_ping_with_minus_two():
    n, data, _ = served(DataTree(), [frame(request(-2, 11))], zxid=7)
    assert n == 1
    assert data == h("00000010 fffffffe 0000000000000007 00000000")


def test_fast_path_empty_path_aliases_root_and_null_path_is_left_to_the_slow_path():
    tree = fast_tree()
    n, data, _ = served(tree, [frame(request(1, 4, ustr("") + boolean(False))),
                               frame(request(2, 4, i32(-1) + boolean(False)))])
    assert n == 1
    assert data == slow_reply(tree, 1, 4, "/", 0x42)


@pytest.mark.parametrize(
    "stopper",
    [
        request(5, 4, ustr("/a") + boolean(True)),          # watch
        request(5, 3, ustr("/nope") + boolean(True)),
        request(5, 4, ustr("/secret") + boolean(False)),    # not world-readable
        request(5, 1, create_body("/b", b"", OPEN, 0)),     # a write
        request(5, 6, ustr("/a")),                          # getACL
        request(5, 4, ustr("/a\x00b") + boolean(False)),    # NUL in path
        request(5, 4, ustr("/a")),                          # truncated
        request(5, 4, i32(-7) + boolean(False)),            # bad length
        request(5, 11),                                     # ping with an ordinary xid
        b"\x00\x00\x00",                                    # shorter than a header
    ],
)
def test_fast_path_stops_at_first_frame_it_does_not_serve(stopper):
    tree = fast_tree()
    first = frame(request(1, 4, ustr("/a") + boolean(False)))
    after = frame(request(2, 4, ustr("/a") + boolean(False)))
    n, data, rb = served(tree, [first, frame(stopper), after])
    assert n == 1
    assert data == slow_reply(tree, 1, 4, "/a", 0x42)
    assert rb.pop_frame() == stopper
    assert rb.pop_frame() == after[4:]


def test_fast_path_honours_limit_and_incomplete_frames():
    tree = fast_tree()
    one = frame(request(1, 3, ustr("/a") + boolean(False)))
    n, _, rb = served(tree, [one] * 5, limit=3)
    assert n == 3 and rb.pending == 2 * len(one)
    n, _, rb = served(tree, [one, one[:-1]])
    assert n == 1 and rb.pending == len(one) - 1


def test_fast_path_on_a_batch_of_pipelined_reads():
    tree = fast_tree()
    frames = [frame(request(i, 4, ustr("/a") + boolean(False))) for i in range(1, 65)]
    n, data, rb = served(tree, frames)
    assert n == 64 and rb.pending == 0
    assert data == b"".join(slow_reply(tree, i, 4, "/a", 0x42) for i in range(1, 65))

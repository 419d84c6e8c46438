"""fastzk.client against both real servers: the client must be correct before its numbers
can be trusted, and running every test on Apache ZooKeeper too proves the client (not just
fastzk) speaks the protocol.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
import uvloop

from fastzk.client import (
    CreateMode,
    EventType,
    WatchEvent,
    ZKClient,
    ZKError,
    multi_check,
    multi_create,
    multi_delete,
    multi_set,
)
from fastzk.client.codec import PING_FRAME, connect_request, decode_multi
from fastzk.load import LoadConfig, run_load
from fastzk.load.workload import OpSpec, parse_op_spec

T = TypeVar("T")
TIMEOUT = 30.0


def run(factory: Callable[[], Awaitable[T]]) -> T:
    """Run one coroutine on a fresh uvloop loop, bounded in time."""

    async def bounded() -> T:
        return await asyncio.wait_for(factory(), TIMEOUT)

    return uvloop.run(bounded())


async def connect(server: Any, **kw: Any) -> ZKClient:
    return await ZKClient.connect(server.host, server.port, **kw)


# --- codec, no server needed ------------------------------------------------------------------


def test_connect_request_is_the_45_byte_java_layout() -> None:
    # spec 2.1, Java 3.8 capture: new session, timeout 6000
    expected = (
        "0000002d" + "00000000" + "00" * 8 + "00001770" + "00" * 8 + "00000010" + "00" * 16 + "00"
    )
    assert connect_request(6000).hex() == expected


def test_ping_frame_matches_spec() -> None:
    assert PING_FRAME.hex() == "00000008fffffffe0000000b"  # spec appendix B


def test_decode_failed_multi() -> None:
    # [error 0], [error -103], [error -2], done  (spec 10.4)
    body = bytes.fromhex(
        "ffffffff0000000000" + "00000000"
        "ffffffff00ffffff99" + "ffffff99"
        "ffffffff00fffffffe" + "fffffffe"
        "ffffffff01ffffffff"
    )
    results = decode_multi(body)
    assert [r.code for r in results if isinstance(r, ZKError)] == [0, -103, -2]


def test_parse_op() -> None:
    assert parse_op_spec("get") == OpSpec("get", 100, label="get")
    assert parse_op_spec("mixed:90") == OpSpec("mixed", 90, label="mixed:90")
    assert parse_op_spec("create-delete") == OpSpec("create-delete", label="create-delete")
    assert parse_op_spec("create:eph-seq") == OpSpec("create", flags=3, label="create:eph-seq")
    with pytest.raises(ValueError):
        parse_op_spec("frobnicate")


# --- against both servers ---------------------------------------------------------------------


def test_basic_ops_round_trip(server: Any, unique_path: str) -> None:
    async def scenario() -> None:
        c = await connect(server)
        try:
            assert c.session_id != 0 and len(c.passwd) == 16 and c.timeout_ms > 0
            assert await c.create(unique_path, b"root") == unique_path
            data, stat = await c.get(unique_path)
            assert data == b"root" and stat.version == 0 and stat.dataLength == 4
            stat2 = await c.set(unique_path, b"v1", version=0)
            assert stat2.version == 1 and stat2.mzxid > stat.mzxid
            exists = await c.exists(unique_path)
            assert exists is not None and exists.version == 1
            assert await c.exists(unique_path + "/missing") is None

            await c.create(unique_path + "/null", None)  # null data stays null (spec 1.2)
            assert (await c.get(unique_path + "/null"))[0] is None
            seq = await c.create(unique_path + "/s-", b"", CreateMode.PERSISTENT_SEQUENTIAL)
            assert seq.startswith(unique_path + "/s-") and len(seq) == len(unique_path) + 13
            eph = await c.create(unique_path + "/e", b"x", CreateMode.EPHEMERAL)
            _, eph_stat = await c.get(eph)
            assert eph_stat.ephemeralOwner == c.session_id

            children = await c.get_children(unique_path)
            assert sorted(children) == sorted(["null", seq.rsplit("/", 1)[1], "e"])
            assert await c.sync(unique_path) == unique_path
            for child in children:
                await c.delete(f"{unique_path}/{child}")
            await c.delete(unique_path, version=1)
            assert await c.exists(unique_path) is None
        finally:
            await c.close()
        assert not c.connected

    run(scenario)


def test_pipelined_requests_stay_in_order(server: Any, unique_path: str) -> None:
    """Many requests in flight at once, reads interleaved with writes, answered in order."""

    async def scenario() -> None:
        c = await connect(server)
        try:
            await c.create(unique_path, b"")
            n = 300
            creates = [c.create(f"{unique_path}/n{i:04d}", str(i).encode()) for i in range(n)]
            reads = [c.get(f"{unique_path}/n{i:04d}") for i in range(n)]
            sets = [c.set(f"{unique_path}/n{i:04d}", b"s" * i) for i in range(n)]
            paths, got, stats = await asyncio.gather(
                asyncio.gather(*creates), asyncio.gather(*reads), asyncio.gather(*sets)
            )
            assert paths == [f"{unique_path}/n{i:04d}" for i in range(n)]
            assert [d for d, _ in got] == [str(i).encode() for i in range(n)]
            assert [s.dataLength for s in stats] == list(range(n))
            mzxids = [s.mzxid for s in stats]
            assert mzxids == sorted(mzxids)  # writes applied in request order
            await asyncio.gather(*(c.delete(p) for p in paths))
            await c.delete(unique_path)
        finally:
            await c.close()

    run(scenario)


def test_watch_notifications_arrive(server: Any, unique_path: str) -> None:
    async def scenario() -> None:
        events: asyncio.Queue[WatchEvent] = asyncio.Queue()
        watcher = await connect(server, watcher=events.put_nowait)
        writer = await connect(server)
        try:
            await writer.create(unique_path, b"a")
            await watcher.get(unique_path, watch=True)
            await watcher.get_children(unique_path, watch=True)
            await watcher.exists(unique_path + "/later", watch=True)

            await writer.set(unique_path, b"b")
            ev = await asyncio.wait_for(events.get(), 10)
            assert ev == WatchEvent(EventType.NODE_DATA_CHANGED, 3, unique_path)

            await writer.create(unique_path + "/later", b"")
            got = {await asyncio.wait_for(events.get(), 10) for _ in range(2)}
            assert got == {
                WatchEvent(EventType.NODE_CREATED, 3, unique_path + "/later"),
                WatchEvent(EventType.NODE_CHILDREN_CHANGED, 3, unique_path),
            }
            await writer.delete(unique_path + "/later")
            await writer.delete(unique_path)
            await asyncio.sleep(0.2)
            assert events.empty()  # one-shot watches fired once only
        finally:
            await watcher.close()
            await writer.close()

    run(scenario)


def test_error_codes(server: Any, unique_path: str) -> None:
    async def scenario() -> None:
        c = await connect(server)
        try:

            async def code_of(coro: Awaitable[Any]) -> int:
                with pytest.raises(ZKError) as info:
                    await coro
                return info.value.code

            assert await code_of(c.get(unique_path)) == -101
            await c.create(unique_path, b"")
            await c.create(unique_path + "/child", b"")
            assert await code_of(c.create(unique_path, b"")) == -110
            assert await code_of(c.delete(unique_path)) == -111
            assert await code_of(c.set(unique_path, b"x", version=7)) == -103
            assert await code_of(c.create("no-slash", b"")) == -8
            # the connection survives errors; a request after them still works
            assert (await c.get(unique_path))[1].numChildren == 1
            await c.delete(unique_path + "/child")
            await c.delete(unique_path)
        finally:
            await c.close()

    run(scenario)


def test_multi(server: Any, unique_path: str) -> None:
    async def scenario() -> None:
        c = await connect(server)
        try:
            ok = await c.multi(
                [
                    multi_create(unique_path, b"p"),
                    multi_create(unique_path + "/a", b"1"),
                    multi_set(unique_path, b"q"),
                    multi_check(unique_path, 1),
                ]
            )
            assert ok[0] == unique_path and ok[1] == unique_path + "/a"
            assert not isinstance(ok[2], ZKError) and ok[2] is not None and ok[3] is None
            failed = await c.multi(
                [
                    multi_delete(unique_path + "/a"),
                    multi_check(unique_path, 99),
                    multi_delete(unique_path),
                ]
            )
            assert [r.code for r in failed if isinstance(r, ZKError)] == [0, -103, -2]
            assert await c.exists(unique_path + "/a") is not None  # rolled back
            await c.multi([multi_delete(unique_path + "/a"), multi_delete(unique_path)])
            assert await c.exists(unique_path) is None
        finally:
            await c.close()

    run(scenario)


def test_close_session_drops_ephemerals(server: Any, unique_path: str) -> None:
    async def scenario() -> None:
        owner = await connect(server)
        observer = await connect(server)
        try:
            await owner.create(unique_path, b"", CreateMode.EPHEMERAL)
            await owner.close()
            assert await observer.exists(unique_path) is None
            with pytest.raises(ZKError) as info:
                await owner.get("/")
            assert info.value.code == -4  # CONNECTIONLOSS after close
        finally:
            await observer.close()

    run(scenario)


def _need_hdrh() -> None:
    """The load generator's histograms need hdrhistogram (a dependency of `fastzk load`)."""
    pytest.importorskip("hdrh", reason="hdrhistogram is not installed in this environment")


@pytest.mark.parametrize("op", ["get", "set", "create-delete", "mixed:90"])
def test_tiny_load_run(server: Any, unique_path: str, op: str) -> None:
    _need_hdrh()
    cfg = LoadConfig(
        host=server.host,
        port=server.port,
        sessions=4,
        depth=8,
        op=op,
        keys=50,
        duration=0.6,
        warmup=0.2,
        root=unique_path,
        server_pid=server.pid,
    )
    result = run_load(cfg)
    assert result.ops_per_sec > 0 and result.ops > 0
    assert result.errors_total == {}, result.errors_total
    lat = result.latency_us
    assert 0 < lat["p50"] <= lat["p99"] <= lat["p99.9"] <= lat["max"]
    assert result.server_cpu is not None and result.client_cpu is not None

    async def leftovers() -> Any:
        c = await connect(server)
        try:
            return await c.exists(unique_path)
        finally:
            await c.close()

    assert run(leftovers) is None  # cleanup removed the key space


def test_load_with_two_processes(server: Any, unique_path: str) -> None:
    """Sessions split over spawned workers; their histograms merge into one result."""
    _need_hdrh()
    cfg = LoadConfig(
        host=server.host,
        port=server.port,
        sessions=2,
        depth=4,
        op="get",
        keys=20,
        duration=0.5,
        warmup=0.1,
        processes=2,
        root=unique_path,
    )
    result = run_load(cfg)
    assert result.ops > 0 and result.errors_total == {}

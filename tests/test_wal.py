"""The write-ahead log: record codec and CRC32C, group commit, torn tails, bit flips, disk
errors through the writer's fault-injection seam."""

from __future__ import annotations

import errno
import random
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from durable import OPEN_ACL, Harness, InProcessServer, make_cfg, random_writes, tree_state
from kazoo.client import KazooClient
from kazoo.exceptions import ConnectionLoss

from fastzk._core import (
    WalScanner,
    crc32c,
    decode_value,
    encode_txns,
    encode_value,
    find_record,
    seal_records,
)
from fastzk.nemesis.servers import free_port
from fastzk.proto import Op
from fastzk.quorum.zxid import counter_of
from fastzk.runtime import tools, wal
from fastzk.server.prep import Txn

# --- codec ------------------------------------------------------------------------------------------


def test_crc32c_known_vectors_and_continuation() -> None:
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(bytes(32)) == 0x8A9136AA
    assert crc32c(b"\xff" * 32) == 0x62A8AB43
    assert crc32c(b"") == 0
    data = random.Random(1).randbytes(1000)
    for cut in (0, 1, 7, 8, 9, 500, 999, 1000):
        assert crc32c(data[cut:], crc32c(data[:cut])) == crc32c(data)


@pytest.mark.parametrize(
    "value",
    [
        None, True, False, 0, -1, 2**63 - 1, -(2**63), 2**64, -(2**80), "", "päth/\udc80",
        b"", b"\x00\xff", (), [], [("create", "/a", b"x", [(31, "world", "anyone")], -1, 3)],
        [(1, ("create", "/b", None, [], 0x0102030405060708, 0))], (1, [2, (3, [4])]),
    ],
)
def test_value_round_trip(value: object) -> None:
    assert decode_value(encode_value(value)) == value


def _txn(zxid: int, path: str = "/x", data: bytes | None = b"d") -> Txn:
    return Txn(zxid, 1_700_000_000_000 + zxid, 0x1234, zxid, Op.CREATE,
               [("create", path, data, OPEN_ACL, 0, zxid)])


def test_records_seal_scan_and_detect_any_flipped_bit() -> None:
    txns = [_txn(z, f"/n{z}", None if z == 3 else bytes(z)) for z in range(1, 6)]
    blob = encode_txns(txns)
    assert seal_records(blob, 1) == 5
    scanner = WalScanner(bytes(blob), 0, 0)
    got = []
    while (record := scanner.next_record()) is not None:
        got.append(wal.txn_of(record))
        assert record[2] == 1  # batch stamp
    assert scanner.problem is None and got == txns
    rng = random.Random(5)
    for _ in range(200):
        bad = bytearray(blob)
        bit = rng.randrange(len(bad) * 8)
        bad[bit // 8] ^= 1 << (bit % 8)
        scanner = WalScanner(bytes(bad), 0, 0)
        count = 0
        while scanner.next_record() is not None:
            count += 1
        assert count < 5 and scanner.problem is not None  # never a silently wrong record


def test_find_record_skips_garbage() -> None:
    blob = encode_txns([_txn(7), _txn(8)])
    seal_records(blob, 7)
    data = random.Random(2).randbytes(333) + bytes(blob)
    assert find_record(data, 0, 6) == 333
    assert find_record(data, 334, 7) == 333 + len(blob) // 2  # both records are the same size
    assert find_record(data, 0, 8) == -1


# --- log files -----------------------------------------------------------------------------------


def _fill(tmp: Path, writes: int, seed: int = 3, per_write: int = 4, **cfg: object) -> Harness:
    harness = Harness(tmp, seed=seed, **cfg)
    rng = random.Random(seed)
    sessions: list[int] = []
    for _ in range(writes):
        random_writes(harness, rng, per_write, sessions)
        harness.flush()
    return harness


def _recovered(directory: Path) -> Harness:
    return Harness(directory, seed=99)


@pytest.mark.parametrize("separate_log_dir", [False, True])
def test_group_commit_round_trip_across_segment_rolls(tmp_path: Path,
                                                      separate_log_dir: bool) -> None:
    log_dir = tmp_path / "logs" if separate_log_dir else None
    harness = _fill(tmp_path / "a", 60, prealloc_kb=2, data_log_dir=log_dir)
    if separate_log_dir:
        assert harness.storage.log_dir == tmp_path / "logs" / "fastzk"
    state = tree_state(harness.node)
    zxid, digest = harness.node.applied_zxid, harness.node.tree.digest()
    segments = wal.list_segments(harness.storage.log_dir)
    harness.close()
    assert len(segments) > 3
    for _, path in segments[:-1]:  # rolled segments are cut to their records
        end = next(r for r in wal.scan_records(path) if r[0] == "end")
        assert end[1] == path.stat().st_size and end[2] is None
    assert segments[-1][1].stat().st_size == 2 * 1024  # the active one is preallocated
    again = Harness(tmp_path / "a", seed=99, data_log_dir=log_dir)
    assert again.report.replayed == counter_of(zxid) and again.report.torn is None
    assert again.report.last_zxid == zxid and again.node.tree.digest() == digest
    assert tree_state(again.node) == state
    again.close()


def test_log_writes_go_on_while_the_job_thread_is_busy(tmp_path: Path) -> None:
    """Snapshot chunks, their fsync and purges run on the job thread, not the writer's: a log
    write never waits behind them (on one thread, each one delayed the writes queued after
    it, which made the slowest writes at a fixed rate)."""
    harness = Harness(tmp_path, seed=5)
    gate = threading.Event()
    ran: list[bool] = []
    harness.storage.jobs.run_job(lambda: ran.append(gate.wait(30)), lambda result, error: None)
    rng = random.Random(5)
    sessions: list[int] = []
    try:
        for _ in range(20):
            random_writes(harness, rng, 5, sessions)
            harness.flush()  # TimeoutError if the writes waited for the job
        assert not ran and not harness.failures
    finally:
        gate.set()
    harness.run_until(lambda: bool(ran))
    harness.close()


def test_a_roll_takes_the_spare_segment_prepared_on_the_job_thread(tmp_path: Path) -> None:
    harness = Harness(tmp_path, seed=6, prealloc_kb=2)
    spare = harness.storage.log_dir / wal.SPARE_NAME
    writer = harness.storage.writer
    assert writer is not None
    harness.run_until(lambda: writer._spare_ready)  # asked for by the start-up segment
    inode = spare.stat().st_ino
    assert spare.stat().st_size == 2 * 1024  # reserved whole, before any roll needs it
    first = wal.list_segments(harness.storage.log_dir)
    rng = random.Random(6)
    sessions: list[int] = []
    while wal.list_segments(harness.storage.log_dir) == first:
        random_writes(harness, rng, 4, sessions)
        harness.flush()
    rolled = wal.list_segments(harness.storage.log_dir)
    assert rolled[len(first)][1].stat().st_ino == inode  # the spare, renamed
    harness.run_until(lambda: writer._spare_ready)  # and the next one is made
    assert spare.stat().st_ino != inode
    state = tree_state(harness.node)
    zxid = harness.node.applied_zxid
    harness.close()
    spare.write_bytes(b"half made")  # a crash while a spare was made: removed at start
    again = Harness(tmp_path, seed=99, prealloc_kb=2)
    assert again.report.torn is None and again.report.last_zxid == zxid
    assert tree_state(again.node) == state
    again.close()


def test_the_writer_drains_everything_queued_into_one_write(tmp_path: Path) -> None:
    harness = Harness(tmp_path, unsafe_ack_before_sync=False)
    sessions: list[int] = []
    rng = random.Random(4)
    for _ in range(40):  # 40 loop iterations' batches queued before the loop waits once
        random_writes(harness, rng, 3, sessions)
        harness.flush(wait=False)
    target = harness.node.prep.last_zxid
    harness.run_until(lambda: harness.node.applied_zxid >= target)
    writer = harness.storage.writer
    assert writer is not None and writer.writes < 40
    # every record of the epoch, its opening barrier included, in fewer writes than batches
    assert sum(size * n for size, n in writer.batch_sizes.items()) == counter_of(target)
    harness.close()


def _last_write_start(log_dir: Path) -> tuple[Path, int, int]:
    """(last segment, offset of the last write's first record, offset of its end)."""
    path = wal.list_segments(log_dir)[-1][1]
    records = [r for r in wal.scan_records(path) if r[0] != "end"]
    end = next(r for r in wal.scan_records(path) if r[0] == "end")[1]
    last_batch = records[-1][2]
    start = next(r[0] for r in records if r[2] == last_batch)
    return path, start, end


def test_torn_tail_at_random_offsets_keeps_every_complete_record(tmp_path: Path) -> None:
    harness = _fill(tmp_path / "orig", 30)
    harness.close()
    log_dir = harness.storage.log_dir
    path = wal.list_segments(log_dir)[-1][1]
    records = [r for r in wal.scan_records(path) if r[0] != "end"]
    end = next(r for r in wal.scan_records(path) if r[0] == "end")[1]
    ends = [r[0] for r in records[1:]] + [end]
    starts = {r[0] for r in records} | {end}
    rng = random.Random(11)
    cuts = sorted({rng.randrange(wal.SEGMENT_HEADER, end + 1) for _ in range(25)} | {end - 1})
    for number, cut in enumerate(cuts):
        copy = tmp_path / f"cut{number}"
        shutil.copytree(tmp_path / "orig", copy)
        target = wal.log_dir_of(copy) / path.name
        with open(target, "r+b") as handle:
            handle.truncate(cut)
            if number % 2:  # half of them: garbage where the torn write left off
                handle.seek(cut)
                handle.write(rng.randbytes(rng.randrange(1, 300)))
        complete = [r for r, stop in zip(records, ends, strict=True) if stop <= cut]
        again = _recovered(copy)
        expected = complete[-1][1] if complete else 0
        assert again.report.last_zxid == expected, (cut, again.report)
        assert (again.report.torn is None) == (number % 2 == 0 and cut in starts)
        # the cut file is usable again: write more, recover again
        random_writes(again, random.Random(number), 5)
        again.flush()
        zxid, digest = again.node.applied_zxid, again.node.tree.digest()
        again.close()
        third = _recovered(copy)
        assert third.report.last_zxid == zxid and third.node.tree.digest() == digest
        assert third.report.torn is None
        third.close()


def test_power_loss_hole_inside_the_last_write_is_a_torn_tail(tmp_path: Path) -> None:
    harness = Harness(tmp_path / "a")
    sessions: list[int] = []
    rng = random.Random(8)
    for _ in range(5):
        random_writes(harness, rng, 3, sessions)
        harness.flush()
    random_writes(harness, rng, 12, sessions)  # one last write with many records
    harness.flush()
    harness.close()
    path, start, end = _last_write_start(harness.storage.log_dir)
    records = [r for r in wal.scan_records(path) if r[0] != "end" and r[0] >= start]
    assert len(records) > 3
    hole = records[1][0]
    with open(path, "r+b") as handle:  # its second record's page never reached the disk
        handle.seek(hole)
        handle.write(bytes(records[2][0] - hole))
    again = _recovered(tmp_path / "a")
    assert again.report.torn is not None and f"offset {hole}" in again.report.torn
    assert again.report.last_zxid == records[0][1]
    again.close()


@pytest.mark.parametrize("where", ["middle-of-segment", "earlier-segment", "length-field",
                                   "segment-header", "zeroed-record"])
def test_bit_flip_before_the_last_write_stops_recovery_naming_file_and_offset(
    tmp_path: Path, where: str
) -> None:
    split = where in ("earlier-segment", "segment-header")
    harness = _fill(tmp_path / "a", 40, prealloc_kb=4 if split else 64)
    harness.close()
    segments = wal.list_segments(harness.storage.log_dir)
    assert (len(segments) > 2) == split
    rng = random.Random(len(where))
    if where == "segment-header":
        path, offset = segments[1][1], 8
    else:
        path = segments[0][1]
        records = [r for r in wal.scan_records(path) if r[0] != "end"]
        last_batch = records[-1][2]
        record = records[len(records) // 2]
        assert record[2] != last_batch or split
        offset = record[0] + (1 if where == "length-field" else
                              rng.randrange(wal.RECORD_HEADER, wal.RECORD_HEADER + 20))
    with open(path, "r+b") as handle:
        if where == "zeroed-record":  # a lost page in the middle: valid records follow
            following = records[records.index(record) + 1][0]
            handle.seek(record[0])
            handle.write(bytes(following - record[0]))
        else:
            handle.seek(offset)
            byte = handle.read(1)[0]
            handle.seek(offset)
            handle.write(bytes([byte ^ (1 << rng.randrange(8))]))
    with pytest.raises(wal.RecoveryError) as failure:
        _recovered(tmp_path / "a")
    message = str(failure.value)
    assert str(path) in message
    if where != "segment-header":
        assert f"offset {record[0]}" in message
    # the offline tool reaches the same verdict
    out = _Capture()
    assert tools.log_dump(tmp_path / "a", out) == 1 and "CORRUPT" in out.text


def test_a_server_refuses_to_start_on_a_corrupt_log(tmp_path: Path) -> None:
    import subprocess
    import sys

    harness = _fill(tmp_path / "data", 20)
    harness.close()
    path = wal.list_segments(harness.storage.log_dir)[-1][1]
    records = [r for r in wal.scan_records(path) if r[0] != "end"]
    with open(path, "r+b") as handle:
        handle.seek(records[3][0] + 30)
        handle.write(b"\xee")
    cfg = tmp_path / "zoo.cfg"
    cfg.write_text(f"dataDir={tmp_path / 'data'}\nclientPort={free_port()}\n"
                   "admin.enableServer=false\n")
    result = subprocess.run([sys.executable, "-m", "fastzk", "serve", str(cfg)],
                            capture_output=True, text=True, timeout=30,
                            cwd=Path(__file__).resolve().parent.parent)
    assert result.returncode == 3
    assert f"{path} offset {records[3][0]}" in result.stderr


def _eventually(fn: Callable[[], object], timeout: float = 10.0) -> object:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except ConnectionLoss:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class _Capture:
    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> int:
        self.text += text
        return len(text)


# --- disk errors through the seam ------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["sync-EIO", "write-ENOSPC", "partial-write-ENOSPC"])
def test_disk_error_fails_the_write_and_every_later_one(tmp_path: Path, fault: str) -> None:
    harness = _fill(tmp_path, 5)
    before = harness.node.applied_zxid
    faults = harness.storage.faults
    if fault == "sync-EIO":
        faults.fail_next_sync(errno.EIO)
    elif fault == "write-ENOSPC":
        faults.fail_next_write(errno.ENOSPC)
    else:
        faults.fail_next_write(errno.ENOSPC, after_bytes=37)
    random_writes(harness, random.Random(1), 4)
    harness.flush()
    assert harness.node.applied_zxid == before  # nothing acknowledged, nothing applied
    (failed, error), = harness.failures
    assert failed and error.errno == (errno.EIO if fault == "sync-EIO" else errno.ENOSPC)
    random_writes(harness, random.Random(2), 4)  # later writes fail at once, unwritten
    harness.flush()
    assert len(harness.failures) == 2 and harness.node.applied_zxid == before
    log_dir = harness.storage.log_dir
    size_after_failure = sum(p.stat().st_size for _, p in wal.list_segments(log_dir))
    harness.close()
    assert sum(p.stat().st_size for _, p in wal.list_segments(log_dir)) == size_after_failure
    again = _recovered(tmp_path)
    # a failed sync's txns may or may not be on disk (never acknowledged either way); a failed
    # or short write leaves at most a torn tail
    if fault == "sync-EIO":
        assert again.report.last_zxid in (before, failed[-1].zxid)
    else:
        assert again.report.last_zxid == before
    again.close()


def test_disk_error_through_a_real_server(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path / "data", client_port=free_port(), tick_time=200)
    server = InProcessServer(cfg)
    client = KazooClient(server.hosts, timeout=4.0)
    client.start(timeout=10)
    try:
        client.create("/kept", b"1")
        server.call(lambda: server.server.storage.faults.fail_next_sync(errno.EIO))
        with pytest.raises(ConnectionLoss):  # never acknowledged: the connection is closed
            client.create("/lost", b"2")
        ready, reason = server.call(server.server.ready)
        assert not ready and "log stage failed" in reason and "Errno 5" in reason
        # the session resumes (no txn needed) and reads go on; every write fails the same way
        assert _eventually(lambda: client.get("/kept")[0]) == b"1"
        with pytest.raises(ConnectionLoss):
            client.set("/kept", b"changed")
        assert _eventually(lambda: client.get("/kept")[0]) == b"1"
    finally:
        client.stop()
        client.close()
    server.stop()
    again = InProcessServer(cfg)
    client = KazooClient(again.hosts, timeout=4.0)
    client.start(timeout=10)
    try:
        assert client.get("/kept")[0] == b"1"
        client.create("/after", b"3")
    finally:
        client.stop()
        client.close()
        again.stop()


def test_a_small_disk_degrades_preallocation_and_keeps_the_zero_tail() -> None:
    """Less free space than preAllocSize (64 MB on an 8 MB tmpfs): the segment is reserved in
    steps instead of failing, and its unwritten tail still reads as zeros, which is what tells
    recovery a clean end (or a torn write) from corruption."""
    from test_limits import small_tmpfs

    with small_tmpfs(8) as disk:
        mount = disk.path
        harness = _fill(mount / "a", 30)
        writer = harness.storage.writer
        assert writer is not None and writer.low_space is not None
        zxid, digest = harness.node.applied_zxid, harness.node.tree.digest()
        path = wal.list_segments(harness.storage.log_dir)[-1][1]
        end = next(r for r in wal.scan_records(path) if r[0] == "end")[1]
        size = path.stat().st_size
        assert end < size < 8 << 20  # reserved ahead of the records, far less than 64 MB
        with open(path, "rb") as handle:
            handle.seek(end)
            assert handle.read() == bytes(size - end)
        harness.close()
        again = _recovered(mount / "a")
        assert again.report.torn is None and again.report.last_zxid == zxid
        assert again.node.tree.digest() == digest
        again.close()


def test_durability_keys_are_read_from_zoo_cfg(tmp_path: Path) -> None:
    from fastzk.config import load

    path = tmp_path / "zoo.cfg"
    path.write_text("dataDir=data\ndataLogDir=logs\nsnapCount=5000\nsnapSizeLimitInKb=0\n"
                    "autopurge.snapRetainCount=7\npreAllocSize=1024\n"
                    "fastzk.walMaxBatchBytes=65536\nfastzk.snapshotChunkNodes=10\n")
    cfg = load(path)
    assert cfg.data_log_dir == tmp_path / "logs"
    assert (cfg.snap_count, cfg.snap_size_limit_kb, cfg.snap_retain_count, cfg.prealloc_kb,
            cfg.wal_max_batch_bytes, cfg.snapshot_chunk_nodes) == (5000, 0, 7, 1024, 65536, 10)
    assert not cfg.unsafe_ack_before_sync and cfg.warnings == ()
    path.write_text("dataDir=data\nfastzk.unsafeAckBeforeSync=true\nfastzk.unsafeWriteDelayMs=50\n")
    cfg = load(path)
    assert cfg.unsafe_ack_before_sync and cfg.unsafe_write_delay_ms == 50
    assert any("BEFORE they are durable" in w for w in cfg.warnings)

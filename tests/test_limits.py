"""Resource limits (issue 14): whatever a client does, the server's memory and disk stay bounded
and other clients keep being served.

Every test drives real server processes over loopback sockets. Where Apache ZooKeeper 3.8
behaves comparably (it stays small under a client that does not read, acknowledges every
pipelined write, accepts clients on a nearly full disk, refuses netmask ip ACLs, prints paths
with lone surrogates) the same test runs against it too. Memory is judged by the RSS growth of
the server process against generous ceilings (several times what fastzk needs, a fraction of
what it took before the limits existed), never by timing.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import wire
from kazoo.client import KazooClient
from kazoo.exceptions import InvalidACLError
from kazoo.security import make_acl
from test_bad_input import Flooder, assert_still_serving, create_node, drain_replies, rss_mb

from fastzk.nemesis.disk import SmallDisk, can_mount
from fastzk.nemesis.servers import ServerProcess

KINDS = ["zookeeper", "fastzk"]
MakeServer = Callable[..., ServerProcess]
KazooFactory = Callable[..., KazooClient]

VALUE_BYTES = 1_000_000  # "1 MB": a create of 1 MiB would exceed ZooKeeper's jute.maxbuffer


class RssPeak:
    """Samples a server's RSS every 50 ms from a thread while the block runs."""

    def __init__(self, proc: ServerProcess) -> None:
        self.pid = proc.pid
        self.base_mb = rss_mb(proc.pid)
        self.peak_mb = self.base_mb
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak_mb = max(self.peak_mb, rss_mb(self.pid))

    def __enter__(self) -> RssPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5.0)
        self.peak_mb = max(self.peak_mb, rss_mb(self.pid))

    @property
    def growth_mb(self) -> float:
        return self.peak_mb - self.base_mb


def wait_idle(pid: int, quiet_s: float = 0.6, limit_s: float = 10.0) -> None:
    """Returns once the process has used no CPU for quiet_s (it buffered what it was going
    to, or is back-pressured), or after limit_s."""
    from test_bad_input import cpu_ticks

    deadline = time.monotonic() + limit_s
    last, since = cpu_ticks(pid), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = cpu_ticks(pid)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since > quiet_s:
            return


def answered_meanwhile(proc: ServerProcess, kazoo_factory: KazooFactory) -> None:
    """Another client connects and gets answers (bounded: kazoo's own timeouts)."""
    other = kazoo_factory(proc, start_timeout=20.0, timeout=20.0)
    assert other.exists("/zookeeper") is not None
    assert other.get("/zookeeper")[1].numChildren >= 1


# --- 1. a client that does not read its replies --------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("readers", "value_bytes", "requests", "behind_a_write"),
    [(1, VALUE_BYTES, 400, False), (1, VALUE_BYTES, 400, True), (6, 100_000, 600, False)],
    ids=["one-reader-1MB", "reads-queued-behind-a-write", "six-readers-100KB"],
)
def test_clients_that_do_not_read_cannot_grow_the_server(
    make_server: MakeServer, kazoo_factory: KazooFactory, kind: str, readers: int,
    value_bytes: int, requests: int, behind_a_write: bool,
) -> None:
    """Clients pipeline getData of a large node (a few KB sent each) and read nothing. Before
    the output limit fastzk buffered every reply (1,000 x 1 MB: RSS 1.9 GB); now reading from
    those connections stops once their pending output reaches fastzk.clientOutputLimitBytes.
    RSS grows by less than 200 MB while the replies (400-3600 MB of them) wait, other
    clients are answered meanwhile, and once a reader reads, every reply arrives in order."""
    srv = make_server(kind)
    path = "/big"
    socks: list[socket.socket] = []
    flooders: list[Flooder] = []
    try:
        for _ in range(readers):
            sock, resp = wire.handshake(srv.host, srv.port, timeout=10.0)
            socks.append(sock)
            assert resp.session_id
        create_node(socks[0], path, b"v" * value_bytes)
        with RssPeak(srv) as rss:
            for sock in socks:
                payload = b"".join(wire.get_data_request(x, path) for x in range(2, requests + 2))
                if behind_a_write:  # the reads wait in the connection's FIFO for the write,
                    # and a second write commits while their replies are still held back
                    one = len(wire.get_data_request(2, path))
                    payload = (wire.set_data_request(2, path, b"w" * value_bytes)
                               + payload[one:-one]
                               + wire.set_data_request(requests + 1, path, b"w" * value_bytes))
                flooder = Flooder(sock, payload)
                flooders.append(flooder)
                flooder.start()
            wait_idle(srv.pid)
            answered_meanwhile(srv, kazoo_factory)
        assert rss.growth_mb < 200, (
            f"{kind} RSS grew from {rss.base_mb:.0f} MB to {rss.peak_mb:.0f} MB")
        xids, _ = drain_replies(socks[0], requests, timeout=60.0)
        assert xids == list(range(2, requests + 2)), "replies lost or out of order"
        assert "Traceback" not in srv.log_text()
    finally:
        for flooder in flooders:
            flooder.close()
        for sock in socks:
            sock.close()
    assert_still_serving(srv)


def test_a_watcher_that_does_not_read_is_closed_at_the_hard_limit(
    make_server: MakeServer, kazoo_factory: KazooFactory
) -> None:
    """fastzk only (ZooKeeper queues notifications without bound): watch events cannot wait
    for the client to read, so a connection whose unsent output passes
    fastzk.clientOutputHardLimitBytes is closed, with a warning; the writer's writes are all
    acknowledged and the server stays small."""
    srv = make_server("fastzk", **{"fastzk.clientOutputLimitBytes": 65536,
                                   "fastzk.clientOutputHardLimitBytes": 1 << 20})
    if srv.kind != "fastzk":
        pytest.skip("fastzk's own limit")
    name = "/w" + "x" * 4000  # ~4 KB per notification
    writer = kazoo_factory(srv)
    writer.create(name, b"")
    watcher = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    watcher.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # little kernel buffering
    try:
        watcher.settimeout(10.0)
        watcher.connect((srv.host, srv.port))
        watcher.sendall(wire.connect_request())
        wire.parse_connect_response(wire.read_frame(watcher))
        # addWatch (106), mode PERSISTENT (0): an event for every change, never re-armed
        watcher.sendall(wire.request(1, 106, wire.p_ustring(name) + wire.p_int(0)))
        hdr, _ = wire.read_reply(watcher)
        assert hdr.err == wire.OK
        with RssPeak(srv) as rss:
            acked = rounds = 0
            while rounds < 8 and "fastzk.clientOutputHardLimitBytes" not in srv.log_text():
                results = [writer.set_async(name, b"%d" % i) for i in range(500)]
                acked += sum(1 for r in results if r.get(timeout=30.0) is not None)
                rounds += 1
        assert acked == 500 * rounds, "acknowledged writes missing"
        assert re.search(r"WARNING .*closing 127\.0\.0\.1 \(session 0x[0-9a-f]+\): \d+ bytes "
                         r"of replies and watch events not read", srv.log_text()), srv.log_text()
        closed, _ = wire.recv_until_closed(watcher, 10.0)
        assert closed, "the hopeless watcher's connection was not closed"
        assert rss.growth_mb < 150, f"RSS grew from {rss.base_mb:.0f} to {rss.peak_mb:.0f} MB"
    finally:
        watcher.close()
    assert_still_serving(srv)


# --- 2. writes in flight -------------------------------------------------------------------


def pipeline_writes(proc: ServerProcess, path: str, count: int, value: bytes) -> list[int]:
    """One raw session pipelines `count` setData of `value` on `path` (a thread sends while
    this one reads); returns the xids acknowledged OK, in arrival order."""
    sock, _ = wire.handshake(proc.host, proc.port, timeout=10.0)
    acked: list[int] = []
    try:
        create_node(sock, path)
        flooder = Flooder(sock, b"".join(wire.set_data_request(x, path, value)
                                         for x in range(2, count + 2)))
        flooder.start()
        try:
            for _ in range(count):
                hdr, _ = wire.read_reply_skipping_notifications(sock, 60.0)
                if hdr.err == wire.OK:
                    acked.append(hdr.xid)
        finally:
            flooder.close()
    finally:
        sock.close()
    return acked


@pytest.mark.parametrize("kind", KINDS)
def test_pipelined_large_writes_are_all_acknowledged_with_bounded_memory(
    make_server: MakeServer, kind: str
) -> None:
    """One session pipelines 200 setData of 1 MB. Both servers acknowledge every one, in order,
    and the last value is there. fastzk (before: RSS +450 MB for 400 such writes) stops reading
    at fastzk.clientOutstandingLimitBytes and stays under +200 MB; the JVM's heap is not
    comparable, so ZooKeeper's RSS is not judged. ZooKeeper runs with a 1 GB heap here (the
    test suite's 256 MB is too small for it to survive this)."""
    srv = make_server(kind, base_jvm_flags=["-Xmx1g", "-XX:+UseSerialGC",
                                            "-XX:TieredStopAtLevel=1"])
    count = 200
    with RssPeak(srv) as rss:
        acked = pipeline_writes(srv, "/p", count, b"p" * VALUE_BYTES)
    assert acked == list(range(2, count + 2))
    sock, _ = wire.handshake(srv.host, srv.port)
    try:
        sock.sendall(wire.get_data_request(1, "/p"))
        hdr, body = wire.read_reply(sock, 30.0)
        data, offset = wire.parse_buffer(body)
        assert hdr.err == wire.OK and data == b"p" * VALUE_BYTES
        assert struct.unpack_from(">i", body, offset + 32)[0] == count  # the data version
    finally:
        sock.close()
    if srv.kind == "fastzk":
        assert rss.growth_mb < 200, f"RSS grew from {rss.base_mb:.0f} to {rss.peak_mb:.0f} MB"


def test_server_wide_bytes_in_flight_are_bounded(
    make_server: MakeServer, kazoo_factory: KazooFactory
) -> None:
    """fastzk only (ZooKeeper refuses large requests over largeRequestMaxBytes by closing the
    connection; fastzk stops reading instead). With per-connection limits out of the way, three
    sessions pipelining 150 x 1 MB would hold ~450 MB in flight; largeRequestMaxBytes=8 MB keeps
    the server under +250 MB, every write is still acknowledged, and another client's writes
    get their turn meanwhile. After the burst, memory is given back (malloc_trim)."""
    srv = make_server("fastzk", tickTime=200, largeRequestMaxBytes=8 << 20,
                      **{"fastzk.clientOutstandingLimitBytes": 1 << 30,
                         "fastzk.clientOutstandingLimit": 100000})
    if srv.kind != "fastzk":
        pytest.skip("fastzk's own semantics of largeRequestMaxBytes")
    other = kazoo_factory(srv)
    results: dict[int, list[int]] = {}

    def run(index: int) -> None:
        results[index] = pipeline_writes(srv, f"/g{index}", 150, b"g" * VALUE_BYTES)

    with RssPeak(srv) as rss:
        threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(3)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        during = [other.create(f"/other{i}", b"o") for i in range(5)]  # kazoo's timeouts bound it
        burst_going_on = any(thread.is_alive() for thread in threads)
        for thread in threads:
            thread.join(120.0)
    assert during == [f"/other{i}" for i in range(5)] and burst_going_on
    assert [results.get(i) for i in range(3)] == [list(range(2, 152))] * 3
    assert rss.growth_mb < 250, f"RSS grew from {rss.base_mb:.0f} to {rss.peak_mb:.0f} MB"
    deadline = time.monotonic() + 10.0  # a few ticks: the heap is trimmed once it drained
    while rss_mb(srv.pid) - rss.base_mb > 100 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert rss_mb(srv.pid) - rss.base_mb <= 100, "memory not returned after the burst"


def test_clients_that_do_not_read_cannot_use_up_the_server_wide_budget(
    make_server: MakeServer, kazoo_factory: KazooFactory
) -> None:
    """fastzk only: replies a client does not read are held back, with the requests queued
    behind its writes; those count against its own limits, not against
    globalOutstandingLimit, or a few such clients would stop every other client's writes."""
    srv = make_server("fastzk", globalOutstandingLimit=60,
                      **{"fastzk.clientOutputLimitBytes": 65536})
    if srv.kind != "fastzk":
        pytest.skip("fastzk's own accounting")
    socks: list[socket.socket] = []
    flooders: list[Flooder] = []
    try:
        for index in range(4):
            sock, _ = wire.handshake(srv.host, srv.port)
            socks.append(sock)
            path = f"/big{index}"
            create_node(sock, path, b"v")
            value = b"w" * 100_000  # more than the output limit: each read is held back
            payload = b"".join(wire.set_data_request(2 * x, path, value)
                               + wire.get_data_request(2 * x + 1, path) for x in range(1, 100))
            flooders.append(Flooder(sock, payload))
            flooders[-1].start()
            wait_idle(srv.pid)
        held = sum(int(c["outstanding_requests"])  # type: ignore[call-overload]
                   for c in admin(srv, "connections")["connections"])  # type: ignore[union-attr]
        assert held > 60, f"only {held} requests held back: they counted against the budget"
        other = kazoo_factory(srv)
        results = [other.create_async(f"/o{i}", b"o") for i in range(100)]
        assert [r.get(timeout=20.0) for r in results] == [f"/o{i}" for i in range(100)]
    finally:
        for flooder in flooders:
            flooder.close()
        for sock in socks:
            sock.close()


# --- 3. a nearly full disk -------------------------------------------------------------------


@contextlib.contextmanager
def small_tmpfs(size_mb: int) -> Iterator[SmallDisk]:
    """A tmpfs of size_mb mounted on a fresh temp dir (root only), always unmounted."""
    if not can_mount():
        pytest.skip("mounting a small tmpfs needs root")
    mount = Path(tempfile.mkdtemp(prefix="fastzk-disk-"))
    disk = SmallDisk(mount, size_mb)
    try:
        yield disk
    finally:
        disk.unmount(keep_files=False)
        shutil.rmtree(mount, ignore_errors=True)


def admin(proc: ServerProcess, command: str) -> dict[str, object]:
    """An AdminServer command of fastzk's HTTP endpoint."""
    url = f"http://127.0.0.1:{proc.admin_port}/commands/{command}"
    with urllib.request.urlopen(url, timeout=5.0) as reply:
        return json.loads(reply.read())  # type: ignore[no-any-return]


def ready(proc: ServerProcess) -> tuple[int, dict[str, object]]:
    url = f"http://127.0.0.1:{proc.admin_port}/ready"
    try:
        with urllib.request.urlopen(url, timeout=5.0) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.parametrize("kind", KINDS)
def test_a_nearly_full_disk_still_takes_new_clients_and_writes(
    make_server: MakeServer, kazoo_factory: KazooFactory, kind: str
) -> None:
    """The data dir is a 64 MB tmpfs with 8 MB used: less than one 64 MB preallocated log
    segment. Before, fastzk refused the very first client; both servers now take clients and
    20 MB of writes."""
    with small_tmpfs(64) as disk:
        mount = disk.path
        (mount / "used").write_bytes(b"\1" * (8 << 20))
        srv = make_server(kind, dataDir=mount / "data")
        try:
            client = kazoo_factory(srv)
            for index in range(20):
                client.create(f"/n{index}", b"d" * VALUE_BYTES)
            assert len(client.get_children("/")) >= 20
        finally:
            srv.stop()


def test_a_full_disk_makes_writes_wait_and_freeing_space_resumes_them(
    make_server: MakeServer, kazoo_factory: KazooFactory
) -> None:
    """fastzk only (ZooKeeper stops serving on a failed log write): when even a write does not
    fit, it waits, unacknowledged, while reads go on and /ready says why; once space is freed
    it completes without a restart. After a crash (SIGKILL) every acknowledged write is there:
    the log's unwritten tail still reads as zeros."""
    with small_tmpfs(24) as disk:
        srv = make_server("fastzk", dataDir=disk.path / "data")
        if srv.kind != "fastzk":
            pytest.skip("fastzk's own behaviour on a full disk")
        try:
            client = kazoo_factory(srv, timeout=30.0)
            reader = kazoo_factory(srv, timeout=30.0)
            client.create("/before", b"b")
            status, body = ready(srv)
            assert status == 200 and "low disk space" in str(body["reason"]), body
            disk.fill()
            # more than the segment has reserved ahead (a sixteenth of 64 MB)
            pending = [client.create_async(f"/during{i}", b"x" * 400_000) for i in range(30)]
            time.sleep(2.0)
            assert not all(p.ready() for p in pending), "writes acknowledged on a full disk"
            status, body = ready(srv)
            assert status == 503 and "No space left on device" in str(body["reason"]), body
            assert reader.get("/before")[0] == b"b"  # reads go on
            assert "cannot write the write-ahead log" in srv.log_text()
            disk.free()
            for index, result in enumerate(pending):
                assert result.get(timeout=20.0) == f"/during{index}"
            assert ready(srv)[0] == 200
            assert "the write-ahead log can be written again" in srv.log_text()
            srv.kill()
            srv.restart()
            again = kazoo_factory(srv)
            assert again.get("/before")[0] == b"b"
            assert all(again.exists(f"/during{i}") for i in range(30))
        finally:
            srv.stop()


# --- 4. smaller findings -----------------------------------------------------------------------


@pytest.mark.parametrize("word", ["wchp", "wchc"])
def test_watch_listings_print_paths_with_a_lone_surrogate(
    make_server: MakeServer, word: str
) -> None:
    """A setWatches with the CESU-8 bytes ED A0 80 registers a watch on a path holding a lone
    surrogate. Both servers list it, with U+FFFD in its place (fastzk used to close the
    connection and log a UnicodeEncodeError)."""
    outputs = {}
    for kind in KINDS:
        srv = make_server(kind)
        sock, resp = wire.handshake(srv.host, srv.port)
        try:
            cesu8 = [b"/s\xed\xa0\x80"]
            sock.sendall(wire.set_watches_request(1, 0, exist=cesu8))  # type: ignore[arg-type]
            hdr, _ = wire.read_reply_skipping_notifications(sock)
            assert hdr.err == wire.OK
            text = srv.four_letter_word(word).decode("utf-8")
            outputs[srv.kind] = text.replace(f"0x{resp.session_id:x}", "0xSESSION")
        finally:
            sock.close()
    assert "/s\ufffd\n" in outputs["zookeeper"], outputs
    assert outputs["fastzk"] == outputs["zookeeper"]


@pytest.mark.parametrize(
    ("ident", "valid"),
    [("1.2.3.4/255.255.0.0", False), ("127.0.0.1/0.0.0.255", False), ("127.0.0.1/24", True),
     ("127.0.0.1", True), ("127.0.0.1/33", False)],
)
def test_ip_acls_in_netmask_or_hostmask_form_are_invalid(
    server: ServerProcess, kazoo_factory: KazooFactory, unique_path: str, ident: str,
    valid: bool,
) -> None:
    """ZooKeeper reads ip ACL ids as address[/prefix-length] only; Python's ipaddress also
    takes netmasks and hostmasks (and the hostmask form granted 127.0.0.0/24)."""
    client = kazoo_factory(server)
    acl = [make_acl("ip", ident, all=True)]
    if valid:
        assert client.create(unique_path, b"", acl=acl) == unique_path
    else:
        with pytest.raises(InvalidACLError):
            client.create(unique_path, b"", acl=acl)
        assert client.exists(unique_path) is None


def test_an_oversized_frame_is_logged_as_a_warning_with_the_reason(
    make_server: MakeServer,
) -> None:
    """fastzk's log (ZooKeeper warns too, in its own words)."""
    srv = make_server("fastzk")
    if srv.kind != "fastzk":
        pytest.skip("fastzk's log")
    sock, _ = wire.handshake(srv.host, srv.port)
    try:
        sock.sendall(struct.pack(">i", 1 << 20) + b"\0" * 64)
        assert wire.recv_until_closed(sock, 5.0)[0]
    finally:
        sock.close()
    assert ("WARNING fastzk: closing 127.0.0.1: frame length 1048576 exceeds jute.maxbuffer "
            "(1048575)") in srv.log_text()


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_connections_refused_at_the_open_file_limit_are_logged_once(
    make_server: MakeServer,
) -> None:
    """At the open-file limit the event loop accepts and closes new connections silently; fastzk
    logs that once per interval (not per connection) and serves again once some close."""
    srv = make_server("fastzk")
    if srv.kind != "fastzk":
        pytest.skip("fastzk's log")
    assert_still_serving(srv)  # the log segment is open: only connections need descriptors now
    open_fds = len(os.listdir(f"/proc/{srv.pid}/fd"))
    limit = open_fds + 10
    subprocess.run(["prlimit", f"--pid={srv.pid}", f"--nofile={limit}:{limit}"], check=True,
                   timeout=10)
    socks = []
    refused = 0
    try:
        for _ in range(30):
            try:
                sock, resp = wire.handshake(srv.host, srv.port, timeout=3.0)
            except (OSError, wire.ConnectionClosed):
                refused += 1
                continue
            socks.append(sock)
        assert refused >= 10 and socks
        # at the limit, connections that keep arriving cost no busy loop (an accept that
        # fails and is retried at once would burn a core: measured over 2 s of attempts)
        cpu_before = _cpu_seconds(srv.pid)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                socket.create_connection((srv.host, srv.port), timeout=1.0).close()
            time.sleep(0.05)
        assert _cpu_seconds(srv.pid) - cpu_before < 0.5
        log = srv.log_text()
        assert log.count("open-file limit reached") == 1, log
    finally:
        for sock in socks:
            sock.close()
    time.sleep(0.5)
    assert_still_serving(srv)

"""Tests of the ensemble harness itself (fastzk/nemesis/cluster.py, fastzk/nemesis/netproxy.py).

The proxy is checked against a plain echo server; the cluster harness
against an Apache ZooKeeper 3.8 ensemble, whose behaviour is the reference:
if these scenarios pass on ZooKeeper, a failure of the same scenario on
fastzk is fastzk's, not the harness's.
"""

from __future__ import annotations

import itertools
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from conftest import stop_client
from kazoo.client import KazooClient
from kazoo.exceptions import KazooException
from kazoo.handlers.threading import KazooTimeoutError

from fastzk.nemesis.cluster import Cluster, Member, zookeeper_installed
from fastzk.nemesis.netproxy import CONNECT_GRACE, NetProxy
from fastzk.nemesis.servers import free_port

needs_zookeeper = pytest.mark.skipif(
    not zookeeper_installed(), reason="Apache ZooKeeper (Debian package zookeeper) not installed"
)

#: kazoo's default reconnect backoff grows to a minute; an election takes about a second.
FAST_RETRY: dict[str, Any] = {"max_tries": -1, "delay": 0.05, "max_delay": 0.5}


# -- the proxy ---------------------------------------------------------------------------------


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        try:
            while data := self.request.recv(4096):
                self.request.sendall(data)
        except ConnectionResetError:
            pass  # the proxy resets its upstream connections on cut/heal


@pytest.fixture
def echo() -> Iterator[tuple[str, int]]:
    """A threaded TCP echo server on loopback."""
    socketserver.ThreadingTCPServer.daemon_threads = True
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo) as server:
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        yield server.server_address[0], server.server_address[1]
        server.shutdown()


def _roundtrip(port: int, payload: bytes = b"ping") -> bytes:
    """Connect through the proxy, send, and return what comes back (b"" if reset/silent)."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=2.0)
    except OSError:  # the proxy's reset can beat connect()'s return
        return b""
    with s:
        return _exchange(s, payload)


def _exchange(s: socket.socket, payload: bytes, timeout: float = 0.5) -> bytes:
    s.settimeout(timeout)
    try:
        s.sendall(payload)
        return s.recv(4096)
    except TimeoutError:
        return b""
    except OSError:  # reset by the proxy
        return b""


def test_proxy_cut_resets_connections_and_heal_restores(echo: tuple[str, int]) -> None:
    with NetProxy() as proxy:
        link = proxy.add_link("a->b", echo)
        with socket.create_connection(("127.0.0.1", link.port), timeout=2.0) as old:
            assert _exchange(old, b"hello") == b"hello"
            link.cut()
            assert link.connections == 0
            assert _exchange(old, b"again") == b""  # the carried connection is gone
        assert _roundtrip(link.port) == b""  # new connections are reset while cut
        link.heal()
        assert _roundtrip(link.port) == b"ping"


def test_proxy_blackhole_swallows_until_healed(echo: tuple[str, int]) -> None:
    with NetProxy() as proxy:
        link = proxy.add_link("a->b", echo)
        with socket.create_connection(("127.0.0.1", link.port), timeout=2.0) as old:
            assert _exchange(old, b"hello") == b"hello"
            link.blackhole()
            assert _exchange(old, b"lost") == b""  # open, but nothing comes back
            assert _roundtrip(link.port) == b""  # accepted, never delivered
            assert link.connections >= 1
            link.heal()
            assert _exchange(old, b"after") == b""  # its stream lost bytes: reset on heal
        assert _roundtrip(link.port) == b"ping"


def test_proxy_holds_a_connection_until_the_target_listens() -> None:
    port = free_port()
    with NetProxy() as proxy:
        link = proxy.add_link("a->b", ("127.0.0.1", port))
        with socket.create_connection(("127.0.0.1", link.port), timeout=2.0) as early:
            early.sendall(b"early")
            with socketserver.ThreadingTCPServer(("127.0.0.1", port), _Echo) as server:
                threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
                early.settimeout(CONNECT_GRACE + 2)
                assert early.recv(4096) == b"early"
                server.shutdown()


# -- an Apache ZooKeeper ensemble --------------------------------------------------------------


@contextmanager
def kazoo(hosts: str, **kw: Any) -> Iterator[KazooClient]:
    """A started kazoo client, stopped (bounded) before the ensemble goes away."""
    client = KazooClient(hosts=hosts, connection_retry=FAST_RETRY, **kw)
    try:
        client.start(timeout=30)
        yield client
    finally:
        stop_client(client)


class Writer(threading.Thread):
    """Creates ``/w/nNNNNNNN`` one after another and records those acknowledged.

    A write that fails (connection loss during the election, timeout) has an
    unknown outcome and is not recorded; the next one uses a new name.
    """

    def __init__(self, client: KazooClient) -> None:
        super().__init__(name="writer", daemon=True)
        self.client = client
        self.acked: list[str] = []
        self.failures = 0
        self._done = threading.Event()

    def run(self) -> None:
        for i in itertools.count():
            if self._done.is_set():
                return
            path = f"/w/n{i:08d}"
            try:
                self.client.create_async(path, b"x").get(timeout=10)
            except (KazooException, KazooTimeoutError):
                self.failures += 1
                self._done.wait(0.05)
                continue
            self.acked.append(path)

    def finish(self) -> list[str]:
        """Stop writing; return the acknowledged paths."""
        self._done.set()
        self.join(20)
        assert not self.is_alive(), "writer thread stuck"
        return list(self.acked)


def assert_has_all(member: Member, paths: list[str]) -> None:
    """*member* alone (a client connected only to it) holds every path in *paths*."""
    with kazoo(member.connect_string(), timeout=4.0) as client:
        client.sync("/w")
        present = {f"/w/{name}" for name in client.get_children("/w")}
    missing = sorted(set(paths) - present)
    assert not missing, (
        f"server.{member.sid} lacks {len(missing)} acknowledged writes: {missing[:5]}"
    )


@needs_zookeeper
def test_zookeeper_ensemble_leader_crash_and_isolation() -> None:
    """Leader kill -9 under a writing client, then a follower isolated by cut and by black
    hole: the scenarios fastzk's replication must pass, shown to hold for ZooKeeper."""
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    with Cluster("zookeeper", 3, proxied=True) as cluster:
        timings["start"] = time.monotonic() - t0
        with kazoo(cluster.connect_string(), timeout=4.0) as client:
            client.ensure_path("/w")
            writer = Writer(client)
            writer.start()
            try:
                cluster.wait_until(lambda: len(writer.acked) >= 20, "first writes acknowledged")
                old = cluster.wait_for_leader()
                old.kill()
                t = time.monotonic()
                new = cluster.wait_for_leader()
                timings["election after leader kill"] = time.monotonic() - t
                assert new is not old
                before = len(writer.acked)
                cluster.wait_until(
                    lambda: len(writer.acked) >= before + 20, "writes after the new election"
                )
            finally:
                acked = writer.finish()
        for member in cluster.reachable():
            assert_has_all(member, acked)

        old.restart()
        t = time.monotonic()
        cluster.wait_for_leader()
        timings["crashed leader rejoins"] = time.monotonic() - t
        follower = cluster.followers()[0]
        majority = ",".join(m.connect_string() for m in cluster.members if m is not follower)
        for state in ("cut", "blackhole"):
            cluster.isolate(follower.sid, state)
            t = time.monotonic()
            reply = cluster.wait_until(
                lambda: follower.mode() is None and follower.srvr(),
                f"isolated ({state}) follower stops serving",
            )
            timings[f"isolated ({state}) -> not serving"] = time.monotonic() - t
            assert "not currently serving requests" in reply
            cluster.wait_for_leader()  # the majority keeps its leader (or elects one)
            with kazoo(majority, timeout=4.0) as client:
                for i in range(20):
                    acked.append(client.create_async(f"/w/{state}-{i}", b"y").get(timeout=10))
            cluster.heal()
            t = time.monotonic()
            cluster.wait_serving(follower)
            timings[f"healed ({state}) -> serving"] = time.monotonic() - t
            assert_has_all(follower, acked)
        cluster.wait_for_leader()
    print(f"writer failures during the election: {writer.failures}")
    print("timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))

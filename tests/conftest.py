"""Shared fixtures: servers of both kinds, kazoo clients, unique paths.

Servers are session-scoped (one Apache ZooKeeper, one fastzk) so that the
suite stays fast; tests that need a pristine server or a special zoo.cfg use
``make_server``.  ``FASTZK_DIFF_REFERENCE_ONLY=1`` (or ``--reference-only``)
makes the "fastzk" side an Apache ZooKeeper too: the differential suite must
pass ZooKeeper-vs-ZooKeeper, which is how we know it compares only things that
are deterministic.

Both sides of every differential pair are configured alike (:data:`ALIKE_CFG`):
fastzk enables TTL nodes by default and ZooKeeper does not, so the shared
fixtures and fresh pairs start **fastzk with ``extendedTypesEnabled=false``**
(ZooKeeper's default); tests of TTL nodes start their own pair with it on.
Both also get the same super digest and a 500 ms container/TTL reaper interval
(passed to ZooKeeper as JVM system properties by fastzk/nemesis/servers.py).  fastzk's
HTTP admin endpoint listens on a free port per server (fastzk/nemesis/servers.py), so
servers never collide on 8080.
"""

from __future__ import annotations

import itertools
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient

sys.path.insert(0, str(Path(__file__).resolve().parent))

from differential import SUPER_DIGEST, Differential  # noqa: E402

from fastzk.nemesis.servers import ServerProcess, ServerStartError, start_server  # noqa: E402

KINDS = ["zookeeper", "fastzk"]
REFERENCE_ONLY_ENV = "FASTZK_DIFF_REFERENCE_ONLY"

#: zoo.cfg keys given to both servers of every differential pair (shared and fresh), so that
#: they are configured alike.  Keys ZooKeeper reads only as system properties are passed to
#: it as -D flags by servers.start_server.  A caller's own keys override these.
ALIKE_CFG: dict[str, Any] = {
    # fastzk's default is true, ZooKeeper's false: run both with ZooKeeper's.
    "extendedTypesEnabled": False,
    "DigestAuthenticationProvider.superDigest": SUPER_DIGEST,
    "znode.container.checkIntervalMs": 500,
}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--reference-only",
        action="store_true",
        default=False,
        help="run Apache ZooKeeper in place of fastzk (validates the differential "
        f"suite itself); same as {REFERENCE_ONLY_ENV}=1",
    )


def reference_only(config: pytest.Config) -> bool:
    """True when the "fastzk" side should really be Apache ZooKeeper."""
    env = os.environ.get(REFERENCE_ONLY_ENV, "").strip().lower()
    return bool(config.getoption("--reference-only")) or env in ("1", "true", "yes")


def pytest_report_header(config: pytest.Config) -> str:
    if reference_only(config):
        return "fastzk side: Apache ZooKeeper (reference-only mode)"
    return "fastzk side: python -m fastzk serve"


def _launch(config: pytest.Config, role: str, workdir: Path, **cfg: Any) -> ServerProcess:
    """Start the process that plays *role* ("zookeeper" or "fastzk")."""
    if role not in KINDS:
        raise ValueError(f"unknown server kind {role!r}")
    kind = "zookeeper" if role == "fastzk" and reference_only(config) else role
    proc = start_server(kind, workdir, **cfg)
    proc.role = role
    return proc


def _session_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, role: str
) -> Iterator[ServerProcess]:
    try:
        proc = _launch(request.config, role, tmp_path_factory.mktemp(role), **ALIKE_CFG)
    except ServerStartError as e:
        pytest.fail(f"could not start the shared {role} server:\n{e}", pytrace=False)
    _SESSION_SERVERS.append(proc)
    try:
        yield proc
    finally:
        _SESSION_SERVERS.remove(proc)
        proc.stop()


_SESSION_SERVERS: list[ServerProcess] = []


@pytest.fixture(scope="session")
def zookeeper(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """The shared Apache ZooKeeper 3.8.0 reference server."""
    yield from _session_server(request, tmp_path_factory, "zookeeper")


@pytest.fixture(scope="session")
def fastzk(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """The shared server under test (Apache ZooKeeper in reference-only mode)."""
    yield from _session_server(request, tmp_path_factory, "fastzk")


@pytest.fixture(scope="session", params=KINDS)
def server(request: pytest.FixtureRequest) -> ServerProcess:
    """Each shared server in turn, for tests that check one server at a time."""
    return request.getfixturevalue(request.param)


@pytest.fixture(autouse=True)
def _shared_servers_alive(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test that killed a shared server, and restart it for the next test.

    Without this, one crash of the server under test would turn every later
    test into a confusing connection error.
    """
    for proc in list(_SESSION_SERVERS):
        if not proc.running:
            proc.restart()
    yield
    dead = [p for p in _SESSION_SERVERS if not p.running]
    for proc in dead:
        log = proc.log_text()[-6000:]
        code = proc.returncode
        proc.restart()
        pytest.fail(
            f"shared {proc.role} server (pid died, status {code}) exited during this test; "
            f"restarted it. log tail:\n{log}",
            pytrace=False,
        )


@pytest.fixture
def make_server(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[..., ServerProcess]]:
    """Factory for fresh servers: ``make_server(kind, **zoo_cfg)``; all stopped at teardown."""
    started: list[ServerProcess] = []
    counter = itertools.count()

    def factory(kind: str, **cfg: Any) -> ServerProcess:
        proc = _launch(request.config, kind, tmp_path / f"{kind}-{next(counter)}", **cfg)
        started.append(proc)
        return proc

    try:
        yield factory
    finally:
        for proc in reversed(started):
            proc.stop()


def stop_client(client: KazooClient, timeout: float = 15.0) -> None:
    """stop()+close() a KazooClient without ever blocking the test run for long.

    kazoo's stop() waits for the close reply; against a dead or paused server
    it can take a while, so it runs in a daemon thread with a bounded join.
    """

    def _stop() -> None:
        try:
            client.stop()
        except Exception:  # noqa: BLE001 - teardown is best effort
            pass
        try:
            client.close()
        except Exception:  # noqa: BLE001
            pass

    t = threading.Thread(target=_stop, name="kazoo-stop", daemon=True)
    t.start()
    t.join(timeout)


@pytest.fixture
def kazoo_factory() -> Iterator[Callable[..., KazooClient]]:
    """``kazoo_factory(server_or_hosts, **KazooClient_kwargs)`` -> a started client.

    ``start_timeout`` (default 15 s) bounds the connect.  All clients are
    stopped and closed at teardown.
    """
    clients: list[KazooClient] = []

    def factory(server: ServerProcess | str, start_timeout: float = 15.0, **kw: Any) -> KazooClient:
        hosts = server if isinstance(server, str) else server.connect_string
        client = KazooClient(hosts=hosts, **kw)
        clients.append(client)
        client.start(timeout=start_timeout)
        return client

    try:
        yield factory
    finally:
        for client in reversed(clients):
            stop_client(client)


_PATH_COUNTER = itertools.count()


def sanitize_name(name: str, limit: int = 60) -> str:
    """A test node id reduced to characters that are valid in every znode name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_.")[:limit] or "test"


@pytest.fixture
def unique_path(request: pytest.FixtureRequest) -> str:
    """A fresh ``/t-<testname>-<n>`` prefix (not created) for tests on shared servers."""
    return f"/t-{sanitize_name(request.node.name)}-{next(_PATH_COUNTER)}"


@pytest.fixture
def differential(
    request: pytest.FixtureRequest,
    make_server: Callable[..., ServerProcess],
) -> Differential:
    """Runs a scenario on the reference and on the server under test and compares.

    ``differential.run(scenario)`` uses the shared servers;
    ``differential.run(scenario, fresh=True, **zoo_cfg)`` starts a pristine pair.
    """

    def shared() -> tuple[ServerProcess, ServerProcess]:
        return request.getfixturevalue("zookeeper"), request.getfixturevalue("fastzk")

    def fresh(**cfg: Any) -> tuple[ServerProcess, ServerProcess]:
        return start_pair(make_server, **cfg)

    return Differential(sanitize_name(request.node.name), shared, fresh)


def start_pair(
    launch: Callable[..., ServerProcess], **cfg: Any
) -> tuple[ServerProcess, ServerProcess]:
    """(reference, candidate) started at once with :data:`ALIKE_CFG` plus *cfg*.

    *launch* is ``make_server`` or ``launch_server``.  Started in parallel: a JVM
    start dominates the cost of a fresh pair.
    """
    merged = {**ALIKE_CFG, **cfg}
    with ThreadPoolExecutor(max_workers=2) as pool:
        ref = pool.submit(launch, "zookeeper", **merged)
        cand = pool.submit(launch, "fastzk", **merged)
        try:
            return ref.result(), cand.result()
        except BaseException:
            for future in (ref, cand):
                if future.exception() is None:
                    future.result().stop()
            raise


@pytest.fixture(scope="session")
def launch_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """``launch_server(role, **zoo_cfg)`` for module-scoped fixtures; the caller stops it.

    Like ``make_server`` (honours reference-only mode) but not tied to one test, so a
    test module can share a specially configured pair; the atexit hook in servers.py
    is the safety net.
    """

    def launch(role: str, **cfg: Any) -> ServerProcess:
        return _launch(request.config, role, tmp_path_factory.mktemp(role), **cfg)

    return launch


@pytest.fixture(scope="session")
def launch_pair(
    launch_server: Callable[..., ServerProcess],
) -> Callable[..., tuple[ServerProcess, ServerProcess]]:
    """``launch_pair(**zoo_cfg)`` -> (reference, candidate) configured alike; the caller
    stops both (for module-scoped pairs with special settings)."""
    return lambda **cfg: start_pair(launch_server, **cfg)


@pytest.fixture
def fastzk_only(fastzk: ServerProcess) -> ServerProcess:
    """The shared fastzk server, for tests of fastzk-only behaviour (deliberate differences
    from ZooKeeper 3.8.0); skipped in reference-only mode, where it is a ZooKeeper."""
    if fastzk.kind != "fastzk":
        pytest.skip("asserts fastzk's own behaviour (the fastzk side is ZooKeeper here)")
    return fastzk


@pytest.fixture
def lead_decision(request: pytest.FixtureRequest, fastzk: ServerProcess) -> Callable[[str], None]:
    """``lead_decision("DECISION: ...")`` marks the running test xfail(strict) when the
    fastzk side really is fastzk: a known difference from ZooKeeper 3.8.0 that waits for a
    decision (match the reference, or keep fastzk's behaviour and test it separately).
    In reference-only mode the test runs normally and must pass."""

    def mark(reason: str) -> None:
        assert reason.startswith("DECISION:"), reason
        if fastzk.kind == "fastzk":
            request.applymarker(pytest.mark.xfail(reason=reason, strict=True))

    return mark


@pytest.fixture
def differential_on(
    request: pytest.FixtureRequest, make_server: Callable[..., ServerProcess]
) -> Callable[[tuple[ServerProcess, ServerProcess]], Differential]:
    """``differential_on(pair)``: a Differential whose shared pair is *pair* (e.g. a
    module-scoped pair with special settings); ``fresh=True`` still starts a new pair."""

    def make(pair: tuple[ServerProcess, ServerProcess]) -> Differential:
        return Differential(
            sanitize_name(request.node.name),
            lambda: pair,
            lambda **cfg: start_pair(make_server, **cfg),
        )

    return make

"""The real Java command-line client (zkCli.sh from Debian's zookeeper 3.8.0) against both servers.

zkCli is what operators actually type into, and it exercises the Java client's handshake,
create2/getData/setData/exists/getChildren2/delete, the multi-free ``deleteall`` walk, its own
output formatting of Stat (``ctime`` as a Java Date, zxids in hex) and watch delivery.  A server
that kazoo is happy with can still trip the Java client (xid order, Stat layout, readOnly byte),
so every case runs against Apache ZooKeeper and fastzk alike.

Each CLI is a JVM (~1 s to start); every run is bounded by a timeout and, because zkCli.sh is a
shell script that forks java, each one is started in its own process group and that group
(by the id we got at start) is killed if it overstays.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kazoo.client import KazooClient

from fastzk.nemesis.servers import ServerProcess

ZKCLI = Path("/usr/share/zookeeper/bin/zkCli.sh")
CLI_TIMEOUT = 25.0
KazooFactory = Callable[..., KazooClient]

pytestmark = pytest.mark.skipif(
    not ZKCLI.exists() or shutil.which("java") is None,
    reason="Debian zookeeper package (zkCli.sh) and java are required",
)

# Lines the CLI prints around every command that say nothing about the command itself.
_NOISE = re.compile(
    r"^(SLF4J:.*|Connecting to .*|WATCHER::|WatchedEvent state:SyncConnected type:None path:null"
    r"|Welcome to ZooKeeper!|JLine support is .*|)$"
)


def _cli_env() -> dict[str, str]:
    """Environment for zkCli: UTC dates (so ctime can be parsed), a quick-starting JVM, and a
    private log dir so nothing is written under /var/log."""
    env = dict(os.environ)
    env["TZ"] = "UTC"
    env["CLIENT_JVMFLAGS"] = (
        "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Xshare:auto -Duser.timezone=UTC"
    )
    env["ZOO_LOG_DIR"] = tempfile.gettempdir()
    env.pop("JAVA_TOOL_OPTIONS", None)
    return env


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill the process group we created for ``proc`` (bash + its java child) and reap it."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        proc.wait(5.0)
    except subprocess.TimeoutExpired:
        pass


@dataclass
class CliResult:
    """Exit status and the meaningful output lines of one zkCli run."""

    returncode: int
    lines: list[str]
    raw: str

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def zkcli(server: ServerProcess, *args: str, timeout: float = CLI_TIMEOUT) -> CliResult:
    """Run ``zkCli.sh -server host:port <args>`` once, bounded by ``timeout``."""
    proc = subprocess.Popen(
        [str(ZKCLI), "-server", server.connect_string, *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=_cli_env(),
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out = proc.stdout.read() if proc.stdout else b""
        pytest.fail(f"zkCli {' '.join(args)} did not finish in {timeout}s; output:\n{out.decode()}")
    finally:
        _kill_group(proc)
        if proc.stdout:
            proc.stdout.close()
    raw = out.decode("utf-8", "replace")
    lines = [ln for ln in raw.splitlines() if not _NOISE.match(ln.strip())]
    return CliResult(proc.returncode, lines, raw)


def ok(server: ServerProcess, *args: str) -> CliResult:
    """Run a command that must succeed (exit status 0)."""
    res = zkcli(server, *args)
    assert res.returncode == 0, f"zkCli {' '.join(args)} exited {res.returncode}:\n{res.raw}"
    return res


def parse_stat(lines: list[str]) -> dict[str, str]:
    """The ``key = value`` lines zkCli prints for a Stat."""
    out = {}
    for ln in lines:
        m = re.fullmatch(r"(\w+) = (.*)", ln.strip())
        if m:
            out[m.group(1)] = m.group(2)
    return out


STAT_KEYS = [
    "cZxid",
    "ctime",
    "mZxid",
    "mtime",
    "pZxid",
    "cversion",
    "dataVersion",
    "aclVersion",
    "ephemeralOwner",
    "dataLength",
    "numChildren",
]


def check_stat_shape(stat: dict[str, str]) -> None:
    """All eleven fields, zxids in 0x hex, times as Java Date strings close to now (proves
    the server's ctime/mtime are epoch milliseconds, not seconds)."""
    assert list(stat) == STAT_KEYS, stat
    for key in ("cZxid", "mZxid", "pZxid", "ephemeralOwner"):
        assert re.fullmatch(r"0x[0-9a-f]+", stat[key]), (key, stat[key])
    now = dt.datetime.now(dt.UTC)
    for key in ("ctime", "mtime"):
        when = dt.datetime.strptime(stat[key], "%a %b %d %H:%M:%S UTC %Y").replace(tzinfo=dt.UTC)
        assert abs((now - when).total_seconds()) < 300, (key, stat[key])


def test_create_get_set_and_stat(server: ServerProcess, unique_path: str) -> None:
    """create/get/set/stat/get -s print what the Java client prints against ZooKeeper, and the
    Stat bookkeeping (dataVersion, dataLength, mZxid > cZxid) is right."""
    p = unique_path
    assert ok(server, "create", p, "hello").lines == [f"Created {p}"]
    assert ok(server, "get", p).lines == ["hello"]
    assert ok(server, "set", p, "world!").lines == []
    got = ok(server, "get", "-s", p)
    assert got.lines[0] == "world!"
    stat = parse_stat(got.lines[1:])
    check_stat_shape(stat)
    assert (stat["dataVersion"], stat["dataLength"], stat["numChildren"]) == ("1", "6", "0")
    assert (stat["cversion"], stat["aclVersion"], stat["ephemeralOwner"]) == ("0", "0", "0x0")
    assert int(stat["mZxid"], 16) > int(stat["cZxid"], 16)
    assert stat["pZxid"] == stat["cZxid"]
    again = parse_stat(ok(server, "stat", p).lines)
    assert again == stat


def test_ls_and_ls_s_list_children_with_parent_stat(
    server: ServerProcess, unique_path: str
) -> None:
    """ls prints the children as a Java list; ls -s adds the parent's Stat, whose cversion,
    numChildren and pZxid reflect the two creates (sequential and plain)."""
    p = unique_path
    ok(server, "create", p)
    assert ok(server, "create", f"{p}/b", "bdata").lines == [f"Created {p}/b"]
    seq = ok(server, "create", "-s", f"{p}/s-").lines
    assert seq == [f"Created {p}/s-0000000001"]
    listed = ok(server, "ls", p).lines
    assert len(listed) == 1 and sorted(listed[0].strip("[]").split(", ")) == ["b", "s-0000000001"]
    res = ok(server, "ls", "-s", p)
    assert sorted(res.lines[0].strip("[]").split(", ")) == ["b", "s-0000000001"]
    stat = parse_stat(res.lines[1:])
    check_stat_shape(stat)
    assert (stat["cversion"], stat["numChildren"], stat["dataLength"]) == ("2", "2", "0")
    child = parse_stat(ok(server, "stat", f"{p}/s-0000000001").lines)
    assert stat["pZxid"] == child["cZxid"]


def test_delete_deleteall_and_error_messages(server: ServerProcess, unique_path: str) -> None:
    """delete refuses a non-empty node, deleteall removes a subtree, and the CLI's error texts
    and exit status 1 come from the server's error codes (NoNode, NodeExists, NotEmpty)."""
    p = unique_path
    ok(server, "create", p)
    ok(server, "create", f"{p}/a")
    ok(server, "create", f"{p}/a/deep", "x")
    res = zkcli(server, "create", p)
    assert (res.returncode, res.lines) == (1, [f"Node already exists: {p}"])
    res = zkcli(server, "delete", p)
    assert (res.returncode, res.lines) == (1, [f"Node not empty: {p}"])
    res = zkcli(server, "delete", "-v", "5", f"{p}/a/deep")
    assert res.returncode == 1 and res.lines == [f"version No is not valid : {p}/a/deep"]
    assert ok(server, "delete", f"{p}/a/deep").lines == []
    ok(server, "create", f"{p}/a/again")
    assert ok(server, "deleteall", p).lines == []
    for cmd in ("stat", "get", "ls"):
        res = zkcli(server, cmd, p)
        assert (res.returncode, res.lines) == (1, [f"Node does not exist: {p}"]), cmd
    assert p.lstrip("/") not in ok(server, "ls", "/").text


class InteractiveCli:
    """An interactive zkCli fed through stdin, with its output collected by a thread."""

    def __init__(self, server: ServerProcess) -> None:
        self.proc = subprocess.Popen(
            [str(ZKCLI), "-server", server.connect_string],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=_cli_env(),
            start_new_session=True,
        )
        self._buf = bytearray()
        self._closed = False
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, name="zkcli-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        while True:
            chunk = self.proc.stdout.read1(65536)
            if not chunk:
                return
            with self._lock:
                self._buf += chunk

    @property
    def output(self) -> str:
        with self._lock:
            return self._buf.decode("utf-8", "replace")

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def wait_for(self, pattern: str, timeout: float = 15.0) -> None:
        """Wait until ``pattern`` (a regex) appears in the output, or fail with the output."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern, re.MULTILINE)
        while time.monotonic() < deadline:
            if rx.search(self.output):
                return
            if self.proc.poll() is not None and rx.search(self.output) is None:
                break
            time.sleep(0.05)
        pytest.fail(f"zkCli output never matched {pattern!r}:\n{self.output}")

    def close(self) -> None:
        """Ask the CLI to quit; kill its process group if it does not exit in time.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self.send("quit")
            self.proc.wait(10.0)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            pass
        _kill_group(self.proc)
        self._reader.join(5.0)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream:
                try:
                    stream.close()
                except OSError:
                    pass


@pytest.fixture
def interactive_cli(server: ServerProcess) -> Iterator[Callable[[], InteractiveCli]]:
    """Factory for interactive CLIs against ``server``; all are shut down at teardown."""
    started: list[InteractiveCli] = []

    def factory() -> InteractiveCli:
        cli = InteractiveCli(server)
        started.append(cli)
        return cli

    yield factory
    for cli in started:
        cli.close()


def test_watches_set_from_the_cli_fire_when_another_client_writes(
    server: ServerProcess,
    unique_path: str,
    kazoo_factory: KazooFactory,
    interactive_cli: Callable[[], InteractiveCli],
) -> None:
    """``get -w``, ``ls -w`` and ``stat -w`` (on a missing node) in one interactive session;
    a kazoo client then changes the data and creates the child, and the CLI must print the
    three WATCHER events with the right types and paths."""
    p = unique_path
    kz = kazoo_factory(server)
    kz.create(p, b"watched-v1")
    cli = interactive_cli()
    cli.wait_for(r"WatchedEvent state:SyncConnected type:None path:null")
    cli.send(f"get -w {p}")
    cli.wait_for(r"^watched-v1$")
    cli.send(f"ls -w {p}")
    cli.wait_for(r"^\[\]$")
    cli.send(f"stat -w {p}/new")
    cli.wait_for(rf"^Node does not exist: {re.escape(p)}/new$")
    kz.set(p, b"watched-v2")
    cli.wait_for(rf"WatchedEvent state:SyncConnected type:NodeDataChanged path:{re.escape(p)}$")
    kz.create(f"{p}/new", b"")
    cli.wait_for(rf"WatchedEvent state:SyncConnected type:NodeCreated path:{re.escape(p)}/new$")
    cli.wait_for(rf"WatchedEvent state:SyncConnected type:NodeChildrenChanged path:{re.escape(p)}$")
    # a one-shot watch: a second change must not produce a second event
    kz.set(p, b"watched-v3")
    cli.send(f"get {p}")
    cli.wait_for(r"^watched-v3$")
    assert cli.output.count(f"type:NodeDataChanged path:{p}\n") == 1, cli.output


def test_ephemeral_belongs_to_the_cli_session_and_goes_when_it_quits(
    server: ServerProcess,
    unique_path: str,
    kazoo_factory: KazooFactory,
    interactive_cli: Callable[[], InteractiveCli],
) -> None:
    """``create -e`` shows the CLI's session id as ephemeralOwner, and ``quit`` (which closes
    the session) makes the node disappear at once.  (A one-shot CLI exits without closing its
    session, so its ephemerals live until expiry: that is why this uses an interactive one.)"""
    p = unique_path
    kz = kazoo_factory(server)
    kz.create(p, b"")
    cli = interactive_cli()
    cli.wait_for(r"WatchedEvent state:SyncConnected type:None path:null")
    cli.send(f"create -e {p}/eph x")
    cli.wait_for(rf"^Created {re.escape(p)}/eph$")
    cli.send(f"stat {p}/eph")
    cli.wait_for(r"^numChildren = 0$")
    stat = parse_stat(cli.output.splitlines())
    owner = int(stat["ephemeralOwner"], 16)
    assert owner != 0 and stat["dataLength"] == "1", stat
    node_stat = kz.exists(f"{p}/eph")
    assert node_stat is not None and node_stat.ephemeralOwner == owner
    cli.close()
    assert cli.proc.returncode is not None
    assert kz.exists(f"{p}/eph") is None, "ephemeral survived the CLI's closeSession"

"""Start, probe and stop ZooKeeper-protocol servers (tests, benchmarks, nemesis runs).

Both the reference (Apache ZooKeeper, run by hand from the Debian jar) and the
server under test (``python -m fastzk serve``) are driven through the same
:class:`ServerProcess` so that tests can be written once and run against
either.  Every process is started in its own session (process group) and is
always stopped by PID, never by name, so a test run never touches processes it
did not start and never leaves one behind (an ``atexit`` hook catches the
leftovers of an interrupted run).
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

__all__ = [
    "DEFAULT_ZK_JVM_FLAGS",
    "ZK_SYSTEM_PROPERTIES",
    "ServerProcess",
    "ServerStartError",
    "four_letter_word",
    "free_port",
    "start_server",
    "ZK_CLASSPATH",
]

LOOPBACK = "127.0.0.1"
#: The directory holding the ``fastzk`` package: a fastzk server started from here imports
#: this very tree (a source checkout or an editable install), whatever the caller's cwd.
PACKAGE_PARENT = Path(__file__).resolve().parent.parent.parent

#: Classpath for the Debian-packaged Apache ZooKeeper 3.8.0 (the jar's manifest
#: pulls in its dependencies; /etc/zookeeper/conf supplies log4j.properties).
#: The two logging jars are optional; with them WARN-level server logs reach
#: :meth:`ServerProcess.log_text` instead of being swallowed by slf4j's NOP logger.
ZK_CLASSPATH = os.environ.get(
    "FASTZK_ZK_CLASSPATH",
    ":".join(
        ["/etc/zookeeper/conf", "/usr/share/java/zookeeper.jar"]
        + [
            jar
            # netty-codec: NettyServerCnxnFactory (TLS) needs it; the jar's manifest omits it
            for jar in ("/usr/share/java/slf4j-log4j12.jar", "/usr/share/java/log4j-1.2.jar",
                        "/usr/share/java/netty-codec.jar")
            if os.path.exists(jar)
        ]
    ),
)
ZK_MAIN = "org.apache.zookeeper.server.ZooKeeperServerMain"
#: Main class of an ensemble member (a zoo.cfg with ``server.N`` lines); ZooKeeperServerMain
#: would ignore those lines and run standalone.
ZK_QUORUM_MAIN = "org.apache.zookeeper.server.quorum.QuorumPeerMain"

#: JVM flags the test suite starts ZooKeeper with: tuned for a fast start on a small machine
#: (C1 only, SerialGC, small heap), not for throughput.  ``start_server(base_jvm_flags=...)``
#: replaces them (bench/compare.py uses production-like flags).
DEFAULT_ZK_JVM_FLAGS: tuple[str, ...] = (
    "-Xms64m",
    "-Xmx256m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Xshare:auto",
)

#: zoo.cfg keys that Apache ZooKeeper only reads as JVM system properties (fastzk reads them
#: from zoo.cfg).  When one is given to ``start_server`` for a ZooKeeper, it is also passed as
#: ``-D<property>=<value>`` so that one set of keys configures both kinds alike.  (ZooKeeper
#: turns an unknown zoo.cfg key ``k`` into the property ``zookeeper.k``, which is not the name
#: it reads for ``jute.maxbuffer`` or the container manager's settings.)
ZK_SYSTEM_PROPERTIES: dict[str, str] = {
    "jute.maxbuffer": "jute.maxbuffer",
    "znode.container.checkIntervalMs": "znode.container.checkIntervalMs",
    "znode.container.maxPerMinute": "znode.container.maxPerMinute",
    "znode.container.maxNeverUsedIntervalMs": "znode.container.maxNeverUsedIntervalMs",
    "extendedTypesEnabled": "zookeeper.extendedTypesEnabled",
    "DigestAuthenticationProvider.superDigest": "zookeeper.DigestAuthenticationProvider.superDigest",
}

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0

# Every ServerProcess still alive; used by the atexit safety net.
_LIVE: set[ServerProcess] = set()
_LIVE_LOCK = threading.Lock()


class ServerStartError(RuntimeError):
    """The server did not start serving in time (its log is in the message)."""


def free_port() -> int:
    """Return a currently free loopback TCP port.

    The kernel picks the port (bind to port 0); there is an unavoidable window
    between closing the probe socket and the server binding it, which is
    acceptable on a test machine.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def four_letter_word(host: str, port: int, cmd: str, timeout: float = 2.0) -> bytes:
    """Send a four-letter word and return everything the server writes back.

    Used as the readiness probe: a server that answers ``srvr`` has finished
    loading its database and accepts client connections.
    """
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(cmd.encode("ascii"))
        chunks: list[bytes] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = s.recv(65536)
            except TimeoutError:
                break
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)


def _cfg_text(cfg: dict[str, Any]) -> str:
    """Render a zoo.cfg; values are written verbatim (booleans as true/false)."""
    lines = [f"{key}={_cfg_value(value)}" for key, value in cfg.items() if value is not None]
    return "\n".join(lines) + "\n"


class ServerProcess:
    """One running server process and what is needed to talk to / stop it."""

    kind: str
    host: str
    port: int
    data_dir: Path
    pid: int

    def __init__(
        self,
        kind: str,
        host: str,
        port: int,
        data_dir: Path,
        workdir: Path,
        cfg_path: Path,
        cfg: dict[str, Any],
        command: list[str] | None = None,
    ) -> None:
        self.kind = kind
        #: Which side of a differential test this process plays.  Normally equal
        #: to ``kind``; with FASTZK_DIFF_REFERENCE_ONLY=1 the "fastzk" side is an
        #: Apache ZooKeeper process, so kind == "zookeeper" and role == "fastzk".
        self.role = kind
        self.host = host
        self.port = port
        self.data_dir = data_dir
        self.workdir = workdir
        self.cfg_path = cfg_path
        self.cfg = dict(cfg)
        #: The exact command line (kept so that restart() uses the same JVM flags).
        self.command = list(command) if command is not None else _command(kind, workdir, cfg_path)
        self.pid = 0
        self.starts = 0
        self._popen: subprocess.Popen[bytes] | None = None
        self._log_path = workdir / "server.log"
        self._log_file: IO[bytes] | None = None
        self._lock = threading.Lock()
        self._stopped = True

    def _spawn(self) -> None:
        """Start the process (log appended to workdir/server.log)."""
        env = dict(os.environ)
        if self.kind == "fastzk":
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(PACKAGE_PARENT), env.get("PYTHONPATH", "")) if p
            )
            env.setdefault("PYTHONUNBUFFERED", "1")
        self._log_file = open(self._log_path, "ab")  # noqa: SIM115 - closed in _finish
        if self.starts:
            self._log_file.write(f"\n===== restart #{self.starts} =====\n".encode())
            self._log_file.flush()
        self._popen = subprocess.Popen(
            self.command,
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        self.pid = self._popen.pid
        self.starts += 1
        self._stopped = False

    def _wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Block until the server answers; on timeout kill it and raise with its log."""
        assert self._popen is not None
        whitelist = str(self.cfg.get("4lw.commands.whitelist") or "")
        words = [w.strip() for w in whitelist.split(",")]
        probe_srvr = "*" in words or "srvr" in words
        deadline = time.monotonic() + timeout
        last_error = "no attempt"
        while time.monotonic() < deadline:
            if self._popen.poll() is not None:
                last_error = f"process exited with status {self._popen.returncode}"
                break
            try:
                if probe_srvr:
                    reply = four_letter_word(self.host, self.port, "srvr", timeout=1.0)
                    if b"Zookeeper version" in reply or b"Mode:" in reply:
                        return
                    last_error = f"srvr reply {reply[:200]!r}"
                else:
                    with socket.create_connection((self.host, self.port), timeout=1.0):
                        return
            except OSError as e:
                last_error = repr(e)
            time.sleep(0.1)
        self.kill()
        raise ServerStartError(
            f"{self.kind} server on {self.connect_string} did not start serving "
            f"(waited at most {timeout:.0f}s: {last_error}); config:\n{self.cfg_path.read_text()}\n"
            f"log:\n{self.log_text()[-8000:]}"
        )

    def restart(self, wait: bool = True) -> None:
        """Stop (if running) and start again on the same port, config and dataDir.

        Used to recover a shared server that crashed during a test, and by
        persistence tests.  The PID changes; the object stays the same.
        ``wait=False`` returns right after the spawn: an ensemble member only
        serves once it has a quorum, which the caller (fastzk/nemesis/cluster.py) waits for.
        """
        self.stop()
        with _LIVE_LOCK:
            _LIVE.add(self)
        self._spawn()
        if wait:
            self._wait_ready()

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else "running"
        return f"<ServerProcess {self.kind} {self.connect_string} pid={self.pid} {state}>"

    @property
    def admin_port(self) -> int | None:
        """Port of the HTTP admin endpoint, or None when it is disabled."""
        if str(self.cfg.get("admin.enableServer", "true")).lower() == "false":
            return None
        port = self.cfg.get("admin.serverPort")
        return int(port) if port is not None else 8080

    @property
    def connect_string(self) -> str:
        """``host:port`` as kazoo and zkCli expect it."""
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """True while the process has not exited (and was not stopped by us)."""
        return not self._stopped and self._popen is not None and self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        """Exit status once the process has exited, else None."""
        return None if self._popen is None else self._popen.poll()

    def _signal(self, sig: int) -> None:
        """Signal our own PID only; a process that already exited is fine."""
        if self._popen is None or self._popen.poll() is not None:
            return
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def _reap(self, timeout: float) -> bool:
        if self._popen is None:
            return True
        try:
            self._popen.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def _kill_leftover_group(self) -> None:
        """SIGKILL what is left of the process group this process led.

        The server was started as a session leader, so its PID is also the
        group id of anything it spawned (worker processes, a JVM helper);
        those must not outlive it.  Only our own group is targeted.
        """
        if self.pid <= 0:
            return
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def _finish(self) -> None:
        self._kill_leftover_group()
        self._stopped = True
        if self._log_file is not None:
            try:
                self._log_file.close()
            except OSError:
                pass
        with _LIVE_LOCK:
            _LIVE.discard(self)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM, wait (bounded), then SIGKILL.  Idempotent.

        A paused (SIGSTOPped) process cannot act on SIGTERM, so it is resumed
        first; otherwise every stop of a paused server would cost the timeout.
        """
        with self._lock:
            if self._stopped:
                return
            self._signal(signal.SIGCONT)
            self._signal(signal.SIGTERM)
            if not self._reap(timeout):
                self._signal(signal.SIGKILL)
                self._reap(timeout)
            self._finish()

    def kill(self) -> None:
        """SIGKILL and reap: simulates a crash (no clean shutdown)."""
        with self._lock:
            if self._stopped:
                return
            self._signal(signal.SIGKILL)
            self._reap(STOP_TIMEOUT)
            self._finish()

    def pause(self) -> None:
        """SIGSTOP: the server stops answering but keeps its sockets open."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        self._signal(signal.SIGCONT)

    def log_text(self) -> str:
        """Captured stdout+stderr so far, for failure messages."""
        if self._log_file is not None:
            try:
                self._log_file.flush()
            except (OSError, ValueError):
                pass
        try:
            return self._log_path.read_text(errors="replace")
        except OSError as e:
            return f"<log unavailable: {e}>"

    def four_letter_word(self, cmd: str, timeout: float = 2.0) -> bytes:
        """Send a four-letter word to this server."""
        return four_letter_word(self.host, self.port, cmd, timeout)


def _command(
    kind: str,
    workdir: Path,
    cfg_path: Path,
    jvm_flags: Sequence[str] = (),
    base_jvm_flags: Sequence[str] | None = None,
    main_class: str = ZK_MAIN,
) -> list[str]:
    """The command line of a server of *kind*; JVM flags and main class only apply to ZooKeeper."""
    if kind == "zookeeper":
        base = DEFAULT_ZK_JVM_FLAGS if base_jvm_flags is None else base_jvm_flags
        return [
            "java",
            *base,
            "-cp",
            ZK_CLASSPATH,
            f"-Dzookeeper.log.dir={workdir}",
            "-Dzookeeper.root.logger=WARN,CONSOLE",
            "-Dzookeeper.jmx.log4j.disable=true",
            *jvm_flags,
            main_class,
            str(cfg_path),
        ]
    if kind == "fastzk":
        return [sys.executable, "-m", "fastzk", "serve", str(cfg_path)]
    raise ValueError(f"unknown server kind {kind!r} (expected 'zookeeper' or 'fastzk')")


def _cfg_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def start_server(
    kind: str,
    workdir: Path,
    *,
    jvm_flags: Sequence[str] = (),
    base_jvm_flags: Sequence[str] | None = None,
    wait: bool = True,
    **cfg: Any,
) -> ServerProcess:
    """Write a zoo.cfg under *workdir*, start a server of *kind*, wait until it serves.

    *cfg* entries are zoo.cfg keys and override the defaults (dotted keys via
    ``**{"4lw.commands.whitelist": "srvr"}``; a value of ``None`` drops a
    default).  ``clientPort`` defaults to a free port and ``dataDir`` to
    ``workdir/data``.  fastzk's HTTP admin endpoint gets its own free port
    (``admin.serverPort``) so that servers never fight over 8080; ZooKeeper's
    AdminServer is disabled.  The server counts as up once a ``srvr``
    four-letter word gets an answer, or -- if ``srvr`` is not whitelisted --
    once a TCP connection is accepted.

    ZooKeeper only: the keys in :data:`ZK_SYSTEM_PROPERTIES` are also passed
    as ``-D`` system properties; *jvm_flags* are extra JVM arguments (e.g.
    ``["-Dzookeeper.foo=bar"]``) placed after them; *base_jvm_flags* replaces
    :data:`DEFAULT_ZK_JVM_FLAGS` (heap, GC, JIT).  Both are ignored for fastzk,
    so one call signature serves both kinds of a differential pair.

    Ensemble members (fastzk/nemesis/cluster.py): a *cfg* with ``server.N`` keys starts
    ZooKeeper's QuorumPeerMain (the caller writes ``dataDir/myid`` first), and
    ``wait=False`` returns right after the spawn, because a member only serves
    once a quorum of its peers is up.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=workdir))
    merged: dict[str, Any] = {
        "tickTime": 2000,
        "dataDir": run_dir / "data",
        "clientPort": None,
        "clientPortAddress": LOOPBACK,
        "maxClientCnxns": 60,
        "4lw.commands.whitelist": "*",
    }
    if kind == "zookeeper":
        merged["admin.enableServer"] = "false"
    elif "admin.serverPort" not in cfg:
        merged["admin.serverPort"] = free_port()
    merged.update(cfg)
    if merged.get("clientPort") is None:
        merged["clientPort"] = free_port()
    host = str(merged.get("clientPortAddress"))
    if host not in (LOOPBACK, "localhost", "::1"):
        raise ValueError(f"servers are only started on loopback addresses, got {host!r}")
    if host == "localhost":
        host = LOOPBACK
    port = int(merged["clientPort"])
    data_dir = Path(merged["dataDir"])
    data_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = run_dir / "zoo.cfg"
    cfg_path.write_text(_cfg_text(merged))
    flags: list[str] = []
    if kind == "zookeeper":
        flags = [
            f"-D{prop}={_cfg_value(merged[key])}"
            for key, prop in ZK_SYSTEM_PROPERTIES.items()
            if merged.get(key) is not None
        ]
        flags += list(jvm_flags)
    main_class = ZK_QUORUM_MAIN if any(key.startswith("server.") for key in merged) else ZK_MAIN
    command = _command(kind, run_dir, cfg_path, flags, base_jvm_flags, main_class)
    proc = ServerProcess(kind, host, port, data_dir, run_dir, cfg_path, merged, command)
    proc._spawn()
    with _LIVE_LOCK:
        _LIVE.add(proc)
    if wait:
        proc._wait_ready()
    return proc


@atexit.register
def _stop_all() -> None:
    """Safety net: stop (by PID) every server this interpreter started."""
    with _LIVE_LOCK:
        live = list(_LIVE)
    for proc in live:
        try:
            proc.kill()
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            pass

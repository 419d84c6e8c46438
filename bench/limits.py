"""Resource-limit repros of issue 14, fastzk beside Apache ZooKeeper 3.8 in the same run.

Usage::

    python bench/limits.py [--only slow-reader,ten-readers,big-writes,small-disk]
                           [--kinds zookeeper,fastzk] [--json FILE]

Each scenario starts a fresh server of each kind (servers.start_server, stopped by PID in
``finally``), does what a careless or hostile client would, and samples the server's RSS every
50 ms; a server whose RSS passes ``--kill-mb`` (default 3000) is killed, so the machine is
never put at risk. ZooKeeper runs on JVM defaults (max heap a quarter of RAM), as shipped.

* ``slow-reader``: a 1 MB znode; one raw session pipelines 1,000 getData of it (about 21 KB
  sent) and never reads. Peak RSS over 4 s, RSS while the connection stays open, and the
  slowest of the pings another client sends meanwhile.
* ``ten-readers``: ten such sessions reading a 100 KB znode (1,000 getData each).
* ``big-writes``: 1 and then 3 sessions (a fresh server each time), each pipelining 400
  setData of 1,000,000 bytes while a thread reads its replies. Peak RSS, RSS 3 s after the
  last reply, whether every write was acknowledged.
* ``small-disk`` (root only): a 64 MB tmpfs with 8 MB used as the data dir; can a new client
  connect and create a znode?

The numbers are printed as a table (and written as JSON with ``--json``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import wire  # noqa: E402  (tests/wire.py: raw protocol frames)

from fastzk.nemesis import servers  # noqa: E402  (start/stop by PID)

BENCH_JVM = ["-Xshare:auto"]  # JVM defaults otherwise: max heap a quarter of RAM
KINDS = ("zookeeper", "fastzk")
SCENARIOS = ("slow-reader", "ten-readers", "big-writes", "small-disk")


def rss_mb(pid: int) -> float:
    """Resident memory of one process in MiB (0 once it is gone)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class RssWatch:
    """Samples a server's RSS every 50 ms from a thread; kills it past kill_mb."""

    def __init__(self, proc: servers.ServerProcess, kill_mb: float) -> None:
        self.proc = proc
        self.kill_mb = kill_mb
        self.peak_mb = rss_mb(proc.pid)
        self.killed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            rss = rss_mb(self.proc.pid)
            self.peak_mb = max(self.peak_mb, rss)
            if rss > self.kill_mb and not self.killed:
                self.killed = True
                self.proc.kill()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@contextlib.contextmanager
def server(kind: str, workdir: Path, **cfg: Any) -> Iterator[servers.ServerProcess]:
    proc = servers.start_server(kind, workdir, base_jvm_flags=BENCH_JVM, **cfg)
    try:
        yield proc
    finally:
        proc.stop()


def session(proc: servers.ServerProcess) -> socket.socket:
    sock, resp = wire.handshake(proc.host, proc.port, timeout=10.0)
    assert resp.session_id, resp
    return sock


def set_up_node(proc: servers.ServerProcess, path: str, size: int) -> None:
    sock = session(proc)
    try:
        sock.sendall(wire.create_request(1, path, b"v" * size))
        hdr, _ = wire.read_reply_skipping_notifications(sock, 10.0)
        assert hdr.err == wire.OK, hdr
    finally:
        sock.close()


def slowest_ping_ms(proc: servers.ServerProcess, seconds: float) -> float:
    """Pings on a fresh session for `seconds`; the slowest round trip (a stall shows here)."""
    sock = session(proc)
    worst = 0.0
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            started = time.monotonic()
            wire.ping(sock, timeout=30.0)
            worst = max(worst, time.monotonic() - started)
            time.sleep(0.05)
    finally:
        sock.close()
    return worst * 1000


def readers(proc: servers.ServerProcess, kill_mb: float, count: int, size: int) -> dict[str, Any]:
    set_up_node(proc, "/big", size)
    base = rss_mb(proc.pid)
    watch = RssWatch(proc, kill_mb)
    socks = []
    try:
        payload = b"".join(wire.get_data_request(x, "/big") for x in range(2, 1002))
        for _ in range(count):
            sock = session(proc)
            socks.append(sock)
            sock.sendall(payload)
        ping_ms = slowest_ping_ms(proc, 4.0) if not watch.killed else None
        held = rss_mb(proc.pid)
    except OSError as error:
        ping_ms, held = f"failed: {error}", rss_mb(proc.pid)
    finally:
        for sock in socks:
            sock.close()
        watch.stop()
    return {"base_mb": round(base), "peak_mb": round(watch.peak_mb), "held_mb": round(held),
            "killed": watch.killed, "slowest_ping_ms": ping_ms}


def writer(proc: servers.ServerProcess, count: int, size: int, acked: list[int]) -> None:
    sock = session(proc)
    try:
        sock.settimeout(60.0)
        sock.sendall(wire.create_request(1, f"/w{threading.get_ident()}", b""))
        wire.read_reply_skipping_notifications(sock, 60.0)
        path = f"/w{threading.get_ident()}"
        value = b"w" * size

        def send() -> None:
            with contextlib.suppress(OSError):
                for xid in range(2, count + 2):
                    sock.sendall(wire.set_data_request(xid, path, value))

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        for _ in range(count):
            hdr, _ = wire.read_reply_skipping_notifications(sock, 60.0)
            if hdr.err == wire.OK:
                acked.append(hdr.xid)
        sender.join(60.0)
    except OSError:
        pass
    finally:
        sock.close()


def big_writes(proc: servers.ServerProcess, kill_mb: float, sessions: int) -> dict[str, Any]:
    count, size = 400, 1_000_000
    base = rss_mb(proc.pid)
    watch = RssWatch(proc, kill_mb)
    acked: list[int] = []
    started = time.monotonic()
    threads = [threading.Thread(target=writer, args=(proc, count, size, acked), daemon=True)
               for _ in range(sessions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120.0)
    seconds = time.monotonic() - started
    time.sleep(3.0)
    after = rss_mb(proc.pid)
    watch.stop()
    return {"base_mb": round(base), "peak_mb": round(watch.peak_mb), "after_mb": round(after),
            "acked": len(acked), "sent": count * sessions, "seconds": round(seconds, 1),
            "killed": watch.killed}


@contextlib.contextmanager
def small_tmpfs(size_mb: int, used_mb: int) -> Iterator[Path]:
    mount = Path(tempfile.mkdtemp(prefix="fastzk-small-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(mount)],
                   check=True)
    try:
        (mount / "filler").write_bytes(b"\xff" * (used_mb << 20))
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
        mount.rmdir()


def small_disk(kind: str, workdir: Path) -> dict[str, Any]:
    with small_tmpfs(64, 8) as mount, server(kind, workdir, dataDir=mount / "data") as proc:
        try:
            sock = session(proc)
        except (OSError, AssertionError, wire.ConnectionClosed) as error:
            return {"first_connection": f"refused ({type(error).__name__})"}
        try:
            sock.sendall(wire.create_request(1, "/x", b"x"))
            hdr, _ = wire.read_reply_skipping_notifications(sock, 10.0)
            return {"first_connection": "ok", "create": "ok" if hdr.err == wire.OK else hdr.err}
        finally:
            sock.close()


def run(only: list[str], kinds: list[str], kill_mb: float) -> dict[str, Any]:
    results: dict[str, Any] = {}
    work = Path(tempfile.mkdtemp(prefix="fastzk-limits-"))
    plans: dict[str, Callable[[servers.ServerProcess], Any]] = {
        "slow-reader": lambda p: readers(p, kill_mb, 1, 1_000_000),
        "ten-readers": lambda p: readers(p, kill_mb, 10, 100_000),
        "big-writes-1": lambda p: big_writes(p, kill_mb, 1),
        "big-writes-3": lambda p: big_writes(p, kill_mb, 3),
    }
    for name in only:
        for kind in kinds:
            print(f"{name} on {kind} ...", file=sys.stderr, flush=True)
            if name == "small-disk":
                results.setdefault(name, {})[kind] = small_disk(kind, work / f"{name}-{kind}")
                continue
            for plan in [p for p in plans if p.startswith(name)]:  # big-writes: 1, 3 sessions
                with server(kind, work / f"{plan}-{kind}") as proc:
                    results.setdefault(plan, {})[kind] = plans[plan](proc)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default=",".join(SCENARIOS))
    parser.add_argument("--kinds", default=",".join(KINDS), help="servers to run")
    parser.add_argument("--kill-mb", type=float, default=3000.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    only = [s for s in args.only.split(",") if s]
    unknown = set(only) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; known: {', '.join(SCENARIOS)}")
    kinds = [k for k in args.kinds.split(",") if k]
    if set(kinds) - set(KINDS):
        parser.error(f"unknown server kinds; known: {', '.join(KINDS)}")
    results = run(only, kinds, args.kill_mb)
    for name, by_kind in results.items():
        for kind, numbers in by_kind.items():
            print(f"{name:12} {kind:10} {json.dumps(numbers)}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

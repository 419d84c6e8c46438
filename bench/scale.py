"""Scale of sessions, watches and connections (issue 12), fastzk beside Apache ZooKeeper 3.8 in
the same run, on loopback.

Usage (with the venv's python: fastzk servers are started with the same interpreter)::

    python bench/scale.py [--only idle-sessions,connections,watches,set-watches] [--kinds zookeeper,fastzk]
                          [--sessions 100000] [--connections 10000] [--znodes 100000]
                          [--watchers 1000] [--watches-per-session 1000] [--json FILE]

Every scenario starts a fresh server of each kind (servers.start_server, stopped by PID in
``finally``) with tickTime=2000, maxClientCnxns=0 and maxSessionTimeout=600000; ZooKeeper runs
on JVM defaults (max heap a quarter of RAM), as shipped. The harness raises its RLIMIT_NOFILE
soft limit to the hard limit; servers inherit it. Clients speak the raw protocol from one
asyncio process, pipelined (kazoo would be the bottleneck), from source addresses 127.0.0.2-9
so that closed connections' TIME_WAIT ports do not run out.

* ``idle-sessions``: ``--sessions`` sessions, each opened on a connection that is then closed
  (the session lives on until its 600 s timeout, as after a client's crash): the time to open
  them, then RSS and server CPU over 20 idle seconds, beside the same server with no session.
  This is what a tick costs with that many live sessions.
* ``connections``: ``--connections`` sessions held open on as many connections: the time to
  open them, RSS and CPU over 10 idle seconds, and a ping answered on every connection.
* ``watches``: ``--znodes`` znodes; ``--watchers`` sessions each set ``--watches-per-session``
  data watches (exists with watch) on consecutive znodes, so that each znode is watched by
  watchers * per-session / znodes sessions: the time to set them, the RSS they add, the time from the first of the setData on
  every znode until the last of the events arrived. Then a fresh session restores a data watch
  on every znode with setWatches (chunked at 128 KiB as the Java client does): the time to the
  last reply, and every znode changed again to prove each watch is there (one event per znode).
* ``set-watches``: that last step alone (``--znodes`` znodes, one setWatches restore), to
  measure it quickly.

Memory is VmRSS of the server process; CPU is utime + stime from /proc. The machine's load
average is recorded beside each scenario (a noisy shared machine makes single runs rough).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import struct
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fastzk.client import codec  # noqa: E402
from fastzk.nemesis import servers  # noqa: E402  (start/stop by PID)

BENCH_JVM = ["-Xshare:auto"]  # JVM defaults otherwise: max heap a quarter of RAM
KINDS = ("zookeeper", "fastzk")
SCENARIOS = ("idle-sessions", "connections", "watches", "set-watches")
SESSION_TIMEOUT_MS = 600_000
SOURCES = [f"127.0.0.{i}" for i in range(2, 10)]
SET_WATCHES_CHUNK = 128 * 1024  # the Java client's SET_WATCHES_MAX_LENGTH
PIPELINE = 1000  # requests in flight per connection in the bulk phases
OPEN_CONCURRENCY = 400  # handshakes in flight
SCENARIO_TIMEOUT_S = 900
NODE_DATA_CHANGED = 3
OP_EXISTS, OP_SET_DATA, OP_CREATE, OP_PING, OP_SET_WATCHES = 3, 5, 1, 11, 101
OPEN_ACL = [codec.ACL(31, "world", "anyone")]
HEADER = struct.Struct(">iqi")  # reply header: xid, zxid, err
EVENT = struct.Struct(">iii")  # notification after its header: type, state, path length


# --- the server process ----------------------------------------------------------------------
def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load() -> float:
    return os.getloadavg()[0]


async def idle_cpu(pid: int, seconds: float) -> float:
    """Server CPU seconds per wall second while the harness does nothing."""
    before = cpu_s(pid)
    await asyncio.sleep(seconds)
    return (cpu_s(pid) - before) / seconds


@contextlib.contextmanager
def server(kind: str, workdir: Path) -> Iterator[servers.ServerProcess]:
    proc = servers.start_server(kind, workdir, base_jvm_flags=BENCH_JVM, maxClientCnxns=0,
                                maxSessionTimeout=SESSION_TIMEOUT_MS, tickTime=2000)
    try:
        yield proc
    finally:
        proc.stop()


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# --- a raw, pipelined client -----------------------------------------------------------------
class Conn:
    """One connection: frames out through a stream writer, replies parsed from bulk reads."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buf = bytearray()
        self.session_id = 0
        self.last_zxid = 0
        self.events = 0
        self.event_paths: set[str] = set()

    async def frames(self) -> list[bytes]:
        """At least one whole frame."""
        while True:
            buf, pos, out = self.buf, 0, []
            while len(buf) - pos >= 4:
                size = int.from_bytes(buf[pos:pos + 4], "big")
                if len(buf) - pos - 4 < size:
                    break
                out.append(bytes(buf[pos + 4:pos + 4 + size]))
                pos += 4 + size
            del buf[:pos]
            if out:
                return out
            chunk = await self.reader.read(1 << 18)
            if not chunk:
                raise ConnectionError("closed by the server")
            buf += chunk

    async def replies(self, count: int, *, keep_paths: bool = False) -> int:
        """Reads until `count` replies arrived (events are counted on the way); returns the
        number of replies with an error."""
        errors = 0
        while count:
            for frame in await self.frames():
                xid, zxid, err = HEADER.unpack_from(frame)
                if xid == -1:
                    self._event(frame, keep_paths)
                    continue
                if xid == -2:  # ping
                    count -= 1
                    continue
                count -= 1
                errors += err != 0
                if zxid > 0:
                    self.last_zxid = max(self.last_zxid, zxid)
        return errors

    def _event(self, frame: bytes, keep_paths: bool) -> None:
        kind, _, size = EVENT.unpack_from(frame, HEADER.size)
        if kind == NODE_DATA_CHANGED:
            self.events += 1
            if keep_paths:
                start = HEADER.size + EVENT.size
                self.event_paths.add(frame[start:start + size].decode())

    async def events_until(self, count: int, *, keep_paths: bool = False) -> None:
        while self.events < count:
            for frame in await self.frames():
                if HEADER.unpack_from(frame)[0] == -1:
                    self._event(frame, keep_paths)

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    def close(self) -> None:
        self.writer.close()


async def connect(proc: servers.ServerProcess, index: int, timeout_ms: int) -> Conn:
    reader, writer = await asyncio.open_connection(
        proc.host, proc.port, local_addr=(SOURCES[index % len(SOURCES)], 0), limit=1 << 20)
    conn = Conn(reader, writer)
    conn.send(codec.connect_request(timeout_ms))
    body = (await conn.frames())[0]
    conn.session_id = codec.decode_connect_response(body).session_id
    if not conn.session_id:
        raise ConnectionError("no session")
    return conn


async def open_many(proc: servers.ServerProcess, count: int, *, keep: bool) -> list[Conn]:
    """`count` sessions, OPEN_CONCURRENCY handshakes at a time; closed at once unless kept."""
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)
    kept: list[Conn] = []

    async def one(index: int) -> None:
        async with gate:
            conn = await connect(proc, index, SESSION_TIMEOUT_MS)
            if keep:
                kept.append(conn)
            else:
                conn.close()

    await asyncio.gather(*(one(i) for i in range(count)))
    return kept


async def pipelined(conn: Conn, frames: list[bytes]) -> int:
    """Sends `frames` with at most PIPELINE in flight; returns the replies with an error."""
    errors = 0
    for start in range(0, len(frames), PIPELINE):
        batch = frames[start:start + PIPELINE]
        conn.send(b"".join(batch))
        errors += await conn.replies(len(batch))
    return errors


def path_of(i: int) -> str:
    return f"/scale/n{i:06d}"


# --- scenarios -------------------------------------------------------------------------------
async def idle_sessions(proc: servers.ServerProcess, count: int) -> dict[str, Any]:
    pid = proc.pid
    base_rss, base_cpu = rss_mb(pid), await idle_cpu(pid, 10)
    started = time.monotonic()
    await open_many(proc, count, keep=False)
    opened_s = time.monotonic() - started
    await asyncio.sleep(2)  # closed connections are gone, nothing else is running
    rss = rss_mb(pid)
    cpu = await idle_cpu(pid, 20)
    return {
        "sessions": count, "open_s": round(opened_s, 2),
        "sessions_per_s": round(count / opened_s),
        "rss_mb_empty": round(base_rss, 1), "rss_mb": round(rss, 1),
        "bytes_per_session": round((rss - base_rss) * 2**20 / count),
        "idle_cpu_pct_empty": round(100 * base_cpu, 2), "idle_cpu_pct": round(100 * cpu, 2),
        "load": round(load(), 2),
    }


async def connections(proc: servers.ServerProcess, count: int) -> dict[str, Any]:
    pid = proc.pid
    base_rss, base_cpu = rss_mb(pid), await idle_cpu(pid, 5)
    started = time.monotonic()
    conns = await open_many(proc, count, keep=True)
    opened_s = time.monotonic() - started
    await asyncio.sleep(2)
    rss = rss_mb(pid)
    cpu = await idle_cpu(pid, 10)
    started = time.monotonic()
    for conn in conns:
        conn.send(codec.frame(-2, OP_PING))
    await asyncio.gather(*(conn.replies(1) for conn in conns))
    ping_all_s = time.monotonic() - started
    for conn in conns:
        conn.close()
    return {
        "connections": count, "open_s": round(opened_s, 2),
        "rss_mb_empty": round(base_rss, 1), "rss_mb": round(rss, 1),
        "bytes_per_connection": round((rss - base_rss) * 2**20 / count),
        "idle_cpu_pct_empty": round(100 * base_cpu, 2), "idle_cpu_pct": round(100 * cpu, 2),
        "ping_all_s": round(ping_all_s, 2), "load": round(load(), 2),
    }


async def set_data_everywhere(writer: Conn, znodes: int) -> float:
    """setData on every znode, pipelined; returns when the last reply arrived."""
    frames = [codec.frame(i + 1, OP_SET_DATA, codec.set_body(path_of(i), b"y", -1))
              for i in range(znodes)]
    errors = await pipelined(writer, frames)
    assert errors == 0, f"{errors} setData failed"
    return time.monotonic()


async def watches(proc: servers.ServerProcess, znodes: int, watchers: int,
                  per_session: int) -> dict[str, Any]:
    pid = proc.pid
    writer = await connect(proc, 0, SESSION_TIMEOUT_MS)
    create_s = await create_znodes(writer, znodes)
    conns = await open_many(proc, watchers, keep=True)
    await asyncio.sleep(2)
    base_rss = rss_mb(pid)

    # session s watches the per_session znodes from s * per_session on (mod znodes)
    def watch_frames(s: int) -> bytes:
        return b"".join(
            codec.frame(j + 1, OP_EXISTS,
                        codec.path_watch(path_of((s * per_session + j) % znodes), True))
            for j in range(per_session))

    requests = [watch_frames(s) for s in range(watchers)]
    started = time.monotonic()
    for conn, data in zip(conns, requests, strict=True):
        conn.send(data)
    errors = sum(await asyncio.gather(*(conn.replies(per_session) for conn in conns)))
    set_s = time.monotonic() - started
    assert errors == 0, f"{errors} exists failed"
    total = watchers * per_session
    await asyncio.sleep(2)
    rss = rss_mb(pid)
    wchs = servers.four_letter_word(proc.host, proc.port, "wchs", 30).decode()

    started = time.monotonic()
    waiting = [asyncio.ensure_future(conn.events_until(per_session)) for conn in conns]
    writes_s = await set_data_everywhere(writer, znodes) - started
    await asyncio.gather(*waiting)
    fire_s = time.monotonic() - started
    fired = sum(conn.events for conn in conns)
    rss_after_fire = rss_mb(pid)
    for conn in conns:
        conn.close()

    restore = await set_watches(proc, writer, znodes)
    writer.close()
    return {
        "znodes": znodes, "watchers": watchers, "watches": total,
        "create_s": round(create_s, 2), "set_s": round(set_s, 2),
        "watches_per_s": round(total / set_s),
        "rss_mb_before_watches": round(base_rss, 1), "rss_mb_with_watches": round(rss, 1),
        "bytes_per_watch": round((rss - base_rss) * 2**20 / total),
        "rss_mb_after_fire": round(rss_after_fire, 1),
        "wchs": wchs.strip().splitlines()[-1],
        "fire_s": round(fire_s, 2), "writes_s": round(writes_s, 2),
        "events": fired, **restore, "load": round(load(), 2),
    }


async def create_znodes(writer: Conn, znodes: int) -> float:
    """/scale and `znodes` children of 1 byte, pipelined; returns the seconds it took."""
    frames = [codec.frame(1, OP_CREATE, codec.create_body("/scale", b"", OPEN_ACL, 0))]
    frames += [codec.frame(i + 2, OP_CREATE, codec.create_body(path_of(i), b"x", OPEN_ACL, 0))
               for i in range(znodes)]
    started = time.monotonic()
    assert await pipelined(writer, frames) == 0
    return time.monotonic() - started


async def set_watches(proc: servers.ServerProcess, writer: Conn, znodes: int) -> dict[str, Any]:
    """A fresh session restores a data watch on every znode with setWatches (as a client
    library does on reconnect): the time to the last reply; then every znode is changed
    again, and each must fire once."""
    restorer = await connect(proc, 1, SESSION_TIMEOUT_MS)
    chunks: list[bytes] = []
    paths: list[bytes] = []
    size = 0
    for i in range(znodes):
        encoded = codec.ustring(path_of(i))
        if size + len(encoded) > SET_WATCHES_CHUNK:
            chunks.append(b"".join(paths))
            paths, size = [], 0
        paths.append(encoded)
        size += len(encoded)
    chunks.append(b"".join(paths))
    empty = struct.pack(">i", 0)
    set_watches = []
    for xid, chunk in enumerate(chunks, 1):
        count = chunk_count(chunk)
        body = struct.pack(">q", writer.last_zxid) + struct.pack(">i", count) + chunk \
            + empty + empty
        set_watches.append(codec.frame(xid, OP_SET_WATCHES, body))
    started = time.monotonic()
    restorer.send(b"".join(set_watches))
    errors = await restorer.replies(len(set_watches))
    restore_s = time.monotonic() - started
    assert errors == 0, f"{errors} setWatches failed"
    restored_wchs = servers.four_letter_word(proc.host, proc.port, "wchs", 30).decode()
    waiting = [asyncio.ensure_future(restorer.events_until(znodes, keep_paths=True))]
    await set_data_everywhere(writer, znodes)
    await asyncio.wait_for(asyncio.gather(*waiting), 120)
    restored = len(restorer.event_paths)
    restorer.close()
    return {"set_watches_requests": len(set_watches), "restore_s": round(restore_s, 3),
            "restored_wchs": restored_wchs.strip().splitlines()[-1],
            "restored_events": restored}


async def set_watches_only(proc: servers.ServerProcess, znodes: int) -> dict[str, Any]:
    """The last step of ``watches`` alone, on a server holding just the znodes."""
    writer = await connect(proc, 0, SESSION_TIMEOUT_MS)
    create_s = await create_znodes(writer, znodes)
    result = await set_watches(proc, writer, znodes)
    writer.close()
    return {"znodes": znodes, "create_s": round(create_s, 2), **result, "load": round(load(), 2)}


def chunk_count(chunk: bytes) -> int:
    """How many ustrings a concatenation of them holds."""
    count = pos = 0
    while pos < len(chunk):
        pos += 4 + int.from_bytes(chunk[pos:pos + 4], "big")
        count += 1
    return count


# --- driver ----------------------------------------------------------------------------------
async def run_one(scenario: str, proc: servers.ServerProcess,
                  args: argparse.Namespace) -> dict[str, Any]:
    if scenario == "idle-sessions":
        work = idle_sessions(proc, args.sessions)
    elif scenario == "connections":
        work = connections(proc, args.connections)
    elif scenario == "set-watches":
        work = set_watches_only(proc, args.znodes)
    else:
        work = watches(proc, args.znodes, args.watchers, args.watches_per_session)
    return await asyncio.wait_for(work, SCENARIO_TIMEOUT_S)


def ratio(fz: Any, zk: Any) -> str:
    if isinstance(fz, (int, float)) and isinstance(zk, (int, float)) and zk:
        return f"{fz / zk:.2f}"
    return ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(SCENARIOS))
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--znodes", type=int, default=100_000)
    parser.add_argument("--watchers", type=int, default=1000)
    parser.add_argument("--watches-per-session", type=int, default=1000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    fd_limit = raise_fd_limit()
    print(f"RLIMIT_NOFILE {fd_limit} (hard); {os.cpu_count()} cores; load {load():.2f}",
          flush=True)
    results: dict[str, dict[str, Any]] = {}
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    for scenario in args.only.split(","):
        results[scenario] = {}
        for kind in args.kinds.split(","):
            with tempfile.TemporaryDirectory(prefix=f"scale-{kind}-") as tmp, \
                    server(kind, Path(tmp)) as proc:
                result = runner(run_one(scenario, proc, args))
            results[scenario][kind] = result
            print(f"{scenario} {kind}: {json.dumps(result)}", flush=True)
        pair = results[scenario]
        if len(pair) == 2:
            for key, value in pair["fastzk"].items():
                r = ratio(value, pair["zookeeper"].get(key))
                if r:
                    print(f"  {key}: fastzk/zookeeper {r}")
    if args.json:
        args.json.write_text(json.dumps({"fd_limit": fd_limit, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

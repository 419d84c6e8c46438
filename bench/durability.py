"""Durability benchmark: fastzk beside Apache ZooKeeper 3.8, same machine, same run.

Usage::

    python bench/durability.py [--duration 5] [--warmup 1] [--concurrency 1x1,8x32]
                               [--restart-nodes 100000] [--only writes,restart] [--json FILE]

    # the 1,000,000-znode restart (needs a few minutes and ~1.5 GB of RAM for both servers):
    python bench/durability.py --only restart --restart-nodes 1000000

What it measures (each server freshly started in its own temp data dir, both with fsync on:
ZooKeeper's default forceSync=yes, fastzk's WAL always fdatasyncs before it acknowledges):

* **Writes**: `setData` of 100-byte values on 1000 keys through ``fastzk.load``
  (closed loop, N sessions x D requests in flight): ops/s and latency percentiles. 1x1 is
  the latency of one write (one fdatasync per write); 8x32 shows group commit.
* **Group-commit batch sizes** (fastzk): txns per WAL write (= per fdatasync) during the
  write run, from the "write-ahead log stats" line the server logs when it stops.
  ZooKeeper exposes no comparable per-fsync count, so only its throughput is shown.
* **Restart time** with N znodes of 100 bytes (plus the default snapCount of 100000, so
  both servers restart from a snapshot plus a log tail): wall time from process start to the
  first answered ``srvr``, after a clean stop (SIGTERM) and after a crash (SIGKILL), next to
  the restart time of an empty server (the process start-up cost alone).

ZooKeeper runs with the production-like JVM flags of bench/compare.py. Every server is
stopped by PID in ``finally``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fastzk.load import LoadConfig, run_load  # noqa: E402
from fastzk.load.keyspace import prepare_keyspace  # noqa: E402
from fastzk.nemesis import servers  # noqa: E402  (start/stop by PID)

BENCH_JVM = ["-Xmx1000m", "-Xshare:auto"]
KINDS = ("zookeeper", "fastzk")
STATS_LINE = re.compile(r"write-ahead log stats: (\{.*\})")


def start(kind: str, workdir: Path, **cfg: Any) -> servers.ServerProcess:
    return servers.start_server(kind, workdir, base_jvm_flags=BENCH_JVM, **cfg)


def wal_stats(proc: servers.ServerProcess) -> dict[str, Any] | None:
    found = STATS_LINE.findall(proc.log_text())
    return json.loads(found[-1]) if found else None


def batch_summary(stats: dict[str, Any] | None) -> dict[str, Any] | None:
    """Txns per fdatasync: mean, percentiles over writes, and power-of-two buckets."""
    if not stats or not stats["writes"]:
        return None
    sizes = sorted((int(k), v) for k, v in stats["txns_per_write"].items())
    writes = sum(v for _, v in sizes)
    txns = sum(k * v for k, v in sizes)

    def percentile(q: float) -> int:
        seen = 0
        for size, count in sizes:
            seen += count
            if seen >= q * writes:
                return size
        return sizes[-1][0]

    buckets: dict[str, int] = {}
    for size, count in sizes:
        low = 1 << (size.bit_length() - 1)
        label = str(low) if low == 1 else f"{low}-{2 * low - 1}"
        buckets[label] = buckets.get(label, 0) + count
    return {"writes": writes, "txns": txns, "mean": round(txns / writes, 1),
            "p50": percentile(0.5), "p90": percentile(0.9), "p99": percentile(0.99),
            "max": sizes[-1][0], "buckets": buckets}


def bench_writes(args: argparse.Namespace, root: Path) -> list[dict[str, Any]]:
    rows = []
    for spec in args.concurrency.split(","):
        sessions, depth = (int(x) for x in spec.lower().split("x"))
        for kind in KINDS:
            proc = start(kind, root / f"writes-{kind}-{spec}")
            try:
                result = run_load(LoadConfig(
                    port=proc.port, sessions=sessions, depth=depth, op="set", value_size=100,
                    keys=1000, duration=args.duration, warmup=args.warmup,
                    server_pid=proc.pid, cleanup=False))
            finally:
                proc.stop()
            row = {
                "kind": kind, "concurrency": spec, "ops_per_sec": round(result.ops_per_sec),
                "p50_ms": result.latency_us["p50"] / 1000, "p99_ms": result.latency_us["p99"] / 1000,
                "p999_ms": result.latency_us["p99.9"] / 1000, "errors": result.errors,
                "server_cpu": result.server_cpu, "other_cpu": result.other_cpu,
            }
            if kind == "fastzk":
                row["batches"] = batch_summary(wal_stats(proc))
            rows.append(row)
            print(f"  writes {spec:>6} {kind:>9}: {row['ops_per_sec']:>8} ops/s  "
                  f"p50 {row['p50_ms']:.2f} ms  p99 {row['p99_ms']:.2f} ms"
                  + (f"  txns/fsync mean {row['batches']['mean']}" if row.get("batches") else ""),
                  flush=True)
    return rows


def timed_restart(proc: servers.ServerProcess, crash: bool) -> float:
    if crash:
        proc.kill()
    else:
        proc.stop()
    started = time.monotonic()
    proc.restart()
    return time.monotonic() - started


def bench_restart(args: argparse.Namespace, root: Path) -> list[dict[str, Any]]:
    rows = []
    for kind in KINDS:
        proc = start(kind, root / f"restart-{kind}")
        try:
            empty = min(timed_restart(proc, crash=False) for _ in range(2))
            began = time.monotonic()
            asyncio.run(prepare_keyspace(LoadConfig(
                port=proc.port, keys=args.restart_nodes, value_size=100, root="/restart",
                op="get", connect_timeout=30)))
            populate = time.monotonic() - began
            clean = timed_restart(proc, crash=False)
            crash = timed_restart(proc, crash=True)
            nodes = int(re.search(rb"Node count: (\d+)", proc.four_letter_word("srvr")).group(1))
            size = sum(f.stat().st_size for f in proc.data_dir.rglob("*") if f.is_file())
        finally:
            proc.stop()
        row = {"kind": kind, "znodes": nodes, "populate_s": round(populate, 1),
               "populate_ops_per_sec": round(args.restart_nodes / populate),
               "restart_empty_s": round(empty, 2), "restart_clean_s": round(clean, 2),
               "restart_crash_s": round(crash, 2), "data_dir_mb": round(size / 1e6, 1)}
        rows.append(row)
        print(f"  restart {kind:>9}: {nodes} znodes, clean {clean:.2f} s, after SIGKILL "
              f"{crash:.2f} s (empty server {empty:.2f} s), data {row['data_dir_mb']} MB, "
              f"populated at {row['populate_ops_per_sec']} creates/s", flush=True)
    return rows


def markdown(writes: list[dict[str, Any]], restarts: list[dict[str, Any]],
             args: argparse.Namespace) -> str:
    out = []
    if writes:
        out += ["| concurrency | server | ops/s | p50 ms | p99 ms | p99.9 ms | txns per fsync "
                "(mean / p50 / p99 / max) |", "|---|---|---:|---:|---:|---:|---|"]
        for row in writes:
            batches = row.get("batches")
            batch = (f"{batches['mean']} / {batches['p50']} / {batches['p99']} / "
                     f"{batches['max']}" if batches else "n/a")
            out.append(f"| {row['concurrency']} | {row['kind']} | {row['ops_per_sec']:,} | "
                       f"{row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['p999_ms']:.2f} | "
                       f"{batch} |")
        for row in writes:
            if row.get("batches"):
                out.append(f"\nfastzk {row['concurrency']} txns-per-fsync histogram: "
                           + ", ".join(f"{k}: {v}" for k, v in row["batches"]["buckets"].items()))
    if restarts:
        out += ["", "| server | znodes (100 B) | restart, clean (s) | restart after SIGKILL (s)"
                " | empty server (s) | data dir (MB) |", "|---|---:|---:|---:|---:|---:|"]
        for row in restarts:
            out.append(f"| {row['kind']} | {row['znodes']:,} | {row['restart_clean_s']} | "
                       f"{row['restart_crash_s']} | {row['restart_empty_s']} | "
                       f"{row['data_dir_mb']} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--concurrency", default="1x1,8x32",
                        help="comma-separated SESSIONSxDEPTH write runs (default 1x1,8x32)")
    parser.add_argument("--restart-nodes", type=int, default=100_000,
                        help="znodes for the restart measurement (default 100000)")
    parser.add_argument("--only", default="writes,restart", help="writes, restart or both")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    parts = {p.strip() for p in args.only.split(",")}
    root = Path(tempfile.mkdtemp(prefix="fastzk-durability-"))
    try:
        writes = bench_writes(args, root) if "writes" in parts else []
        restarts = bench_restart(args, root) if "restart" in parts else []
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print()
    print(markdown(writes, restarts, args))
    if args.json:
        args.json.write_text(json.dumps({"writes": writes, "restart": restarts,
                                         "args": vars(args) | {"json": str(args.json)}},
                                        indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

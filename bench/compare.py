"""Side-by-side throughput/latency of Apache ZooKeeper and fastzk, same tool, same run.

Usage::

    python bench/compare.py [--scenarios get,set,create-delete,mixed] [--duration 5]
                            [--warmup 1] [--repeats 2] [--save]

Why it is built this way:

* **Same tool, same parameters, same run.** Every scenario is run with
  ``fastzk.client.load`` against each server started here (loopback, own temp data dir,
  started through tests/servers.py so process handling lives in one place), and the
  report quotes ratios, not absolute numbers from different days.
* **Alternation and repeats.** The machine is small (2 cores) and shared; the server order
  flips every repeat so slow drift (a neighbour's test run) hits both sides, and every row
  shows the CPU used by the load process, the server and everything else ("other") during
  the measured window, so a noisy number can be recognised as such.
* **Writes: fsync caveat.** ZooKeeper fsyncs its transaction log before answering a write;
  fastzk's log is in memory for now. Write scenarios therefore also run against a second
  ZooKeeper with ``forceSync=no``, the fairer comparison until fastzk has a WAL.
* **ZooKeeper's JVM runs with production-like flags** (C2 JIT, default GC, 1000 MB heap
  like zkEnv.sh) and not the start-up-optimised flags tests/servers.py uses for the test
  suite (C1 only, SerialGC, 256 MB), which would understate ZooKeeper's throughput.
  ``--zk-jvm tests`` keeps the test flags.
* **Nothing outlives the run.** Every server is stopped by PID in ``finally``; every wait is
  bounded in time.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import servers  # noqa: E402  (tests/servers.py: start/stop by PID)

from fastzk.client.load import (  # noqa: E402
    LoadConfig,
    LoadResult,
    histogram_summary,
    merge_histograms,
    run_load,
)

#: scenario name -> load op
SCENARIOS: dict[str, str] = {
    "get": "get",
    "set": "set",
    "create-delete": "create-delete",
    "mixed": "mixed:90",
}
WRITE_SCENARIOS = {"set", "create-delete", "mixed"}
#: The goal being proven: fastzk/ZooKeeper throughput at least this much.
TARGETS = {"get": 2.0, "set": 1.5}

#: target name -> (server kind, extra zoo.cfg keys, label)
TARGET_SPECS: dict[str, tuple[str, dict[str, Any], str]] = {
    "zookeeper": ("zookeeper", {}, "ZooKeeper 3.8 (fsync)"),
    "zookeeper-nosync": ("zookeeper", {"forceSync": "no"}, "ZooKeeper 3.8 forceSync=no"),
    "fastzk": ("fastzk", {}, "fastzk (in-memory log)"),
}

#: JVM flags of the benchmark ZooKeeper: zkServer.sh's default heap, JVM defaults otherwise.
BENCH_JVM = ["-Xmx1000m"]
_TEST_ONLY_JVM_PREFIXES = ("-XX:TieredStopAtLevel=", "-XX:+UseSerialGC", "-Xmx", "-Xms")

#: The wait for a quiet machine before each run: busy threshold (% of one core).
QUIET_BELOW = 30.0


@contextlib.contextmanager
def zookeeper_jvm(mode: str) -> Iterator[list[str] | None]:
    """Swap tests/servers.py's ZooKeeper JVM flags for benchmark ones while starting servers.

    Done by wrapping ``servers._command`` (restored on exit) rather than copying the
    process management; yields the flags used, or None if servers.py could not be adapted.
    """
    original = getattr(servers, "_command", None)
    if mode == "tests" or original is None:
        yield None
        return

    def bench_command(kind: str, workdir: Path, cfg_path: Path) -> list[str]:
        cmd = list(original(kind, workdir, cfg_path))
        if kind != "zookeeper":
            return cmd
        kept = [a for a in cmd[1:] if not a.startswith(_TEST_ONLY_JVM_PREFIXES)]
        return [cmd[0], *BENCH_JVM, *kept]

    servers._command = bench_command
    try:
        yield BENCH_JVM
    finally:
        servers._command = original


def machine_busy_pct(window: float = 0.5) -> float:
    """Busy CPU of the whole machine over *window* seconds, in % of one core."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat", "rb") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        total = sum(values[:8])
        return total - values[3] - values[4], total

    b0, t0 = sample()
    time.sleep(window)
    b1, t1 = sample()
    cores = os.cpu_count() or 1
    return (b1 - b0) / max(t1 - t0, 1) * 100 * cores


def wait_for_quiet(max_wait: float) -> float:
    """Wait (at most *max_wait* s) for other work on the machine to calm down.

    Returns the last busy level seen, recorded with the run; never blocks longer.
    """
    deadline = time.monotonic() + max_wait
    busy = machine_busy_pct()
    while busy > QUIET_BELOW and time.monotonic() < deadline:
        busy = machine_busy_pct()
    return round(busy, 1)


@dataclass
class Run:
    """One measured run of one scenario against one server."""

    scenario: str
    target: str
    repeat: int
    background_before: float
    result: LoadResult


def server_version(proc: servers.ServerProcess) -> str:
    """First line of ``srvr`` (version string), for the record."""
    try:
        text = proc.four_letter_word("srvr").decode(errors="replace")
    except OSError:
        return "?"
    for line in text.splitlines():
        if "version" in line.lower():
            return line.split(":", 1)[-1].strip()
    return text.splitlines()[0] if text else "?"


def git_revision() -> str:
    """The commit being measured (plus '+dirty' if the tree has changes)."""
    try:
        rev = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return rev + ("+dirty" if dirty else "")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line; defaults are the project's reference scenario, kept short."""
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma list of {', '.join(SCENARIOS)} (default: all)",
    )
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds per run")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per run")
    p.add_argument("--repeats", type=int, default=2, help="runs per scenario and server")
    p.add_argument("--sessions", type=int, default=8)
    p.add_argument("--depth", type=int, default=32, help="requests in flight per session")
    p.add_argument("--value-size", type=int, default=100)
    p.add_argument("--keys", type=int, default=1000)
    p.add_argument("--processes", type=int, default=1, help="load processes per run")
    p.add_argument(
        "--no-nosync",
        action="store_true",
        help="skip the ZooKeeper forceSync=no runs of write scenarios",
    )
    p.add_argument(
        "--zk-jvm",
        choices=["bench", "tests"],
        default="bench",
        help="ZooKeeper JVM flags: production-like (default) or tests/servers.py's",
    )
    p.add_argument(
        "--prime",
        type=float,
        default=5.0,
        help="seconds of unmeasured mixed load per server before the first run "
        "(JIT warm-up for the JVM; same for both)",
    )
    p.add_argument(
        "--settle",
        type=float,
        default=2.0,
        help=f"max seconds to wait before each run for machine CPU < {QUIET_BELOW:.0f}%%",
    )
    p.add_argument("--save", action="store_true", help="write bench/results/<date>.json")
    p.add_argument("--out", type=Path, default=None, help="write the JSON here instead")
    args = p.parse_args(argv)
    names = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in names if s not in SCENARIOS]
    if unknown or not names:
        p.error(f"unknown scenario(s) {unknown}; choose from {', '.join(SCENARIOS)}")
    if args.repeats < 1 or args.duration <= 0:
        p.error("--repeats must be >= 1 and --duration > 0")
    args.scenario_list = names
    return args


def targets_for(scenario: str, args: argparse.Namespace) -> list[str]:
    """Servers a scenario runs against (forceSync=no ZooKeeper only for writes)."""
    names = ["zookeeper", "fastzk"]
    if scenario in WRITE_SCENARIOS and not args.no_nosync:
        names.insert(1, "zookeeper-nosync")
    return names


def load_config(
    args: argparse.Namespace,
    proc: servers.ServerProcess,
    op: str,
    root: str,
    duration: float,
    warmup: float,
) -> LoadConfig:
    """The one LoadConfig shape every run uses; only server, op and root vary."""
    return LoadConfig(
        host=proc.host,
        port=proc.port,
        sessions=args.sessions,
        depth=args.depth,
        op=op,
        value_size=args.value_size,
        keys=args.keys,
        duration=duration,
        warmup=warmup,
        processes=args.processes,
        root=root,
        server_pid=proc.pid,
    )


# --- reporting ----------------------------------------------------------------------------------


def summarize(runs: list[Run], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Per (scenario, server): mean ops/s over repeats, percentiles of the merged histogram."""
    rows: list[dict[str, Any]] = []
    for scenario in args.scenario_list:
        for target in targets_for(scenario, args):
            mine = [r for r in runs if r.scenario == scenario and r.target == target]
            if not mine:
                continue
            rates = [r.result.ops_per_sec for r in mine]
            hist = merge_histograms([r.result.histogram for r in mine])

            def mean(values: list[float | None]) -> float | None:
                present = [v for v in values if v is not None]
                return round(statistics.fmean(present), 1) if present else None

            rows.append(
                {
                    "scenario": scenario,
                    "target": target,
                    "ops_per_sec": round(statistics.fmean(rates), 1),
                    "ops_per_sec_runs": rates,
                    "latency_us": histogram_summary(hist),
                    "errors": sum(sum(r.result.errors_total.values()) for r in mine),
                    "client_cpu": mean([r.result.client_cpu for r in mine]),
                    "server_cpu": mean([r.result.server_cpu for r in mine]),
                    "other_cpu": mean([r.result.other_cpu for r in mine]),
                }
            )
    by_key = {(r["scenario"], r["target"]): r for r in rows}
    for row in rows:
        fz = by_key.get((row["scenario"], "fastzk"))
        if fz and row["target"] != "fastzk" and row["ops_per_sec"] > 0:
            row["fastzk_ops_ratio"] = round(fz["ops_per_sec"] / row["ops_per_sec"], 2)
            p99 = fz["latency_us"]["p99"]
            row["fastzk_p99_ratio"] = (
                round(p99 / row["latency_us"]["p99"], 3) if row["latency_us"]["p99"] else None
            )
    return rows


def _ms(us: float) -> str:
    return f"{us / 1000:.2f}"


def _cpu(row: dict[str, Any]) -> str:
    return " / ".join(
        "-" if row[k] is None else f"{row[k]:.0f}"
        for k in ("client_cpu", "server_cpu", "other_cpu")
    )


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace, meta: dict[str, Any]) -> str:
    """The report: table, target verdicts, caveats."""
    out = [
        f"{args.sessions} sessions x {args.depth} in flight, {args.value_size} B values, "
        f"{args.keys} keys, {args.duration:g} s measured + {args.warmup:g} s warm-up, "
        f"{args.repeats} repeat(s), alternating server order; {meta['cores']} cores shared "
        f"by load, server and everything else.",
        "",
        "| scenario | server | ops/s (mean) | runs | p50 ms | p99 ms | p99.9 ms | errors "
        "| fastzk ÷ this: ops/s | fastzk ÷ this: p99 | CPU % load / server / other |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lat = r["latency_us"]
        ratio = f"**{r['fastzk_ops_ratio']:.2f}x**" if "fastzk_ops_ratio" in r else "—"
        p99r = f"{r['fastzk_p99_ratio']:.2f}" if r.get("fastzk_p99_ratio") is not None else "—"
        runs = ", ".join(f"{v / 1000:.1f}k" for v in r["ops_per_sec_runs"])
        out.append(
            f"| {r['scenario']} | {TARGET_SPECS[r['target']][2]} | {r['ops_per_sec']:,.0f} | {runs} "
            f"| {_ms(lat['p50'])} | {_ms(lat['p99'])} | {_ms(lat['p99.9'])} | {r['errors']} "
            f"| {ratio} | {p99r} | {_cpu(r)} |"
        )
    out.append("")
    by_key = {(r["scenario"], r["target"]): r for r in rows}
    for scenario, goal in TARGETS.items():
        for ref in ("zookeeper", "zookeeper-nosync"):
            row = by_key.get((scenario, ref))
            if not row or "fastzk_ops_ratio" not in row:
                continue
            ok = row["fastzk_ops_ratio"] >= goal
            lower = row.get("fastzk_p99_ratio") is not None and row["fastzk_p99_ratio"] < 1
            out.append(
                f"- target {scenario} >= {goal:g}x vs {TARGET_SPECS[ref][2]}: "
                f"{row['fastzk_ops_ratio']:.2f}x -> {'MET' if ok else 'NOT MET'}; "
                f"p99 {'lower' if lower else 'NOT lower'} "
                f"({_ms(by_key[(scenario, 'fastzk')]['latency_us']['p99'])} vs {_ms(row['latency_us']['p99'])} ms)"
            )
    out += [
        "",
        "Caveats: ZooKeeper fsyncs every write batch to its log before answering; fastzk's log "
        "is in memory for now (WAL pending), so write ratios vs the fsync row flatter fastzk — "
        "the forceSync=no row is the fairer write comparison. 'other' CPU is everything on the "
        "machine but the load process and the server (neighbours, kernel softirq); large values "
        "mean a noisy run. Latencies are closed-loop service times (no coordinated-omission "
        "correction). ZooKeeper JVM flags: "
        + (
            " ".join(meta["zk_jvm"]) + " (+ JVM defaults)"
            if meta["zk_jvm"]
            else "tests/servers.py's"
        )
        + ".",
    ]
    return "\n".join(out)


# --- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Start the servers, run the matrix, report; always stop what was started."""
    args = parse_args(argv)
    needed = sorted({t for s in args.scenario_list for t in targets_for(s, args)})
    workdir = Path(tempfile.mkdtemp(prefix="fastzk-bench-"))
    procs: dict[str, servers.ServerProcess] = {}
    runs: list[Run] = []
    started = dt.datetime.now()
    meta: dict[str, Any] = {
        "date": started.isoformat(timespec="seconds"),
        "git": git_revision(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_before": os.getloadavg(),
        "zk_jvm": None,
        "versions": {},
    }
    try:
        with zookeeper_jvm(args.zk_jvm) as jvm:
            meta["zk_jvm"] = jvm
            for name in needed:
                kind, extra, _ = TARGET_SPECS[name]
                procs[name] = servers.start_server(kind, workdir / name, **extra)
                meta["versions"][name] = server_version(procs[name])
                print(
                    f"started {name}: pid {procs[name].pid} on {procs[name].connect_string}",
                    flush=True,
                )
        if args.prime > 0:
            for proc in procs.values():
                run_load(load_config(args, proc, "mixed:50", "/bench-prime", args.prime, 0.0))
            print(f"primed every server with {args.prime:g} s of mixed load", flush=True)
        total = sum(len(targets_for(s, args)) for s in args.scenario_list) * args.repeats
        done = 0
        for rep in range(args.repeats):
            for scenario in args.scenario_list:
                order = targets_for(scenario, args)
                if rep % 2:
                    order.reverse()
                for target in order:
                    proc = procs[target]
                    background = wait_for_quiet(args.settle)
                    cfg = load_config(
                        args,
                        proc,
                        SCENARIOS[scenario],
                        f"/bench-{scenario}",
                        args.duration,
                        args.warmup,
                    )
                    result = run_load(cfg)
                    runs.append(Run(scenario, target, rep, background, result))
                    done += 1
                    print(
                        f"[{done}/{total}] {scenario:<13} {target:<16} "
                        f"{result.ops_per_sec:>10,.0f} ops/s  p99 {_ms(result.latency_us['p99'])} ms  "
                        f"cpu load/server/other {result.client_cpu:.0f}/"
                        f"{result.server_cpu or 0:.0f}/{result.other_cpu or 0:.0f}%  "
                        f"errors {sum(result.errors_total.values())}",
                        flush=True,
                    )
    finally:
        for proc in procs.values():
            proc.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    rows = summarize(runs, args)
    print()
    print(markdown(rows, args, meta))
    if args.save or args.out:
        path = args.out or REPO / "bench" / "results" / f"{started:%Y-%m-%d_%H%M%S}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "meta": meta,
            "params": {k: v for k, v in vars(args).items() if k not in ("out", "save")},
            "summary": rows,
            "runs": [
                {
                    "scenario": r.scenario,
                    "target": r.target,
                    "repeat": r.repeat,
                    "background_busy_before": r.background_before,
                    **r.result.to_json(),
                }
                for r in runs
            ],
        }
        path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
        print(f"\nsaved {path}")
    errors = sum(r["errors"] for r in rows)
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())

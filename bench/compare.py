"""Apache ZooKeeper 3.8 and fastzk side by side: same machine, same load, same run.

One command runs the scenario matrix against both servers and writes JSON, a markdown
table with fastzk ÷ ZooKeeper ratios, and PNG figures::

    python bench/compare.py --save                  # default matrix, about 16 minutes
    python bench/compare.py --scenarios get,set --repeats 1 --no-znodes   # a quick look
    python bench/compare.py --scenarios ensemble-set,failover --repeats 1   # 3-server look
    python bench/compare.py --save --duration 20 --repeats 3 --znodes 1000000   # full

Scenarios (``--scenarios``, default all): get, set, create-delete, mixed (90 % get) --
each as throughput at saturation (closed loop) and as latency at a fixed moderate rate
(open loop, latency from the intended send time; ``--open-only`` skips saturation);
set-10k (setData at 10,000/s, open loop only); kafka and watch-fanout presets, and
watch-fanout-1k / watch-fanout-10k (one writer, 1,000 or 10,000 watchers, two load
processes: notifications/s, notify latency, server CPU per notification); java and
java-set (getData and setData through ZooKeeper's own Java client, against both servers, in
``--java-processes`` JVMs, with the server's CPU time per request); znodes (server RSS
with ``--znodes`` znodes, and the restart time with them). Server RSS is sampled idle and
after every run. 3-server ensembles (ZooKeeper 3.8 ``QuorumPeerMain`` and ``fastzk serve``,
tickTime 2000): ensemble-get, ensemble-set, ensemble-create-delete, ensemble-mixed at
saturation, and setData at 2,000/s open loop (ensemble-set); failover (SIGKILL the leader
under a writer and 20 idle sessions: time to the first write after the kill and until every
session is back, at each ``--failover-ticks`` tickTime).

Why it is built this way:

* **Same tool, parameters and run.** Every load is ``fastzk.load`` with one
  LoadConfig shape; both servers are started here through fastzk/nemesis/servers.py on loopback
  ports, each with its own data dir on the same disk (``--workdir``), fsync on (ZooKeeper's
  default forceSync=yes; fastzk's write-ahead log fdatasyncs every batch), the same zoo.cfg
  keys, and ZooKeeper with the same JVM flags every time (``BENCH_JVM``).
* **Alternation and repeats.** The machine is small and shared: the server order flips
  every repeat, each run waits (bounded) for the machine to calm down, and every run
  records the CPU of the load process, of the server and of everything else ("other"), so
  a noisy number can be recognised as such.
* **A second client.** ``bench/java/ZkLoad.java`` (compiled here with javac against the
  Debian ZooKeeper jar) measures getData with ZooKeeper's reference client on both servers.
* **Ensembles.** Started through fastzk/nemesis/cluster.py (bench/ensembles.py adds the failover
  clients and per-member CPU), 3 voters on loopback, the same zoo.cfg keys, fsync settings and
  JVM flags as standalone, tickTime 2000 (the production default; initLimit 10, syncLimit 5).
  The load uses the connect string of the whole ensemble: its sessions are spread round-robin
  over the three members' client ports, so reads are served by every member and writes are
  forwarded to the leader. Server CPU of an ensemble row is the sum of its three members.
  Failover uses kazoo (reconnect with the same session), the leader is restarted and rejoins
  between rounds, and rounds alternate the server kind like repeats do.
* **Nothing outlives the run.** Every server and client process is stopped by PID in
  ``finally``; every wait is bounded.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import ensembles  # noqa: E402  (bench/ensembles.py: fastzk/nemesis/cluster.py ensembles, failover)
from kazoo.exceptions import KazooException  # noqa: E402
from kazoo.handlers.threading import KazooTimeoutError  # noqa: E402

from fastzk.client.codec import ZKError  # noqa: E402
from fastzk.load import LoadConfig, LoadResult, run_load  # noqa: E402
from fastzk.load.keyspace import cleanup_keyspace, prepare_keyspace  # noqa: E402
from fastzk.nemesis import servers  # noqa: E402  (start/stop by PID)
from fastzk.nemesis.cluster import Cluster, ClusterTimeout  # noqa: E402

# --- the matrix -----------------------------------------------------------------------------------

#: simple-op scenarios: op, open-loop rate (requests/s, a moderate load for both servers)
SIMPLE: dict[str, tuple[str, float, str]] = {
    "get": ("get", 10_000, "get 100 B"),
    "set": ("set", 2_000, "set 100 B"),
    "create-delete": ("create-delete", 2_000, "create+delete 100 B"),
    "mixed": ("mixed:90", 5_000, "90 % get / 10 % set, 100 B"),
}
#: open-loop-only rows: a simple op at a second, higher fixed rate (the write tail there)
OPEN_ONLY: dict[str, tuple[str, float, str]] = {
    "set-10k": ("set", 10_000, "set 100 B"),
}
#: preset scenarios: LoadConfig overrides
PRESET: dict[str, tuple[dict[str, Any], str]] = {
    "kafka": ({"preset": "kafka", "sessions": 8, "keys": 100, "depth": 8},
              "kafka preset: 8 brokers, 100 partitions, 8 in flight each"),
    "watch-fanout": ({"preset": "watch-fanout", "sessions": 51, "keys": 1, "rate": 200.0},
                     "watch fan-out: 1 writer at 200 sets/s, 50 watchers"),
    # at scale: the writer offers 100,000 notifications/s, more than either server delivers
    # here, so notifications/s is a throughput; two load processes share the watchers
    "watch-fanout-1k": ({"preset": "watch-fanout", "sessions": 1001, "keys": 1, "rate": 100.0,
                         "processes": 2},
                        "watch fan-out at scale: 1 writer at 100 sets/s, 1,000 watchers"),
    "watch-fanout-10k": ({"preset": "watch-fanout", "sessions": 10_001, "keys": 1, "rate": 10.0,
                          "processes": 2},
                         "watch fan-out at scale: 1 writer at 10 sets/s, 10,000 watchers"),
}
#: the watch fan-out rows: notifications/s and notify latency
FANOUT = ("watch-fanout", "watch-fanout-1k", "watch-fanout-10k")
#: ZooKeeper's own Java client: scenario -> (op, label)
JAVA: dict[str, tuple[str, str]] = {
    "java": ("get", "get 100 B via ZooKeeper's Java client"),
    "java-set": ("set", "set 100 B via ZooKeeper's Java client"),
}
OTHER = (*JAVA, "znodes")
#: 3-server ensemble scenarios: the simple op of the same name at saturation (closed loop);
#: those in ENSEMBLE_OPEN also at the standalone row's open-loop rate
ENSEMBLE = {f"ensemble-{name}": name for name in SIMPLE}
ENSEMBLE_OPEN = ("ensemble-set",)
#: tickTime of the ensembles of the load rows (the production default)
ENSEMBLE_TICK = 2000
FAILOVER = "failover"
#: the start-up time of each ensemble (first leader with two followers), recorded as a row
START = "ensemble-start"
ALL = [*SIMPLE, *OPEN_ONLY, *PRESET, *OTHER, *ENSEMBLE, FAILOVER]

TARGETS = ("zookeeper", "fastzk")
LABELS = {"zookeeper": "ZooKeeper 3.8", "fastzk": "fastzk"}

#: JVM flags of the benchmark ZooKeeper: zkServer.sh's default heap, JVM defaults otherwise
#: (they replace fastzk/nemesis/servers.py's start-up-optimised flags); the same every run.
BENCH_JVM = ["-Xmx1000m", "-Xshare:auto"]
#: JVM flags of the Java load client.
CLIENT_JVM = ["-Xmx512m", "-Xshare:auto"]
#: zoo.cfg keys given to both servers (fsync is on by default in both).
COMMON_CFG: dict[str, Any] = {"tickTime": 2000, "maxClientCnxns": 0}
#: The wait for a quiet machine before each run: busy threshold (% of one core).
QUIET_BELOW = 30.0
ZK_JARS = ["/usr/share/java/zookeeper.jar", "/usr/share/java/slf4j-nop.jar"]


# --- machine and processes ------------------------------------------------------------------------


def _run(cmd: list[str], timeout: float = 20) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return (p.stdout + p.stderr).strip()


def machine_info(workdir: Path) -> dict[str, Any]:
    """What the numbers were measured on."""
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_kb = int(line.split()[1])
    df = _run(["df", "-T", str(workdir)]).splitlines()
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "java": _run(["java", "-version"]).splitlines()[0] if shutil.which("java") else "none",
        "virtualization": _run(["systemd-detect-virt"]) if shutil.which("systemd-detect-virt")
        else "?",
        "data_disk": df[-1] if df else "?",
    }


def git_revision() -> str:
    rev = _run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = _run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"])
    return rev + ("+dirty" if dirty else "")


def rss_mb(pid: int) -> float | None:
    """Resident set size of *pid* in MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError):
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
    return (b1 - b0) / max(t1 - t0, 1) * 100 * (os.cpu_count() or 1)


def wait_for_quiet(max_wait: float) -> float:
    """Wait (at most *max_wait* s) for the machine to calm down; returns the last level."""
    deadline = time.monotonic() + max_wait
    busy = machine_busy_pct()
    while busy > QUIET_BELOW and time.monotonic() < deadline:
        busy = machine_busy_pct()
    return round(busy, 1)


def server_version(proc: servers.ServerProcess) -> str:
    try:
        text = proc.four_letter_word("srvr").decode(errors="replace")
    except OSError:
        return "?"
    for line in text.splitlines():
        if "version" in line.lower():
            return line.split(":", 1)[-1].strip()
    return "?"


def znode_count(proc: servers.ServerProcess) -> int | None:
    """zk_znode_count from ``mntr`` (both servers count like ZooKeeper)."""
    try:
        text = proc.four_letter_word("mntr", timeout=10).decode(errors="replace")
    except OSError:
        return None
    m = re.search(r"zk_znode_count\s+(\d+)", text)
    return int(m.group(1)) if m else None


def start(kind: str, workdir: Path) -> servers.ServerProcess:
    return servers.start_server(kind, workdir / kind, base_jvm_flags=BENCH_JVM, **COMMON_CFG)


#: --pin: the harness, the load processes and the Java clients on one core, the server on
#: the other, so that a standalone server's own ceiling shows without the load competing
LOAD_CPUS, SERVER_CPUS = {0}, {1}


def pin_server(pid: int) -> None:
    """Every thread of the server onto SERVER_CPUS (threads it starts later inherit it)."""
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                os.sched_setaffinity(int(tid), SERVER_CPUS)


# --- runs ---------------------------------------------------------------------------------------------


@dataclass
class Run:
    """One measured run of one scenario (and mode) against one server."""

    scenario: str
    mode: str  # "closed", "open", "preset", "java", "znodes"
    target: str
    repeat: int
    background_before: float
    rss_after_mb: float | None
    result: dict[str, Any]  # LoadResult.to_json() or the java/znodes record
    loaded: LoadResult | None = field(default=None, repr=False)


def load_config(args: argparse.Namespace, target: servers.ServerProcess | Cluster,
                **kw: Any) -> LoadConfig:
    """The one LoadConfig shape every run uses; scenarios override op/preset/rate/shape.

    An ensemble is loaded through the connect string of all its members (the sessions are
    spread round-robin over them); its CPU is sampled per member (ensembles.EnsembleCpu)."""
    where: dict[str, Any] = (
        {"servers": target.connect_string(), "server_pid": None} if isinstance(target, Cluster)
        else {"host": target.host, "port": target.port, "server_pid": target.pid})
    base: dict[str, Any] = {
        **where, "sessions": args.sessions, "depth": args.depth, "value_size": 100,
        "keys": args.keys, "duration": args.duration, "warmup": args.warmup,
        "processes": args.processes,
    }
    base.update(kw)
    return LoadConfig(**base)


def java_classes(workdir: Path) -> Path | None:
    """Compile bench/java/ZkLoad.java; None (with a message) when javac is missing."""
    if not shutil.which("javac") or not Path(ZK_JARS[0]).exists():
        print("java scenario skipped: javac or the Debian zookeeper jar is missing", flush=True)
        return None
    out = workdir / "java-classes"
    out.mkdir(parents=True, exist_ok=True)
    p = subprocess.run(
        ["javac", "-implicit:none", "-cp", ZK_JARS[0], "-d", str(out),
         str(REPO / "bench" / "java" / "ZkLoad.java")],
        capture_output=True, text=True, timeout=120, check=False,
    )
    if p.returncode != 0:
        print(f"java scenario skipped: javac failed:\n{p.stderr[-2000:]}", flush=True)
        return None
    return out


def _us_per_request(row: dict[str, Any]) -> float | None:
    """Server CPU time per request of a closed-loop row (its CPU % of one core over its
    requests/s)."""
    return _cpu_us_per(row, row.get("ops_per_sec"))


def run_java(args: argparse.Namespace, proc: servers.ServerProcess, classes: Path,
             root: str, op: str) -> dict[str, Any]:
    """getData or setData of 100 B through ZooKeeper's Java client, in ``--java-processes``
    JVMs that share ``--sessions`` (one JVM cannot keep fastzk busy); keys prepared by our
    set-up code. The server's CPU time is sampled when the last JVM opens its measured window
    and when the first closes it, so CPU per request counts neither JVM start-up nor set-up."""
    import threading

    import uvloop

    cfg = load_config(args, proc, op="get", root=root)
    uvloop.run(prepare_keyspace(cfg))
    count = max(1, min(args.java_processes, args.sessions))
    shares = [args.sessions // count + (i < args.sessions % count) for i in range(count)]
    children = [subprocess.Popen(
        ["java", *CLIENT_JVM, "-cp", ":".join([str(classes), *ZK_JARS]), "ZkLoad",
         proc.connect_string, str(n), str(args.depth), str(args.warmup), str(args.duration),
         root, str(args.keys), "30000", op],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        for n in shares]
    lock = threading.Lock()
    marks: dict[str, list[tuple[float, float | None]]] = {"measuring": [], "measured": []}
    results: list[str] = []
    errors: list[str] = []

    def follow(child: subprocess.Popen[str]) -> None:
        assert child.stdout is not None and child.stderr is not None
        for line in child.stdout:
            line = line.strip()
            with lock:
                if line in marks:
                    marks[line].append((time.monotonic(), cpu_seconds(proc.pid)))
                elif line.startswith("{"):
                    results.append(line)
        errors.append(child.stderr.read()[-2000:])

    readers = [threading.Thread(target=follow, args=(c,), daemon=True) for c in children]
    for reader in readers:
        reader.start()
    try:
        for child in children:
            child.wait(timeout=args.warmup + args.duration + 90)
        for reader in readers:
            reader.join(timeout=10)
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=10)
    if any(c.returncode != 0 for c in children) or len(results) != count:
        raise RuntimeError(f"java client failed: {' | '.join(e for e in errors if e)}")
    each = [json.loads(line) for line in results]
    ops = sum(r["ops"] for r in each)
    res: dict[str, Any] = {
        "op": op, "processes": count, "sessions": args.sessions, "depth": args.depth,
        "ops": ops, "ops_per_sec": round(sum(r["ops_per_sec"] for r in each), 1),
        "client_cpu": round(sum(r["client_cpu"] for r in each), 1),
        "errors": {k: sum(r["errors"].get(k, 0) for r in each)
                   for k in sorted({k for r in each for k in r["errors"]})},
        # percentiles of the JVMs weighted by their requests: close to the merged ones, as
        # every JVM runs the same load
        "latency_us": {k: round(sum(r["latency_us"][k] * r["ops"] for r in each) / max(ops, 1),
                                1)
                       for k in ("p50", "p90", "p99", "p99.9", "mean")}
        | {"max": max(r["latency_us"]["max"] for r in each)},
    }
    opened, closed = max(marks["measuring"]), min(marks["measured"])
    if opened[1] is not None and closed[1] is not None and closed[0] > opened[0]:
        window = closed[0] - opened[0]
        res["server_cpu"] = round((closed[1] - opened[1]) / window * 100, 1)
        res["server_us_per_request"] = round(
            (closed[1] - opened[1]) * 1e6 / (res["ops_per_sec"] * window), 2)
    uvloop.run(cleanup_keyspace(cfg))
    return res


def run_znodes(args: argparse.Namespace, kind: str, workdir: Path) -> dict[str, Any]:
    """A fresh server: create N znodes (100 B), RSS, restart time with them, RSS after."""
    n = args.znodes
    proc = start(kind, workdir / f"znodes-{kind}")
    rec: dict[str, Any] = {"znodes": n, "rss_empty_mb": rss_mb(proc.pid)}
    try:
        cfg = load_config(args, proc, op="create:seq", ops=n, depth=64, warmup=0.0,
                          root="/bench-znodes", cleanup=False, duration=3600.0)
        t0 = time.monotonic()
        res = run_load(cfg)
        rec["create_seconds"] = round(time.monotonic() - t0, 1)
        rec["create_per_sec"] = res.ops_per_sec
        rec["create_errors"] = sum(res.errors_total.values())
        time.sleep(2)
        count = znode_count(proc)
        rec["count_before"] = count
        rec["rss_mb"] = rss_mb(proc.pid)
        t_stop = time.monotonic()
        proc.stop(timeout=120)
        rec["stop_seconds"] = round(time.monotonic() - t_stop, 2)
        t_start = time.monotonic()
        proc.restart()  # spawn + wait until `srvr` answers (it does once the data is loaded)
        rec["restart_seconds"] = round(time.monotonic() - t_start, 2)
        after = znode_count(proc)
        rec["count_after"] = after
        rec["rss_after_restart_mb"] = rss_mb(proc.pid)
        if count is None or after is None or after < n:
            rec["restart_skipped"] = (
                f"{LABELS[kind]} came back with {after} znodes of {count}: it does not persist "
                "its data (yet), so there is no restart time to measure"
            )
    finally:
        proc.stop(timeout=60)
    return rec


def order(rep: int) -> list[str]:
    """Server order of repeat (or failover round) *rep*: it flips every time."""
    return list(TARGETS) if rep % 2 == 0 else list(reversed(TARGETS))


def print_run(done: int, total: int, scenario: str, mode: str, target: str,
              result: LoadResult) -> None:
    lat = result.latency_us
    print(
        f"[{done}/{total}] {scenario:<13} {mode:<6} {target:<9} "
        f"{result.ops_per_sec:>10,.0f} req/s  p50 {_ms(lat['p50'])} "
        f"p99 {_ms(lat['p99'])} ms  cpu load/server/other "
        f"{result.client_cpu or 0:.0f}/{result.server_cpu or 0:.0f}/"
        f"{result.other_cpu or 0:.0f}%  errors {sum(result.errors_total.values())}"
        f"  violations {result.violations}",
        flush=True,
    )


# --- 3-server ensembles -------------------------------------------------------------------------


def sessions_per_member(sessions: int) -> list[int]:
    """Load sessions on each member: `fastzk load` spreads them round-robin."""
    return [len(range(i, sessions, ensembles.VOTERS)) for i in range(ensembles.VOTERS)]


def run_ensemble_loads(args: argparse.Namespace, clusters: dict[str, Cluster], names: list[str],
                       runs: list[Run]) -> int:
    """The ensemble-* rows on running ensembles; 1 if a run failed or had errors."""
    if args.prime > 0:
        for cluster in clusters.values():
            run_load(load_config(args, cluster, op="mixed:50", root="/bench-prime",
                                 duration=args.prime, warmup=0.0))
        print(f"primed both ensembles with {args.prime:g} s of mixed load", flush=True)
    plan: list[tuple[str, str, dict[str, Any]]] = []
    for name in names:
        op, rate, _ = SIMPLE[ENSEMBLE[name]]
        plan.append((name, "closed", {"op": op}))
        if name in ENSEMBLE_OPEN:
            plan.append((name, "open", {"op": op, "rate": rate * args.rate_scale}))
    per_member = sessions_per_member(args.sessions)
    status = 0
    total, done = len(plan) * len(TARGETS) * args.repeats, 0
    for rep in range(args.repeats):
        for scenario, mode, kw in plan:
            for target in order(rep):
                cluster = clusters[target]
                background = wait_for_quiet(args.settle)
                leader = cluster.leader()
                cpu = ensembles.EnsembleCpu(cluster)
                try:
                    result = run_load(load_config(args, cluster, root=f"/bench-{scenario}", **kw),
                                      cpu)
                except (RuntimeError, OSError, TimeoutError, ZKError) as e:
                    cluster.keep = True
                    print(f"{scenario} {mode} on the {target} ensemble failed: {e}; its files "
                          f"are kept in {cluster.root}", flush=True)
                    status = 1
                    continue
                usage = cpu.result()
                if usage is not None:
                    result.server_cpu, result.machine_cpu = usage["servers"], usage["machine"]
                after = cluster.leader()
                if after is not leader:
                    print(f"{scenario} {mode} on the {target} ensemble: the leader changed "
                          f"during the run ({leader and leader.sid} -> {after and after.sid})",
                          flush=True)
                result.extra["ensemble"] = {
                    "leader": leader.sid if leader else None,
                    "leader_after": after.sid if after else None,
                    "sessions_by_member": dict(zip([m.sid for m in cluster.members], per_member,
                                                   strict=True)),
                    "cpu_by_member": usage["members"] if usage else None,
                    "rss_mb_by_member": {sid: rss_mb(pid)
                                         for sid, pid in ensembles.member_pids(cluster).items()},
                }
                runs.append(Run(scenario, mode, target, rep, background, None, result.to_json(),
                                result))
                done += 1
                print_run(done, total, scenario, mode, target, result)
                if not result.clean:
                    status = 1
    return status


def run_failover(args: argparse.Namespace, clusters: dict[str, Cluster], tick: int,
                 runs: list[Run]) -> int:
    """``--failover-rounds`` leader kills per kind in alternating order; 1 if one failed."""
    status = 0
    broken: set[str] = set()
    for rnd in range(args.failover_rounds):
        for target in order(rnd):
            if target in broken:
                continue
            cluster = clusters[target]
            background = wait_for_quiet(args.settle)
            try:
                rec = ensembles.failover_round(cluster, args.failover_sessions)
            except (ClusterTimeout, KazooException, KazooTimeoutError, OSError) as e:
                cluster.keep = True
                broken.add(target)
                status = 1
                print(f"failover on the {target} ensemble (tickTime {tick}) failed, no more "
                      f"rounds on it: {e}\nits files are kept in {cluster.root}", flush=True)
                continue
            rec["tick"] = tick
            runs.append(Run(FAILOVER, f"tick{tick}", target, rnd, background, None, rec))
            print(f"[failover tickTime {tick}] {target:<9} first write {rec.get('write_s')} s, "
                  f"all sessions back {rec.get('sessions_s')} s, election {rec['election_s']} s "
                  f"({rec['sessions_on_leader']} of {rec['sessions']} sessions on the killed "
                  f"leader, {rec['sessions_disconnected']} disconnected)", flush=True)
            if rec.get("failed"):
                cluster.keep = True
                status = 1
                print(f"  FAILED: {rec['failed']}; files kept in {cluster.root}", flush=True)
    return status


def run_ensembles(args: argparse.Namespace, meta: dict[str, Any], runs: list[Run]) -> int:
    """Both kinds' ensembles at tickTime ENSEMBLE_TICK for the load rows, and at every
    failover tickTime; the start-up times are rows too. 1 if anything failed."""
    loads = [s for s in args.scenario_list if s in ENSEMBLE]
    ticks = args.failover_ticks if FAILOVER in args.scenario_list else []
    phases = [ENSEMBLE_TICK] if loads else []
    phases += [t for t in ticks if t not in phases]
    status = 0
    for phase, tick in enumerate(phases):
        try:
            with contextlib.ExitStack() as stack:
                clusters: dict[str, Cluster] = {}
                for kind in order(phase):
                    wait_for_quiet(args.settle)
                    t0 = time.monotonic()
                    cluster = stack.enter_context(
                        ensembles.ensemble(kind, tick, COMMON_CFG, BENCH_JVM))
                    seconds = round(time.monotonic() - t0, 2)
                    clusters[kind] = cluster
                    runs.append(Run(START, f"tick{tick}", kind, 0, 0.0, None,
                                    {"tick": tick, "seconds": seconds}))
                    first = cluster.members[0].process
                    if first is not None and kind not in meta["versions"]:
                        meta["versions"][kind] = server_version(first)
                    print(f"started a 3-server {kind} ensemble (tickTime {tick}) in {seconds:.1f} s"
                          f" on {cluster.connect_string()}", flush=True)
                if tick == ENSEMBLE_TICK and loads:
                    status |= run_ensemble_loads(args, clusters, loads, runs)
                if tick in ticks:
                    status |= run_failover(args, clusters, tick, runs)
        except (ClusterTimeout, servers.ServerStartError, RuntimeError, OSError, TimeoutError,
                ZKError) as e:
            print(f"ensembles at tickTime {tick} failed: {e}", flush=True)
            status = 1
    return status


# --- summary and report -------------------------------------------------------------------------


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.fmean(present), 1) if present else None


def summarize(runs: list[Run]) -> list[dict[str, Any]]:
    """One row per (scenario, mode, target): means over repeats, merged latency histograms."""
    from fastzk.load.latency import histogram_summary, merge_histograms

    rows: list[dict[str, Any]] = []
    keys = []
    for r in runs:
        if (r.scenario, r.mode, r.target) not in keys:
            keys.append((r.scenario, r.mode, r.target))
    for scenario, mode, target in keys:
        mine = [r for r in runs if (r.scenario, r.mode, r.target) == (scenario, mode, target)]
        row: dict[str, Any] = {"scenario": scenario, "mode": mode, "target": target,
                               "repeats": len(mine),
                               "rss_after_mb": max((r.rss_after_mb or 0) for r in mine) or None}
        res = [r.result for r in mine]
        if mode in ("closed", "open", "preset"):
            row["ops_per_sec"] = round(statistics.fmean(x["ops_per_sec"] for x in res), 1)
            row["ops_per_sec_runs"] = [x["ops_per_sec"] for x in res]
            row["latency_us"] = histogram_summary(merge_histograms([x["histogram"] for x in res]))
            row["errors"] = sum(sum(x["errors_total"].values()) for x in res)
            row["violations"] = sum(x["check"].get("violations", 0) for x in res)
            row["client_cpu"] = _mean([x["client_cpu"] for x in res])
            row["server_cpu"] = _mean([x["server_cpu"] for x in res])
            row["other_cpu"] = _mean([x["other_cpu"] for x in res])
            if mode == "open":
                row["rate"] = res[0]["rate"]
                row["service_us"] = {
                    k: round(statistics.fmean(x["service_us"][k] for x in res), 1)
                    for k in ("p50", "p99", "p99.9", "max")
                }
            kinds: dict[str, Any] = {}
            for kind in res[0]["by_kind"]:
                hs = [x["by_kind"][kind]["histogram"] for x in res if kind in x["by_kind"]]
                kinds[kind] = {
                    "per_sec": round(statistics.fmean(x["by_kind"][kind]["per_sec"] for x in res
                                                      if kind in x["by_kind"]), 1),
                    "latency_us": histogram_summary(merge_histograms(hs)),
                }
            row["by_kind"] = kinds
            row["extra"] = res[-1].get("extra", {})
        elif mode == "java":
            row["ops_per_sec"] = round(statistics.fmean(x["ops_per_sec"] for x in res), 1)
            row["ops_per_sec_runs"] = [x["ops_per_sec"] for x in res]
            row["latency_us"] = {k: round(statistics.fmean(x["latency_us"][k] for x in res), 1)
                                 for k in ("p50", "p90", "p99", "p99.9", "max", "mean")}
            row["errors"] = sum(sum(x["errors"].values()) for x in res)
            row["client_cpu"] = _mean([x["client_cpu"] for x in res])
            row["server_cpu"] = _mean([x.get("server_cpu") for x in res])
            row["server_us_per_request"] = _mean([x.get("server_us_per_request") for x in res])
            row["processes"], row["sessions"] = res[0]["processes"], res[0]["sessions"]
            row["other_cpu"] = None
        elif scenario == FAILOVER:
            row["tick"], row["sessions"] = res[0]["tick"], res[0]["sessions"]
            for key in ("write_s", "sessions_s", "election_s"):
                vals = [x[key] for x in res if x.get(key) is not None]
                row[key] = ({"median": round(statistics.median(vals), 3), "max": max(vals),
                             "runs": vals} if vals else None)
            row["failed"] = [x["failed"] for x in res if x.get("failed")]
            row["rounds"] = [[x.get("write_s"), x.get("sessions_s"), x["election_s"]] for x in res]
        else:  # znodes, ensemble start
            row.update(res[-1])
        rows.append(row)
    return rows


def _ms(us: float | None) -> str:
    return "—" if us is None else f"{us / 1000:.2f}"


def _ratio(fz: float | None, zk: float | None, digits: int = 2) -> str:
    if not fz or not zk:
        return "—"
    return f"{fz / zk:.{digits}f}×"


def headline(rows: list[dict[str, Any]]) -> list[tuple[str, str, str, str, str]]:
    """(scenario, metric, ZooKeeper, fastzk, ratio) rows of the main table."""
    by = {(r["scenario"], r["mode"], r["target"]): r for r in rows}
    out: list[tuple[str, str, str, str, str]] = []

    def pair(scenario: str, mode: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        zk, fz = by.get((scenario, mode, "zookeeper")), by.get((scenario, mode, "fastzk"))
        return (zk, fz) if zk and fz else None

    def op_rows(name: str, title: str) -> None:
        p = pair(name, "closed")
        if p:
            zk, fz = p
            out.append((f"{title}, saturation", "requests/s", f"{zk['ops_per_sec']:,.0f}",
                        f"{fz['ops_per_sec']:,.0f}", f"**{_ratio(fz['ops_per_sec'], zk['ops_per_sec'])}**"))
            for q in ("p50", "p99"):
                out.append(("", f"{q} ms", _ms(zk["latency_us"][q]), _ms(fz["latency_us"][q]),
                            _ratio(fz["latency_us"][q], zk["latency_us"][q])))
            a, b = _us_per_request(zk), _us_per_request(fz)
            if a and b:
                out.append(("", "server CPU µs per request", f"{a:.1f}", f"{b:.1f}",
                            f"{_ratio(b, a)} ({a / b:.1f}x less)"))
        p = pair(name, "open")
        if p:
            zk, fz = p
            for q in ("p50", "p99", "p99.9", "max"):
                out.append((f"{title}, {zk['rate']:,.0f}/s open loop" if q == "p50" else "",
                            f"{q} ms", _ms(zk["latency_us"][q]), _ms(fz["latency_us"][q]),
                            _ratio(fz["latency_us"][q], zk["latency_us"][q])))

    for name, (_op, _rate, title) in {**SIMPLE, **OPEN_ONLY}.items():
        op_rows(name, title)
    p = pair("kafka", "preset")
    if p:
        zk, fz = p
        out.append((PRESET["kafka"][1], "requests/s", f"{zk['ops_per_sec']:,.0f}",
                    f"{fz['ops_per_sec']:,.0f}", f"**{_ratio(fz['ops_per_sec'], zk['ops_per_sec'])}**"))
        for kind, q in (("isr-update", "p99"), ("config-notify", "p50"), ("config-notify", "p99")):
            a = zk["by_kind"].get(kind, {}).get("latency_us", {}).get(q)
            b = fz["by_kind"].get(kind, {}).get("latency_us", {}).get(q)
            out.append(("", f"{kind} {q} ms", _ms(a), _ms(b), _ratio(b, a)))
    for name in FANOUT:
        p = pair(name, "preset")
        if not p:
            continue
        zk, fz = p
        a, b = zk["by_kind"].get("notify", {}), fz["by_kind"].get("notify", {})
        out.append((PRESET[name][1], "notifications/s",
                    f"{a.get('per_sec', 0):,.0f}", f"{b.get('per_sec', 0):,.0f}",
                    _ratio(b.get("per_sec"), a.get("per_sec"))))
        for q in ("p50", "p99", "p99.9"):
            x = a.get("latency_us", {}).get(q)
            y = b.get("latency_us", {}).get(q)
            out.append(("", f"notify {q} ms", _ms(x), _ms(y), _ratio(y, x)))
        # what one notification (with its watcher's re-arming getData) costs the server,
        # whether or not the load processes bound the rate
        x, y = _cpu_us_per(zk, a.get("per_sec")), _cpu_us_per(fz, b.get("per_sec"))
        out.append(("", "server CPU µs per notification", f"{x:.1f}" if x else "—",
                    f"{y:.1f}" if y else "—", _ratio(y, x)))
    for scenario, (_, label) in JAVA.items():
        p = pair(scenario, "java")
        if not p:
            continue
        zk, fz = p
        out.append((f"{label} ({fz['processes']} JVMs, {fz['sessions']} sessions)", "requests/s",
                    f"{zk['ops_per_sec']:,.0f}", f"{fz['ops_per_sec']:,.0f}",
                    _ratio(fz["ops_per_sec"], zk["ops_per_sec"])))
        out.append(("", "p99 ms", _ms(zk["latency_us"]["p99"]), _ms(fz["latency_us"]["p99"]),
                    _ratio(fz["latency_us"]["p99"], zk["latency_us"]["p99"])))
        a, b = zk.get("server_us_per_request"), fz.get("server_us_per_request")
        if a and b:
            out.append(("", "server CPU µs per request", f"{a:.1f}", f"{b:.1f}",
                        f"{_ratio(b, a)} ({a / b:.1f}x less)"))
    p = pair("get", "closed")
    if p and p[0].get("client_cpu") and p[1].get("client_cpu"):
        zk, fz = p
        out.append(("`fastzk load` itself: requests per CPU-second of the load process "
                    "(get, closed loop)", "requests/CPU-s",
                    f"{zk['ops_per_sec'] / (zk['client_cpu'] / 100):,.0f}",
                    f"{fz['ops_per_sec'] / (fz['client_cpu'] / 100):,.0f}", "—"))
    idle = {r["target"]: r.get("rss_idle_mb") for r in rows if r["mode"] == "idle"}
    if idle.get("zookeeper") and idle.get("fastzk"):
        out.append(("server RSS, idle", "MB", f"{idle['zookeeper']:.0f}", f"{idle['fastzk']:.0f}",
                    _ratio(idle["fastzk"], idle["zookeeper"])))
    loaded = {t: max(((r.get("rss_after_mb") or 0) for r in rows
                      if r["target"] == t and r["mode"] in ("closed", "open", "preset")), default=0)
              for t in TARGETS}
    if all(loaded.values()):
        out.append(("server RSS, after the load runs (max)", "MB", f"{loaded['zookeeper']:.0f}",
                    f"{loaded['fastzk']:.0f}", _ratio(loaded["fastzk"], loaded["zookeeper"])))
    p = pair("znodes", "znodes")
    if p:
        zk, fz = p
        n = f"{zk['znodes']:,}"
        out.append((f"{n} znodes (100 B)", "RSS MB", f"{zk['rss_mb']:.0f}", f"{fz['rss_mb']:.0f}",
                    _ratio(fz["rss_mb"], zk["rss_mb"])))
        out.append(("", "create rate /s", f"{zk['create_per_sec']:,.0f}",
                    f"{fz['create_per_sec']:,.0f}", _ratio(fz["create_per_sec"], zk["create_per_sec"])))
        zr = None if zk.get("restart_skipped") else zk.get("restart_seconds")
        fr = None if fz.get("restart_skipped") else fz.get("restart_seconds")
        out.append(("", "restart s (until serving)", f"{zr:.1f}" if zr else "skipped",
                    f"{fr:.1f}" if fr else "skipped", _ratio(fr, zr)))
    for name, simple in ENSEMBLE.items():
        op_rows(name, f"3 servers: {SIMPLE[simple][2]}")
    ticks = sorted({r["tick"] for r in rows if r["scenario"] in (FAILOVER, START)}, reverse=True)
    for tick in ticks:
        p = pair(START, f"tick{tick}")
        if p:
            zk, fz = p
            out.append((f"3-server ensemble start-up, tickTime {tick}",
                        "s until a leader and 2 followers", f"{zk['seconds']:.1f}",
                        f"{fz['seconds']:.1f}", _ratio(fz["seconds"], zk["seconds"])))
        p = pair(FAILOVER, f"tick{tick}")
        if p:
            zk, fz = p
            for i, (key, metric) in enumerate((
                    ("write_s", "first write after the kill, s"),
                    ("sessions_s", f"all {zk['sessions']} sessions back, s"),
                    ("election_s", "new leader in srvr, s"))):
                a, b = zk[key], fz[key]
                out.append((f"failover: SIGKILL the leader, tickTime {tick}" if i == 0 else "",
                            f"{metric}: median (max)", _spread(zk, key), _spread(fz, key),
                            _ratio(b and b["median"], a and a["median"])))
    return out


def _cpu_us_per(row: dict[str, Any], per_sec: float | None) -> float | None:
    """Server CPU-µs per event from a row's server CPU (% of one core) and event rate."""
    cpu = row.get("server_cpu")
    return cpu / 100 / per_sec * 1e6 if cpu and per_sec else None


def _spread(row: dict[str, Any], key: str) -> str:
    """``median (max)`` of a failover time over its rounds, with the failed rounds."""
    value = row[key]
    text = "—" if value is None else f"{value['median']:.2f} ({value['max']:.2f})"
    return text + (f", {len(row['failed'])} failed" if row["failed"] else "")


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any], args: argparse.Namespace) -> str:
    m = meta["machine"]
    lines = [
        f"Measured {meta['date']} on {m['cores']} cores ({m['cpu_model']}, {m['virtualization']}), "
        f"{m['memory_gb']} GB, Linux {m['kernel']}, Python {m['python']}, {m['java']}; "
        f"fastzk {meta['git']}; ZooKeeper {meta['versions'].get('zookeeper', '?')}. Standalone "
        "servers on loopback (and 3-server ensembles: the '3 servers', start-up and failover "
        "rows, see the notes), data dirs on the same disk "
        f"({m['data_disk'].split()[1] if len(m['data_disk'].split()) > 1 else '?'}),"
        f" fsync on in both; {meta['fastzk_persistence']}. Load: `fastzk load`, "
        f"{args.sessions} sessions x {args.depth} in flight (closed loop) or a fixed rate (open "
        f"loop, latency from the intended send time), {args.keys} keys, "
        f"{args.duration:g} s measured after {args.warmup:g} s warm-up, {args.repeats} "
        f"repeat(s) in alternating server order. "
        + ("Pinned (--pin): the load on core 0, each standalone server on core 1 (a "
           "multi-threaded ZooKeeper gets one core too); ensembles unpinned."
           if args.pin else
           f"Client, server and everything else share the {m['cores']} cores."),
        "",
        "| scenario | metric | ZooKeeper 3.8 | fastzk | fastzk ÷ ZooKeeper |",
        "|---|---|---:|---:|---:|",
    ]
    for scen, metric, zk, fz, ratio in headline(rows):
        lines.append(f"| {scen} | {metric} | {zk} | {fz} | {ratio} |")
    lines += ["", "Per run: requests/s of each repeat, CPU % of one core (load / server / "
              "other), errors.", "",
              "| scenario | mode | server | requests/s per run | CPU load / server / other "
              "| errors |", "|---|---|---|---|---|---:|"]
    for r in rows:
        if r["mode"] in ("idle", "znodes") or r["scenario"] in (FAILOVER, START):
            continue
        cpu = " / ".join("-" if r.get(k) is None else f"{r[k]:.0f}"
                         for k in ("client_cpu", "server_cpu", "other_cpu"))
        runs = ", ".join(f"{v / 1000:.1f}k" for v in r.get("ops_per_sec_runs", []))
        mode = r["mode"] + (f" {r['rate']:,.0f}/s" if r.get("rate") else "")
        lines.append(f"| {r['scenario']} | {mode} | {LABELS[r['target']]} | {runs} | {cpu} | "
                     f"{r.get('errors', 0)} |")
    skipped = [r["restart_skipped"] for r in rows if r.get("restart_skipped")]
    lines += [""] + [f"- restart: {s}" for s in skipped]
    lines += [
        "- Open-loop latency counts from each request's intended send time (no coordinated "
        "omission); it includes the load process's own scheduling delay (about 0.1-0.2 ms on "
        "this machine), the same for both servers. Service times are in the JSON.",
        "- The Java-client row uses ZooKeeper's own client (bench/java/ZkLoad.java) on both "
        "servers: its requests/s is bounded by the Java client's CPU, which shows how much "
        "faster `fastzk load` is than a Java client, and that it flatters neither server.",
        "- 'other' CPU is everything on the machine but the load process and the server "
        "(neighbours, kernel); large values mean a noisy run.",
    ]
    if any(r["scenario"] in ENSEMBLE for r in rows):
        spread = sessions_per_member(args.sessions)
        lines.append(
            f"- 3 servers: 3-voter ensembles (ZooKeeper's QuorumPeerMain, `fastzk serve`) started "
            f"by fastzk/nemesis/cluster.py, tickTime {ENSEMBLE_TICK} (the production default), initLimit "
            "10, syncLimit 5, the same fsync settings and JVM flags as standalone (ZooKeeper "
            "logging at INFO, as fastzk/nemesis/cluster.py sets it), data dirs in the system temp dir; "
            "both kinds' ensembles are up during every run (six servers and the load on "
            f"{m['cores']} cores). The load uses the connect string of the whole "
            f"ensemble: its {args.sessions} sessions are spread round-robin over the three "
            f"members' client ports ({'/'.join(map(str, spread))}), so reads are served by every "
            "member and writes are forwarded to the leader. Server CPU is the sum of the three "
            "members (per member, and the leader, in the JSON).")
    if any(r["scenario"] == START for r in rows):
        lines.append("- start-up: from spawning the three members until `srvr` shows a leader "
                     "and two followers (polled every 0.1 s).")
    failover = [r for r in rows if r["scenario"] == FAILOVER]
    if failover:
        lines.append(
            "- failover: one kazoo writer session (the whole connect string, the leader first) "
            "does synchronous setData of 100 B in a loop, each wait at most "
            f"{ensembles.WRITE_WAIT:g} s; {failover[0]['sessions']} idle kazoo sessions, session "
            "i trying member i mod 3 first (about a third on the leader); session timeout "
            f"{ensembles.SESSION_TIMEOUT:g} s requested (the servers allow at most 20 ticks: "
            + ", ".join(f"{min(ensembles.SESSION_TIMEOUT, 20 * r['tick'] / 1000):g} s at "
                        f"tickTime {r['tick']}" for r in failover if r["target"] == TARGETS[0])
            + "); kazoo reconnects with a "
            f"{ensembles.RECONNECT['delay']:g}-{ensembles.RECONNECT['max_delay']:g} s back-off. "
            "The leader is SIGKILLed; 'first write' is the reply to the first setData issued "
            "after the kill, 'sessions back' the last idle session CONNECTED again with its own "
            f"session id (and then unbroken for {ensembles.STABLE:g} s), 'new leader in srvr' "
            "the survivors' `srvr` polled every 0.1 s. The killed member is restarted and "
            f"rejoins before the next round; {args.failover_rounds} round(s) per kind, in "
            "alternating order.")
        for r in failover:
            rounds = ", ".join("/".join("—" if v is None else f"{v:.2f}" for v in rnd)
                               for rnd in r["rounds"])
            lines.append(f"- failover rounds, {LABELS[r['target']]}, tickTime {r['tick']} "
                         f"(s from the kill: first write / sessions back / new leader): {rounds}"
                         + "".join(f"; FAILED: {f}" for f in r["failed"]))
    return "\n".join(lines)


def plots(runs: list[Run], out_dir: Path) -> list[str]:
    """One PNG per scenario and mode: both servers' latency over time and distributions."""
    try:
        from fastzk.load.report import plot_runs
    except ImportError:
        return []
    made = []
    keys = []
    for r in runs:
        if r.loaded is not None and (r.scenario, r.mode) not in keys:
            keys.append((r.scenario, r.mode))
    for scenario, mode in keys:
        picked = []
        for target in TARGETS:
            mine = [r for r in runs if (r.scenario, r.mode, r.target) == (scenario, mode, target)
                    and r.loaded is not None]
            if mine:
                picked.append((LABELS[target], mine[-1].loaded))
        if len(picked) < 2:
            continue
        kind = "notify" if scenario in FANOUT else {"kafka": "config-notify"}.get(scenario)
        name = f"{scenario}-{mode}.png"
        title = f"{scenario} ({mode}{' loop' if mode in ('open', 'closed') else ''}), last repeat"
        try:
            plot_runs(picked, str(out_dir / name), title, kind)  # type: ignore[arg-type]
        except ImportError:
            return made
        made.append(name)
    return made


# --- main ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--scenarios", default=",".join(ALL),
                   help=f"comma list of {', '.join(ALL)} (default: all)")
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds per run")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per run")
    p.add_argument("--repeats", type=int, default=2, help="runs per scenario and server")
    p.add_argument("--sessions", type=int, default=8)
    p.add_argument("--depth", type=int, default=32, help="closed loop: requests in flight/session")
    p.add_argument("--keys", type=int, default=1000)
    p.add_argument("--processes", type=int, default=1, help="load processes per run")
    p.add_argument("--pin", action="store_true",
                   help="standalone rows: the load on core 0, the server on core 1 (needs 2+ "
                        "cores; ensembles are not pinned)")
    p.add_argument("--java-processes", type=int, default=2,
                   help="JVMs of the Java-client rows, sharing --sessions")
    p.add_argument("--rate-scale", type=float, default=1.0,
                   help="multiply the open-loop rates (get 10k/s, set 2k/s, create-delete 2k/s, "
                   "mixed 5k/s, set-10k 10k/s)")
    p.add_argument("--open-only", action="store_true",
                   help="simple ops: only the fixed-rate (open loop) rows, no saturation rows")
    p.add_argument("--znodes", type=int, default=1_000_000,
                   help="znodes for the RSS/restart scenario (default %(default)s)")
    p.add_argument("--no-znodes", action="store_true", help="skip the znodes scenario")
    p.add_argument("--failover-rounds", type=int, default=3,
                   help="leader kills per server kind and tickTime (default %(default)s)")
    p.add_argument("--failover-sessions", type=int, default=20,
                   help="idle sessions connected while the leader dies (default %(default)s)")
    p.add_argument("--failover-ticks", default="2000,200",
                   help="tickTimes (ms) of the failover ensembles (default %(default)s)")
    p.add_argument("--prime", type=float, default=5.0,
                   help="seconds of unmeasured mixed load per server first (JIT warm-up; both)")
    p.add_argument("--settle", type=float, default=3.0,
                   help=f"max seconds to wait before each run for machine CPU < {QUIET_BELOW:.0f}%%")
    p.add_argument("--workdir", type=Path, default=None,
                   help="parent of the servers' data dirs (default: a temp dir; same disk for both)")
    p.add_argument("--save", action="store_true",
                   help="write bench/results/<date>.{json,md} and <date>/*.png")
    p.add_argument("--out", type=Path, default=None, help="results directory (implies --save)")
    p.add_argument("--update-readme", action="store_true",
                   help="replace the README's benchmark table with this run's")
    args = p.parse_args(argv)
    names = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    if args.no_znodes and "znodes" in names:
        names.remove("znodes")
    unknown = [s for s in names if s not in ALL]
    if unknown or not names:
        p.error(f"unknown scenario(s) {unknown}; choose from {', '.join(ALL)}")
    if args.repeats < 1 or args.duration <= 0:
        p.error("--repeats must be >= 1 and --duration > 0")
    try:
        args.failover_ticks = [int(t) for t in args.failover_ticks.split(",") if t.strip()]
    except ValueError:
        p.error(f"--failover-ticks must be a comma list of integers, got {args.failover_ticks!r}")
    if (not args.failover_ticks or min(args.failover_ticks) < 1 or args.failover_rounds < 1
            or args.failover_sessions < 1):
        p.error("--failover-ticks, --failover-rounds and --failover-sessions must be >= 1")
    if args.pin and len(os.sched_getaffinity(0)) < 2:
        p.error("--pin needs two cores")
    args.scenario_list = names
    return args


def update_readme(table: str, rel_json: str) -> None:
    readme = REPO / "README.md"
    text = readme.read_text()
    begin, end = "<!-- bench:begin -->", "<!-- bench:end -->"
    if begin not in text or end not in text:
        print("README has no bench markers; not updated", flush=True)
        return
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    body = f"{begin}\n{table}\n\nRaw results: `{rel_json}`.\n{end}"
    readme.write_text(head + body + tail)
    print("README benchmark table updated", flush=True)


def raise_fd_limit() -> None:
    """Soft RLIMIT_NOFILE up to the hard limit (inherited by the servers and load processes):
    the 10,000-watcher fan-out holds that many connections on each side."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_fd_limit()
    if args.pin:
        os.sched_setaffinity(0, LOAD_CPUS)  # inherited by the load processes and Java clients
    started = dt.datetime.now()
    workdir = Path(tempfile.mkdtemp(prefix="fastzk-bench-", dir=args.workdir))
    procs: dict[str, servers.ServerProcess] = {}
    runs: list[Run] = []
    rows_extra: list[dict[str, Any]] = []
    meta: dict[str, Any] = {
        "date": started.isoformat(timespec="seconds"),
        "git": git_revision(),
        "machine": machine_info(workdir),
        "loadavg_before": os.getloadavg(),
        "zk_jvm": BENCH_JVM,
        "client_jvm": CLIENT_JVM,
        "common_cfg": COMMON_CFG,
        "ensemble": {"voters": ensembles.VOTERS, "tick": ENSEMBLE_TICK,
                     "failover_ticks": args.failover_ticks,
                     "failover_session_timeout_s": ensembles.SESSION_TIMEOUT,
                     "failover_write_wait_s": ensembles.WRITE_WAIT,
                     "failover_reconnect": ensembles.RECONNECT},
        "versions": {},
        "fastzk_persistence": "fastzk persistence unknown",
    }
    simple = [s for s in args.scenario_list if s in SIMPLE or s in OPEN_ONLY]
    presets = [s for s in args.scenario_list if s in PRESET]
    status = 0
    try:
        if simple or presets or any(s in JAVA for s in args.scenario_list):
            for kind in TARGETS:
                procs[kind] = start(kind, workdir)
                if args.pin:
                    pin_server(procs[kind].pid)
                meta["versions"][kind] = server_version(procs[kind])
                print(f"started {kind}: pid {procs[kind].pid} on {procs[kind].connect_string}",
                      flush=True)
            time.sleep(2)
            for kind, proc in procs.items():
                rows_extra.append({"scenario": "rss", "mode": "idle", "target": kind,
                                   "rss_idle_mb": rss_mb(proc.pid)})
            if args.prime > 0:
                for proc in procs.values():
                    run_load(load_config(args, proc, op="mixed:50", root="/bench-prime",
                                         duration=args.prime, warmup=0.0))
                print(f"primed both servers with {args.prime:g} s of mixed load", flush=True)
        plan: list[tuple[str, str, dict[str, Any]]] = []
        for name in simple:
            op, rate, _ = SIMPLE[name] if name in SIMPLE else OPEN_ONLY[name]
            if name in SIMPLE and not args.open_only:
                plan.append((name, "closed", {"op": op}))
            plan.append((name, "open", {"op": op, "rate": rate * args.rate_scale}))
        for name in presets:
            plan.append((name, "preset", dict(PRESET[name][0])))
        total = len(plan) * len(TARGETS) * args.repeats
        done = 0
        for rep in range(args.repeats):
            for scenario, mode, kw in plan:
                for target in order(rep):
                    proc = procs[target]
                    background = wait_for_quiet(args.settle)
                    cfg = load_config(args, proc, root=f"/bench-{scenario}", **kw)
                    try:
                        result = run_load(cfg)
                    except RuntimeError as e:
                        print(f"{scenario} {mode} on {target} failed: {e}", flush=True)
                        status = 1
                        continue
                    runs.append(Run(scenario, mode, target, rep, background, rss_mb(proc.pid),
                                    result.to_json(), result))
                    done += 1
                    print_run(done, total, scenario, mode, target, result)
                    if not result.clean:
                        status = 1
        java = [s for s in args.scenario_list if s in JAVA]
        classes = java_classes(workdir) if java else None
        if classes is not None:
            for rep in range(args.repeats):
                for scenario in java:
                    op = JAVA[scenario][0]
                    for target in order(rep):
                        background = wait_for_quiet(args.settle)
                        try:
                            res = run_java(args, procs[target], classes, f"/bench-{scenario}",
                                           op)
                        except (RuntimeError, subprocess.TimeoutExpired) as e:
                            print(f"{scenario} on {target} failed: {e}", flush=True)
                            status = 1
                            continue
                        runs.append(Run(scenario, "java", target, rep, background,
                                        rss_mb(procs[target].pid), res))
                        print(f"[{scenario}] {target:<9} {res['ops_per_sec']:>10,.0f} req/s  "
                              f"p99 {_ms(res['latency_us']['p99'])} ms  server "
                              f"{res.get('server_us_per_request', 0):.1f} µs/request  java "
                              f"client cpu {res['client_cpu']:.0f}%", flush=True)
        for proc in procs.values():
            proc.stop()
        if "znodes" in args.scenario_list:
            for kind in TARGETS:
                wait_for_quiet(args.settle)
                print(f"znodes: creating {args.znodes:,} znodes on a fresh {kind}...", flush=True)
                try:
                    rec = run_znodes(args, kind, workdir)
                except (RuntimeError, servers.ServerStartError, OSError) as e:
                    print(f"znodes on {kind} failed: {e}", flush=True)
                    status = 1
                    continue
                runs.append(Run("znodes", "znodes", kind, 0, 0.0, rec.get("rss_mb"), rec))
                print(f"[znodes] {kind}: {json.dumps(rec)}", flush=True)
                if kind == "fastzk":
                    meta["fastzk_persistence"] = (
                        "fastzk did not persist its data across a restart in this run"
                        if rec.get("restart_skipped") else
                        "fastzk with its write-ahead log (fdatasync per batch) and snapshots")
        if any(s in ENSEMBLE or s == FAILOVER for s in args.scenario_list):
            status |= run_ensembles(args, meta, runs)
    finally:
        for proc in procs.values():
            proc.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    meta["loadavg_after"] = os.getloadavg()
    rows = rows_extra + summarize(runs)
    table = markdown(rows, meta, args)
    print()
    print(table)
    if args.save or args.out:
        out_dir = args.out or REPO / "bench" / "results"
        stamp = f"{started:%Y-%m-%d_%H%M%S}"
        fig_dir = out_dir / stamp
        fig_dir.mkdir(parents=True, exist_ok=True)
        figures = plots(runs, fig_dir)
        payload = {
            "meta": meta,
            "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "summary": rows,
            "runs": [
                {"scenario": r.scenario, "mode": r.mode, "target": r.target, "repeat": r.repeat,
                 "background_busy_before": r.background_before, "rss_after_mb": r.rss_after_mb,
                 **r.result}
                for r in runs
            ],
        }
        json_path = out_dir / f"{stamp}.json"
        json_path.write_text(json.dumps(payload, indent=1, default=str) + "\n")
        md = table + "\n\nFigures: " + ", ".join(f"[{f}]({stamp}/{f})" for f in figures) + "\n"
        (out_dir / f"{stamp}.md").write_text(md)
        print(f"\nsaved {json_path}, {stamp}.md and {len(figures)} figures in {fig_dir}")
        if args.update_readme:
            rel = json_path.relative_to(REPO) if json_path.is_relative_to(REPO) else json_path
            figs = " ".join(f"[{f}](bench/results/{stamp}/{f})" for f in figures)
            update_readme(table + (f"\n\nFigures: {figs}" if figs else ""), str(rel))
    return status


if __name__ == "__main__":
    raise SystemExit(main())

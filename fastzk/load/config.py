"""What a `fastzk load` run is asked to do (:class:`LoadConfig`) and what it measured
(:class:`LoadResult`): plain records that every part of the load generator imports.

They live in a module of their own, importing only the workload definitions, so that the
orchestration (``run``), the presets and the report all depend on them and on nothing of
each other: no import cycle, and a spawned load process can rebuild its LoadConfig from a
dict without importing the command line.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from fastzk.load.workload import CHECK_HEAD, PRESETS, parse_op_spec


@dataclass
class LoadConfig:
    """What to run. Defaults are the project's reference scenario (8 sessions x 32)."""

    host: str = "127.0.0.1"
    port: int = 2181
    sessions: int = 8
    depth: int = 32
    op: str = "get"
    value_size: int = 100
    keys: int = 1000
    duration: float = 10.0
    warmup: float = 2.0
    processes: int = 1
    root: str = "/fastzk-load"
    session_timeout_ms: int = 30_000
    seed: int = 1
    #: PID of the server process on this machine, to sample its CPU time (optional).
    server_pid: int | None = None
    #: Create the key space before the run (idempotent) / delete it afterwards.
    setup: bool = True
    cleanup: bool = True
    connect_timeout: float = 10.0
    #: TLS (the server's secureClientPort): CA file to verify it, and a client certificate
    #: and key for mutual TLS (empty: plaintext / no client certificate).
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    #: A connect string ``host:port[,host:port...]``; overrides host/port when set.
    servers: str = ""
    #: A workload preset (kafka, lock, watch-fanout, session-churn) instead of ``op``.
    preset: str | None = None
    #: Open loop: total arrival rate, requests/s (None: closed loop).
    rate: float | None = None
    #: Stop after this many operations (replies) instead of ``duration``.
    ops: int | None = None
    #: Verify every reply (see workload.py); violations fail the run.
    check: bool = False
    #: children op: children under each key; multi op: setData ops per multi.
    children: int = 10
    multi_size: int = 2
    #: Open loop: requests in flight per session at most (the rest wait, still timed).
    max_inflight: int = 10_000
    #: session-churn: percent of sessions that are abandoned to expire instead of closed.
    expire_pct: int = 10
    #: Test hook: corrupt every Nth value read before checking it (0: off).
    corrupt_every: int = 0
    #: Unique per run (names of created nodes); set automatically.
    run_tag: str = ""

    def endpoints(self) -> list[tuple[str, int]]:
        """(host, port) of every server sessions connect to (round-robin)."""
        if not self.servers:
            return [(self.host, self.port)]
        return parse_connect_string(self.servers)

    def validate(self) -> None:
        """Reject nonsense early, before any connection is made."""
        if self.preset is not None:
            if self.preset not in PRESETS:
                raise ValueError(f"unknown preset {self.preset!r}; choose from {', '.join(PRESETS)}")
        else:
            spec = parse_op_spec(self.op)
            if self.check and spec.writes_keys and self.keys < self.sessions:
                raise ValueError(
                    "--check with writes needs --keys >= --sessions (each key has one owner)"
                )
        if self.sessions < 1 or self.depth < 1 or self.keys < 1 or self.processes < 1:
            raise ValueError("sessions, depth, keys and processes must be >= 1")
        if self.duration <= 0 or self.warmup < 0 or self.value_size < 0:
            raise ValueError("duration must be > 0, warmup and value size >= 0")
        if self.check and self.value_size < CHECK_HEAD:
            raise ValueError(f"--check needs --value-size >= {CHECK_HEAD} (values carry a tag)")
        if self.rate is not None and self.rate <= 0:
            raise ValueError("--rate must be > 0")
        if self.ops is not None and self.ops < 1:
            raise ValueError("--ops must be >= 1")
        if not self.root.startswith("/") or self.root == "/" or self.root.endswith("/"):
            raise ValueError(f"root must be an absolute znode path other than /, got {self.root!r}")
        self.endpoints()

    @property
    def workload(self) -> str:
        return f"preset:{self.preset}" if self.preset else parse_op_spec(self.op).label


def parse_connect_string(text: str) -> list[tuple[str, int]]:
    """``host:port,host:port`` (a ZooKeeper connect string without chroot)."""
    if "/" in text:
        raise ValueError("a chroot in the connect string is not supported; use --root")
    out = []
    for part in text.split(","):
        host, _, port = part.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"server must be host:port, got {part!r}")
        out.append((host.strip("[]"), int(port)))
    return out


@dataclass
class LoadResult:
    """Outcome of one run. Latencies in microseconds; CPU in percent of one core."""

    config: dict[str, Any]
    ops: int  # requests answered in the measured window (errors included)
    elapsed: float  # measured window, seconds
    ops_per_sec: float  # successful replies per second
    latency_us: dict[str, float]  # p50, p90, p99, p99.9, max, mean
    errors: dict[str, int]  # measured window, "NAME(code)" -> count
    errors_total: dict[str, int]  # whole run including warm-up and drain
    client_cpu: float | None = None
    server_cpu: float | None = None
    machine_cpu: float | None = None  # all processes on the machine
    cores: int = field(default_factory=lambda: os.cpu_count() or 1)
    histogram: str = ""  # HDR histogram, encoded (base64), for merging runs
    workload: str = ""
    mode: str = "closed"  # or "open"
    rate: float | None = None  # open loop: the intended arrival rate
    #: open loop: latency from the actual send (the main latency counts from the intended one)
    service_us: dict[str, float] | None = None
    #: per kind (requests like get/set/multi, events like notify/acquire/connect)
    by_kind: dict[str, dict[str, Any]] = field(default_factory=dict)
    check: dict[str, Any] = field(default_factory=dict)
    timeline: list[dict[str, float]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def other_cpu(self) -> float | None:
        """CPU used by neither the load processes nor the server: noise from neighbours."""
        if self.machine_cpu is None or self.client_cpu is None:
            return None
        return round(max(self.machine_cpu - self.client_cpu - (self.server_cpu or 0.0), 0.0), 1)

    @property
    def violations(self) -> int:
        return int(self.check.get("violations", 0))

    @property
    def clean(self) -> bool:
        """No error reply and no check violation in the whole run."""
        return not self.errors_total and not self.violations

    def to_json(self, histograms: bool = True) -> dict[str, Any]:
        """A JSON-ready dict (with the derived other_cpu)."""
        out = asdict(self)
        out["other_cpu"] = self.other_cpu
        if not histograms:
            out.pop("histogram", None)
            for kind in out["by_kind"].values():
                kind.pop("histogram", None)
        return out


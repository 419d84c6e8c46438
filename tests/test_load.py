"""`fastzk load` against both servers: every workload runs with --check clean on Apache
ZooKeeper and on fastzk (so a violation is a server bug, not a checker bug), the checker
catches a wrong value, --ops runs exactly that many operations (the server's versions agree),
open loop keeps its arrival rate, the JSON has its documented shape and consistent fields,
and the latency buckets are the HDR histogram's. What one load process costs per request is a
measurement, not a test: bench/load_recording.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvloop

from fastzk.client import ZKClient
from fastzk.load import LoadConfig, LoadResult, run_load, run_load_async
from fastzk.load.keyspace import cleanup_keyspace
from fastzk.load.latency import BUCKET_VALUES, Recorder, bucket_index, new_histogram
from fastzk.load.workload import check_value, key_path, parse_check_value

pytest.importorskip("hdrh", reason="hdrhistogram is not installed in this environment")

REPO = Path(__file__).resolve().parent.parent


def load(server: Any, root: str, **kw: Any) -> LoadResult:
    cfg = LoadConfig(host=server.host, port=server.port, root=root, server_pid=server.pid,
                     duration=kw.pop("duration", 1.0), warmup=kw.pop("warmup", 0.2), **kw)
    return run_load(cfg)


def assert_clean(result: LoadResult) -> None:
    assert result.errors_total == {}, result.errors_total
    assert result.check["violations"] == 0, result.check["messages"]
    assert result.clean


def assert_consistent(result: LoadResult) -> None:
    """The result's fields agree: replies = the request kinds' counts, the rate is replies
    over the window, and --check verified at least every reply of the window."""
    assert result.ops > 0
    requests = sum(k["count"] for k in result.by_kind.values() if k["request"])
    assert requests == result.ops, (requests, result.ops)
    ok = result.ops - sum(result.errors.values())
    # elapsed is rounded to 0.1 ms and ops_per_sec to 0.1/s: both bounds allow exactly that
    slowest, fastest = ok / (result.elapsed + 5e-5), ok / max(result.elapsed - 5e-5, 1e-9)
    assert slowest - 0.05 <= result.ops_per_sec <= fastest + 0.05, (result.ops_per_sec, ok)
    if result.check.get("enabled") and not result.config["preset"]:
        assert result.check["checked"] >= ok, (result.check["checked"], ok)


def assert_gone(server: Any, path: str) -> None:
    async def probe() -> Any:
        c = await ZKClient.connect(server.host, server.port)
        try:
            return await c.exists(path)
        finally:
            await c.close()

    assert uvloop.run(probe()) is None, f"{path} left behind"


# --- simple ops with --check ------------------------------------------------------------------


@pytest.mark.parametrize(
    "op",
    ["get", "mixed:50", "exists", "children", "multi", "create:seq", "create:eph-seq",
     "create", "create-delete", "delete"],
)
def test_checked_ops_are_clean(server: Any, unique_path: str, op: str) -> None:
    result = load(server, unique_path, op=op, check=True, sessions=4, depth=8, keys=40,
                  children=3)
    assert_clean(result)
    assert_consistent(result)
    assert_gone(server, unique_path)


def test_checked_multi_process(server: Any, unique_path: str) -> None:
    """Key owners in two processes; every reader checks every other owner's writes."""
    result = load(server, unique_path, op="mixed:70", check=True, sessions=4, depth=4,
                  keys=16, processes=2)
    assert_clean(result)
    assert_consistent(result)


def test_fixed_number_of_operations(server: Any, unique_path: str) -> None:
    """--ops 3000 without warm-up sends exactly 3000 setData: the keys' versions, the
    server's own count of their writes, add up to 3000."""
    cfg = LoadConfig(host=server.host, port=server.port, root=unique_path, op="set", ops=3000,
                     sessions=3, depth=8, keys=10, duration=30, warmup=0.0, cleanup=False)
    result = run_load(cfg)
    assert_clean(result)
    assert_consistent(result)
    assert result.ops == 3000
    assert result.by_kind["set"]["count"] == 3000

    async def versions() -> list[int]:
        c = await ZKClient.connect(server.host, server.port)
        try:
            return [(await c.get(key_path(unique_path, i)))[1].version for i in range(10)]
        finally:
            await c.close()

    assert sum(uvloop.run(versions())) == 3000
    uvloop.run(cleanup_keyspace(cfg))
    assert_gone(server, unique_path)


# --- presets ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("preset", "kw", "metric"),
    [
        ("kafka", {"sessions": 4, "keys": 12, "depth": 4}, "isr-update"),
        ("lock", {"sessions": 6, "keys": 2}, "acquire"),
        ("watch-fanout", {"sessions": 11, "keys": 2, "rate": 100.0}, "notify"),
        ("session-churn", {"sessions": 4, "expire_pct": 25}, "session"),
    ],
)
def test_presets_are_clean(server: Any, unique_path: str, preset: str, kw: dict[str, Any],
                           metric: str) -> None:
    result = load(server, unique_path, preset=preset, check=True, duration=1.5, warmup=0.3, **kw)
    assert_clean(result)
    assert_consistent(result)
    assert result.by_kind[metric]["count"] > 0, result.by_kind
    if preset == "kafka":
        assert result.extra["controller_epoch"] >= 1
        assert result.by_kind["config-notify"]["count"] > 0
    if preset == "lock":
        assert result.extra["acquisitions"] >= result.by_kind["acquire"]["count"]
    if preset == "watch-fanout":
        assert result.extra["writes"] >= 100
    if preset == "session-churn":
        assert result.extra["sessions_closed"] > 0
    assert_gone(server, unique_path)


# --- the checker catches what is wrong -----------------------------------------------------------


def test_check_detects_a_clobbered_key(server: Any, unique_path: str) -> None:
    """A second writer overwrites keys owned by load sessions: --check must notice."""

    async def scenario() -> LoadResult:
        cfg = LoadConfig(host=server.host, port=server.port, root=unique_path, op="mixed:50",
                         check=True, sessions=2, depth=4, keys=4, duration=2.0, warmup=0.2)
        run = asyncio.ensure_future(run_load_async(cfg))
        intruder = await ZKClient.connect(server.host, server.port)
        # clobber only once the run is measuring (every key rewritten by its owner since the
        # set-up): a key clobbered during the set-up is refused as a set-up mistake
        # (RuntimeError), not counted as a violation
        for _ in range(500):
            await asyncio.sleep(0.02)
            written = []
            for index in range(4):
                try:
                    data, _ = await intruder.get(key_path(unique_path, index))
                except Exception:  # noqa: BLE001 - not created yet
                    break
                parsed = parse_check_value(data, 100)
                written.append(parsed is not None and parsed[1] > 0)
            if len(written) == 4 and all(written):
                break
        try:
            clobbered = 0
            for i in range(200):
                if run.done():
                    break
                await asyncio.sleep(0.01)
                try:
                    # a well-formed value, but from a writer that does not own the key
                    await intruder.set(key_path(unique_path, i % 4), check_value(9, 10**6, 100))
                    clobbered += 1
                except Exception:  # noqa: BLE001 - keys not created yet / already gone
                    pass
            assert clobbered > 0
        finally:
            await intruder.close()
        return await run

    result = uvloop.run(asyncio.wait_for(scenario(), 60))
    assert result.check["violations"] > 0
    assert not result.clean
    text = " ".join(result.check["messages"])
    assert "owner" in text or "version" in text or "expected" in text, text


def test_check_fault_injection_and_exit_status(fastzk: Any, unique_path: str) -> None:
    """The hidden --corrupt-every hook flips a byte of every Nth value read before it is
    checked: the CLI must report violations and exit 1."""
    proc = subprocess.run(
        [sys.executable, "-m", "fastzk", "load", "--server", fastzk.connect_string,
         "--root", unique_path, "--op", "get", "--check", "--sessions", "2", "--keys", "10",
         "--duration", "0.5", "--warmup", "0.1", "--corrupt-every", "50", "--json"],
        capture_output=True, text=True, timeout=60, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 1, proc.stderr
    out = json.loads(proc.stdout)
    assert out["check"]["violations"] > 0
    assert "not a value of the load" in out["check"]["messages"][0]


def test_check_values_round_trip() -> None:
    value = check_value(12, 345, 100)
    assert len(value) == 100 and parse_check_value(value, 100) == (12, 345)
    assert parse_check_value(b"X" + value[1:], 100) is None
    assert parse_check_value(value[:-1] + b"!", 100) is None


# --- open loop, output ------------------------------------------------------------------------


def test_open_loop_keeps_the_arrival_rate(server: Any, unique_path: str) -> None:
    rate = 2000.0
    result = load(server, unique_path, op="get", rate=rate, sessions=4, keys=20, duration=2.0,
                  warmup=0.3)
    assert_clean(result)
    assert_consistent(result)
    assert result.mode == "open" and result.rate == rate
    assert abs(result.ops_per_sec - rate) / rate < 0.1, result.ops_per_sec
    assert result.service_us is not None
    # latency counts from the intended send time, so it can only be longer than service time
    assert result.latency_us["p50"] >= result.service_us["p50"]
    steady = [p["ops_per_sec"] for p in result.timeline[1:-1]]
    assert steady and all(abs(r - rate) / rate < 0.3 for r in steady), steady


def test_json_output_shape(fastzk: Any, unique_path: str, tmp_path: Path) -> None:
    plot = tmp_path / "load.png"
    proc = subprocess.run(
        [sys.executable, "-m", "fastzk", "load", "--server", fastzk.connect_string,
         "--root", unique_path, "--op", "mixed:90", "--sessions", "2", "--keys", "20",
         "--duration", "1", "--warmup", "0.2", "--json", "--check", "--no-progress"]
        + (["--plot", str(plot)] if _has_matplotlib() else []),
        capture_output=True, text=True, timeout=60, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    for key in ("config", "workload", "mode", "ops", "elapsed", "ops_per_sec", "latency_us",
                "errors", "errors_total", "by_kind", "check", "timeline", "client_cpu"):
        assert key in out, key
    assert out["workload"] == "mixed:90" and out["mode"] == "closed"
    assert set(out["latency_us"]) == {"p50", "p90", "p99", "p99.9", "max", "mean"}
    assert set(out["by_kind"]) == {"get", "set"}
    assert out["by_kind"]["get"]["count"] > out["by_kind"]["set"]["count"]
    assert "histogram" not in out and "histogram" not in out["by_kind"]["get"]
    assert out["check"]["enabled"] and out["check"]["violations"] == 0
    assert out["errors"] == {} and isinstance(out["ops_per_sec"], float)
    assert out["by_kind"]["get"]["count"] + out["by_kind"]["set"]["count"] == out["ops"]
    assert out["ops_per_sec"] == pytest.approx(out["ops"] / out["elapsed"], rel=1e-3)
    assert out["check"]["checked"] >= out["ops"]
    assert out["timeline"] and {"t", "ops_per_sec", "p50", "p99", "max"} <= set(out["timeline"][0])
    if _has_matplotlib():
        assert plot.stat().st_size > 10_000


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


# --- latency bookkeeping ------------------------------------------------------------------------


def test_buckets_are_the_hdr_histograms() -> None:
    """Counting per bucket and recording each bucket's lowest value gives exactly the HDR
    histogram of the raw values: the buckets must be the histogram's own."""
    hist = new_histogram()
    values = np.concatenate([np.arange(1, 5000), np.geomspace(5000, 60_000_000, 20_000)]
                            ).astype(np.int64)
    expected = [hist.get_lowest_equivalent_value(int(v)) for v in values]
    assert BUCKET_VALUES[bucket_index(values)].tolist() == expected
    assert bucket_index(np.array([0, -3, 10**9])).tolist() == [1, 1, bucket_index(
        np.array([60_000_000]))[0]]


def test_open_loop_latency_counts_from_the_intended_send_time() -> None:
    """Two reply batches of an open-loop session (requests intended every 100 µs from 1000):
    each request's latency is its reply time minus its own intended time; service time is
    per batch, from the actual send."""
    rec = Recorder()
    rec.add_marks("get", [(1500, 1400, 3, 2), (2000, 1950, 1, 9)], base=1000.0, step=100.0)
    # requests 2, 3, 4 intended at 1200, 1300, 1400, answered at 1500; request 9 at 1900
    latencies = {int(v): int(c) for v, c in zip(BUCKET_VALUES, rec.kinds["get"], strict=True)
                 if c}
    assert latencies == {300: 1, 200: 1, 100: 2}
    service = {int(v): int(c) for v, c in zip(BUCKET_VALUES, rec.service, strict=True) if c}
    assert service == {100: 3, 50: 1}
    rec.recording = True
    rec.one("notify", 40, request=False)
    _, pairs, _, events = rec.close_interval(0)
    assert sorted(pairs) == [(100, 2), (200, 1), (300, 1)] and events == 1
    assert rec.kinds["notify"][40] == 1 and rec.request_kinds == {"get"}

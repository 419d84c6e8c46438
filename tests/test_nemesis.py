"""Nemesis runs on real ensembles (fastzk, and Apache ZooKeeper as the control), the recorded
history of ``fastzk load --history``, and proof that the verification can fail.

The runs are short (about 30 s of faults each) and their seeds are chosen so that between
them every fault kind is injected at least once (the report lists them).  Nothing here
asserts a timing: every wait in the harness is bounded and a failure prints the run's report,
whose directory (history, member logs and data) is kept.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fastzk.load.history import check_file, make_client
from fastzk.nemesis.cluster import zookeeper_installed
from fastzk.nemesis.ephemerals import EphemeralHolders
from fastzk.nemesis.run import NemesisConfig, NemesisReport, run
from fastzk.nemesis.servers import ServerProcess, start_server
from fastzk.nemesis.verify import Tree, compare_trees, read_tree

#: Seeds whose first 30 s of faults cover most kinds (the reports name them).
FASTZK_SEED = 19  # diskfull, kill, partition, oneway, kill, pause
ZOOKEEPER_SEED = 32  # kill, pause, partition, delay, oneway (no diskfull: see run.py)
DURATION_S = 30.0
RUN_TIMEOUT_S = 400


@pytest.fixture(scope="module")
def fastzk_run(tmp_path_factory: pytest.TempPathFactory) -> NemesisReport:
    """One 3-server fastzk run whose files are kept (the planted-fault test reuses its
    history)."""
    keep = tmp_path_factory.mktemp("nemesis-fastzk")
    return run(NemesisConfig(servers=3, seed=FASTZK_SEED, duration_s=DURATION_S,
                             target="fastzk", keep_dir=keep))


@pytest.mark.timeout(RUN_TIMEOUT_S)
def test_fastzk_survives_nemesis(fastzk_run: NemesisReport) -> None:
    report = fastzk_run
    assert report.passed, report.text()
    assert report.history is not None and report.history.counts.get("ok", 0) > 0, report.text()
    assert report.faults, report.text()


@pytest.mark.timeout(RUN_TIMEOUT_S)
@pytest.mark.skipif(not zookeeper_installed(), reason="Apache ZooKeeper (Debian package "
                    "zookeeper) and java are needed for the control run")
def test_zookeeper_control_passes(tmp_path: Path) -> None:
    """The same harness against Apache ZooKeeper 3.8: if this fails, the harness is wrong."""
    report = run(NemesisConfig(servers=3, seed=ZOOKEEPER_SEED, duration_s=DURATION_S,
                               target="zookeeper", keep_dir=tmp_path))
    assert report.passed, report.text()
    assert report.faults, report.text()


@pytest.mark.timeout(RUN_TIMEOUT_S)
def test_planted_stale_read_is_not_linearizable(fastzk_run: NemesisReport,
                                                 tmp_path: Path) -> None:
    """The real run's history with one read altered to return a value no one wrote."""
    assert fastzk_run.history is not None, fastzk_run.text()
    events = [json.loads(line) for line in fastzk_run.history.path.read_text().splitlines()]
    read = next((e for e in reversed(events)
                 if e["f"] == "get" and e["type"] == "ok" and e["value"] is not None), None)
    assert read is not None, "the run recorded no successful read of an existing key"
    read["value"] = ["never-written", read["value"][1]]
    planted = tmp_path / "planted.jsonl"
    planted.write_text("".join(json.dumps(e) + "\n" for e in events))
    assert check_file(fastzk_run.history.path).verdict == "linearizable", fastzk_run.text()
    result = check_file(planted)
    assert result.verdict == "not linearizable", result.report()


@pytest.fixture
def fastzk_server(tmp_path: Path) -> Iterator[ServerProcess]:
    server = start_server("fastzk", tmp_path / "server")
    yield server
    server.stop()


def _tree(server: ServerProcess) -> Tree:
    return read_tree(f"127.0.0.1:{server.port}")


def test_planted_member_difference_and_leaked_ephemeral_are_reported(
    fastzk_server: ServerProcess,
) -> None:
    """Real member state (one server's tree and live ephemerals), then a copy with a lost
    write and one with an ephemeral of a session nobody holds."""
    connect = f"127.0.0.1:{fastzk_server.port}"
    holders = EphemeralHolders(connect, "/nemesis/ephemeral", 2, session_timeout_s=4.0)
    try:
        writer = make_client(connect, 4.0)
        writer.start(timeout=30)
        writer.create("/nemesis/k0", b"v1")
        writer.stop()
        writer.close()
        tree = _tree(fastzk_server)
        assert holders.problems(tree) == []
        assert compare_trees({1: tree, 2: dict(tree)}) == []
        lost = dict(tree)
        del lost["/nemesis/k0"]
        problems = compare_trees({1: tree, 2: lost})
        assert len(problems) == 1 and "/nemesis/k0" in problems[0], problems
        leaked = {**tree, "/nemesis/ephemeral/stray": ("x", 0, 0x1234, ())}
        problems = holders.problems(leaked)
        assert any("leaked ephemeral /nemesis/ephemeral/stray" in p for p in problems), problems
        closed = holders.close(1)[0]
        problems, _ = holders.wait_clean(lambda: _tree(fastzk_server), 30.0)
        assert problems == [], f"ephemeral of closed session 0x{closed.owner:x}: {problems}"
    finally:
        holders.close()


def test_load_history_against_one_server(fastzk_server: ServerProcess, tmp_path: Path) -> None:
    """``fastzk load --history`` end to end: the recorded file is in the checker's format
    and the run's verdict is linearizable (exit status 0)."""
    history = tmp_path / "history.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "fastzk", "load", "--server", f"127.0.0.1:{fastzk_server.port}",
         "--history", str(history), "--duration", "3", "--seed", "7"],
        capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "linearizable" in proc.stdout, proc.stdout
    events = [json.loads(line) for line in history.read_text().splitlines()]
    kinds = {e["f"] for e in events}
    assert {"create", "set", "delete", "get", "sync", "multi"} <= kinds, sorted(kinds)
    for event in events:
        assert event["type"] in ("invoke", "ok", "fail", "info"), event
        assert event["session"].startswith("0x") and ":" in event["server"], event
    times = [e["time"] for e in events]
    assert times == sorted(times), "file order must be real-time order"

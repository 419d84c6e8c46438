"""The deterministic simulator (fastzk/sim): seeds with every fault kind keep every promise,
every planted bug is caught, and a seed replays exactly, whatever the process's hash seed."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest

from fastzk.server.prep import Txn
from fastzk.sim.bugs import BUGS
from fastzk.sim.disk import DiskOp, SimDisk
from fastzk.sim.world import World

CHUNK = 25
SEEDS_3 = range(1, 201)  # CI: 200 seeds of 3 servers ...
SEEDS_5 = range(1, 51)  # ... and 50 of 5


def _run_seeds(seeds: range, servers: int) -> None:
    failures = []
    for seed in seeds:
        result = World(seed, servers=servers).run()
        if not result.ok:
            failures.append(f"{result.summary()}\n  {result.kind}: {result.message}\n  "
                            + "\n  ".join(result.trace[-30:]))
    assert not failures, "\n\n".join(failures)


@pytest.mark.parametrize("first", range(SEEDS_3.start, SEEDS_3.stop, CHUNK),
                         ids=lambda first: f"seeds{first}-{first + CHUNK - 1}")
def test_three_servers_keep_every_promise(first: int) -> None:
    _run_seeds(range(first, min(first + CHUNK, SEEDS_3.stop)), 3)


@pytest.mark.parametrize("first", range(SEEDS_5.start, SEEDS_5.stop, CHUNK),
                         ids=lambda first: f"seeds{first}-{first + CHUNK - 1}")
def test_five_servers_keep_every_promise(first: int) -> None:
    _run_seeds(range(first, min(first + CHUNK, SEEDS_5.stop)), 5)


@pytest.mark.parametrize("name", sorted(BUGS))
def test_planted_bug_is_caught(name: str) -> None:
    """A checker that never fires proves nothing: each known failure mode, planted, must be
    found within the seeds its entry in fastzk/sim/bugs.py promises."""
    bug = BUGS[name]
    for seed in range(1, bug.seeds + 1):
        result = World(seed, bugs=frozenset({name})).run()
        if not result.ok:
            return
    pytest.fail(f"{name} was not caught by seeds 1..{bug.seeds}")


def test_a_seed_replays_exactly_in_another_process() -> None:
    """Same seed, same run, byte for byte: string hashing (and so the iteration order of sets
    and dicts of strings) differs between these two processes, the run must not."""
    outputs = []
    for hash_seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        done = subprocess.run([sys.executable, "-m", "fastzk", "sim", "--seed", "12",
                               "--steps", "6000", "--history", os.devnull],
                              capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        outputs.append(done.stdout.split(" in ")[0] + done.stdout.split("history")[-1])
    assert outputs[0] == outputs[1]
    assert World(12, steps=6000).run().digest != World(13, steps=6000).run().digest


def test_cli_reports_the_failing_seeds_and_how_to_replay_them() -> None:
    done = subprocess.run([sys.executable, "-m", "fastzk", "sim", "--seeds", "1..3",
                           "--bug", "commit-without-quorum", "--no-check"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "replay: fastzk sim --seed 1 " in done.stdout
    assert "seeds 1..3: 0 kept every promise, 3 failed: 1 2 3" in done.stdout
    listed = subprocess.run([sys.executable, "-m", "fastzk", "sim", "--list-bugs"],
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and all(name in listed.stdout for name in BUGS)
    unknown = subprocess.run([sys.executable, "-m", "fastzk", "sim", "--bug", "nonsense"],
                             capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 2 and "unknown bug 'nonsense'" in unknown.stderr


def _txn(zxid: int) -> Txn:
    return Txn(zxid, 0, 0, 0, 0, [])


def test_disk_keeps_exactly_what_was_synced() -> None:
    disk = SimDisk()
    disk.complete([DiskOp("append", ([(1, _txn(1)), (2, _txn(2))], 0))])
    disk.writing = [DiskOp("append", ([(3, _txn(3)), (4, _txn(4)), (5, _txn(5))], 0))]
    disk.queue = [DiskOp("append", ([(6, _txn(6))], 0))]
    disk.crash(random.Random(1), torn=False)
    assert disk.zxids == [1, 2] and not disk.writing and not disk.queue
    torn_prefixes = set()
    for seed in range(20):
        torn = SimDisk()
        torn.writing = [DiskOp("append", ([(3, _txn(3)), (4, _txn(4)), (5, _txn(5))], 0))]
        torn.crash(random.Random(seed), torn=True)
        torn_prefixes.add(tuple(torn.zxids))
    assert torn_prefixes == {(), (3,), (3, 4)}  # a torn write never completes the batch
    disk.complete([DiskOp("truncate", (1,))])
    assert disk.zxids == [1] and disk.has(1) and not disk.has(2)

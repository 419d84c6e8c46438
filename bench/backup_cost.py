"""What an online backup costs the writes going on meanwhile (issue 11).

Usage::

    python bench/backup_cost.py [--keys 100000] [--duration 10] [--rounds 2] [--json FILE]

One fastzk server (a real `fastzk serve` on loopback, fsync on) holding `--keys` znodes of
100 bytes; `fastzk load --op set` over them (8 sessions x 32 in flight) for `--duration`
seconds, alternately alone and while `fastzk backup` runs back to back against the server's
admin endpoint (each a full backup: the fuzzy snapshot streamed chunk by chunk on the
server's event loop, then the log). Reported per round: setData/s alone and during backups,
the ratio, the backups completed and how long each took. Rounds alternate so that drift of
this shared machine hits both sides alike.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from fastzk.nemesis.servers import ServerProcess, start_server


def fastzk(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fastzk", *args], capture_output=True,
                          text=True, timeout=timeout, check=False)


def load(proc: ServerProcess, keys: int, duration: float, setup: bool) -> float:
    """setData/s of one `fastzk load` run (the keys are created by the first run only)."""
    args = ["load", "--server", proc.connect_string, "--op", "set", "--keys", str(keys),
            "--value-size", "100", "--duration", str(duration), "--warmup", "1", "--json",
            "--no-progress", "--keep", "--root", "/bench"]
    if not setup:
        args.append("--no-setup")
    done = fastzk(*args)
    if done.returncode != 0:
        raise SystemExit(f"fastzk load failed: {done.stderr[-2000:]}")
    return float(json.loads(done.stdout)["ops_per_sec"])


class Backups(threading.Thread):
    """Full backups back to back until stopped; the seconds each took."""

    def __init__(self, proc: ServerProcess, out: Path) -> None:
        super().__init__()
        self.proc, self.out = proc, out
        self.stop = threading.Event()
        self.seconds: list[float] = []

    def run(self) -> None:
        while not self.stop.is_set():
            target = self.out / f"b{len(self.seconds)}"
            started = time.monotonic()
            done = fastzk("backup", "--server", f"127.0.0.1:{self.proc.admin_port}",
                          str(target))
            if done.returncode != 0:
                raise SystemExit(f"fastzk backup failed: {done.stderr[-2000:]}")
            self.seconds.append(time.monotonic() - started)
            shutil.rmtree(target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="backup-cost-"))
    proc = start_server("fastzk", work / "server")
    rounds = []
    try:
        load(proc, args.keys, 2.0, setup=True)  # creates the keys
        for number in range(args.rounds):
            alone = load(proc, args.keys, args.duration, setup=False)
            backups = Backups(proc, work)
            backups.start()
            during = load(proc, args.keys, args.duration, setup=False)
            backups.stop.set()
            backups.join()
            rounds.append({"alone": alone, "during_backups": during,
                           "ratio": round(during / alone, 3),
                           "backups": len(backups.seconds),
                           "backup_s": round(statistics.median(backups.seconds), 2)
                           if backups.seconds else None})
            print(f"round {number + 1}: setData alone {alone:,.0f}/s, during backups "
                  f"{during:,.0f}/s ({during / alone:.2f}x); {len(backups.seconds)} backups, "
                  f"median {rounds[-1]['backup_s']} s each", flush=True)
    finally:
        proc.stop()
        shutil.rmtree(work, ignore_errors=True)
    result = {"keys": args.keys, "duration_s": args.duration, "rounds": rounds}
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

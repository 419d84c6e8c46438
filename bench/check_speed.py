"""Speed of `fastzk check` on correct concurrent histories of 10,000 operations.

Usage::

    python bench/check_speed.py [--ops 10000] [--processes 10,20] [--timeouts 0,0.002]
                                [--time-limit-s 60] [--seeds 3]

For each model, process count and timeout rate it generates `--seeds` histories with the
simulator of tests/test_check.py (every operation takes effect at a random moment inside its
interval; znode gets read a random state no older than their session saw; a completion is
replaced by `info` at the timeout rate) and prints the median ops/s of check_history, with the
verdicts. Timed-out operations are what makes the search expensive: each may take effect at any
later point, so they are a separate column.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from test_check import simulate  # noqa: E402  (tests/test_check.py: the history simulator)

from fastzk.check import check_history  # noqa: E402

KEYS = {"register": [None], "kv": ["a", "b", "c"], "znode": ["/a", "/b", "/c"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=10_000)
    parser.add_argument("--processes", default="10,20")
    parser.add_argument("--timeouts", default="0,0.002", help="rates of info completions")
    parser.add_argument("--time-limit-s", type=float, default=60.0)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    print(f"{'model':<9} {'procs':>5} {'timeouts':>8} {'ops/s (median)':>15}  verdicts, seconds")
    for model in ("register", "kv", "znode"):
        for processes in (int(p) for p in args.processes.split(",")):
            for rate in (float(r) for r in args.timeouts.split(",")):
                times, verdicts = [], []
                for seed in range(args.seeds):
                    rng = random.Random(seed * 1000 + processes)
                    events = simulate(rng, model, processes=processes, ops=args.ops,
                                      keys=KEYS[model], crash_rate=rate)
                    started = time.perf_counter()
                    result = check_history(events, model, args.time_limit_s)
                    times.append(time.perf_counter() - started)
                    verdicts.append(f"{result.verdict} {times[-1]:.2f}")
                rate_s = args.ops / statistics.median(times)
                print(f"{model:<9} {processes:>5} {rate:>8.3f} {rate_s:>15,.0f}  "
                      + "; ".join(verdicts), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`fastzk sim`: run the simulator for one seed (replayable) or a range of seeds."""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import TextIO

from fastzk.sim.bugs import BUGS
from fastzk.sim.world import Result, World


def add_arguments(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--seed", type=int, default=1, help="run this seed (default 1)")
    which.add_argument("--seeds", metavar="A..B",
                       help="run seeds A to B inclusive; print the failing ones")
    parser.add_argument("--steps", type=int, default=20_000,
                        help="events with faults before healing (default 20000)")
    parser.add_argument("--servers", type=int, default=3, choices=(3, 5))
    parser.add_argument("--clients", type=int, default=5)
    parser.add_argument("--bug", action="append", default=[], metavar="NAME",
                        help="plant a known bug (see --list-bugs); may be repeated")
    parser.add_argument("--list-bugs", action="store_true", help="list the planted bugs")
    parser.add_argument("--no-check", action="store_true",
                        help="skip the linearizability check of each run's history")
    parser.add_argument("--jobs", type=int, default=1,
                        help="processes running seeds side by side (default 1)")
    parser.add_argument("--history", metavar="FILE",
                        help="write the run's client history (JSON lines, for fastzk check)")


def _seeds(text: str) -> range:
    first, _, last = text.partition("..")
    try:
        return range(int(first), int(last) + 1)
    except ValueError:
        raise SystemExit(f"fastzk sim: --seeds wants A..B, got {text!r}") from None


def _run_one(run: tuple[int, int, int, int, frozenset[str], bool, bool]) -> Result:
    seed, servers, steps, clients, bugs, check, keep_history = run
    result = World(seed, servers=servers, steps=steps, clients=clients, bugs=bugs).run(
        check_history=check)
    if not keep_history:
        result.history = []  # not sent back from a worker process
    return result


def run_from_args(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """0: every run kept every promise; 1: a violation (its seed, step and trace printed)."""
    if args.list_bugs:
        for bug in BUGS.values():
            print(f"{bug.name:28} caught within seeds 1..{bug.seeds}: {bug.what}", file=out)
        return 0
    unknown = [name for name in args.bug if name not in BUGS]
    if unknown:
        print(f"fastzk sim: unknown bug {unknown[0]!r} (see --list-bugs)", file=sys.stderr)
        return 2
    bugs = frozenset(args.bug)
    seeds = _seeds(args.seeds) if args.seeds else range(args.seed, args.seed + 1)
    single = len(seeds) == 1
    failed: list[int] = []
    events = 0
    started = time.perf_counter()
    runs = ((seed, args.servers, args.steps, args.clients, bugs, not args.no_check, single)
            for seed in seeds)
    with ExitStack() as stack:
        if args.jobs > 1 and not single:
            pool = stack.enter_context(multiprocessing.Pool(args.jobs))
            results: Iterator[Result] = pool.imap(_run_one, runs)
        else:
            results = map(_run_one, runs)
        for result in results:
            events += result.events
            if single or not result.ok:
                print(result.summary(), file=out)
            if not result.ok:
                failed.append(result.seed)
                print(f"  {result.kind}: {result.message}", file=out)
                if single:
                    print("  last events:", file=out)
                    for line in result.trace:
                        print(f"    {line}", file=out)
                print(f"  replay: fastzk sim --seed {result.seed} --steps {args.steps} "
                      f"--servers {args.servers} --clients {args.clients}"
                      + "".join(f" --bug {name}" for name in sorted(bugs)), file=out)
            if args.history and single:
                with open(args.history, "w") as handle:
                    for event in result.history:
                        handle.write(json.dumps(event) + "\n")
    elapsed = time.perf_counter() - started
    if not single:
        print(f"seeds {seeds.start}..{seeds.stop - 1}: {len(seeds) - len(failed)} kept every "
              f"promise, {len(failed)} failed{': ' + ' '.join(map(str, failed)) if failed else ''}"
              f"; {events / elapsed:,.0f} events/s, {len(seeds) / elapsed * 60:,.0f} seeds/min",
              file=out)
    return 1 if failed else 0

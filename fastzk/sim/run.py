"""`fastzk sim`: run the simulator for one seed (replayable) or a range of seeds."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TextIO

from fastzk.sim.bugs import BUGS
from fastzk.sim.world import World


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
    parser.add_argument("--history", metavar="FILE",
                        help="write the run's client history (JSON lines, for fastzk check)")


def _seeds(text: str) -> range:
    first, _, last = text.partition("..")
    try:
        return range(int(first), int(last) + 1)
    except ValueError:
        raise SystemExit(f"fastzk sim: --seeds wants A..B, got {text!r}") from None


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
    for seed in seeds:
        result = World(seed, servers=args.servers, steps=args.steps, clients=args.clients,
                       bugs=bugs).run(check_history=not args.no_check)
        events += result.events
        if single or not result.ok:
            print(result.summary(), file=out)
        if not result.ok:
            failed.append(seed)
            print(f"  {result.kind}: {result.message}", file=out)
            if single:
                print("  last events:", file=out)
                for line in result.trace:
                    print(f"    {line}", file=out)
            print(f"  replay: fastzk sim --seed {seed} --steps {args.steps} "
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

"""`fastzk load` on the command line: its options (wired into fastzk/cli.py, the one parser),
the LoadConfig they make, and the run with its live line, table, JSON and figure.

Only this module imports the report (rich, matplotlib) and the history workload, so the
measuring processes never load them.
"""

from __future__ import annotations

import argparse
import json
import sys

from fastzk.client.codec import ZKError
from fastzk.load import history, report
from fastzk.load.config import LoadConfig, parse_connect_string
from fastzk.load.presets import PRESET_DEFAULTS
from fastzk.load.run import run_load
from fastzk.load.workload import PRESETS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``fastzk load`` (wired into fastzk/cli.py)."""
    d = LoadConfig()
    parser.add_argument(
        "--server", default=f"{d.host}:{d.port}",
        help="connect string host:port[,host:port...]; sessions are spread over the servers "
        "(default %(default)s)",
    )
    tls = parser.add_argument_group("TLS (a server's secureClientPort)")
    tls.add_argument("--tls-ca", default="", metavar="FILE",
                     help="connect over TLS, verifying the server against this CA (PEM)")
    tls.add_argument("--tls-cert", default="", metavar="FILE",
                     help="client certificate (PEM; with its key, or see --tls-key)")
    tls.add_argument("--tls-key", default="", metavar="FILE", help="client key (PEM)")
    g = parser.add_argument_group("workload")
    g.add_argument(
        "--op", default=d.op,
        help="get | set | exists | children | create | create:seq | create:eph | create:eph-seq "
        "| delete | create-delete | multi | mixed:R (R%% getData, rest setData) "
        "(default %(default)s)",
    )
    g.add_argument("--preset", choices=PRESETS, default=None,
                   help="a workload modelled on real users instead of --op (see README)")
    g.add_argument("--keys", type=int, default=None,
                   help=f"distinct keys (default {d.keys}; presets: partitions, locks, watched "
                   "nodes)")
    g.add_argument("--value-size", type=int, default=d.value_size,
                   help="bytes per value (default %(default)s)")
    g.add_argument("--children", type=int, default=d.children,
                   help="children op: children under each key (default %(default)s)")
    g.add_argument("--multi-size", type=int, default=d.multi_size,
                   help="multi op: setData ops per multi (default %(default)s)")
    g.add_argument("--expire-pct", type=int, default=d.expire_pct,
                   help="session-churn: %% of sessions left to expire (default %(default)s)")
    g = parser.add_argument_group("load shape")
    g.add_argument("--sessions", "-c", type=int, default=None,
                   help=f"sessions = connections (default {d.sessions})")
    g.add_argument("--depth", "-d", type=int, default=d.depth,
                   help="closed loop: requests in flight per session (default %(default)s)")
    g.add_argument("--rate", type=float, default=None,
                   help="open loop: total requests/s, latency from the intended send time "
                   "(presets: watch-fanout writes/s)")
    g.add_argument("--max-inflight", type=int, default=d.max_inflight,
                   help="open loop: requests in flight per session at most (default %(default)s)")
    g.add_argument("--duration", type=float, default=d.duration,
                   help="measured seconds (default %(default)s)")
    g.add_argument("--warmup", type=float, default=d.warmup,
                   help="unmeasured seconds before (default %(default)s)")
    g.add_argument("--ops", type=int, default=None,
                   help="measure this many operations instead of --duration")
    g.add_argument("--processes", "-p", type=int, default=d.processes,
                   help="load processes; sessions are split among them (default %(default)s)")
    g = parser.add_argument_group("checking and output")
    g.add_argument("--check", action="store_true",
                   help="verify every reply; exit 1 on any violation")
    g.add_argument("--history", metavar="FILE.jsonl", default=None,
                   help="run a checkable workload (its own op mix over --keys keys, default 5, "
                   "with --sessions sessions, default 4), record every operation in FILE and "
                   "check it for linearizability; exit 1 if it is not linearizable")
    g.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    g.add_argument("--plot", metavar="FILE.png", default=None,
                   help="latency-over-time and latency-distribution figure (needs matplotlib)")
    g.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help="live progress line on stderr (default: when stderr is a terminal)")
    g.add_argument("--no-progress", dest="progress", action="store_false")
    g = parser.add_argument_group("environment")
    g.add_argument("--root", default=d.root, help="znode under which keys live (default %(default)s)")
    g.add_argument("--session-timeout", type=int, default=d.session_timeout_ms,
                   help="requested session timeout, ms (default %(default)s)")
    g.add_argument("--seed", type=int, default=d.seed, help="workload seed (default %(default)s)")
    g.add_argument("--server-pid", type=int, default=None,
                   help="PID of a local server process, to report its CPU usage")
    g.add_argument("--no-setup", action="store_true",
                   help="do not create the keys first (they must exist)")
    g.add_argument("--keep", action="store_true", help="do not delete the keys afterwards")
    g.add_argument("--corrupt-every", type=int, default=0, help=argparse.SUPPRESS)


def config_from_args(args: argparse.Namespace) -> LoadConfig:
    """LoadConfig from parsed ``add_arguments`` options (presets bring their own defaults
    for --sessions and --keys when those are not given)."""
    endpoints = parse_connect_string(str(args.server))
    d = LoadConfig()
    sessions, keys = args.sessions, args.keys
    if args.preset:
        ps, pk = PRESET_DEFAULTS[args.preset]
        sessions = ps if sessions is None else sessions
        keys = pk if keys is None else keys
    return LoadConfig(
        host=endpoints[0][0],
        port=endpoints[0][1],
        servers=str(args.server) if len(endpoints) > 1 else "",
        sessions=d.sessions if sessions is None else sessions,
        depth=args.depth,
        op=args.op,
        preset=args.preset,
        value_size=args.value_size,
        keys=d.keys if keys is None else keys,
        duration=args.duration,
        warmup=args.warmup,
        ops=args.ops,
        rate=args.rate,
        max_inflight=args.max_inflight,
        processes=args.processes,
        root=args.root,
        session_timeout_ms=args.session_timeout,
        seed=args.seed,
        server_pid=args.server_pid,
        setup=not args.no_setup,
        cleanup=not args.keep,
        check=args.check,
        children=args.children,
        multi_size=args.multi_size,
        expire_pct=args.expire_pct,
        corrupt_every=args.corrupt_every,
        tls_ca=args.tls_ca,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
    )


def run_from_args(args: argparse.Namespace) -> int:
    """``fastzk load``: 0 on a clean run, 1 if a request failed or a check was violated,
    2 if the run could not run."""
    if args.history:
        return history.run_from_load_args(args)
    try:
        cfg = config_from_args(args)
        cfg.validate()
    except ValueError as e:
        print(f"fastzk load: {e}", file=sys.stderr, flush=True)
        return 2
    show = args.progress if args.progress is not None else sys.stderr.isatty()
    live = report.LiveLine(cfg) if show else None
    try:
        if live is not None:
            live.start()
        try:
            result = run_load(cfg, live.update if live is not None else None)
        finally:
            if live is not None:
                live.stop()
    except (OSError, ValueError, RuntimeError, TimeoutError, ZKError) as e:
        print(f"fastzk load: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return 2
    if args.json:
        print(json.dumps(result.to_json(histograms=False), indent=2))
    else:
        report.print_table(result)
    if args.plot:
        try:
            report.plot(result, args.plot)
        except ImportError:
            print("fastzk load: --plot needs matplotlib (pip install 'fastzk[bench]')",
                  file=sys.stderr)
            return 2
    return 0 if result.clean else 1


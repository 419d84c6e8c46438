"""`fastzk ...`: the one command-line entry point and the one place that parses options."""

from __future__ import annotations

import argparse
import sys

from fastzk import config as config_module


def _serve(args: argparse.Namespace) -> int:
    from fastzk.runtime.server import run

    try:
        cfg = config_module.load(args.config)
    except config_module.ConfigError as error:
        print(f"fastzk: configuration error: {error}", file=sys.stderr)
        return 2
    return run(cfg, args.log_level)


def _load(args: argparse.Namespace) -> int:
    from fastzk.load.command import run_from_args

    return run_from_args(args)


def _log_dump(args: argparse.Namespace) -> int:
    from fastzk.runtime.tools import log_dump

    return log_dump(args.dir, sys.stdout, verbose=not args.summary)


def _snap_dump(args: argparse.Namespace) -> int:
    from fastzk.runtime.tools import snap_dump

    return snap_dump(args.file, sys.stdout, nodes=not args.summary, data=args.data)


def _import(args: argparse.Namespace) -> int:
    from fastzk.runtime import wal
    from fastzk.zkfiles.takeover import TakeoverError, import_zk

    to_log = args.to_log_dir or args.to
    try:
        report = import_zk(args.zk_data_dir, args.log_dir, wal.log_dir_of(args.to),
                           wal.log_dir_of(to_log))
    except (TakeoverError, OSError) as error:
        print(f"fastzk import: {error}", file=sys.stderr)
        return 1
    print(f"imported {args.zk_data_dir} into {args.to}: {report.summary()}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from fastzk.zkfiles.takeover import TakeoverError, export_fastzk

    try:
        report = export_fastzk(args.data_dir, args.to, args.log_dir)
    except (TakeoverError, OSError) as error:
        print(f"fastzk export: {error}", file=sys.stderr)
        return 1
    print(f"exported {args.data_dir} to {report.snapshot}: zxid {report.zxid:#x}, "
          f"{report.nodes} znodes, {report.sessions} sessions, epoch {report.epoch}, "
          f"digest {report.digest}")
    return 0


def _backup(args: argparse.Namespace) -> int:
    from fastzk.backup.client import main

    return main(args.server, args.out, args.since, args.auth)


def _restore(args: argparse.Namespace) -> int:
    from fastzk.backup.format import BackupError
    from fastzk.backup.pitr import parse_time, restore

    try:
        time_ms = parse_time(args.to_time) if args.to_time is not None else None
        return restore(args.source, args.to, args.to_zxid, time_ms, args.force, sys.stdout)
    except BackupError as error:
        print(f"fastzk restore: {error}", file=sys.stderr)
        return 2


def _snap_diff(args: argparse.Namespace) -> int:
    from fastzk.backup.format import BackupError
    from fastzk.backup.pitr import diff

    try:
        return diff(args.a, args.b, sys.stdout)
    except BackupError as error:
        print(f"fastzk snap diff: {error}", file=sys.stderr)
        return 2


def _zxid(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a zxid (decimal or 0x hex)") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a zxid is not negative")
    return value


def _add_backup_commands(commands: argparse._SubParsersAction,
                         snap_sub: argparse._SubParsersAction) -> None:
    """`fastzk backup`, `fastzk restore` and `fastzk snap diff` (fastzk/backup/)."""
    from pathlib import Path

    backup = commands.add_parser(
        "backup", help="online backup of a running server through its admin endpoint")
    backup.add_argument("--server", required=True, metavar="HOST:ADMINPORT",
                        help="the server's admin endpoint (admin.serverAddress:serverPort)")
    backup.add_argument("out", type=Path, help="a new (or empty) directory for the backup")
    backup.add_argument("--since", type=Path, metavar="BACKUP",
                        help="incremental: only the log written since this earlier backup")
    backup.add_argument("--auth", metavar="USER:PASSWORD",
                        help="a digest identity with every permission on / when its ACL asks")
    backup.set_defaults(handler=_backup)

    restore = commands.add_parser(
        "restore", help="rebuild a data dir from a backup or an archive, as of a zxid or time")
    restore.add_argument("source", type=Path,
                         help="a backup directory, an archive (fastzk.archiveDir) or a data dir")
    restore.add_argument("--to", required=True, type=Path, metavar="DATA_DIR",
                         help="the dataDir to write (must be empty, or --force)")
    point = restore.add_mutually_exclusive_group()
    point.add_argument("--to-zxid", type=_zxid, metavar="Z",
                       help="the state after the last txn at or before zxid Z")
    point.add_argument("--to-time", metavar="T",
                       help="the state after the last txn at or before time T (ISO 8601, UTC "
                       "unless it names a zone, or milliseconds since the epoch)")
    restore.add_argument("--force", action="store_true",
                         help="replace the fastzk data already in DATA_DIR")
    restore.set_defaults(handler=_restore)

    diff = snap_sub.add_parser(
        "diff", help="paths created, deleted and changed between two points (exit 1 if any)")
    for name in ("a", "b"):
        diff.add_argument(name, metavar=name.upper(),
                          help="a snapshot file, data dir, backup or archive, optionally @ZXID")
    diff.set_defaults(handler=_snap_diff)


def _sim(args: argparse.Namespace) -> int:
    from fastzk.sim.run import run_from_args

    return run_from_args(args)


def _shell(args: argparse.Namespace) -> int:
    from fastzk.client.shell import run_from_args

    return run_from_args(args)


def _nemesis(args: argparse.Namespace) -> int:
    from fastzk.nemesis.run import run_from_args

    return run_from_args(args)


def _check(args: argparse.Namespace) -> int:
    from fastzk.check import HistoryError, check_history, read_history

    try:
        result = check_history(read_history(args.history), args.model, args.time_limit_s)
    except HistoryError as error:
        print(f"fastzk check: {args.history}: {error}", file=sys.stderr)
        return 2
    print(result.report())
    return {"linearizable": 0, "not linearizable": 1}.get(result.verdict, 2)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastzk", description="A fast ZooKeeper-protocol coordination server."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve", help="run a server in the foreground (like zkServer.sh start-foreground)"
    )
    serve.add_argument(
        "config", nargs="?", help="a ZooKeeper-style zoo.cfg (default: embedded config)"
    )
    serve.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging threshold (default INFO)",
    )
    serve.set_defaults(handler=_serve)

    from fastzk.load.command import add_arguments as add_load_arguments

    load = commands.add_parser(
        "load", help="closed-loop load generator: ops/s and latency percentiles"
    )
    add_load_arguments(load)
    load.set_defaults(handler=_load)

    from fastzk.client.shell import add_arguments as add_shell_arguments

    shell = commands.add_parser("shell", help="interactive client, like zkCli.sh")
    add_shell_arguments(shell)
    shell.set_defaults(handler=_shell)

    from fastzk.sim.run import add_arguments as add_sim_arguments

    sim = commands.add_parser(
        "sim", help="deterministic simulation of an ensemble under faults, checked after "
        "every event (a seed replays a run exactly)")
    add_sim_arguments(sim)
    sim.set_defaults(handler=_sim)

    from fastzk.nemesis.run import add_arguments as add_nemesis_arguments

    nemesis = commands.add_parser(
        "nemesis", help="faults on a real local ensemble while a checked history is recorded"
    )
    add_nemesis_arguments(nemesis)
    nemesis.set_defaults(handler=_nemesis)

    from pathlib import Path

    log_cmd = commands.add_parser("log", help="offline write-ahead log tools")
    log_sub = log_cmd.add_subparsers(dest="log_command", required=True)
    log_dump = log_sub.add_parser(
        "dump", help="print every txn record and check the log (like zkTxnLogToolkit)"
    )
    log_dump.add_argument(
        "dir", type=Path, help="dataLogDir (or dataDir), its fastzk/ subdirectory, or a segment"
    )
    log_dump.add_argument(
        "--summary", action="store_true", help="only segment ends and the verdict"
    )
    log_dump.set_defaults(handler=_log_dump)

    snap_cmd = commands.add_parser("snap", help="offline snapshot tools")
    snap_sub = snap_cmd.add_subparsers(dest="snap_command", required=True)
    snap_dump = snap_sub.add_parser(
        "dump", help="print a snapshot's header, sessions and nodes (like zkSnapShotToolkit)"
    )
    snap_dump.add_argument("file", type=Path, help="a snapshot.<zxid> file")
    snap_dump.add_argument("--summary", action="store_true", help="no per-node lines")
    snap_dump.add_argument("--data", action="store_true", help="print each node's data too")
    snap_dump.set_defaults(handler=_snap_dump)
    _add_backup_commands(commands, snap_sub)

    imp = commands.add_parser(
        "import", help="turn an Apache ZooKeeper data directory (version-2/ snapshots and "
        "logs) into a fastzk data directory, recovered as ZooKeeper would; reads ZooKeeper's "
        "files only")
    imp.add_argument("zk_data_dir", type=Path, help="ZooKeeper's dataDir (holds version-2/)")
    imp.add_argument("--log-dir", type=Path, default=None,
                     help="ZooKeeper's dataLogDir, if not the dataDir")
    imp.add_argument("--to", type=Path, required=True, help="the fastzk dataDir to create")
    imp.add_argument("--to-log-dir", type=Path, default=None,
                     help="the fastzk dataLogDir, if not the dataDir")
    imp.set_defaults(handler=_import)

    exp = commands.add_parser(
        "export", help="write a stopped fastzk server's state as an Apache ZooKeeper data "
        "directory (snapshot, currentEpoch, acceptedEpoch)")
    exp.add_argument("data_dir", type=Path, help="the fastzk dataDir")
    exp.add_argument("--log-dir", type=Path, default=None,
                     help="the fastzk dataLogDir, if not the dataDir")
    exp.add_argument("--to", type=Path, required=True,
                     help="ZooKeeper's dataDir to write (must hold no ZooKeeper data)")
    exp.set_defaults(handler=_export)

    check = commands.add_parser(
        "check",
        help="is a recorded history linearizable? exit 0 yes, 1 no, 2 unknown or bad input",
    )
    check.add_argument(
        "--model", required=True, choices=["register", "kv", "znode"],
        help="the sequential specification (znode: ZooKeeper's contract, reads sequential)",
    )
    check.add_argument("history", type=Path, help="a JSON-lines history of invoke/ok/fail/info")
    check.add_argument(
        "--time-limit-s", type=float, default=60.0,
        help="give up with verdict unknown after this many seconds (default 60)",
    )
    check.set_defaults(handler=_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())

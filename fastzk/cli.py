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
    from fastzk.client.load import run_from_args

    return run_from_args(args)


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

    from fastzk.client.load import add_arguments as add_load_arguments

    load = commands.add_parser(
        "load", help="closed-loop load generator: ops/s and latency percentiles"
    )
    add_load_arguments(load)
    load.set_defaults(handler=_load)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())

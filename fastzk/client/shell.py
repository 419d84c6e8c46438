"""`fastzk shell`: an interactive client in the manner of zkCli.sh.

Commands and output follow zkCli's where it has them (`ls [-s] [-w]`, `get [-s] [-w]`,
`stat [-w]`, `create [-e] [-s]`, `set`, `delete [-v]`, `deleteall`, `sync`), so that people
and scripts used to zkCli feel at home. With commands on the command line it runs them and
exits (status 1 if one failed); otherwise it reads commands from standard input, one per line,
printing watch events as they arrive.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
import time
from collections.abc import Callable
from typing import TextIO

from fastzk.client.codec import CreateMode, EventType, Stat, WatchEvent, ZKError
from fastzk.client.protocol import ZKClient

HELP = """commands:
  ls [-s] [-w] path          children (-s: and the Stat; -w: watch them)
  get [-s] [-w] path         data (-s: and the Stat; -w: watch it)
  stat [-w] path             the Stat (-w: watch the node)
  create [-e] [-s] path [data]   -e ephemeral, -s sequential
  set path data [version]
  delete [-v version] path
  deleteall path             the node and everything below it
  sync path
  help | quit
"""

_ERROR_TEXT = {
    -101: "Node does not exist: {path}",
    -110: "Node already exists: {path}",
    -111: "Node not empty: {path}",
    -103: "version No is not valid : {path}",
    -102: "Insufficient permission : {path}",
    -108: "Ephemerals cannot have children: {path}",
    -8: "Path must start with / character",
}

_EVENT_NAMES = {EventType.NODE_CREATED: "NodeCreated", EventType.NODE_DELETED: "NodeDeleted",
                EventType.NODE_DATA_CHANGED: "NodeDataChanged",
                EventType.NODE_CHILDREN_CHANGED: "NodeChildrenChanged"}


class UsageError(Exception):
    pass


def _stat_text(stat: Stat) -> str:
    def when(ms: int) -> str:
        return time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime(ms / 1000))

    return "\n".join([
        f"cZxid = 0x{stat.czxid:x}", f"ctime = {when(stat.ctime)}",
        f"mZxid = 0x{stat.mzxid:x}", f"mtime = {when(stat.mtime)}",
        f"pZxid = 0x{stat.pzxid:x}", f"cversion = {stat.cversion}",
        f"dataVersion = {stat.version}", f"aclVersion = {stat.aversion}",
        f"ephemeralOwner = 0x{stat.ephemeralOwner:x}", f"dataLength = {stat.dataLength}",
        f"numChildren = {stat.numChildren}",
    ])


def _flags(args: list[str], allowed: str) -> tuple[set[str], list[str]]:
    flags = set()
    while args and args[0].startswith("-") and len(args[0]) == 2:
        if args[0][1] not in allowed:
            raise UsageError(f"unknown option {args[0]}")
        flags.add(args.pop(0)[1])
    return flags, args


class Shell:
    def __init__(self, client: ZKClient, out: Callable[[str], None]) -> None:
        self.client = client
        self.out = out

    async def run_line(self, line: str) -> bool:
        """Runs one command line; False when it failed."""
        try:
            words = shlex.split(line)
        except ValueError as error:
            self.out(f"parse error: {error}")
            return False
        if not words:
            return True
        command, args = words[0], words[1:]
        handler = getattr(self, f"cmd_{command}", None)
        if handler is None:
            self.out(f"unknown command: {command} (try help)")
            return False
        try:
            await handler(args)
        except UsageError as error:
            self.out(f"usage error: {error}")
            return False
        except ZKError as error:
            path = next((a for a in reversed(args) if a.startswith("/")), "")
            self.out(_ERROR_TEXT.get(error.code, f"Error: {error.name}").format(path=path))
            return False
        return True

    @staticmethod
    def _path(args: list[str]) -> str:
        if len(args) != 1:
            raise UsageError("expected exactly one path")
        return args[0]

    async def cmd_help(self, args: list[str]) -> None:
        self.out(HELP.rstrip())

    async def cmd_ls(self, args: list[str]) -> None:
        flags, args = _flags(args, "sw")
        path = self._path(args)
        children = await self.client.get_children(path, watch="w" in flags)
        self.out("[" + ", ".join(sorted(children)) + "]")
        if "s" in flags:
            stat = await self.client.exists(path)
            if stat is not None:
                self.out(_stat_text(stat))

    async def cmd_get(self, args: list[str]) -> None:
        flags, args = _flags(args, "sw")
        data, stat = await self.client.get(self._path(args), watch="w" in flags)
        self.out("null" if data is None else data.decode("utf-8", "replace"))
        if "s" in flags:
            self.out(_stat_text(stat))

    async def cmd_stat(self, args: list[str]) -> None:
        flags, args = _flags(args, "w")
        path = self._path(args)
        stat = await self.client.exists(path, watch="w" in flags)
        if stat is None:
            raise ZKError(-101)
        self.out(_stat_text(stat))

    async def cmd_create(self, args: list[str]) -> None:
        flags, args = _flags(args, "es")
        if not 1 <= len(args) <= 2:
            raise UsageError("create [-e] [-s] path [data]")
        mode = (CreateMode.EPHEMERAL if "e" in flags else CreateMode.PERSISTENT) + (
            2 if "s" in flags else 0)
        data = args[1].encode() if len(args) == 2 else b""
        self.out(f"Created {await self.client.create(args[0], data, mode)}")

    async def cmd_set(self, args: list[str]) -> None:
        if len(args) not in (2, 3):
            raise UsageError("set path data [version]")
        version = int(args[2]) if len(args) == 3 else -1
        await self.client.set(args[0], args[1].encode(), version)

    async def cmd_delete(self, args: list[str]) -> None:
        version = -1
        if args[:1] == ["-v"]:
            if len(args) < 2:
                raise UsageError("delete [-v version] path")
            version = int(args[1])
            args = args[2:]
        await self.client.delete(self._path(args), version)

    async def cmd_deleteall(self, args: list[str]) -> None:
        path = self._path(args)
        for child in await self.client.get_children(path):
            await self.cmd_deleteall([f"{path.rstrip('/')}/{child}"])
        await self.client.delete(path)

    async def cmd_sync(self, args: list[str]) -> None:
        await self.client.sync(self._path(args))
        self.out("Sync is OK")

    async def cmd_quit(self, args: list[str]) -> None:
        raise EOFError


def _print_event(out: Callable[[str], None], event: WatchEvent) -> None:
    name = _EVENT_NAMES.get(event.type, str(event.type))
    out(f"\nWATCHER::\n\nWatchedEvent state:SyncConnected type:{name} path:{event.path}")


async def run(server: str, session_timeout_ms: int, commands: list[str],
              stdin: TextIO, stdout: TextIO) -> int:
    def out(text: str) -> None:
        stdout.write(text + "\n")
        stdout.flush()

    host, _, port = server.rpartition(":")
    try:
        client = await ZKClient.connect(
            host or "127.0.0.1", int(port), session_timeout_ms=session_timeout_ms,
            watcher=lambda event: _print_event(out, event),
        )
    except (OSError, ZKError, TimeoutError) as error:
        out(f"cannot connect to {server}: {error}")
        return 2
    shell = Shell(client, out)
    ok = True
    try:
        if commands:
            ok = await shell.run_line(shlex.join(commands))
        else:
            loop = asyncio.get_running_loop()
            while True:
                line = await loop.run_in_executor(None, stdin.readline)
                if not line:
                    break
                try:
                    ok = await shell.run_line(line) and ok
                except EOFError:
                    break
    finally:
        await client.close()
    return 0 if ok else 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", default="127.0.0.1:2181", help="host:port (default %(default)s)")
    parser.add_argument("--timeout", type=int, default=30000,
                        help="requested session timeout, ms (default %(default)s)")
    parser.add_argument("command", nargs=argparse.REMAINDER,
                        help="one command to run and exit (default: read commands from stdin)")


def run_from_args(args: argparse.Namespace) -> int:
    import uvloop

    return uvloop.run(run(args.server, args.timeout, args.command, sys.stdin, sys.stdout))

"""Watch registrations and their triggering, with ZooKeeper 3.9 semantics.

Registrations belong to a connection. One-shot data and child watches are consumed when they
fire; persistent and recursive watches stay until removed or the connection closes. Every event
reaches each connection at most once, however many of its registrations match.
"""

from __future__ import annotations

from typing import Any

from fastzk.proto import Event, WatcherType
from fastzk.server.paths import ancestors

DATA, CHILD, PERSISTENT, RECURSIVE = 0, 1, 2, 3


class WatchManager:
    def __init__(self) -> None:
        # path -> the connections watching it, in the order they registered (dicts used as
        # ordered sets: notifications go out, and admin commands list watchers, in an order
        # that does not depend on object ids)
        self.tables: tuple[dict[str, dict[Any, None]], ...] = ({}, {}, {}, {})

    def add(self, kind: int, path: str, conn: Any) -> None:
        table = self.tables[kind]
        watchers = table.get(path)
        if watchers is None:  # not setdefault: no throwaway dict per call (setWatches adds 100k)
            table[path] = {conn: None}
        else:
            watchers[conn] = None
        conn.watches.add((kind, path))

    def has(self, kind: int, path: str, conn: Any) -> bool:
        return conn in self.tables[kind].get(path, ())

    def _discard(self, kind: int, path: str, conn: Any) -> bool:
        watchers = self.tables[kind].get(path)
        if not watchers or conn not in watchers:
            return False
        del watchers[conn]
        if not watchers:
            del self.tables[kind][path]
        conn.watches.discard((kind, path))
        return True

    def drop_connection(self, conn: Any) -> None:
        for kind, path in list(conn.watches):
            self._discard(kind, path, conn)

    def _kinds_for(self, watcher_type: int) -> tuple[int, ...] | None:
        return {
            WatcherType.CHILDREN: (CHILD,),
            WatcherType.DATA: (DATA,),
            WatcherType.ANY: (DATA, CHILD, PERSISTENT, RECURSIVE),
            WatcherType.PERSISTENT: (PERSISTENT,),
            WatcherType.PERSISTENT_RECURSIVE: (RECURSIVE,),
        }.get(watcher_type)

    def check(self, path: str, watcher_type: int, conn: Any) -> bool | None:
        """None for an unknown watcher type, else whether a matching registration exists."""
        kinds = self._kinds_for(watcher_type)
        if kinds is None:
            return None
        return any(self.has(kind, path, conn) for kind in kinds)

    def remove(self, path: str, watcher_type: int, conn: Any) -> bool | None:
        kinds = self._kinds_for(watcher_type)
        if kinds is None:
            return None
        removed = False
        for kind in kinds:
            removed |= self._discard(kind, path, conn)
        return removed

    def trigger(self, path: str, event: int) -> list[Any]:
        """The connections to notify of `event` on `path`, consuming one-shot watches."""
        data, child, persistent, recursive = self.tables
        targets: dict[Any, None] = {}
        if event != Event.NODE_CHILDREN_CHANGED:
            fired = data.pop(path, None)
            if fired:
                for conn in fired:
                    conn.watches.discard((DATA, path))
                    targets[conn] = None
        if event in (Event.NODE_CHILDREN_CHANGED, Event.NODE_DELETED):
            fired = child.pop(path, None)
            if fired:
                for conn in fired:
                    conn.watches.discard((CHILD, path))
                    targets[conn] = None
        if persistent:
            for conn in persistent.get(path, ()):
                targets[conn] = None
        if recursive and event != Event.NODE_CHILDREN_CHANGED:
            for candidate in (path, *ancestors(path)):
                for conn in recursive.get(candidate, ()):
                    targets[conn] = None
        return list(targets)

    def count(self, kind: int) -> int:
        return sum(len(conns) for conns in self.tables[kind].values())

    @property
    def total(self) -> int:
        return sum(self.count(kind) for kind in (DATA, CHILD, PERSISTENT, RECURSIVE))

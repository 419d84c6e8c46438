"""Watch registrations and their triggering, with ZooKeeper 3.9 semantics.

Registrations belong to a connection. One-shot data and child watches are consumed when they
fire; persistent and recursive watches stay until removed or the connection closes. Every event
reaches each connection at most once, however many of its registrations match.

What closing a connection must undo is kept without a tuple per registration, since a
fan-out consumes one entry per watcher: the connection's `watches`, a dict path -> bit mask
of the kinds it watches there (bit `1 << kind`), and, for setWatches (100,000 paths at once
on a reconnect), the request's own path lists (`restored`), which cost no hashing when they
are registered; closing discards whatever of them is still registered.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

from fastzk.proto import Event, WatcherType
from fastzk.server.paths import ancestors

DATA, CHILD, PERSISTENT, RECURSIVE = 0, 1, 2, 3

_KINDS_OF_TYPE: dict[int, tuple[int, ...]] = {
    WatcherType.CHILDREN: (CHILD,),
    WatcherType.DATA: (DATA,),
    WatcherType.ANY: (DATA, CHILD, PERSISTENT, RECURSIVE),
    WatcherType.PERSISTENT: (PERSISTENT,),
    WatcherType.PERSISTENT_RECURSIVE: (RECURSIVE,),
}


def _consume(fired: Iterable[Any], path: str, bit: int) -> None:
    """Clears `bit` of `path` in the watch masks of connections whose one-shot watch fired
    (a watch that setWatches restored has no mask)."""
    for conn in fired:
        masks = conn.watches
        mask = masks.get(path)
        if mask is None:
            continue
        mask &= ~bit
        if mask:
            masks[path] = mask
        else:
            del masks[path]


class WatchManager:
    def __init__(self) -> None:
        # path -> the connections watching it, in the order they registered (dicts used as
        # ordered sets: notifications go out, and admin commands list watchers, in an order
        # that does not depend on object ids)
        self.tables: tuple[dict[str, dict[Any, None]], ...] = ({}, {}, {}, {})
        # connection -> (kind, paths) of its setWatches requests (DataTree.restore_watches
        # registers them in the tables)
        self.restored: dict[Any, list[tuple[int, list[str]]]] = {}

    def add(self, kind: int, path: str, conn: Any) -> None:
        table = self.tables[kind]
        watchers = table.get(path)
        if watchers is None:  # not setdefault: no throwaway dict per call (setWatches adds 100k)
            table[path] = {conn: None}
        else:
            watchers[conn] = None
        masks = conn.watches
        masks[path] = masks.get(path, 0) | 1 << kind

    def has(self, kind: int, path: str, conn: Any) -> bool:
        return conn in self.tables[kind].get(path, ())

    def _discard(self, kind: int, path: str, conn: Any) -> bool:
        watchers = self.tables[kind].get(path)
        if not watchers or conn not in watchers:
            return False
        del watchers[conn]
        if not watchers:
            del self.tables[kind][path]
        _consume((conn,), path, 1 << kind)
        return True

    def note_restored(self, kind: int, paths: list[str], conn: Any) -> None:
        """Records that setWatches registered (some of) `paths` for `conn` in table `kind`."""
        self.restored.setdefault(conn, []).append((kind, paths))

    def drop_connection(self, conn: Any) -> None:
        for path, mask in list(conn.watches.items()):
            for kind in (DATA, CHILD, PERSISTENT, RECURSIVE):
                if mask & 1 << kind:
                    self._discard(kind, path, conn)
        for kind, paths in self.restored.pop(conn, ()):
            table = self.tables[kind]
            for path in paths:
                watchers = table.get(path)
                if watchers and conn in watchers:
                    del watchers[conn]
                    if not watchers:
                        del table[path]

    def check(self, path: str, watcher_type: int, conn: Any) -> bool | None:
        """None for an unknown watcher type, else whether a matching registration exists."""
        kinds = _KINDS_OF_TYPE.get(watcher_type)
        if kinds is None:
            return None
        return any(self.has(kind, path, conn) for kind in kinds)

    def remove(self, path: str, watcher_type: int, conn: Any) -> bool | None:
        kinds = _KINDS_OF_TYPE.get(watcher_type)
        if kinds is None:
            return None
        removed = False
        for kind in kinds:
            removed |= self._discard(kind, path, conn)
        return removed

    def trigger(self, path: str, event: int) -> Collection[Any]:
        """The connections to notify of `event` on `path`, in registration order (one-shot
        data watchers, child watchers, persistent, then recursive from the path up), each
        once, consuming one-shot watches. The result is the caller's to keep: when only one
        one-shot table fires (the usual fan-out) it is the dict popped from it, with no copy."""
        data, child, persistent, recursive = self.tables
        targets: dict[Any, None] | None = None
        if event != Event.NODE_CHILDREN_CHANGED and data:
            targets = data.pop(path, None)
            if targets:
                _consume(targets, path, 1 << DATA)
        if (event == Event.NODE_CHILDREN_CHANGED or event == Event.NODE_DELETED) and child:
            fired = child.pop(path, None)
            if fired:
                _consume(fired, path, 1 << CHILD)
                targets = fired if not targets else targets | fired
        if persistent:
            fired = persistent.get(path)
            if fired:
                targets = dict(fired) if not targets else targets | fired
        if recursive and event != Event.NODE_CHILDREN_CHANGED:
            for candidate in (path, *ancestors(path)):
                fired = recursive.get(candidate)
                if fired:
                    targets = dict(fired) if not targets else targets | fired
        return targets or ()

    def count(self, kind: int) -> int:
        return sum(len(conns) for conns in self.tables[kind].values())

    @property
    def total(self) -> int:
        return sum(self.count(kind) for kind in (DATA, CHILD, PERSISTENT, RECURSIVE))

"""The replica's view of its log: entries above a base zxid, in memory.

Entries are (zxid, payload) with increasing zxids. Everything at or below `base` is committed
and applied (in a snapshot, or compacted away after being applied), so two logs agree on it.
Because a zxid names its epoch and only one leader proposes in an epoch, two entries with the
same zxid are the same entry: the zxid alone identifies a log position's content.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from itertools import accumulate, repeat
from operator import lt
from typing import Any

Entry = tuple[int, Any]


class Log:
    def __init__(self, base: int = 0, entries: list[Entry] | None = None,
                 size_of: Callable[[Any], int] | None = None) -> None:
        """`size_of` measures payloads for the byte bounds; None: sizes are not kept (a lone
        server has nobody to send its log to)."""
        self.base = base
        self._zxids: list[int] = []
        self._payloads: list[Any] = []
        self._ends: list[int] = []  # running total of payload sizes, entry by entry
        self.size_of = size_of
        if entries:
            self.append(entries)

    @property
    def bytes(self) -> int:
        """Payload bytes held (as size_of counts them)."""
        if not self._ends or self.size_of is None:
            return 0
        return self._ends[-1] - self._end_before(0)

    def _end_before(self, index: int) -> int:
        """The running total of payload sizes before the index-th entry (which exists)."""
        if index:
            return self._ends[index - 1]
        assert self.size_of is not None
        return self._ends[0] - self.size_of(self._payloads[0])

    def first_to_keep(self, keep_bytes: int) -> int:
        """Index of the oldest entry that the newest `keep_bytes` of payload still include."""
        if not self._ends or self.size_of is None:
            return 0
        return bisect_left(self._ends, self._ends[-1] - keep_bytes)

    def __len__(self) -> int:
        return len(self._zxids)

    @property
    def last(self) -> int:
        return self._zxids[-1] if self._zxids else self.base

    def nth(self, index: int) -> int:
        """The zxid of the index-th entry above the base."""
        return self._zxids[index]

    def has(self, zxid: int) -> bool:
        """Whether the log holds (or has compacted) entry `zxid`."""
        if zxid <= self.base:
            return zxid == self.base or zxid == 0
        index = bisect_left(self._zxids, zxid)
        return index < len(self._zxids) and self._zxids[index] == zxid

    def floor(self, zxid: int) -> int:
        """The greatest zxid of the log at or below `zxid` (the base counts); -1 below it."""
        if zxid < self.base:
            return -1
        index = bisect_right(self._zxids, zxid)
        return self._zxids[index - 1] if index else self.base

    def before(self, zxid: int) -> int:
        """The zxid preceding `zxid` (which the log holds); -1 when that is below the base."""
        index = bisect_left(self._zxids, zxid)
        if index == 0:
            return self.base if zxid > self.base else -1
        return self._zxids[index - 1]

    def after(self, zxid: int, limit: int, limit_bytes: int | None = None) -> tuple[Entry, ...]:
        """Up to `limit` entries following `zxid` (which must be at or above the base), and no
        more than `limit_bytes` of payload unless the first entry alone is larger."""
        start = bisect_right(self._zxids, zxid)
        end = min(len(self._zxids), start + limit)
        if limit_bytes is not None and self.size_of is not None and end - start > 1:
            within = bisect_right(self._ends, self._end_before(start) + limit_bytes, start, end)
            end = max(start + 1, within)
        return tuple(zip(self._zxids[start:end], self._payloads[start:end], strict=True))

    def between(self, low: int, high: int) -> list[Entry]:
        """Entries with low < zxid <= high."""
        start = bisect_right(self._zxids, low)
        end = bisect_right(self._zxids, high)
        return list(zip(self._zxids[start:end], self._payloads[start:end], strict=True))

    def payloads_between(self, low: int, high: int) -> list[Any]:
        """The payloads of the entries with low < zxid <= high (each knows its zxid)."""
        return self._payloads[bisect_right(self._zxids, low):bisect_right(self._zxids, high)]

    def bytes_between(self, low: int, high: int) -> int:
        """Payload bytes of the entries with low < zxid <= high."""
        start = bisect_right(self._zxids, low)
        end = bisect_right(self._zxids, high)
        if end <= start or self.size_of is None:
            return 0
        return self._ends[end - 1] - self._end_before(start)

    def count_between(self, low: int, high: int) -> int:
        return bisect_right(self._zxids, high) - bisect_right(self._zxids, low)

    def append(self, entries: Sequence[Entry]) -> None:
        if not entries:
            return
        zxids, payloads = zip(*entries, strict=True)
        if zxids[0] <= self.last or not all(map(lt, zxids, zxids[1:])):
            raise ValueError(f"log append out of order: {zxids[0]:#x}... after {self.last:#x}")
        self._zxids.extend(zxids)
        self._payloads.extend(payloads)
        if self.size_of is None:
            self._ends.extend(repeat(0, len(payloads)))
            return
        ends = accumulate(map(self.size_of, payloads), initial=self._ends[-1] if self._ends else 0)
        next(ends)  # the initial total: the end of the entry before
        self._ends.extend(ends)

    def truncate_after(self, zxid: int) -> None:
        if zxid < self.base:
            raise ValueError(f"cannot truncate below the committed base {self.base:#x}")
        cut = bisect_right(self._zxids, zxid)
        del self._zxids[cut:]
        del self._payloads[cut:]
        del self._ends[cut:]

    def compact(self, zxid: int) -> None:
        """Forgets entries up to `zxid` (applied everywhere they matter: a follower that needs
        them gets a snapshot instead)."""
        if zxid <= self.base:
            return
        cut = bisect_right(self._zxids, zxid)
        self.base = self._zxids[cut - 1] if cut else self.base
        del self._zxids[:cut]
        del self._payloads[:cut]
        del self._ends[:cut]

    def reset(self, base: int) -> None:
        """Drops everything: the state at `base` came from a snapshot."""
        self.base = base
        self._zxids.clear()
        self._payloads.clear()
        self._ends.clear()

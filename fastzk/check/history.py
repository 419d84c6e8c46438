"""Reading a history (JSON lines of invoke/ok/fail/info events) and pairing each invocation with
its completion into an `Operation`.

Pairing is where the input's rules live: a process has at most one outstanding operation, a
`fail` means it certainly did not happen, an `info` (or no completion at all) means it may or
may not have, and a process that got `info` is a new process if it invokes again (its old
operation may still take effect at any later time, so it cannot order what follows).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EVENT_TYPES = ("invoke", "ok", "fail", "info")
# Extra event fields that the search ignores but that make a report readable.
CONTEXT_FIELDS = ("session", "server", "time")


class HistoryError(ValueError):
    """A history that cannot be checked; the message names the line (event number)."""


@dataclass(slots=True)
class Operation:
    """One invocation and what became of it. `status` is "ok", "fail" or "info"; `outcome` is
    the ok completion's value (None otherwise). Positions are 1-based event numbers, which are
    the line numbers of a file read by `read_history`. `args` is the model's checked, hashable
    view of value and outcome (set by `Model.prepare`), kept apart so reports show the input."""

    index: int
    process: Any
    pid: int
    f: str
    key: str | None
    value: Any
    invoke_line: int
    status: str = "info"
    outcome: Any = None
    return_line: int | None = None
    args: Any = None
    context: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """The operation as a window entry of a report (JSON-friendly)."""
        entry: dict[str, Any] = {
            "process": self.process, "f": self.f, "key": self.key, "value": self.value,
            "status": self.status, "invoke_line": self.invoke_line,
            "return_line": self.return_line,
        }
        if self.status == "ok":
            entry["outcome"] = self.outcome
        entry.update(self.context)
        return entry


def read_history(path: str | Path) -> list[dict[str, Any]]:
    """The events of a JSON-lines file, one object per line (trailing blank lines allowed)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise HistoryError(f"cannot read: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise HistoryError("not UTF-8 text") from None
    events: list[dict[str, Any]] = []
    for line_no, line in enumerate(text.rstrip().splitlines(), 1):
        try:
            event = json.loads(line)
        except json.JSONDecodeError as error:
            raise HistoryError(f"line {line_no}: not JSON: {error.msg}") from None
        if not isinstance(event, dict):
            raise HistoryError(f"line {line_no}: not a JSON object")
        events.append(event)
    return events


def pair_operations(events: Iterable[dict[str, Any]]) -> list[Operation]:
    """Operations in invocation order; every invocation without a completion becomes info."""
    operations: list[Operation] = []
    outstanding: dict[Any, Operation] = {}
    pids: dict[Any, int] = {}
    new_pid = itertools.count()
    for line, event in enumerate(events, 1):
        if not isinstance(event, dict):
            raise HistoryError(f"line {line}: not a JSON object")
        process = event.get("process")
        if isinstance(process, bool) or not isinstance(process, (int, str)):
            raise HistoryError(f"line {line}: 'process' must be an integer or a string")
        kind = event.get("type")
        if kind not in EVENT_TYPES:
            raise HistoryError(f"line {line}: 'type' must be one of {', '.join(EVENT_TYPES)}")
        f = event.get("f")
        if kind == "invoke":
            if process in outstanding:
                raise HistoryError(
                    f"line {line}: process {process!r} invokes again while its operation of "
                    f"line {outstanding[process].invoke_line} is outstanding"
                )
            if not isinstance(f, str):
                raise HistoryError(f"line {line}: an invoke needs a string 'f'")
            key = event.get("key")
            if key is not None and not isinstance(key, str):
                raise HistoryError(f"line {line}: 'key' must be a string")
            if process not in pids:
                pids[process] = next(new_pid)
            op = Operation(
                index=len(operations), process=process, pid=pids[process], f=f, key=key,
                value=event.get("value"), invoke_line=line, context=_context(event),
            )
            operations.append(op)
            outstanding[process] = op
            continue
        op = outstanding.pop(process, None)
        if op is None:
            raise HistoryError(f"line {line}: process {process!r} completes nothing")
        if f is not None and f != op.f:
            raise HistoryError(
                f"line {line}: completes {f!r} but line {op.invoke_line} invoked {op.f!r}"
            )
        op.status = kind
        op.return_line = line
        op.context.update(_context(event))
        if kind == "ok":
            op.outcome = event.get("value")
        elif kind == "info":
            op.return_line = None
            # Its operation may still take effect later: a new invocation of this process
            # belongs to a new (internal) process.
            del pids[process]
    return operations


def _context(event: dict[str, Any]) -> dict[str, Any]:
    return {name: event[name] for name in CONTEXT_FIELDS if name in event}

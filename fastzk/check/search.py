"""Checking a history against a model: partition by key, then one just-in-time linearization
search per partition (Wing & Gong, with Lowe's memo cache), whose loop is
`fastzk._core.lin_search`.

Partitions. A linearizable history is linearizable key by key and conversely (P-compositionality,
as in Knossos and Porcupine), so each key is searched alone; an operation touching several keys
(a znode multi) merges their partitions (union-find). A sync touches no key: it is copied into
every partition its process has operations in, which is sound because a no-op linearized at one
point of a global order can sit at that same point in every projection of it.

Sequential reads (znode `get`). ZooKeeper's plain reads are only sequentially consistent: a read
may take effect anywhere after its process's previous operation took effect and before it
returns. The search moves a read's call entry back to its process's previous operation's call
and lets no operation be linearized before that previous one. Within a partition, "previous"
means the previous operation of the process *in that partition*: the constraints that cross
partitions (a session that reads key a after writing key b) are dropped. That can only accept
more histories, never report a violation that a whole-history search would not.

Budget. The search is exponential in the worst case (many concurrent writes that no read
orders; timed-out writes, which may take effect at any later point): it gives up with "unknown"
at the time limit, or when one partition's memo cache holds 12 million configurations
(256 MB: the cache keeps 128-bit fingerprints, see core/lincheck.pxi).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from fastzk._core import lin_search
from fastzk.check.history import HistoryError, Operation, pair_operations
from fastzk.check.models import IMPOSSIBLE, MODELS, Model

# Operations of the linearizable prefix shown before the ones that could not be placed next.
PREFIX_SHOWN = 8


@dataclass
class CheckResult:
    """The verdict on a history. `ops` counts its invocations, `partitions` the independent
    searches; on a violation `key` names the failing partition (its keys joined by ", "; None
    for the unnamed register) and `window` holds, as dicts, the end of the longest prefix that
    could be linearized (role "linearized") and the operations that could not come next (role
    "stuck"); `state` is the model state after that prefix. On "unknown", `key` is the first
    partition left undecided."""

    verdict: str
    ops: int
    partitions: int
    elapsed_s: float
    key: str | None = None
    window: list[dict[str, Any]] = field(default_factory=list)
    state: str | None = None
    prefix_length: int = 0

    def report(self) -> str:
        """A human-readable account of the verdict, several lines on a violation."""
        head = (f"{self.verdict}: {self.ops} operations, {self.partitions} partitions, "
                f"{self.elapsed_s:.3f} s")
        if self.verdict == "linearizable":
            return head
        where = "the default key" if self.key is None else f"key {self.key!r}"
        if self.verdict == "unknown":
            return (f"{head}\nthe search of {where} did not finish within the time limit (or "
                    "before its memo cache reached 12 million configurations)")
        lines = [head, f"in {where}:"]
        done = [entry for entry in self.window if entry["role"] == "linearized"]
        earlier = self.prefix_length - len(done)
        lines.append(
            f"these operations linearize, in this order ({self.prefix_length} in all"
            + (f", the first {earlier} not shown):" if earlier else "):")
        )
        lines += [f"  {_describe(entry)}" for entry in done] or ["  (none)"]
        lines.append(f"state then: {self.state}")
        lines.append("none of these can take effect next:")
        lines += [f"  {_describe(entry)}" for entry in self.window if entry["role"] == "stuck"]
        return "\n".join(lines)


def _describe(entry: dict[str, Any]) -> str:
    lines = (f"line {entry['invoke_line']}-{entry['return_line']}"
             if entry["return_line"] is not None else f"line {entry['invoke_line']}-(none)")
    outcome = f"-> {_json(entry['outcome'])}" if entry["status"] == "ok" else "-> info (unknown)"
    extra = "".join(f" {name}={entry[name]}" for name in ("session", "server", "time")
                    if name in entry)
    key = "" if entry["key"] is None else f" {entry['key']}"
    value = "" if entry["value"] is None else f" {_json(entry['value'])}"
    return f"{lines:<16} process {entry['process']}: {entry['f']}{key}{value} {outcome}{extra}"


def _json(value: Any) -> str:
    return json.dumps(value)


def check_history(events: Iterable[dict[str, Any]], model: str,
                  time_limit_s: float = 60.0) -> CheckResult:
    """Checks `events` (in real-time order) against `model` ("register", "kv" or "znode").
    Raises HistoryError (a ValueError) for input it cannot check, ValueError for an unknown
    model."""
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r} (one of {', '.join(sorted(MODELS))})")
    started = time.monotonic()
    deadline = started + time_limit_s
    spec = MODELS[model]()
    operations = pair_operations(events)
    for op in operations:
        try:
            spec.prepare(op)
        except ValueError as error:
            raise HistoryError(f"line {op.invoke_line}: {error}") from None
    partitions = _partition(
        [op for op in operations if op.status != "fail" and spec.informative(op)], spec
    )
    undecided: list[str | None] = []
    for keys, ops in partitions:
        outcome = _search(ops, spec, deadline)
        label = None if keys == (None,) else ", ".join(str(key) for key in keys)
        if outcome == "unknown":
            undecided.append(label)
        elif outcome is not None:
            window, state, prefix_length = outcome
            return CheckResult(
                "not linearizable", len(operations), len(partitions),
                time.monotonic() - started, label, window, state, prefix_length,
            )
    elapsed_s = time.monotonic() - started
    if undecided:
        return CheckResult("unknown", len(operations), len(partitions), elapsed_s, undecided[0])
    return CheckResult("linearizable", len(operations), len(partitions), elapsed_s)


def _partition(ops: list[Operation], spec: Model) -> list[tuple[tuple, list[Operation]]]:
    """(sorted keys, operations in invocation order) per partition, sorted by keys."""
    parent: dict[Any, Any] = {}

    def root(key: Any) -> Any:
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    keyless: list[Operation] = []
    for op in ops:
        keys = spec.keys(op)
        if not keys:
            keyless.append(op)
            continue
        for key in keys:
            parent.setdefault(key, key)
        for key in keys[1:]:
            parent[root(key)] = root(keys[0])
    groups: dict[Any, list[Operation]] = {}
    for op in ops:
        keys = spec.keys(op)
        if keys:
            groups.setdefault(root(keys[0]), []).append(op)
    members: dict[Any, list[Any]] = {}
    for key in parent:
        members.setdefault(root(key), []).append(key)
    result = []
    for group_root, group in groups.items():
        processes = {op.pid for op in group}
        group = group + [op for op in keyless if op.pid in processes]
        group.sort(key=lambda op: op.index)
        keys = tuple(sorted(members[group_root], key=_key_order))
        result.append((keys, group))
    result.sort(key=lambda item: [_key_order(key) for key in item[0]])
    return result


def _key_order(key: str | None) -> tuple[bool, str]:
    return key is not None, key or ""


def _search(
    ops: list[Operation], spec: Model, deadline: float
) -> None | str | tuple[list[dict[str, Any]], str, int]:
    """None when the partition linearizes, "unknown" past the deadline, else (the window of a
    CheckResult, the state after the longest linearizable prefix, that prefix's length)."""
    # The search wants the operations that may never take effect numbered last.
    ops = sorted(ops, key=lambda op: (op.status != "ok", op.index))
    n = len(ops)
    before = [-1] * n
    call_time: list[tuple[int, int]] = [(0, 0)] * n
    last: dict[int, int] = {}
    for i, op in enumerate(ops):
        # Invocation order per process, since each process's info operation is its last.
        previous = last.get(op.pid, -1)
        before[i] = previous
        last[op.pid] = i
        if spec.sequential(op):
            # May take effect as early as its process's previous operation: at the same call
            # time, just after it (or at the very beginning when there is none).
            call_time[i] = (call_time[previous][0], i) if previous >= 0 else (-1, i)
        else:
            call_time[i] = (op.invoke_line, i)
    order: list[tuple[float, int, int, int]] = []
    for i, op in enumerate(ops):
        order.append((call_time[i][0], 0, call_time[i][1], i * 2))
        order.append((op.return_line if op.status == "ok" else math.inf, 1, i, i * 2 + 1))
    order.sort()
    entries = [item[3] for item in order]
    maybe = bytes(op.status != "ok" for op in ops)
    readonly = bytes(spec.read_only(op) for op in ops)

    states: list[Any] = [spec.initial]
    ids: dict[Any, int] = {spec.initial: 0}

    def step(state_id: int, i: int) -> int:
        after = spec.step(states[state_id], ops[i])
        if after is IMPOSSIBLE:
            return -1
        if after not in ids:
            ids[after] = len(states)
            states.append(after)
        return ids[after]

    status, prefix = lin_search(entries, maybe, readonly, before, step, 0, time.monotonic, deadline)
    if status == 0:
        return None
    if status == 2:
        return "unknown"
    state = spec.initial
    for i in prefix:
        state = spec.step(state, ops[i])
    # The candidates after the prefix: operations not in it whose (possibly moved) call comes
    # before the earliest return of an ok operation not in it.
    placed = set(prefix)
    rest = [i for i in range(n) if i not in placed]
    first_return = min((ops[i].return_line for i in rest if ops[i].status == "ok"),
                       default=math.inf)
    stuck = [ops[i] for i in rest if call_time[i][0] < first_return]
    window = [{"role": "linearized", **ops[i].describe()} for i in prefix[-PREFIX_SHOWN:]]
    window += [{"role": "stuck", **op.describe()} for op in stuck]
    return window, spec.show(state), len(prefix)

"""The sequential specifications the checker compares a history with: register, kv and znode.

A model validates each operation once (`prepare`, which also stores a hashable view of its
arguments in `op.args`) and then answers `step(state, op)`: the state after the operation, or
`IMPOSSIBLE` where the operation, with the outcome it reported, cannot have happened in that
state. For an operation whose outcome is unknown (info), `step` describes it taking effect;
the search itself covers it never taking effect. States are hashable and immutable so that the
search can intern them.
"""

from __future__ import annotations

import json
from typing import Any

from fastzk.check.history import Operation

IMPOSSIBLE: Any = object()


def freeze(value: Any) -> Any:
    """A hashable equivalent of a JSON value (lists become tuples, objects sorted tuples)."""
    if isinstance(value, list):
        return tuple(freeze(item) for item in value)
    if isinstance(value, dict):
        return tuple(sorted((name, freeze(item)) for name, item in value.items()))
    return value


class Model:
    """The interface of a model; one instance checks a whole history."""

    name = ""
    initial: Any = None

    def prepare(self, op: Operation) -> None:
        """Checks the operation's shape; raises ValueError saying what is wrong."""
        raise NotImplementedError

    def keys(self, op: Operation) -> tuple[str | None, ...]:
        """The keys the operation touches; () for one that touches none (a sync), which the
        search copies into the partitions of its process."""
        return (op.key,)

    def informative(self, op: Operation) -> bool:
        """False for an operation that constrains nothing (a read with no result)."""
        return op.status == "ok" or op.f not in ("read", "get", "sync")

    def sequential(self, op: Operation) -> bool:
        """True for an operation that is only sequentially consistent, not linearizable."""
        return False

    def read_only(self, op: Operation) -> bool:
        """True for an operation that leaves unchanged every state it can be applied in: the
        search never needs to try it at a later point than the first it fits."""
        return op.status == "ok" and op.f in ("read", "get", "sync")

    def step(self, state: Any, op: Operation) -> Any:
        raise NotImplementedError

    def show(self, state: Any) -> str:
        """The state, for a report."""
        return json.dumps(state)


class Register(Model):
    """Read/write/compare-and-set registers, one per key; a never-written key reads null."""

    name = "register"

    def prepare(self, op: Operation) -> None:
        if op.f == "read":
            op.args = freeze(op.outcome)
        elif op.f == "write":
            op.args = freeze(op.value)
        elif op.f == "cas":
            if not isinstance(op.value, list) or len(op.value) != 2:
                raise ValueError("cas takes [expected, new]")
            op.args = (freeze(op.value[0]), freeze(op.value[1]))
        else:
            raise ValueError(f"register has no operation {op.f!r} (read, write, cas)")

    def step(self, state: Any, op: Operation) -> Any:
        if op.f == "read":
            return state if state == op.args else IMPOSSIBLE
        if op.f == "write":
            return op.args
        expected, new = op.args
        return new if state == expected else IMPOSSIBLE


class KeyValue(Model):
    """String values per key with get/put/append; a never-written key reads ""."""

    name = "kv"
    initial = ""

    def prepare(self, op: Operation) -> None:
        if op.f not in ("get", "put", "append"):
            raise ValueError(f"kv has no operation {op.f!r} (get, put, append)")
        if op.f == "get":
            if op.status == "ok" and not isinstance(op.outcome, str):
                raise ValueError("a get returns a string")
            op.args = op.outcome
        else:
            if not isinstance(op.value, str):
                raise ValueError(f"{op.f} takes a string")
            op.args = op.value

    def step(self, state: Any, op: Operation) -> Any:
        if op.f == "get":
            return state if state == op.args else IMPOSSIBLE
        if op.f == "put":
            return op.args
        return state + op.args


# ZooKeeper outcomes the znode model decides (lower-case names of ZooKeeper's error codes).
ZNODE_ERRORS = {
    "create": ("nodeexists",),
    "set": ("badversion", "nonode"),
    "delete": ("badversion", "nonode"),
    "multi": ("nodeexists", "badversion", "nonode"),
}
# Outcomes that depend on what the model leaves out (parents, children, ACLs, argument checks):
# the operation changed nothing and is accepted in any state.
UNMODELED_ERRORS = {
    "create": ("nonode", "noauth", "invalidacl", "badarguments", "nochildrenforephemerals"),
    "set": ("noauth", "badarguments"),
    "delete": ("notempty", "noauth", "badarguments"),
    "multi": ("notempty", "noauth", "invalidacl", "badarguments", "nochildrenforephemerals"),
}
SUB_OPS = ("create", "set", "delete", "check")


def _version(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < -1:
        raise ValueError(f"{what} takes a version (an integer, -1 for any)")
    return value


def _data(value: Any, what: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{what}'s data must be a string or null")
    return value


def _sub_op(f: str, path: Any, value: Any) -> tuple[str, str, Any]:
    """(f, path, argument) of a write; the argument is the data (create), (version, data)
    (set) or the expected version (delete, check)."""
    if not isinstance(path, str):
        raise ValueError(f"{f} needs a string key (the path)")
    if f == "create":
        return f, path, _data(value, f)
    if f == "set":
        if not isinstance(value, list) or len(value) != 2:
            raise ValueError("set takes [expected_version, data]")
        return f, path, (_version(value[0], f), _data(value[1], f))
    return f, path, _version(value, f)


def _lookup(state: tuple, path: str) -> tuple[str | None, int] | None:
    for node_path, data, version in state:
        if node_path == path:
            return data, version
    return None


def _replace(state: tuple, path: str, node: tuple[str | None, int] | None) -> tuple:
    nodes = [item for item in state if item[0] != path]
    if node is not None:
        nodes.append((path, *node))
    return tuple(sorted(nodes, key=lambda item: item[0]))


def _apply(state: tuple, sub: tuple[str, str, Any]) -> tuple[tuple, str | None]:
    """ZooKeeper's checks of one write, in its order: (new state, None) or (state, error)."""
    f, path, arg = sub
    node = _lookup(state, path)
    if f == "create":
        if node is not None:
            return state, "nodeexists"
        return _replace(state, path, (arg, 0)), None
    if node is None:
        return state, "nonode"
    expected = arg[0] if f == "set" else arg
    if expected != -1 and expected != node[1]:
        return state, "badversion"
    if f == "set":
        return _replace(state, path, (arg[1], node[1] + 1)), None
    if f == "delete":
        return _replace(state, path, None), None
    return state, None


class Znode(Model):
    """ZooKeeper's data tree without parents, children, ACLs or ephemerals: per path, absent or
    (data, version). Writes are linearizable; `get` is sequentially consistent (see
    fastzk/check/search.py for how the search relaxes it); `sync` is a linearizable no-op.
    A partition's state is the sorted tuple of its present nodes, (path, data, version)."""

    name = "znode"
    initial: tuple = ()

    def prepare(self, op: Operation) -> None:
        f, outcome, ok = op.f, op.outcome, op.status == "ok"
        if f == "multi":
            if op.key is not None:
                raise ValueError("multi has no key: each sub-operation has its own")
            if not isinstance(op.value, list) or not op.value:
                raise ValueError("multi takes a non-empty list of sub-operations")
            subs = []
            for sub in op.value:
                if not isinstance(sub, dict) or sub.get("f") not in SUB_OPS:
                    raise ValueError(f"a multi's sub-operation is one of {', '.join(SUB_OPS)}")
                subs.append(_sub_op(sub["f"], sub.get("key"), sub.get("value")))
            op.args = tuple(subs)
            if ok and outcome is not True:
                self._error(op)
            return
        if f == "get":
            if ok and outcome is not None:
                if (not isinstance(outcome, list) or len(outcome) != 2
                        or isinstance(outcome[1], bool) or not isinstance(outcome[1], int)):
                    raise ValueError("a get returns [data, version] or null")
                op.args = (_data(outcome[0], "get"), outcome[1])
        elif f == "sync":
            if ok and outcome is not True:
                raise ValueError("a sync returns true")
        elif f in ("create", "set", "delete"):
            op.args = _sub_op(f, op.key, op.value)
            if ok:
                success = isinstance(outcome, int) and not isinstance(outcome, bool) \
                    if f == "set" else outcome is True
                if not success:
                    self._error(op)
        else:
            raise ValueError(
                f"znode has no operation {f!r} (create, set, delete, get, sync, multi)"
            )
        if f != "sync" and not isinstance(op.key, str):
            raise ValueError(f"{f} needs a string key (the path)")

    @staticmethod
    def _error(op: Operation) -> None:
        if op.outcome not in ZNODE_ERRORS[op.f] + UNMODELED_ERRORS[op.f]:
            raise ValueError(f"{op.f} cannot return {op.outcome!r}")

    def keys(self, op: Operation) -> tuple[str | None, ...]:
        if op.f == "multi":
            return tuple(sorted({path for _, path, _ in op.args}))
        if op.f == "sync":
            return ()
        return (op.key,)

    def sequential(self, op: Operation) -> bool:
        return op.f == "get"

    def read_only(self, op: Operation) -> bool:
        return op.status == "ok" and (op.f in ("get", "sync") or isinstance(op.outcome, str))

    def step(self, state: Any, op: Operation) -> Any:
        f, outcome = op.f, op.outcome if op.status == "ok" else None
        if f == "get":
            return state if _lookup(state, op.key) == op.args else IMPOSSIBLE
        if f == "sync":
            return state
        if isinstance(outcome, str) and outcome in UNMODELED_ERRORS[f]:
            return state                    # changed nothing, for reasons the model omits
        if f == "multi":
            return self._multi(state, op.args, outcome)
        after, error = _apply(state, op.args)
        if op.status != "ok":
            return IMPOSSIBLE if error else after   # info: only its success is an effect
        if isinstance(outcome, str):
            return state if error == outcome else IMPOSSIBLE
        if error or (f == "set" and _lookup(after, op.key)[1] != outcome):
            return IMPOSSIBLE
        return after

    @staticmethod
    def _multi(state: tuple, subs: tuple, outcome: Any) -> Any:
        """All sub-operations apply, in order, or the first that fails must fail with the
        reported error. A reported "nonode" may also come from a create whose parent is
        missing, which the model cannot see: accepted at any create that would succeed."""
        after = state
        for sub in subs:
            after, error = _apply(after, sub)
            if error:
                return state if error == outcome else IMPOSSIBLE
            if outcome == "nonode" and sub[0] == "create":
                return state
        return IMPOSSIBLE if isinstance(outcome, str) else after

    def show(self, state: Any) -> str:
        if not state:
            return "(no znodes)"
        return ", ".join(f"{path}={json.dumps(data)} v{version}" for path, data, version in state)


MODELS: dict[str, type[Model]] = {"register": Register, "kv": KeyValue, "znode": Znode}

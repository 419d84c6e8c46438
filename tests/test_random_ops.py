"""Random operation sequences, run on both servers and compared (hypothesis).

Hypothesis draws a list of operations on a small path universe, so that
creates collide, parents are missing, versions are stale and children exist
often.  The same list runs against Apache ZooKeeper and against fastzk with
the differential machinery; every result, Stat, watch event and wire frame
must match.

Replay: examples are derandomized by default (the same sequences every run,
so CI is reproducible).  FASTZK_RANDOM_SEED=<int> explores other sequences
with that seed; FASTZK_RANDOM_EXAMPLES=<n> changes the count.  Shrinking is
off by default because every step costs two server round trips per op (set
FASTZK_RANDOM_SHRINK=1 to enable it); the failing sequence is printed as a
readable transcript either way.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from differential import Differential, ScenarioContext
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

PATHS = ["a", "a/b", "a/b/c", "a/x", "b", "b/y", "c"]
VERSIONS = [-1, 0, 1, 2]
DATA = [b"", b"x", b"data", b"\x00\xff"]
MODES = {
    "persistent": {},
    "ephemeral": {"ephemeral": True},
    "persistent_sequential": {"sequence": True},
    "ephemeral_sequential": {"ephemeral": True, "sequence": True},
}

Op = tuple[Any, ...]

path_st = st.sampled_from(PATHS)
client_st = st.sampled_from(["c0", "c1"])

create_st = st.tuples(
    st.just("create"),
    client_st,
    path_st,
    st.sampled_from(DATA),
    st.sampled_from(sorted(MODES)),
    st.booleans(),
)
delete_st = st.tuples(st.just("delete"), client_st, path_st, st.sampled_from(VERSIONS))
set_st = st.tuples(
    st.just("set"), client_st, path_st, st.sampled_from(DATA), st.sampled_from(VERSIONS)
)
get_st = st.tuples(st.just("get"), client_st, path_st, st.booleans())
exists_st = st.tuples(st.just("exists"), client_st, path_st, st.booleans())
children_st = st.tuples(st.just("children"), client_st, path_st, st.booleans(), st.booleans())
reconnect_st = st.tuples(st.just("close_session"), client_st)

# Writes are drawn more often than reads so that trees actually grow.
crud_ops = st.one_of(
    create_st, create_st, create_st, delete_st, delete_st, set_st, set_st,
    get_st, exists_st, children_st,
)  # fmt: skip
all_ops = st.one_of(crud_ops, reconnect_st)

# Every sequence starts from the same small tree, so deep paths are reachable.
SETUP: list[Op] = [
    ("create", "c0", "a", b"", "persistent", False),
    ("create", "c0", "b", b"", "persistent", False),
]


def _settings(examples: int) -> Callable[[Any], Any]:
    """Shared hypothesis settings (see the module docstring for the env knobs)."""
    seed_env = os.environ.get("FASTZK_RANDOM_SEED")
    phases = [Phase.explicit, Phase.reuse, Phase.generate]
    if os.environ.get("FASTZK_RANDOM_SHRINK") == "1":
        phases.append(Phase.shrink)
    decorators: list[Callable[[Any], Any]] = [
        settings(
            max_examples=int(os.environ.get("FASTZK_RANDOM_EXAMPLES", examples)),
            deadline=None,
            derandomize=seed_env is None,
            database=None,
            phases=phases,
            print_blob=True,
            suppress_health_check=[
                HealthCheck.function_scoped_fixture,
                HealthCheck.too_slow,
                HealthCheck.data_too_large,
            ],
        )
    ]
    if seed_env is not None:
        decorators.append(seed(int(seed_env)))

    def apply(fn: Any) -> Any:
        for decorator in decorators:
            fn = decorator(fn)
        return fn

    return apply


class _Runner:
    """Executes an op list inside a scenario; one session generation per client name."""

    def __init__(self, ctx: ScenarioContext) -> None:
        self.ctx = ctx
        self.generation: dict[str, int] = {"c0": 0, "c1": 0}
        self.watch_seq = 0

    def client(self, name: str) -> str:
        return f"{name}.{self.generation[name]}"

    def watcher(self, client: str, enabled: bool) -> Any:
        if not enabled:
            return None
        self.watch_seq += 1
        return self.ctx.watcher(f"w{self.watch_seq}", client=client)

    def run(self, ops: list[Op]) -> None:
        ctx = self.ctx
        for op in ops:
            kind, name = op[0], op[1]
            client = self.client(name)
            path = ctx.path(*op[2].split("/")) if len(op) > 2 else ""
            if kind == "create":
                _, _, _, data, mode, include_data = op
                ctx.op(
                    "create", path, data, client=client, include_data=include_data, **MODES[mode]
                )
            elif kind == "delete":
                ctx.op("delete", path, version=op[3], client=client)
            elif kind == "set":
                ctx.op("set", path, op[3], version=op[4], client=client)
            elif kind == "get":
                ctx.op("get", path, watch=self.watcher(client, op[3]), client=client)
            elif kind == "exists":
                ctx.op("exists", path, watch=self.watcher(client, op[3]), client=client)
            elif kind == "children":
                ctx.op(
                    "get_children",
                    path,
                    watch=self.watcher(client, op[3]),
                    include_data=op[4],
                    client=client,
                )
            elif kind == "close_session":
                ctx.client(client)
                ctx.stop_client(client)
                self.generation[name] += 1
            else:  # pragma: no cover - strategy and runner out of sync
                raise AssertionError(f"unknown op {op!r}")
        self.finish()

    def finish(self) -> None:
        """Flush every client's notifications, then dump the final tree."""
        ctx = self.ctx
        observer = "final"
        for name in list(ctx._clients):
            client = ctx._clients[name]
            if not client._stopped.is_set():
                ctx.barrier(name)
            ctx.record_events(name)
        for rel in ["", *PATHS]:
            path = ctx.path(*rel.split("/")) if rel else ctx.path()
            ctx.op("get_children", path, include_data=True, client=observer)
            ctx.op("get", path, client=observer)


def _check(differential: Differential, ops: list[Op]) -> None:
    def scenario(ctx: ScenarioContext) -> None:
        # A closing session deletes its ephemerals in an unspecified order.
        ctx.unordered_notifications = any(op[0] == "close_session" for op in ops)
        ctx.client("c0.0")
        ctx.client("c1.0")
        _Runner(ctx).run(SETUP + ops)

    differential.run(scenario)


@pytest.mark.timeout(110)
@_settings(examples=40)
@given(ops=st.lists(crud_ops, min_size=1, max_size=40))
def test_random_single_session_crud_matches_reference(
    differential: Differential, ops: list[Op]
) -> None:
    """Random creates/deletes/sets/reads by one client: results and Stats match."""
    single = [(op[0], "c0", *op[2:]) for op in ops]
    _check(differential, single)


@pytest.mark.timeout(110)
@_settings(examples=40)
@given(ops=st.lists(crud_ops, min_size=1, max_size=40))
def test_random_two_session_ops_with_watches_match_reference(
    differential: Differential, ops: list[Op]
) -> None:
    """Two sessions interleave writes and watched reads: events and results match."""
    _check(differential, ops)


@pytest.mark.timeout(110)
@_settings(examples=30)
@given(ops=st.lists(all_ops, min_size=1, max_size=40))
def test_random_ops_with_session_close_match_reference(
    differential: Differential, ops: list[Op]
) -> None:
    """As above, plus sessions closing mid-sequence (ephemerals vanish, watches fire)."""
    _check(differential, ops)

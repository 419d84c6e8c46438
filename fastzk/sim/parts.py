"""What the simulator's parts see of each other, as protocols, so that no module of the
simulator imports one that imports it back: `world.py` builds every part and imports them
all; `server.py` sees the world, the checks, the network and its clients only through the
protocols here; `checks.py`, `network.py` and `client.py` import `server.py` and state what
they need of the world as a `Scheduler` extended with the servers (and, for clients, the
checks). The order of imports: parts, disk, bugs < server < checks, network < client < world.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, Protocol

from fastzk.server.prep import Txn


class Scheduler(Protocol):
    """The world as every part sees it: simulated time, the one random source and the event
    queue."""

    rng: random.Random
    now_us: int

    def at(self, delay_us: int, fn: Callable[..., Any], *args: Any, target: Any = None) -> None:
        ...

    def trace_event(self, what: str, sid: int, detail: str = "") -> None:
        ...


class ServerChecks(Protocol):
    """What a server reports to the run's invariant checks."""

    world: Scheduler

    def before_apply(self, sid: int, txns: list[Txn]) -> None:
        ...

    def after_apply(self, sid: int, zxid: int, digest: int) -> None:
        ...

    def fail(self, kind: str, message: str) -> None:
        ...

    def leader(self, epoch: int, sid: int) -> None:
        ...

    def state_loaded(self, sid: int, zxid: int, digest: int) -> None:
        ...


class PeerNet(Protocol):
    """The network between servers, as a server uses it."""

    def send(self, src: int, dst: int, message: Any) -> None:
        ...

    def server_up(self, sid: int, boot: int) -> None:
        ...

    def server_down(self, sid: int) -> None:
        ...


class ClientEnd(Protocol):
    """A client's end of a connection, as the server's end sees it (`conn` is the server's
    SimConn)."""

    def deliver(self, conn: Any, data: bytes) -> None:
        ...

    def connection_lost(self, conn: Any) -> None:
        ...


class ServerWorld(Scheduler, Protocol):
    """The world as a server sees it."""

    checks: ServerChecks
    net: PeerNet
    membership: bytes

    def restart(self, sid: int) -> None:
        ...

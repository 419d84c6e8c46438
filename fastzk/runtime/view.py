"""What the operator's side of a server (four-letter words and AdminServer commands, the
HTTP endpoint, /metrics, online backups) sees of it: a narrow interface that
`runtime/server.py`'s `Server` satisfies. Those modules depend on this view instead of on the
server, which imports them, so the runtime has no import cycle, and what they may touch is
written down in one place."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from fastzk.config import Config
    from fastzk.node import Client, Node
    from fastzk.runtime.stages import WriteStages
    from fastzk.runtime.storage import Storage


class ConnectionView(Protocol):
    """One client connection, as `cons` and `connections` describe it."""

    @property
    def transport(self) -> asyncio.BaseTransport | None: ...

    @property
    def reading_paused(self) -> bool: ...


class ServerView(Protocol):
    cfg: Config
    node: Node  # the pipeline's state: sessions, watches, stats, the tree
    storage: Storage  # the WAL writer's figures, directory sizes, snapshots for backups
    stages: WriteStages  # where writes spend their time (/metrics)
    loop: asyncio.AbstractEventLoop
    started_ms: int
    trace_mask: int  # gtmk/stmk: stored, as fastzk traces nothing
    role_changes: int

    @property
    def protocols(self) -> Mapping[Client, ConnectionView]: ...

    def ready(self) -> tuple[bool, str]:
        """Whether a write sent now would be served, and why not."""
        ...

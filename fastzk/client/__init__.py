"""fastzk's own ZooKeeper client: an asyncio connection (``protocol``), its codec (``codec``)
and ``fastzk shell`` (``shell``).

The client exists so fastzk can be measured and tested with a tool that is independent of
the server code and cheap enough per request not to be the bottleneck on a small machine;
the load generator built on it is the package ``fastzk.load``.
"""

from fastzk.client.codec import (
    ACL,
    OPEN_ACL_UNSAFE,
    CreateMode,
    EventType,
    MultiOp,
    MultiResult,
    Stat,
    WatchEvent,
    ZKError,
    error_name,
    multi_check,
    multi_create,
    multi_delete,
    multi_set,
)
from fastzk.client.protocol import ZKClient

__all__ = [
    "ACL",
    "OPEN_ACL_UNSAFE",
    "CreateMode",
    "EventType",
    "MultiOp",
    "MultiResult",
    "Stat",
    "WatchEvent",
    "ZKClient",
    "ZKError",
    "error_name",
    "multi_check",
    "multi_create",
    "multi_delete",
    "multi_set",
]

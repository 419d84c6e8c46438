"""Set-up and clean-up of a load's key space, shared by the simple ops and the presets.

The set-up and clean-up clients pipeline their requests (SETUP_WINDOW at a time) so that
preparing a million keys takes seconds, not minutes; the measured sessions never use these.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fastzk.client.codec import NO_NODE, NODE_EXISTS, NOT_EMPTY, ZKError
from fastzk.client.protocol import ZKClient
from fastzk.load.config import LoadConfig
from fastzk.load.workload import (
    check_value,
    child_names,
    delete_parent,
    key_path,
    numbered,
    owner_of,
    parse_op_spec,
    plain_value,
)

#: Requests pipelined by the set-up and clean-up clients.
SETUP_WINDOW = 512


def client_tls(cfg: LoadConfig) -> ssl.SSLContext | None:
    """The client side of --tls-ca (verifying the server's certificate against that CA, not
    its host name: servers are given by address) and --tls-cert/--tls-key."""
    if not cfg.tls_ca:
        return None
    context = ssl.create_default_context(cafile=cfg.tls_ca)
    context.check_hostname = False
    if cfg.tls_cert:
        context.load_cert_chain(cfg.tls_cert, cfg.tls_key or None)
    return context


async def connect(cfg: LoadConfig) -> ZKClient:
    """A set-up, clean-up or verification client on the connect string's first server."""
    host, port = cfg.endpoints()[0]
    return await ZKClient.connect(
        host, port, session_timeout_ms=cfg.session_timeout_ms, connect_timeout=cfg.connect_timeout,
        tls=client_tls(cfg))


async def ensure_path(client: ZKClient, path: str, data: bytes = b"") -> None:
    """Create *path* and its missing ancestors (existing nodes are left as they are)."""
    parts = path.strip("/").split("/")
    for i in range(1, len(parts) + 1):
        with contextlib.suppress(ZKError):
            await client.create("/" + "/".join(parts[:i]), data if i == len(parts) else b"")


async def put(client: ZKClient, path: str, value: bytes) -> None:
    """Create *path* holding *value*, or set *value* if it exists (an idempotent set-up)."""
    try:
        await client.create(path, value)
    except ZKError as e:
        if e.code != NODE_EXISTS:
            raise
        await client.set(path, value)


async def make(client: ZKClient, path: str) -> None:
    """Create an empty *path* unless it exists (its parent must exist)."""
    try:
        await client.create(path, b"")
    except ZKError as e:
        if e.code != NODE_EXISTS:
            raise


async def pipelined(items: Sequence[Any], fn: Callable[[Any], Awaitable[Any]]) -> None:
    """Run ``fn(item)`` for every item, SETUP_WINDOW at a time."""
    for lo in range(0, len(items), SETUP_WINDOW):
        await asyncio.gather(*(fn(x) for x in items[lo : lo + SETUP_WINDOW]))


def delete_pool_sizes(cfg: LoadConfig) -> list[int]:
    """Nodes each session deletes in a delete run (--ops in all, or --keys)."""
    total = cfg.ops or cfg.keys
    return [total // cfg.sessions + (1 if i < total % cfg.sessions else 0)
            for i in range(cfg.sessions)]


async def prepare_keyspace(cfg: LoadConfig) -> None:
    """Create what the simple op needs (idempotent; keys get their initial value)."""
    spec = parse_op_spec(cfg.op)
    client = await connect(cfg)
    try:
        await ensure_path(client, cfg.root)

        if spec.uses_keys:
            plain = plain_value(cfg.value_size)
            checked = cfg.check

            def value(i: int) -> bytes:
                if checked:
                    return check_value(owner_of(i, cfg.sessions), 0, cfg.value_size)
                return plain

            await pipelined(range(cfg.keys), lambda i: put(client, key_path(cfg.root, i), value(i)))
            if spec.kind == "children":
                names = child_names(cfg.children)
                paths = [f"{key_path(cfg.root, i)}/{n}" for i in range(cfg.keys) for n in names]
                await pipelined(paths, lambda p: make(client, p))
        elif spec.kind == "create":
            await make(client, f"{cfg.root}/c")
            await pipelined(range(cfg.sessions), lambda i: make(client, f"{cfg.root}/c/{cfg.run_tag}s{i}"))
        elif spec.kind == "delete":
            await make(client, f"{cfg.root}/d")
            pools = delete_pool_sizes(cfg)
            await pipelined(range(cfg.sessions), lambda i: make(client, delete_parent(cfg.root, i)))
            paths = [numbered(delete_parent(cfg.root, i), n)
                     for i in range(cfg.sessions) for n in range(pools[i])]
            await pipelined(paths, lambda p: make(client, p))
        elif spec.kind == "create-delete":
            await make(client, f"{cfg.root}/cd")
    finally:
        await client.close()


async def remove_tree(client: ZKClient, path: str, known: dict[str, int] | None = None) -> None:
    """Delete *path* and everything under it (best effort, pipelined).

    *known* maps parents to a count of numbered children (``n0000000000``...) to delete by
    name first, so that a parent with very many children is never listed in one reply.
    """
    for parent, count in (known or {}).items():
        names = [numbered(parent, n) for n in range(count)]

        async def drop(p: str) -> None:
            with contextlib.suppress(ZKError):
                await client.delete(p)

        await pipelined(names, drop)

    async def remove(p: str) -> None:
        try:
            await client.delete(p)
        except ZKError as e:
            if e.code == NOT_EMPTY:
                await tree(p)
            elif e.code != NO_NODE:
                raise

    async def tree(p: str) -> None:
        try:
            children = await client.get_children(p)
        except ZKError as e:
            if e.code == NO_NODE:
                return
            raise
        await pipelined([f"{p}/{c}" for c in children], remove)
        await remove(p)

    await tree(path)


async def cleanup_keyspace(cfg: LoadConfig, known: dict[str, int] | None = None) -> None:
    """Delete everything under root and root itself."""
    client = await connect(cfg)
    try:
        await remove_tree(client, cfg.root, known)
    finally:
        await client.close()


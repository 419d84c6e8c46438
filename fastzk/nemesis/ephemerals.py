"""Sessions holding ephemeral nodes through the faults, and the checks that none leaked.

The checked history leaves ephemerals out (their owners are not in the ``znode`` model), so
they are checked here, against what the harness knows for certain: which session created
each node, whether that session is still the holder's (kazoo keeps it across reconnects
unless it expired), and which sessions the harness closed itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from fastzk.load.history import make_client
from fastzk.nemesis.verify import Tree, ephemeral_owners

POLL_S = 0.2


@dataclass
class Holder:
    """One session and the ephemeral node it created."""

    client: Any
    path: str
    owner: int
    closed: bool = False

    def session(self) -> int:
        """The client's session now (0 when it has none)."""
        cid = self.client.client_id
        return int(cid[0]) if cid else 0


class EphemeralHolders:
    """*count* sessions, each creating one ephemeral ``{root}/e{i}``."""

    def __init__(self, connect: str, root: str, count: int, session_timeout_s: float,
                 start_timeout_s: float = 30.0) -> None:
        self.root = root
        self.holders: list[Holder] = []
        setup = make_client(connect, session_timeout_s)
        setup.start(timeout=start_timeout_s)
        try:
            setup.ensure_path(root)
        finally:
            setup.stop()
            setup.close()
        for i in range(count):
            client = make_client(connect, session_timeout_s)
            client.start(timeout=start_timeout_s)
            path = f"{root}/e{i}"
            client.create(path, b"held", ephemeral=True)
            self.holders.append(Holder(client, path, int(client.client_id[0])))

    def live_sessions(self) -> set[int]:
        """Sessions the holders own now (not closed by the harness)."""
        return {h.session() for h in self.holders if not h.closed}

    def expected(self) -> dict[str, int]:
        """``{path: owner}`` of the nodes that must exist: a holder still on its first
        session keeps its node; one whose session expired (or was closed) keeps none."""
        return {
            h.path: h.owner for h in self.holders if not h.closed and h.session() == h.owner
        }

    def problems(self, tree: Tree) -> list[str]:
        """What is wrong with the ephemerals of *tree* now (empty when all is well)."""
        owners = ephemeral_owners(tree)
        live = self.live_sessions()
        problems = [
            f"leaked ephemeral {path}: owner 0x{owner:x} is not a live session"
            for path, owner in owners.items()
            if owner not in live
        ]
        for path, owner in self.expected().items():
            if owners.get(path) != owner:
                found = owners.get(path)
                problems.append(
                    f"ephemeral {path} of live session 0x{owner:x} "
                    f"{'missing' if found is None else f'owned by 0x{found:x}'}"
                )
        return problems

    def close(self, count: int | None = None) -> list[Holder]:
        """Close the first *count* open holders (all by default), ending their sessions."""
        open_holders = [h for h in self.holders if not h.closed]
        chosen = open_holders if count is None else open_holders[:count]
        for holder in chosen:
            holder.client.stop()
            holder.client.close()
            holder.closed = True
        return chosen

    def wait_clean(self, read: Any, timeout_s: float) -> tuple[list[str], Tree]:
        """Poll *read()* (a tree) until it has no ephemeral problem, at most *timeout_s*;
        returns the problems left (expired sessions take a session timeout to vanish)."""
        deadline = time.monotonic() + timeout_s
        while True:
            tree = read()
            problems = self.problems(tree)
            if not problems or time.monotonic() >= deadline:
                return problems, tree
            time.sleep(POLL_S)

"""After the faults: wait for the ensemble to settle, then compare what every member holds.

Why read every member's tree through its own client port rather than trust one digest: a
digest says *that* members differ, the trees say *where* -- the first thing a post-mortem
needs.  Digests (the ``hash`` four-letter word: fastzk gives its current one, ZooKeeper a
log of recent ones) are compared too, at every zxid all members report.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

from fastzk.nemesis.cluster import Cluster, Member
from fastzk.nemesis.servers import LOOPBACK, four_letter_word

#: path -> (data, version, ephemeral owner, the whole stat: zxids, times, versions, counts)
Tree = dict[str, tuple[str, int, int, tuple[int, ...]]]

_ZXID_RE = re.compile(r"^Zxid: *0x([0-9a-fA-F]+)", re.MULTILINE)
_HASH_RE = re.compile(r"^([0-9a-fA-F]+): *(\S+)", re.MULTILINE)
#: How many differing paths a comparison names before it just counts them.
SHOWN_DIFFERENCES = 5


def member_zxid(member: Member) -> int | None:
    """The last zxid the member applied (``srvr``), or None when it does not answer."""
    match = _ZXID_RE.search(member.srvr())
    return int(match.group(1), 16) if match else None


def member_digests(member: Member) -> dict[int, str]:
    """``{zxid: digest}`` from the ``hash`` four-letter word ({} when not offered)."""
    try:
        reply = four_letter_word(LOOPBACK, member.client_port, "hash", 2.0).decode(
            errors="replace"
        )
    except OSError:
        return {}
    return {int(z, 16): d for z, d in _HASH_RE.findall(reply)}


def settle(cluster: Cluster, timeout_s: float) -> int:
    """Wait (bounded) for one leader with every member following and for every member to
    report the same zxid twice in a row; returns that zxid."""
    deadline = time.monotonic() + timeout_s
    cluster.wait_for_leader(timeout_s, members=cluster.members)
    previous: tuple[int | None, ...] = ()

    def same_zxid() -> int | None:
        nonlocal previous
        zxids = tuple(member_zxid(m) for m in cluster.members)
        stable = zxids == previous and len(set(zxids)) == 1 and zxids[0] is not None
        previous = zxids
        return zxids[0] if stable else None

    remaining_s = max(deadline - time.monotonic(), 5.0)
    zxid: int = cluster.wait_until(same_zxid, "every member at the same zxid", remaining_s)
    return zxid


def read_tree(address: str, timeout_s: float = 20.0) -> Tree:
    """Every znode outside ``/zookeeper`` as the server at *address* (``host:port``) alone
    serves it."""
    from kazoo.client import KazooClient
    from kazoo.exceptions import NoNodeError

    client = KazooClient(hosts=address, timeout=10.0)
    client.start(timeout=timeout_s)
    tree: Tree = {}
    try:
        pending = ["/"]
        while pending:
            path = pending.pop()
            try:
                data, stat = client.get(path)
                children = client.get_children(path)
            except NoNodeError:  # an ephemeral expiring under our feet
                continue
            text = (data or b"").decode("ascii", errors="backslashreplace")
            tree[path] = (text, stat.version, stat.ephemeralOwner, tuple(stat))
            for child in children:
                full = f"/{child}" if path == "/" else f"{path}/{child}"
                if full != "/zookeeper":
                    pending.append(full)
    finally:
        client.stop()
        client.close()
    return dict(sorted(tree.items()))


def compare_trees(trees: Mapping[int, Tree]) -> list[str]:
    """One problem per member whose tree differs from the first member's."""
    problems = []
    sids = sorted(trees)
    base_sid = sids[0]
    base = trees[base_sid]
    for sid in sids[1:]:
        tree = trees[sid]
        paths = sorted(set(base) | set(tree))
        differing = [p for p in paths if base.get(p) != tree.get(p)]
        if differing:
            shown = "; ".join(
                f"{p}: server.{base_sid} {base.get(p)} vs server.{sid} {tree.get(p)}"
                for p in differing[:SHOWN_DIFFERENCES]
            )
            problems.append(
                f"server.{sid} differs from server.{base_sid} at {len(differing)} paths: {shown}"
            )
    return problems


def compare_digests(digests: Mapping[int, Mapping[int, str]]) -> tuple[list[str], int]:
    """Problems (unequal digests at a zxid every member reports) and how many zxids were
    compared."""
    sids = sorted(digests)
    common = set.intersection(*(set(digests[s]) for s in sids)) if sids else set()
    problems = []
    for zxid in sorted(common):
        values = {sid: digests[sid][zxid] for sid in sids}
        if len(set(values.values())) > 1:
            problems.append(f"digests differ at zxid 0x{zxid:x}: {values}")
    return problems, len(common)


def ephemeral_owners(tree: Tree) -> dict[str, int]:
    """``{path: owner session}`` of every ephemeral node in *tree*."""
    return {path: node[2] for path, node in tree.items() if node[2]}


def compare_members(cluster: Cluster, timeout_s: float) -> tuple[list[str], dict[str, Any]]:
    """Settle, then compare every member's tree and digests; returns (problems, facts)."""
    zxid = settle(cluster, timeout_s)
    trees = {m.sid: read_tree(m.connect_string()) for m in cluster.members}
    digests = {m.sid: member_digests(m) for m in cluster.members}
    problems = compare_trees(trees)
    digest_problems, compared = compare_digests(digests)
    problems += digest_problems
    facts = {
        "zxid": f"0x{zxid:x}",
        "znodes": len(next(iter(trees.values()))),
        "digest_zxids_compared": compared,
    }
    return problems, facts

"""Server-to-server messages. Ours, not ZooKeeper's: only client compatibility matters.

Quorum messages (election and replication) are produced and consumed by `Replica`; host
messages (forwarded requests, session liveness, sync, snapshot transfer) by the host
(fastzk/node.py). Both travel on the same ordered link between two servers, which is what keeps
a follower's forwarded requests, the leader's verdicts on them and the proposals in one order.
`fastzk/runtime/peers.py` encodes them; every field is an int, bool, bytes, str or a tuple of
those (entries and snapshot data carry the host's payloads). They are slotted dataclasses but
not frozen ones, which cost three times as much to build (a loaded leader builds tens of
thousands a second): treat them as values all the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


# --- election ------------------------------------------------------------------------------------
@dataclass(slots=True)
class PreVote:
    """Would you vote for me in `epoch` (my epoch + 1)? Changes nobody's state, so a server that
    was cut off cannot disrupt a healthy leader by raising epochs."""

    epoch: int
    last_zxid: int


@dataclass(slots=True)
class PreVoteResp:
    epoch: int  # the pre-vote's epoch when granted, the voter's own epoch otherwise
    granted: bool


@dataclass(slots=True)
class Vote:
    epoch: int
    last_zxid: int


@dataclass(slots=True)
class VoteResp:
    epoch: int
    granted: bool


# --- replication ---------------------------------------------------------------------------------
@dataclass(slots=True)
class Append:
    """Entries following `prev_zxid` in the leader's log; `commit_zxid` is the leader's commit
    point. An entry is (zxid, payload)."""

    epoch: int
    prev_zxid: int
    entries: tuple[tuple[int, Any], ...]
    commit_zxid: int


@dataclass(slots=True)
class AppendResp:
    """ok: the follower's log matches the leader's up to `match_zxid`, durably. Not ok: it has
    no entry `prev_zxid` (the rejected Append's); `last_zxid` helps the leader find where the
    logs agree."""

    epoch: int
    ok: bool
    match_zxid: int
    last_zxid: int
    prev_zxid: int


@dataclass(slots=True)
class Commit:
    """The leader's commit point moved: followers apply (and answer their clients) now rather
    than at the next heartbeat. Never answered."""

    epoch: int
    zxid: int


@dataclass(slots=True)
class Heartbeat:
    """`commit_zxid` is what the receiver may apply (never beyond what the leader knows it
    holds); `leader_commit` is the leader's own commit point, the target a (re)joining follower
    must reach before it serves clients; `seq` is echoed to confirm leadership for reads."""

    epoch: int
    commit_zxid: int
    leader_commit: int
    seq: int


@dataclass(slots=True)
class HeartbeatResp:
    epoch: int
    seq: int


# --- host messages -------------------------------------------------------------------------------
@dataclass(slots=True)
class Forward:
    """A client's write request, forwarded by the server it is connected to: the raw request
    frame and the connection's authenticated identities (ACL checks happen on the leader).
    Travels in a `Forwards`."""

    session_id: int
    frame: bytes
    identities: tuple[tuple[str, str], ...]


@dataclass(slots=True)
class Forwards:
    """The Forwards sent one after the other to the same server, as one message: a follower
    under load forwards thousands a second, and the leader takes them in one decode."""

    forwards: tuple[Forward, ...]


@dataclass(slots=True)
class CreateSession:
    """A new session, allocated by the server the client connected to (ids embed its server
    id, so they are unique without asking the leader)."""

    session_id: int
    timeout_ms: int
    passwd: bytes


@dataclass(slots=True)
class Revalidate:
    """A client resumes a session on a member that does not lead: only the leader, which
    expires sessions, may say whether it is still alive."""

    session_id: int
    passwd: bytes
    timeout_ms: int


@dataclass(slots=True)
class Revalidated:
    session_id: int
    alive: bool


@dataclass(slots=True)
class Verdict:
    """The leader's answer to a forwarded write that failed: an error code, or the per-op
    errors of a failed multi. Sent on the ordered link, so it arrives after every proposal of
    that session's earlier writes. `after_zxid` is the last zxid prepared when it was decided:
    the failure may depend on those writes (a version they changed), so it is answered only
    once they are applied -- else a read right after it could miss them."""

    session_id: int
    xid: int
    err: int
    multi_errors: tuple[int, ...] | None
    after_zxid: int


@dataclass(slots=True)
class SessionPing:
    """Sessions that showed activity on the sender since its last report; the leader, which
    alone expires sessions, refreshes their deadlines."""

    session_ids: tuple[int, ...]


@dataclass(slots=True)
class SyncRequest:
    ctx: int


@dataclass(slots=True)
class SyncReply:
    """The leader's commit point when it had confirmed its leadership after seeing the sync:
    the requester answers once it has applied up to it."""

    ctx: int
    zxid: int


@dataclass(slots=True)
class DigestCheck:
    """The leader's tree digest right after it applied `zxid`: every replica compares its own
    at the same zxid (a mismatch means the replicas diverged)."""

    zxid: int
    digest: int


@dataclass(slots=True)
class SnapshotChunk:
    """Part of the leader's state at `zxid`, for a follower too far behind for its log. The
    chunks together are a snapshot file (fastzk/runtime/snapshot.py's format)."""

    epoch: int
    zxid: int
    offset: int
    data: bytes
    last: bool


QUORUM_MESSAGES = (PreVote, PreVoteResp, Vote, VoteResp, Append, AppendResp, Commit, Heartbeat,
                   HeartbeatResp)
HOST_MESSAGES = (Forwards, CreateSession, Revalidate, Revalidated, Verdict, SessionPing,
                 SyncRequest, SyncReply, DigestCheck, SnapshotChunk)

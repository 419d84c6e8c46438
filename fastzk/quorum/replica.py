"""Replica: election, log replication and commit for one server, as a pure state machine.

Inputs: `tick()`, `step(sender, message)`, `propose(entries)` (leader), `persisted(gen, zxid)`
(the host's log made everything up to `zxid` of generation `gen` durable), `read_index(ctx)`
(leader), `peer_down(peer)`/`peer_up(peer)`, and the snapshot hand-shake of a follower
(`accept_snapshot`, `snapshot_installed`). Output: one `Ready` at a time (`take_ready()`), which
the host executes in this order: persist `hard_state` (before any message leaves: votes must
survive a crash), apply `log_ops` to the durable log (in order), send `messages`, apply
`committed` entries, send snapshots to `snapshots`, answer `reads`.

Rules that keep acknowledged writes (see shared/replication-pitfalls.md):
- a follower acknowledges only what is durable in its own log and verified to match the
  leader's (`match = min(durable, verified)`); a truncation lowers `durable` at once, and a
  persisted report of an older log generation (written before a truncation) is ignored;
- only entries of the leader's own epoch are committed by counting (earlier ones commit with
  them); every new leader starts its epoch with a barrier entry and serves nothing until it is
  committed;
- committed entries are handed out once, in zxid order, and only committed ones: a restarted
  server applies nothing beyond its snapshot until a leader tells it what is committed;
- votes go to candidates whose log is at least as up to date (last zxid, which orders by epoch
  first); pre-vote and leader leases keep a rejoining server from disrupting a healthy leader;
  check-quorum makes a leader that cannot hear a majority step down.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastzk.quorum.log import Entry, Log
from fastzk.quorum.messages import (
    Append,
    AppendResp,
    Commit,
    Heartbeat,
    HeartbeatResp,
    PreVote,
    PreVoteResp,
    Vote,
    VoteResp,
)
from fastzk.quorum.zxid import epoch_of, make_zxid

FOLLOWER = "follower"
PRE_CANDIDATE = "pre-candidate"
CANDIDATE = "candidate"
LEADER = "leader"
OBSERVER = "observer"

PROBE, REPLICATE, SNAPSHOT = "probe", "replicate", "snapshot"


@dataclass(frozen=True)
class QuorumConfig:
    server_id: int
    voters: tuple[int, ...]
    observers: tuple[int, ...] = ()
    election_ticks: int = 10  # a follower that hears no leader for [e, 2e) ticks campaigns
    looking_ticks: int = 2  # ... and one that knows no leader after [l, 2l) ticks
    heartbeat_ticks: int = 1
    check_quorum_ticks: int = 10  # a leader that hears no majority this long steps down
    max_batch_entries: int = 512  # entries per Append
    max_batch_bytes: int = 1 << 20  # payload bytes per Append (at least one entry)
    max_inflight: int = 64  # Appends in flight to one peer before the leader waits
    max_inflight_bytes: int = 8 << 20  # ... or this much payload in flight
    snapshot_ticks: int = 100  # a snapshot not acknowledged this long is sent again
    first_counter: int = 1  # counter of each epoch's barrier (tests start it near the end)
    # planted bugs (fastzk/sim/bugs.py): the simulator's proof that its checkers can fire
    bugs: frozenset[str] = frozenset()

    @property
    def quorum(self) -> int:
        return len(self.voters) // 2 + 1

    @property
    def peers(self) -> tuple[int, ...]:
        """Every other member, in id order (voters and observers)."""
        return tuple(sorted(p for p in self.voters + self.observers if p != self.server_id))


@dataclass
class Progress:
    """The leader's view of one peer."""

    match: int = 0  # highest zxid durable on the peer and matching the leader's log
    sent: int = 0  # PROBE: the prev zxid to probe with; REPLICATE: the last zxid sent
    state: str = PROBE
    probing: bool = False  # PROBE: an Append is on its way
    active: bool = False  # heard from in this check-quorum window
    silent_ticks: int = 0  # ticks since the peer last answered
    seq: int = 0  # highest heartbeat seq echoed
    idle_ticks: int = 0  # ticks without progress while entries are outstanding
    inflight: deque[int] = field(default_factory=deque)  # last zxid of each unacked Append
    snapshot_zxid: int = 0


@dataclass
class Ready:
    hard_state: tuple[int, int] | None = None  # (epoch, voted_for) to persist first
    log_ops: list[tuple[str, Any]] = field(default_factory=list)  # ("truncate", z) | ("append", [...])
    gen: int = 0  # log generation the appends belong to (for persisted())
    messages: list[tuple[int, Any]] = field(default_factory=list)
    committed: list[Any] = field(default_factory=list)  # payloads, in zxid order
    snapshots: list[int] = field(default_factory=list)
    reads: list[tuple[Any, int]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.hard_state or self.log_ops or self.messages or self.committed
                     or self.snapshots or self.reads)


class Replica:
    def __init__(self, cfg: QuorumConfig, rng: random.Random, *, epoch: int = 0,
                 voted_for: int = 0, base_zxid: int = 0, entries: list[Entry] | None = None,
                 barrier: Callable[[int], Any],
                 size_of: Callable[[Any], int] | None = len) -> None:
        """`epoch`/`voted_for` come from the durable epoch file, `base_zxid` is the applied
        (snapshot) state and `entries` the durable log after it, not yet known committed.
        `barrier(zxid)` makes the payload of a new epoch's first entry; `size_of(payload)`
        bounds message sizes and the log in memory (None: nothing is bounded by bytes)."""
        self.cfg = cfg
        self.id = cfg.server_id
        self.rng = rng
        self.barrier_payload = barrier
        self.log = Log(base_zxid, entries, size_of)
        self.epoch = max(epoch, epoch_of(self.log.last))
        self.voted_for = voted_for
        self.observer = self.id in cfg.observers
        self.role = OBSERVER if self.observer else FOLLOWER
        self.leader_id: int | None = None
        self.commit = base_zxid
        self.handed_out = base_zxid  # committed entries already given to the host
        self.durable = self.log.last
        self.verified = 0  # this follower's log matches the current leader's up to here
        self.gen = 0
        self.elapsed = 0
        self.timeout = self._random_timeout()
        self.votes: dict[int, bool] = {}
        self.progress: dict[int, Progress] = {}
        self.barrier_zxid = 0
        self.first_barrier = 0  # the barrier of the epoch this leadership began with
        self.renewing = 0  # the epoch this leader is moving to (renew_epoch), or 0
        self.renew_ticks = 0
        self.sync_target: int | None = None  # follower: the leader's commit when it joined
        self.installing = 0  # a snapshot accepted and being made durable: the log waits
        self.hb_seq = 0
        self.reads: deque[tuple[int, Any, int]] = deque()  # (seq, ctx, commit) awaiting a quorum
        # a heartbeat round for reads is in the Ready not yet taken: later reads join it (it
        # leaves after they arrived, so it confirms the leadership for them too)
        self.read_round_queued = False
        self.reads_before_barrier: list[Any] = []
        self.elections = 0  # times this server became leader
        self._ready = Ready()
        if self.epoch != epoch:  # the log saw a later epoch than the file (written by older code)
            self._ready.hard_state = (self.epoch, self.voted_for)

    # --- queries -------------------------------------------------------------------------------
    @property
    def is_leader(self) -> bool:
        return self.role == LEADER

    @property
    def leader_ready(self) -> bool:
        """A leader may prepare client writes once its barrier is committed (every earlier
        entry is then committed too, and applied before the host serves)."""
        return (self.role == LEADER and not self.renewing
                and self.commit >= self.barrier_zxid > 0)

    @property
    def leading(self) -> bool:
        """Leader and serving: its first barrier is committed (a renewal keeps it serving)."""
        return self.role == LEADER and self.commit >= self.first_barrier > 0

    def synced_followers(self) -> list[int]:
        """Voting followers in step with the leader (replicating, recently heard from): what
        ZooKeeper's zk_synced_followers counts."""
        return [p for p, pr in sorted(self.progress.items())
                if p in self.cfg.voters and pr.state == REPLICATE
                and pr.silent_ticks < self.cfg.election_ticks]

    # --- output --------------------------------------------------------------------------------
    def take_ready(self) -> Ready:
        ready = self._ready
        ready.gen = self.gen
        self._ready = Ready()
        self.read_round_queued = False
        return ready

    def has_ready(self) -> bool:
        return bool(self._ready)

    def _send(self, to: int, message: Any) -> None:
        self._ready.messages.append((to, message))

    def _persist_hard_state(self) -> None:
        self._ready.hard_state = (self.epoch, self.voted_for)

    def _hand_out(self) -> None:
        if self.commit > self.handed_out:
            self._ready.committed.extend(self.log.payloads_between(self.handed_out, self.commit))
            self.handed_out = self.commit

    # --- time ----------------------------------------------------------------------------------
    def _random_timeout(self) -> int:
        """[e, 2e) ticks while a leader is known (the silence that means it is gone); [l, 2l)
        while looking (at start-up, after a failed round), l much shorter: pre-vote keeps an
        early campaign from disturbing anyone who still hears a leader."""
        ticks = self.cfg.election_ticks if self.leader_id is not None else self.cfg.looking_ticks
        return ticks + self.rng.randrange(max(1, ticks))

    def start(self) -> None:
        """Called once the host has recovered: a lone voter leads at once."""
        if self.cfg.voters == (self.id,):
            self._campaign()

    def tick(self) -> None:
        self.elapsed += 1
        if self.role == LEADER:
            self._tick_leader()
            return
        if self.elapsed >= self.timeout:
            if self.leader_id is not None:
                self._lose_leader()
            if self.role != OBSERVER and self.id in self.cfg.voters:
                self.elapsed = 0
                self.timeout = self._random_timeout()
                self._pre_campaign()

    def _tick_leader(self) -> None:
        cfg = self.cfg
        if self.renewing:
            self.renew_ticks += 1
            if self.renew_ticks >= cfg.election_ticks:
                self._renewal_failed()
                return
        if self.elapsed % cfg.heartbeat_ticks == 0:
            self._broadcast_heartbeat()
        for peer, pr in self.progress.items():
            pr.silent_ticks += 1
            if pr.state == SNAPSHOT:
                pr.idle_ticks += 1
                if pr.idle_ticks >= cfg.snapshot_ticks:
                    self._probe_from(peer, pr, pr.match)
            elif pr.match < self.log.last or pr.probing:
                # lost messages: start over from match. An unanswered probe counts even when
                # the peer looked caught up: it may have restarted with an empty log, and
                # with no new write nothing else would ever ask it again
                pr.idle_ticks += 1
                if pr.idle_ticks >= cfg.election_ticks:
                    self._probe_from(peer, pr, pr.match)
            else:
                pr.idle_ticks = 0
        if self.elapsed >= cfg.check_quorum_ticks:
            self.elapsed = 0
            active = 1 + sum(1 for p, pr in self.progress.items()
                             if pr.active and p in cfg.voters)
            for pr in self.progress.values():
                pr.active = False
            if active < cfg.quorum:
                self._become_follower(self.epoch, None)

    # --- election ------------------------------------------------------------------------------
    def _log_ok(self, last_zxid: int) -> bool:
        return last_zxid >= self.log.last or "vote-for-stale-log" in self.cfg.bugs

    def _in_lease(self, candidate: int) -> bool:
        """A follower that hears from a leader refuses to help unseat it (but follows the
        leader itself into a new epoch)."""
        return (self.role == FOLLOWER and self.leader_id is not None
                and self.leader_id != candidate and self.elapsed < self.cfg.election_ticks)

    def _pre_campaign(self) -> None:
        if len(self.cfg.voters) == 1:
            self._campaign()
            return
        self.role = PRE_CANDIDATE
        self.leader_id = None
        self.votes = {self.id: True}
        for peer in self.cfg.voters:
            if peer != self.id:
                self._send(peer, PreVote(self.epoch + 1, self.log.last))

    def _campaign(self) -> None:
        self.role = CANDIDATE
        self.epoch += 1
        self.voted_for = self.id
        self.leader_id = None
        self._persist_hard_state()
        self.votes = {self.id: True}
        if len(self.cfg.voters) == 1:
            self._become_leader()
            return
        for peer in self.cfg.voters:
            if peer != self.id:
                self._send(peer, Vote(self.epoch, self.log.last))

    def _count(self) -> tuple[int, int]:
        granted = sum(1 for ok in self.votes.values() if ok)
        return granted, len(self.votes) - granted

    def _on_pre_vote(self, sender: int, msg: PreVote) -> None:
        granted = (not self.observer and msg.epoch > self.epoch and self._log_ok(msg.last_zxid)
                   and not self._in_lease(sender) and self.role != LEADER)
        self._send(sender, PreVoteResp(msg.epoch if granted else self.epoch, granted))

    def _on_pre_vote_resp(self, sender: int, msg: PreVoteResp) -> None:
        if self.role != PRE_CANDIDATE:
            return
        if not msg.granted and msg.epoch > self.epoch:
            self._become_follower(msg.epoch, None)
            return
        if msg.epoch != self.epoch + 1 and msg.granted:
            return
        self.votes[sender] = msg.granted
        granted, refused = self._count()
        if granted >= self.cfg.quorum:
            self._campaign()
        elif refused >= self.cfg.quorum:
            self._become_follower(self.epoch, None)

    def _on_vote(self, sender: int, msg: Vote) -> None:
        if self.observer:
            return
        if self.renewing and msg.epoch == self.renewing:
            self._send(sender, VoteResp(self.renewing, False))  # it voted for itself there
            return
        if msg.epoch > self.epoch:
            if self._in_lease(sender):
                return  # a leader is alive: ignore, as if the request were lost
            # the own leader renewing its epoch stays this follower's leader (it keeps serving)
            self._become_follower(msg.epoch, sender if sender == self.leader_id else None)
        if msg.epoch < self.epoch:
            self._send(sender, VoteResp(self.epoch, False))
            return
        granted = self.voted_for in (0, sender) and self._log_ok(msg.last_zxid)
        if granted:
            if self.voted_for != sender:
                self.voted_for = sender
                self._persist_hard_state()
            self.elapsed = 0
        self._send(sender, VoteResp(self.epoch, granted))

    def _on_vote_resp(self, sender: int, msg: VoteResp) -> None:
        if self.renewing and self.role == LEADER:
            if msg.epoch == self.renewing:
                self.votes[sender] = msg.granted
                pr = self.progress.get(sender)
                if pr is not None:
                    pr.active = True
                granted, refused = self._count()
                if granted >= self.cfg.quorum:
                    self._renewed()
                elif refused >= self.cfg.quorum:
                    self._renewal_failed()
                return
            if msg.epoch > self.renewing:
                self._become_follower(msg.epoch, None)
            return
        if msg.epoch > self.epoch:
            self._become_follower(msg.epoch, None)
            return
        if self.role != CANDIDATE or msg.epoch != self.epoch:
            return
        self.votes[sender] = msg.granted
        granted, refused = self._count()
        if granted >= self.cfg.quorum:
            self._become_leader()
        elif refused >= self.cfg.quorum:
            self._become_follower(self.epoch, None)

    # --- role changes --------------------------------------------------------------------------
    def _become_follower(self, epoch: int, leader: int | None) -> None:
        if self.renewing:  # its vote in the epoch it was renewing to stands
            self.epoch, self.voted_for = self.renewing, self.id
            self.renewing = 0
        if epoch > self.epoch:
            self.epoch = epoch
            self.voted_for = 0
            self._persist_hard_state()
        if self.role == LEADER:
            self.progress = {}
            self.reads.clear()
            self.reads_before_barrier.clear()
        self.role = OBSERVER if self.observer else FOLLOWER
        if leader != self.leader_id:
            self.verified = 0
            self.sync_target = None
        self.leader_id = leader
        self.elapsed = 0
        self.timeout = self._random_timeout()

    def _lose_leader(self) -> None:
        self.leader_id = None
        self.verified = 0
        self.sync_target = None

    def _become_leader(self) -> None:
        self.role = LEADER
        self.leader_id = self.id
        self.elapsed = 0
        self.elections += 1
        self.sync_target = None
        self.progress = {peer: Progress(sent=self.log.last) for peer in self.cfg.peers}
        self.reads.clear()
        self.read_round_queued = False
        self._open_epoch()
        self.first_barrier = self.barrier_zxid

    def _open_epoch(self) -> None:
        self.barrier_zxid = make_zxid(self.epoch, self.cfg.first_counter)
        self._append_local([(self.barrier_zxid, self.barrier_payload(self.barrier_zxid))])
        for peer, pr in self.progress.items():
            self._send_append(peer, pr)

    def renew_epoch(self) -> None:
        """The zxid counter of this epoch is exhausted: move to the next epoch without an
        election and without a pause for clients. The leader asks the voters for their vote in
        epoch + 1 (its followers give it: their lease does not hold against their own leader,
        and its log is the most up to date) and sends nothing else meanwhile; with a majority
        it opens the new epoch with a barrier, keeping its followers, who keep serving. Votes
        are what make this safe: nobody else can lead the new epoch. Without a majority within
        an election timeout it steps down, and an ordinary election follows."""
        if self.role != LEADER or self.renewing:
            return
        self.renewing = self.epoch + 1
        self.renew_ticks = 0
        self._ready.hard_state = (self.renewing, self.id)  # durable before the requests leave
        self.votes = {self.id: True}
        if self.cfg.quorum == 1:
            self._renewed()
            return
        for peer in self.cfg.voters:
            if peer != self.id:
                self._send(peer, Vote(self.renewing, self.log.last))

    def _renewed(self) -> None:
        self.epoch, self.voted_for = self.renewing, self.id
        self.renewing = 0
        for pr in self.progress.values():
            if pr.state != SNAPSHOT:
                pr.state, pr.sent, pr.probing = PROBE, max(pr.match, self.log.base), False
                pr.inflight.clear()
        self._open_epoch()

    def _renewal_failed(self) -> None:
        self._become_follower(self.renewing, None)

    # --- the leader's log --------------------------------------------------------------------
    def next_zxid(self) -> int:
        """The zxid the next proposal must carry (the leader's log is dense within its epoch)."""
        return self.log.last + 1

    def propose(self, entries: list[Entry]) -> None:
        """Entries prepared by the host, with zxids following `next_zxid()`."""
        assert self.role == LEADER, "only the leader proposes"
        assert entries and entries[0][0] == self.log.last + 1, "proposals must be dense"
        assert epoch_of(entries[-1][0]) == self.epoch, "proposals belong to the leader's epoch"
        self._append_local(entries)
        for peer, pr in self.progress.items():
            if pr.state == REPLICATE:
                self._send_append(peer, pr)

    def _append_local(self, entries: list[Entry]) -> None:
        self.log.append(entries)
        self._ready.log_ops.append(("append", entries))

    def _probe_from(self, peer: int, pr: Progress, prev: int) -> None:
        pr.state = PROBE
        pr.sent = prev
        pr.probing = False
        pr.idle_ticks = 0
        pr.inflight.clear()
        self._send_append(peer, pr)

    def _send_append(self, peer: int, pr: Progress) -> None:
        if self.renewing or pr.state == SNAPSHOT or (pr.state == PROBE and pr.probing):
            return
        if pr.state == REPLICATE and pr.inflight and (
                len(pr.inflight) >= self.cfg.max_inflight
                or self.log.bytes_between(pr.match, pr.sent) >= self.cfg.max_inflight_bytes):
            return
        prev = pr.sent
        if prev < self.log.base or not self.log.has(prev):
            pr.state = SNAPSHOT
            pr.snapshot_zxid = 0
            pr.idle_ticks = 0
            pr.inflight.clear()
            self._ready.snapshots.append(peer)
            return
        entries = self.log.after(prev, self.cfg.max_batch_entries, self.cfg.max_batch_bytes)
        if pr.state == REPLICATE and not entries:
            return
        self._send(peer, Append(self.epoch, prev, entries, self.commit))
        if pr.state == PROBE:
            pr.probing = True
        elif entries:
            pr.sent = entries[-1][0]
            pr.inflight.append(pr.sent)

    def _on_append_resp(self, sender: int, msg: AppendResp) -> None:
        pr = self.progress.get(sender)
        if pr is None:
            return
        pr.active = True
        pr.silent_ticks = 0
        if not msg.ok:
            if pr.state == SNAPSHOT:
                return
            if pr.state == PROBE and msg.prev_zxid != pr.sent:
                return  # an answer to an older probe
            # a log shorter than what the peer acknowledged: its disk was replaced or wiped
            pr.match = min(pr.match, msg.last_zxid)
            before = self.log.before(msg.prev_zxid) if self.log.has(msg.prev_zxid) else -1
            floor = self.log.floor(msg.last_zxid)
            self._probe_from(sender, pr, min(before, floor) if before >= 0 else -1)
            return
        if msg.match_zxid > pr.match or pr.state == PROBE:  # a probe's answer is the truth
            pr.match = msg.match_zxid
            pr.idle_ticks = 0
            while pr.inflight and pr.inflight[0] <= pr.match:
                pr.inflight.popleft()
        if pr.state == PROBE:
            pr.state = REPLICATE
            pr.probing = False
            pr.sent = max(pr.match, self.log.base)
            pr.inflight.clear()
        elif pr.state == SNAPSHOT and pr.match >= pr.snapshot_zxid > 0:
            pr.state = REPLICATE
            pr.sent = pr.match
            pr.inflight.clear()
        self._advance_commit()
        self._send_append(sender, pr)

    def snapshot_sent(self, peer: int, zxid: int) -> None:
        """The host sent `peer` a snapshot of the state at `zxid`."""
        pr = self.progress.get(peer)
        if pr is not None and pr.state == SNAPSHOT:
            pr.snapshot_zxid = zxid
            pr.idle_ticks = 0

    def _advance_commit(self) -> None:
        if self.role != LEADER:
            return
        matches = sorted(
            [self.durable] + [pr.match for p, pr in self.progress.items() if p in self.cfg.voters],
            reverse=True,
        )
        candidate = matches[self.cfg.quorum - (2 if "commit-without-quorum" in self.cfg.bugs
                                               and self.cfg.quorum > 1 else 1)]
        if candidate > self.commit and epoch_of(candidate) == self.epoch:
            self.commit = candidate
            self._hand_out()
            for peer, pr in self.progress.items():
                if pr.state == REPLICATE:  # followers apply (and answer their clients) now
                    self._send(peer, Commit(self.epoch, candidate))
            if self.reads_before_barrier and self.leader_ready:
                pending, self.reads_before_barrier = self.reads_before_barrier, []
                for ctx in pending:
                    self.read_index(ctx)

    def _broadcast_heartbeat(self) -> None:
        if self.renewing:
            return
        for peer, pr in self.progress.items():
            self._send(peer, Heartbeat(self.epoch, min(self.commit, pr.match), self.commit,
                                       self.hb_seq))

    def _on_heartbeat_resp(self, sender: int, msg: HeartbeatResp) -> None:
        pr = self.progress.get(sender)
        if pr is None:
            return
        pr.active = True
        pr.silent_ticks = 0
        pr.seq = max(pr.seq, msg.seq)
        if pr.match < self.log.last:
            self._send_append(sender, pr)
        while self.reads:
            seq, ctx, zxid = self.reads[0]
            acks = 1 + sum(1 for p, q in self.progress.items()
                           if p in self.cfg.voters and q.seq >= seq)
            if acks < self.cfg.quorum:
                break
            self.reads.popleft()
            self._ready.reads.append((ctx, zxid))

    def read_index(self, ctx: Any) -> None:
        """Confirms leadership with a quorum before answering: `reads` then carries (ctx, the
        commit point when asked). Nothing is confirmed by a leader that was deposed meanwhile.
        Reads asked before the output is taken share one heartbeat round (a batch of failed
        writes or syncs costs one round trip, not one each)."""
        assert self.role == LEADER
        if not self.leader_ready:
            self.reads_before_barrier.append(ctx)
            return
        if self.cfg.quorum == 1:
            self._ready.reads.append((ctx, self.commit))
            return
        if not self.read_round_queued:
            self.hb_seq += 1
            self._broadcast_heartbeat()
            # while renewing nothing was sent: a later tick's heartbeat confirms the read
            self.read_round_queued = not self.renewing
        self.reads.append((self.hb_seq, ctx, self.commit))

    # --- the follower's log ------------------------------------------------------------------
    def _follow(self, sender: int, epoch: int) -> bool:
        """Common to leader messages: False when the sender is a stale leader."""
        if epoch < self.epoch:
            return False
        if epoch > self.epoch or self.role not in (FOLLOWER, OBSERVER) or self.leader_id != sender:
            self._become_follower(epoch, sender)
        self.elapsed = 0
        return True

    def _on_append(self, sender: int, msg: Append) -> None:
        if not self._follow(sender, msg.epoch):
            self._send(sender, AppendResp(self.epoch, False, 0, self.log.last, msg.prev_zxid))
            return
        if self.installing:
            return  # the log is about to be replaced: the leader sends again once it is
        log = self.log
        if msg.prev_zxid > log.base and not log.has(msg.prev_zxid):
            self._send(sender, AppendResp(self.epoch, False, 0, log.last, msg.prev_zxid))
            return
        last_new = msg.prev_zxid
        fresh: list[Entry] = []
        for index, (zxid, _) in enumerate(msg.entries):
            if zxid <= log.base:
                last_new = max(last_new, zxid)
                continue
            if log.has(zxid):
                last_new = zxid
                continue
            # the first entry the log lacks: whatever follows the agreed point is stale
            if log.last > last_new:
                self._truncate(max(last_new, log.base))
            fresh = list(msg.entries[index:])
            break
        if fresh:
            log.append(fresh)
            self._ready.log_ops.append(("append", fresh))
            last_new = fresh[-1][0]
        self.verified = max(self.verified, last_new)
        self._learn_commit(min(msg.commit_zxid, last_new), msg.commit_zxid)
        if not fresh:
            self._ack()

    def _truncate(self, zxid: int) -> None:
        if zxid < self.commit:
            raise AssertionError(f"truncating committed entries: {zxid:#x} < {self.commit:#x}")
        self.log.truncate_after(zxid)
        self._ready.log_ops.append(("truncate", zxid))
        self.durable = min(self.durable, zxid)
        self.verified = min(self.verified, zxid)
        self.gen += 1

    def _learn_commit(self, safe: int, leader_commit: int) -> None:
        if self.sync_target is None:
            # what a joining follower must apply before it serves: the leader's commit point
            # and at least one entry of its epoch (the barrier comes first)
            self.sync_target = max(leader_commit, make_zxid(self.epoch, 0))
        if safe > self.commit:
            self.commit = min(safe, self.log.last)
            self._hand_out()

    def _ack(self) -> None:
        if self.leader_id is not None and self.role in (FOLLOWER, OBSERVER):
            match = min(self.durable, self.verified)
            if "follower-acks-unsynced" in self.cfg.bugs:
                match = self.verified
            self._send(self.leader_id, AppendResp(self.epoch, True, match, self.log.last, 0))

    def _on_heartbeat(self, sender: int, msg: Heartbeat) -> None:
        if not self._follow(sender, msg.epoch):
            self._send(sender, HeartbeatResp(self.epoch, msg.seq))
            return
        self._learn_commit(min(msg.commit_zxid, self.verified), msg.leader_commit)
        self._send(sender, HeartbeatResp(self.epoch, msg.seq))

    def persisted(self, gen: int, zxid: int) -> None:
        """The host's log made its entries up to `zxid`, written in generation `gen`, durable."""
        if gen != self.gen:
            return  # written before a truncation: the entries of this generation will report
        durable = self.log.floor(min(zxid, self.log.last))
        if durable <= self.durable:
            return
        self.durable = durable
        if self.role == LEADER:
            self._advance_commit()
        else:
            self._ack()

    def accept_snapshot(self, sender: int, epoch: int, zxid: int) -> bool:
        """Whether to install the snapshot at `zxid` that `sender` sent in `epoch`: it must
        come from the current leader and be newer than anything committed here or already
        being installed (a stale one, delivered late, would take the state back). Once
        accepted, the log takes no entries until it is installed: the install replaces it."""
        if not self._follow(sender, epoch):
            return False
        if zxid <= max(self.commit, self.installing):
            if zxid <= self.commit:
                # everything in it is committed here already, and a committed prefix matches
                # any leader's log: say so, or the leader would send the snapshot forever
                self.verified = max(self.verified, self.commit)
                self._ack()
            return False
        self.installing = zxid
        return True

    def snapshot_installed(self, sender: int, epoch: int, zxid: int) -> None:
        """The host made the accepted snapshot at `zxid` durable, discarded its old log and
        loaded the state: the log starts afresh there. The snapshot is committed state, so
        this holds even if the leader changed meanwhile; only the acknowledgement is for the
        leader that sent it."""
        if self.installing == zxid:
            self.installing = 0
        self.log.reset(zxid)
        self.gen += 1
        self._ready.log_ops.append(("truncate", zxid))
        self.durable = self.verified = zxid
        self.commit = self.handed_out = max(self.commit, zxid)
        if epoch == self.epoch and sender == self.leader_id and self.role in (FOLLOWER,
                                                                               OBSERVER):
            if self.sync_target is None:
                self.sync_target = zxid
            self._ack()

    def compact(self, keep: int, keep_bytes: int) -> None:
        """Forgets handed-out entries beyond the newest `keep`, or beyond the newest
        `keep_bytes` of payload (a follower further behind than that gets a snapshot). Works
        in steps of a quarter of either bound."""
        log = self.log
        excess = max(len(log) - keep, log.first_to_keep(keep_bytes))
        if excess > max(keep // 4, 1) or (excess and log.bytes > keep_bytes + keep_bytes // 4):
            log.compact(min(self.handed_out, log.nth(excess - 1)))

    # --- links -----------------------------------------------------------------------------------
    def peer_down(self, peer: int) -> None:
        """The link to `peer` closed. A follower that lost its leader campaigns after a short
        random pause instead of a whole election timeout (a killed leader is noticed at once)."""
        if self.role == LEADER:
            pr = self.progress.get(peer)
            if pr is not None and pr.state != SNAPSHOT:
                pr.state = PROBE
                pr.sent = pr.match
                pr.probing = False
                pr.inflight.clear()
        elif peer == self.leader_id:
            self._lose_leader()
            # out of the lease at once; campaign after a random share of the timeout, so that
            # the survivors rarely split their votes
            self.elapsed = max(self.elapsed, self.cfg.election_ticks)
            self.timeout = self.elapsed + 1 + self.rng.randrange(max(1, self.cfg.looking_ticks))

    def peer_up(self, peer: int) -> None:
        """A peer whose match is unknown (or compacted away) is probed from the end of the
        log, as a new leader probes: its own log may still be enough to catch it up, and
        only the answer can tell (it used to get a snapshot at once)."""
        if self.role == LEADER:
            pr = self.progress.get(peer)
            if pr is not None and pr.state != SNAPSHOT:
                self._probe_from(peer, pr,
                                 pr.match if pr.match >= self.log.base else self.log.last)

    # --- dispatch ------------------------------------------------------------------------------
    def step(self, sender: int, msg: Any) -> None:
        if sender == self.id or (sender not in self.cfg.voters and sender not in self.cfg.observers):
            return
        kind = type(msg)
        if kind is Append:
            self._on_append(sender, msg)
        elif kind is AppendResp:
            self._on_reply(sender, msg.epoch) and self._on_append_resp(sender, msg)
        elif kind is Commit:
            if self._follow(sender, msg.epoch):
                self._learn_commit(min(msg.zxid, self.verified), msg.zxid)
        elif kind is Heartbeat:
            self._on_heartbeat(sender, msg)
        elif kind is HeartbeatResp:
            self._on_reply(sender, msg.epoch) and self._on_heartbeat_resp(sender, msg)
        elif kind is PreVote:
            self._on_pre_vote(sender, msg)
        elif kind is PreVoteResp:
            self._on_pre_vote_resp(sender, msg)
        elif kind is Vote:
            self._on_vote(sender, msg)
        elif kind is VoteResp:
            self._on_vote_resp(sender, msg)

    def _on_reply(self, sender: int, epoch: int) -> bool:
        """Replies to a leader: a higher epoch deposes it; other epochs' replies are stale."""
        if epoch > self.epoch:
            if self.renewing and epoch == self.renewing:
                return False  # a follower already moved to the epoch this leader renews to
            self._become_follower(epoch, None)
            return False
        return self.role == LEADER and epoch == self.epoch

"""The replication core on an in-memory network: no sockets, no sleeps, one seed per run.

`Net` plays host and runtime for N replicas: it executes each Ready (durable log per server,
persisted reports after a configurable delay, messages delivered with loss, delay and
reordering, links cut per direction, crashes that lose what was not persisted) and checks the
safety properties after every step: at most one leader per epoch, committed entries identical
and in the same order on every server, nothing committed ever lost, followers acknowledging only
durable entries.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from fastzk.quorum.messages import Append, AppendResp, Heartbeat, Vote
from fastzk.quorum.replica import LEADER, QuorumConfig, Replica
from fastzk.quorum.zxid import epoch_of


class Server:
    def __init__(self, net: Net, sid: int) -> None:
        self.net = net
        self.sid = sid
        self.hard = (0, 0)
        self.disk: list[tuple[int, Any]] = []  # durable log
        self.unsynced: list[tuple[str, Any, int]] = []  # ops written but not yet fsynced
        self.applied: list[tuple[int, Any]] = []
        self.snapshot: list[tuple[int, Any]] = []  # applied state a snapshot would hold
        self.alive = True
        self.replica = self._boot()

    def _boot(self) -> Replica:
        base = self.snapshot[-1][0] if self.snapshot else 0
        entries = [e for e in self.disk if e[0] > base]
        replica = Replica(self.net.cfg(self.sid), random.Random(self.net.rng.random()),
                          epoch=self.hard[0], voted_for=self.hard[1], base_zxid=base,
                          entries=entries, barrier=lambda z: ("barrier", z), size_of=lambda p: 16)
        self.applied = list(self.snapshot)
        replica.start()
        return replica

    def crash(self) -> None:
        self.unsynced.clear()  # everything not fsynced is lost
        self.alive = False

    def restart(self) -> None:
        self.alive = True
        self.replica = self._boot()

    def sync_disk(self) -> None:
        """The fsync completes: ops reach the durable log, the replica hears about it."""
        pending, self.unsynced = self.unsynced, []
        for op, arg, gen in pending:
            if op == "truncate":
                self.disk = [e for e in self.disk if e[0] <= arg]
            else:
                assert not self.disk or arg[0][0] > self.disk[-1][0], "non-monotonic append"
                self.disk.extend(arg)
                self.replica.persisted(gen, arg[-1][0])

    def run_ready(self) -> None:
        replica = self.replica
        while replica.has_ready():
            ready = replica.take_ready()
            if ready.hard_state is not None:
                self.hard = ready.hard_state
            for op, arg in ready.log_ops:
                self.unsynced.append((op, arg, ready.gen))
            for to, msg in ready.messages:
                self.net.send(self.sid, to, msg)
            # committed payloads come in log order after what this server applied already
            after = self.applied[-1][0] if self.applied else replica.log.base
            zxids = [z for z, _ in replica.log.between(after, 1 << 62)][:len(ready.committed)]
            for zxid, payload in zip(zxids, ready.committed, strict=True):
                assert not self.applied or zxid > self.applied[-1][0]
                self.applied.append((zxid, payload))
                self.net.record_commit(self.sid, zxid, payload)
            for peer in ready.snapshots:
                self.net.send_snapshot(self.sid, peer)
            for ctx, zxid in ready.reads:
                self.net.reads.append((self.sid, ctx, zxid, replica.epoch))
            if not self.net.slow_disk:
                self.sync_disk()


class Net:
    def __init__(self, seed: int, voters: int = 3, observers: int = 0, loss: float = 0.0,
                 slow_disk: bool = False) -> None:
        self.rng = random.Random(seed)
        self.voters = tuple(range(1, voters + 1))
        self.observers = tuple(range(voters + 1, voters + observers + 1))
        self.loss = loss
        self.slow_disk = slow_disk
        self.cut: set[tuple[int, int]] = set()
        self.queue: list[tuple[int, int, int, Any]] = []  # (due step, sender, to, msg)
        self.now = 0
        self.committed: dict[int, Any] = {}  # zxid -> payload, the one true history
        self.leaders: dict[int, int] = {}  # epoch -> leader id
        self.reads: list[tuple[int, Any, int, int]] = []
        self.servers = {sid: Server(self, sid) for sid in self.voters + self.observers}

    def cfg(self, sid: int) -> QuorumConfig:
        # messages take up to 3 steps here, far more of a tick than on a real network: the
        # timeouts are long enough for the two round trips of an election
        return QuorumConfig(sid, self.voters, self.observers, election_ticks=30, looking_ticks=6,
                            check_quorum_ticks=30, max_batch_entries=8, max_inflight=4,
                            snapshot_ticks=60)

    def send(self, sender: int, to: int, msg: Any) -> None:
        if (sender, to) in self.cut or self.rng.random() < self.loss:
            return
        self.queue.append((self.now + self.rng.randint(0, 3), sender, to, msg))

    def send_snapshot(self, sender: int, to: int) -> None:
        """The fake host's snapshot transfer: the leader's applied state, delivered at once."""
        if (sender, to) in self.cut:
            return
        leader = self.servers[sender]
        target = self.servers[to]
        if not target.alive or not leader.applied:
            return
        zxid = leader.applied[-1][0]
        if not target.replica.accept_snapshot(sender, leader.replica.epoch, zxid):
            return
        leader.replica.snapshot_sent(to, zxid)
        target.snapshot = list(leader.applied)
        target.disk = []
        target.unsynced.clear()
        target.applied = list(leader.applied)
        target.replica.snapshot_installed(sender, leader.replica.epoch, zxid)

    def record_commit(self, sid: int, zxid: int, payload: Any) -> None:
        known = self.committed.setdefault(zxid, payload)
        assert known == payload, f"server {sid} committed {zxid:#x}={payload} but it was {known}"

    def check(self) -> None:
        for sid, server in self.servers.items():
            replica = server.replica
            if server.alive and replica.role == LEADER:
                other = self.leaders.setdefault(replica.epoch, sid)
                assert other == sid, f"two leaders in epoch {replica.epoch}: {other} and {sid}"
            # each server's applied history is a prefix of the one true committed history
            mine = [z for z, _ in server.applied]
            assert mine == sorted(mine)
            for zxid, payload in server.applied:
                assert self.committed.get(zxid) == payload
        true_order = sorted(self.committed)
        for server in self.servers.values():
            mine = [z for z, _ in server.applied]
            assert mine == true_order[:len(mine)], f"server {server.sid} skipped a commit"

    def step(self) -> None:
        self.now += 1
        due = [m for m in self.queue if m[0] <= self.now]
        self.queue = [m for m in self.queue if m[0] > self.now]
        self.rng.shuffle(due)  # reordering between links (and within, when delays differ)
        for _, sender, to, msg in due:
            server = self.servers[to]
            if server.alive and (sender, to) not in self.cut:
                server.replica.step(sender, msg)
                server.run_ready()
        for server in self.servers.values():
            if server.alive:
                server.replica.tick()
                server.run_ready()
                if self.slow_disk and self.rng.random() < 0.5:
                    server.sync_disk()
                    server.run_ready()
        self.check()

    def run(self, steps: int) -> None:
        for _ in range(steps):
            self.step()

    def leader(self) -> Server | None:
        leaders = [s for s in self.servers.values() if s.alive and s.replica.role == LEADER
                   and s.replica.leader_ready]
        return max(leaders, key=lambda s: s.replica.epoch) if leaders else None

    def wait_leader(self, steps: int = 400) -> Server:
        for _ in range(steps):
            leader = self.leader()
            if leader is not None:
                return leader
            self.step()
        raise AssertionError("no leader elected")

    def propose(self, payloads: list[Any]) -> bool:
        leader = self.leader()
        if leader is None:
            return False
        replica = leader.replica
        first = replica.next_zxid()
        replica.propose([(first + i, p) for i, p in enumerate(payloads)])
        leader.run_ready()
        return True

    def isolate(self, sid: int) -> None:
        for other in self.servers:
            if other != sid:
                self.cut.add((sid, other))
                self.cut.add((other, sid))

    def heal(self) -> None:
        self.cut.clear()
        for server in self.servers.values():
            for other in self.servers:
                if other != server.sid and server.alive:
                    server.replica.peer_up(other)
                    server.run_ready()


def user_commits(net: Net, server: Server) -> list[Any]:
    return [p for _, p in server.applied if not (isinstance(p, tuple) and p[0] == "barrier")]


@pytest.mark.parametrize("seed", range(20))
def test_elects_one_leader_and_replicates(seed: int) -> None:
    net = Net(seed, voters=3)
    net.wait_leader()
    for i in range(30):
        net.propose([f"w{i}"])
        net.run(2)
    net.run(60)
    histories = {s.sid: user_commits(net, s) for s in net.servers.values()}
    assert histories[1] == histories[2] == histories[3]
    assert histories[1] == [f"w{i}" for i in range(30)]


@pytest.mark.parametrize("seed", range(20))
def test_lossy_reordering_network_and_slow_disks(seed: int) -> None:
    net = Net(seed, voters=5, observers=1, loss=0.1, slow_disk=True)
    proposed = 0
    for _ in range(600):
        if net.rng.random() < 0.3 and net.propose([f"w{proposed}"]):
            proposed += 1
        net.step()
    net.loss = 0.0
    net.run(300)
    histories = [user_commits(net, s) for s in net.servers.values()]
    assert all(h == histories[0] for h in histories), "replicas diverged"
    assert len(histories[0]) > 0


@pytest.mark.parametrize("seed", range(15))
def test_leader_crash_keeps_every_committed_entry(seed: int) -> None:
    net = Net(seed, voters=3, slow_disk=True)
    committed_before: list[Any] = []
    for round_ in range(4):
        leader = net.wait_leader()
        for i in range(10):
            net.propose([f"r{round_}-{i}"])
            net.step()
        net.run(5)
        committed_before = [p for z, p in sorted(net.committed.items())]
        leader.crash()
        new = net.wait_leader()
        assert new.sid != leader.sid
        net.run(30)
        # everything committed before the crash is still in the new leader's history
        assert [p for _, p in new.applied][:len(committed_before)] == committed_before
        leader.restart()
        net.run(50)
    final = [user_commits(net, s) for s in net.servers.values()]
    assert final[0] == final[1] == final[2]


@pytest.mark.parametrize("seed", range(10))
def test_old_leader_uncommitted_suffix_is_truncated(seed: int) -> None:
    net = Net(seed, voters=3)
    old = net.wait_leader()
    net.propose(["a"])
    net.run(20)
    net.isolate(old.sid)
    # written to the cut-off leader only: never committed
    net.propose(["lost-1", "lost-2"])
    old.run_ready()
    assert old.replica.log.last > net.servers[old.sid % 3 + 1].replica.log.last
    new = None
    for _ in range(400):
        net.step()
        candidate = net.leader()
        if candidate is not None and candidate.sid != old.sid:
            new = candidate
            break
    assert new is not None
    net.propose(["b"])
    net.run(30)
    net.heal()
    net.run(100)
    for server in net.servers.values():
        assert user_commits(net, server) == ["a", "b"]
        assert all(p not in ("lost-1", "lost-2") for _, p in server.replica.log.between(0, 1 << 62))
        assert [z for z, _ in server.disk] == [z for z, _ in server.replica.log.between(0, 1 << 62)]


def test_leader_cut_off_from_quorum_steps_down() -> None:
    net = Net(3, voters=3)
    leader = net.wait_leader()
    net.isolate(leader.sid)
    net.run(net.cfg(1).check_quorum_ticks * 2 + 2)
    assert leader.replica.role != LEADER


def test_read_index_needs_a_quorum() -> None:
    net = Net(5, voters=3)
    leader = net.wait_leader()
    net.run(5)
    leader.replica.read_index("r1")
    leader.run_ready()
    net.run(10)
    assert [(sid, ctx) for sid, ctx, _, _ in net.reads] == [(leader.sid, "r1")]
    net.isolate(leader.sid)
    leader.replica.read_index("r2")
    leader.run_ready()
    net.run(5)
    assert all(ctx != "r2" for _, ctx, _, _ in net.reads)


def test_reads_asked_together_share_one_heartbeat_round() -> None:
    """Reads asked before the leader's output is taken ride on one heartbeat per peer (sent
    after all of them arrived); a read asked after that output left needs a round of its
    own, so it is never confirmed by heartbeats sent before it was asked."""
    from fastzk.quorum.messages import Heartbeat

    net = Net(6, voters=3)
    leader = net.wait_leader()
    net.run(5)
    replica = leader.replica
    for ctx in ("a", "b", "c"):
        replica.read_index(ctx)
    ready = replica.take_ready()
    beats = [m for _, m in ready.messages if type(m) is Heartbeat]
    assert len(beats) == len(replica.progress) == 2
    assert {m.seq for m in beats} == {replica.hb_seq}
    replica.read_index("d")
    assert replica.reads[-1][0] == replica.hb_seq == beats[0].seq + 1
    again = [m for _, m in replica.take_ready().messages if type(m) is Heartbeat]
    assert {m.seq for m in again} == {replica.hb_seq}


def test_prevote_keeps_a_rejoining_server_from_disrupting() -> None:
    net = Net(11, voters=3)
    leader = net.wait_leader()
    epoch = leader.replica.epoch
    follower = next(s for s in net.servers.values() if s is not leader)
    net.isolate(follower.sid)
    net.run(200)  # it times out again and again, but pre-votes fail: its epoch stays
    assert follower.replica.epoch == epoch
    net.heal()
    net.run(50)
    assert leader.replica.role == LEADER and leader.replica.epoch == epoch


def test_a_wiped_follower_is_probed_again_when_its_answer_is_lost() -> None:
    """A follower that was fully caught up restarts with an empty disk, and the answer to
    the leader's first probe is lost. With no new write the leader's view of it (match =
    the end of the log) never looks behind, so it must retry the unanswered probe: it then
    learns the log is gone and sends a snapshot (the cluster test of a wiped follower hung
    here when the answer raced the follower's own link)."""
    net = Net(12, voters=3)
    leader = net.wait_leader()
    for i in range(30):
        net.propose([f"w{i}"])
        net.step()
    net.run(20)
    follower = next(s for s in net.servers.values() if s is not leader)
    assert follower.replica.log.last == leader.replica.log.last
    leader.replica.compact(keep=5, keep_bytes=1 << 20)
    assert leader.replica.log.base > 0
    follower.crash()
    follower.disk, follower.snapshot, follower.applied = [], [], []
    leader.replica.peer_down(follower.sid)
    leader.run_ready()
    follower.restart()
    net.cut.add((follower.sid, leader.sid))  # the probe's answer is lost
    leader.replica.peer_up(follower.sid)
    leader.run_ready()
    net.run(3)
    net.cut.discard((follower.sid, leader.sid))
    net.run(3 * net.cfg(1).election_ticks)
    assert follower.replica.log.base > 0  # it got a snapshot
    assert follower.replica.log.last == leader.replica.log.last
    assert [z for z, _ in follower.applied] == [z for z, _ in leader.applied]


def test_far_behind_follower_gets_a_snapshot() -> None:
    net = Net(4, voters=3)
    leader = net.wait_leader()
    lagging = next(s for s in net.servers.values() if s is not leader)
    net.isolate(lagging.sid)
    for i in range(50):
        net.propose([f"w{i}"])
        net.step()
    net.run(10)
    leader.replica.compact(keep=10, keep_bytes=1 << 20)
    assert leader.replica.log.base > 0
    net.heal()
    net.run(100)
    assert lagging.snapshot, "the lagging follower was not sent a snapshot"
    assert user_commits(net, lagging) == [f"w{i}" for i in range(50)]


def test_follower_acks_only_durable_entries() -> None:
    net = Net(8, voters=3, slow_disk=True)
    net.wait_leader()
    seen: list[tuple[int, int, int]] = []
    original = Net.send

    def spy(self: Net, sender: int, to: int, msg: Any) -> None:
        if isinstance(msg, AppendResp) and msg.ok:
            durable = self.servers[sender].disk
            assert msg.match_zxid <= (durable[-1][0] if durable else 0) or msg.match_zxid == 0 \
                or self.servers[sender].snapshot, "acknowledged a non-durable entry"
            seen.append((sender, to, msg.match_zxid))
        original(self, sender, to, msg)

    net.send = spy.__get__(net)  # type: ignore[method-assign]
    for i in range(20):
        net.propose([f"w{i}"])
        net.step()
    net.run(50)
    assert seen


def test_votes_only_for_up_to_date_logs() -> None:
    cfg = QuorumConfig(1, (1, 2, 3))
    replica = Replica(cfg, random.Random(1), epoch=2, entries=[(0x200000001, "b"),
                                                             (0x200000002, "x")],
                      barrier=lambda z: ("barrier", z))
    replica.step(2, Vote(3, 0x200000001))  # behind: refused
    replica.step(3, Vote(3, 0x100000009))  # an older epoch's log: refused
    ready = replica.take_ready()
    assert [(to, m.granted) for to, m in ready.messages] == [(2, False), (3, False)]
    assert replica.voted_for == 0
    replica.step(3, Vote(4, 0x200000002))  # as up to date: granted, and persisted first
    ready = replica.take_ready()
    assert ready.hard_state == (4, 3) and [(to, m.granted) for to, m in ready.messages] == \
        [(3, True)]
    replica.step(2, Vote(4, 0x300000001))  # one vote per epoch
    assert [m.granted for _, m in replica.take_ready().messages] == [False]


def test_zxids_carry_the_epoch() -> None:
    net = Net(1, voters=3)
    leader = net.wait_leader()
    net.propose(["x"])
    net.run(10)
    zxid = next(z for z, p in net.committed.items() if p == "x")
    assert epoch_of(zxid) == leader.replica.epoch


@pytest.mark.parametrize("seed", range(10))
def test_epoch_renewal_keeps_the_leader_and_every_commit(seed: int) -> None:
    """renew_epoch (zxid counter used up): the same leader goes on in the next epoch, nobody
    else leads in between, and everything committed before stays; under message loss."""
    net = Net(seed, voters=5, loss=0.05)
    leader = net.wait_leader()
    for round_ in range(3):
        epoch = leader.replica.epoch
        net.propose([f"before-{round_}"])
        net.run(5)
        leader.replica.renew_epoch()
        leader.run_ready()
        for _ in range(200):
            net.step()
            assert all(s is leader or s.replica.role != LEADER for s in net.servers.values())
            if leader.replica.leader_ready and leader.replica.epoch > epoch:
                break
        assert leader.replica.role == LEADER and leader.replica.epoch == epoch + 1
        net.propose([f"after-{round_}"])
        net.run(40)
    net.loss = 0.0
    net.run(100)
    expected = [p for i in range(3) for p in (f"before-{i}", f"after-{i}")]
    for server in net.servers.values():
        assert user_commits(net, server) == expected


def test_a_cut_off_leader_fails_to_renew_and_steps_down() -> None:
    net = Net(3, voters=3)
    leader = net.wait_leader()
    net.isolate(leader.sid)
    leader.replica.renew_epoch()
    leader.run_ready()
    net.run(net.cfg(1).election_ticks + 2)
    assert leader.replica.role != LEADER and leader.replica.voted_for == leader.sid
    assert leader.hard == (leader.replica.epoch, leader.sid)


def test_the_in_memory_log_is_bounded_by_entries_and_by_bytes() -> None:
    cfg = QuorumConfig(1, (1,))
    replica = Replica(cfg, random.Random(1), barrier=lambda z: b"", size_of=len)
    replica.start()
    replica.take_ready()
    replica.persisted(replica.gen, replica.log.last)
    for i in range(200):
        replica.propose([(replica.next_zxid(), bytes(1000))])
        ready = replica.take_ready()
        replica.persisted(ready.gen, replica.log.last)
        replica.take_ready()
        replica.compact(keep=1000, keep_bytes=20_000)
        assert replica.log.bytes <= 25_000 and len(replica.log) <= 1250, i
    assert replica.log.base > 0 and replica.log.bytes >= 20_000
    replica.compact(keep=10, keep_bytes=1 << 30)
    assert len(replica.log) <= 13


def _follower_of_2() -> Replica:
    """Server 1, following server 2 in epoch 3, with entries up to 0x300000004 committed."""
    replica = Replica(QuorumConfig(1, (1, 2, 3)), random.Random(1), epoch=3,
                      entries=[(0x300000001 + i, f"e{i}") for i in range(4)],
                      barrier=lambda z: ("barrier", z))
    replica.step(2, Append(3, 0x300000004, (), 0x300000004))
    replica.take_ready()
    return replica


def test_a_snapshot_not_newer_than_the_commit_is_answered_not_installed() -> None:
    """Found by the simulator: installing it took the state back; refusing it silently made
    the leader send it forever. The follower acknowledges what it has instead."""
    replica = _follower_of_2()
    assert replica.commit == 0x300000004
    assert not replica.accept_snapshot(2, 3, 0x300000003)
    acks = [m for to, m in replica.take_ready().messages if isinstance(m, AppendResp)]
    assert [(a.ok, a.match_zxid) for a in acks] == [(True, 0x300000004)]
    assert not replica.accept_snapshot(3, 2, 0x300000009)  # from a deposed leader


def test_an_accepted_snapshot_is_installed_even_after_the_leader_changed() -> None:
    """Found by the simulator: the tree was replaced but the log kept (the epoch had moved
    on), so later entries were applied to the wrong state."""
    replica = _follower_of_2()
    assert replica.accept_snapshot(2, 3, 0x300000009)
    replica.step(2, Append(3, 0x300000004, ((0x300000005, "late"),), 0x300000004))
    assert replica.log.last == 0x300000004  # the log takes nothing while it is replaced
    assert not replica.accept_snapshot(2, 3, 0x300000008)  # older than the one in progress
    replica.step(3, Heartbeat(4, 0x300000004, 0x300000004, 1))  # server 3 leads now
    replica.take_ready()
    replica.snapshot_installed(2, 3, 0x300000009)
    assert (replica.log.base, replica.log.last) == (0x300000009, 0x300000009)
    assert replica.commit == replica.handed_out == 0x300000009 and not replica.installing
    ready = replica.take_ready()
    assert ready.log_ops == [("truncate", 0x300000009)]
    assert not [m for _, m in ready.messages if isinstance(m, AppendResp)]  # not its leader


def test_appends_are_bounded_by_entries_and_by_bytes_with_at_least_one_entry() -> None:
    """A leader's Append stops before the entry that would take it past max_batch_bytes
    (payload sizes as size_of measures them), yet always carries one entry."""
    cfg = QuorumConfig(1, (1, 2, 3), max_batch_entries=4, max_batch_bytes=2500)
    replica = Replica(cfg, random.Random(1), barrier=lambda z: b"", size_of=len)
    replica.votes = {1: True}
    replica._become_leader()
    barrier = replica.log.last
    for peer in (2, 3):  # both followers hold the barrier and replicate
        replica.step(peer, AppendResp(replica.epoch, True, barrier, barrier, 0))
    replica.take_ready()
    sizes = [1000, 1000, 1000, 5000, 10, 10, 10, 10, 10, 1000]
    replica.propose([(barrier + 1 + i, bytes(size)) for i, size in enumerate(sizes)])
    sent: list[list[int]] = []
    for _ in range(len(sizes)):
        appends = [m for to, m in replica.take_ready().messages
                   if to == 2 and isinstance(m, Append)]
        if not appends:
            break
        sent.extend([len(p) for _, p in a.entries] for a in appends)
        last = appends[-1].entries[-1][0]
        replica.step(2, AppendResp(replica.epoch, True, last, last, 0))
    assert sent == [[1000, 1000], [1000], [5000], [10, 10, 10, 10], [10, 1000]]
    assert replica.log.after(barrier, 100, 2000) == replica.log.after(barrier, 2)
    assert len(replica.log.after(barrier, 100)) == len(sizes)

"""fastzk ensembles as real processes on 127.0.0.1, driven by kazoo.

Each test starts its own cluster (fastzk/nemesis/cluster.py: every process stopped by PID, data dirs
and logs kept when a test fails) and bounds every wait. What is checked is what clients rely
on: every acknowledged write survives a leader's death on every server, sequence numbers are
never reused, sessions and their ephemerals survive failover, a minority refuses to serve, a
rejoining server catches up (from the leader's log, or from a snapshot when too far behind) and
an old leader's uncommitted writes vanish.
"""

from __future__ import annotations

import base64
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from certs import Issuer, key_pem, pem
from kazoo.client import KazooClient
from kazoo.exceptions import ConnectionLoss, KazooException, SessionExpiredError
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.retry import KazooRetry
from wire import create_request, handshake, read_reply

from fastzk.nemesis.cluster import Cluster, Member
from fastzk.nemesis.servers import four_letter_word

pytestmark = pytest.mark.timeout(300)

FAST = {"fastzk.syncWindowTxns": 100}  # small log window: rejoining servers need snapshots


@contextmanager
def client(hosts: str, timeout: float = 4.0, start_timeout: float = 30.0,
           **kwargs: object) -> Iterator[KazooClient]:
    zk = KazooClient(hosts=hosts, timeout=timeout,
                     connection_retry=KazooRetry(max_tries=-1, delay=0.05, max_delay=0.5),
                     **kwargs)
    zk.start(timeout=start_timeout)
    try:
        yield zk
    finally:
        zk.stop()
        zk.close()


def snapshot_of(member: Member, root: str = "/t") -> dict[str, bytes]:
    """Every znode under `root` with its data, read from this member alone (after a sync,
    so that it has applied everything the leader had committed)."""
    with client(member.connect_string()) as zk:
        zk.sync(root)
        out: dict[str, bytes] = {}
        stack = [root]
        while stack:
            path = stack.pop()
            data, _ = zk.get(path)
            out[path] = data
            stack.extend(f"{path}/{child}" for child in zk.get_children(path))
        return out


def mntr(member: Member) -> dict[str, str]:
    text = four_letter_word("127.0.0.1", member.client_port, "mntr").decode()
    return dict(line.split("\t", 1) for line in text.splitlines() if "\t" in line)


def converge(cluster: Cluster, root: str = "/t", timeout: float = 60.0) -> dict[str, bytes]:
    """Waits until every running member holds the same tree under `root`; returns it."""
    members = [m for m in cluster.members if m.running]
    state: dict[str, object] = {}

    def same() -> bool:
        try:
            views = [snapshot_of(m, root) for m in members]
        except KazooException:
            return False
        state["view"] = views[0]
        return all(v == views[0] for v in views)

    cluster.wait_until(same, f"equal trees under {root}", timeout)
    return state["view"]  # type: ignore[return-value]


class Writers:
    """Pipelining writers on their own sessions through the whole connect string: each keeps
    up to `depth` creates (plain and sequential) and setData in flight and records exactly
    what was acknowledged."""

    def __init__(self, hosts: str, count: int = 3, depth: int = 16, name: str = "w") -> None:
        self.hosts = hosts
        self.name = name  # writers of one instance write under /t/<name><index>
        self.count = count
        self.depth = depth
        self.acked: dict[str, bytes] = {}
        self.sequentials: list[str] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.losses = 0  # writes whose outcome the client never learned (connection loss)
        self.loss_kinds: dict[str, int] = {}
        self.sessions: list[int] = []
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                        for i in range(count)]

    def __enter__(self) -> Writers:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)

    def _run(self, index: int) -> None:
        with client(self.hosts, timeout=6.0) as zk:
            zk.ensure_path(f"/t/{self.name}{index}")
            zk.ensure_path("/t/seq")
            session = zk.client_id[0]
            self.sessions.append(session)
            counter = 0
            while not self.stop.is_set():
                batch = []
                for _ in range(self.depth):
                    counter += 1
                    path = f"/t/{self.name}{index}/n{counter}"
                    value = f"{index}-{counter}".encode()
                    if counter % 3 == 0:
                        batch.append(("seq", zk.create_async("/t/seq/s-", value, sequence=True),
                                      value))
                    else:
                        batch.append((path, zk.create_async(path, value), value))
                for path, result, value in batch:
                    try:
                        got = result.get(timeout=30)
                    except (ConnectionLoss, SessionExpiredError, KazooException) as error:
                        self.losses += 1  # outcome unknown: neither counted nor required
                        kind = type(error).__name__
                        self.loss_kinds[kind] = self.loss_kinds.get(kind, 0) + 1
                        continue
                    except BaseException as error:  # noqa: BLE001 - reported by the test
                        self.errors.append(error)
                        continue
                    with self.lock:
                        if path == "seq":
                            self.sequentials.append(got)
                            self.acked[got] = value
                        else:
                            self.acked[path] = value
            if zk.client_id[0] != session:
                self.errors.append(AssertionError(f"writer {index} lost its session"))

    def wait_for(self, count: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acked) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"only {len(self.acked)} writes acknowledged; lost: "
                                     f"{self.loss_kinds}")
            time.sleep(0.05)


def _check_writes(cluster: Cluster, writers: Writers) -> None:
    assert not writers.errors, writers.errors[:3]
    assert len(set(writers.sequentials)) == len(writers.sequentials), "a sequence number reused"
    tree = converge(cluster)
    missing = [p for p, v in writers.acked.items() if tree.get(p) != v]
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:5]}"


def test_three_servers_elect_replicate_and_report() -> None:
    with Cluster("fastzk", 3) as cluster:
        leader = cluster.wait_for_leader()
        follower = cluster.followers()[0]
        with client(follower.connect_string()) as zk:
            zk.create("/t/a", b"1", makepath=True)
            zk.create("/t/e", b"", ephemeral=True)
            zk.set("/t/a", b"2")
            assert zk.get("/t/a")[0] == b"2"  # read-your-writes on the follower
            published = zk.get("/zookeeper/config")[0].decode()
            assert published.splitlines() == [
                f"server.{m.sid}=127.0.0.1:{m.quorum_port}:{m.election_port}:participant"
                for m in cluster.members] + ["version=0"]
        assert converge(cluster) == {"/t": b"", "/t/a": b"2"}  # the ephemeral went
        stats = mntr(leader)
        assert stats["zk_server_state"] == "leader"
        assert stats["zk_peer_state"] == "leading - broadcast"
        assert stats["zk_followers"] == "2" and stats["zk_synced_followers"] == "2"
        assert mntr(follower)["zk_server_state"] == "follower"
        conf = four_letter_word("127.0.0.1", follower.client_port, "conf").decode()
        assert f"serverId={follower.sid}" in conf and "membership:" in conf
        assert conf.count("server.") == 3


def test_writes_on_any_server_are_seen_after_sync_everywhere_and_watches_fire() -> None:
    with Cluster("fastzk", 3) as cluster:
        cluster.wait_for_leader()
        one, two, three = cluster.members
        with client(one.connect_string()) as a, client(two.connect_string()) as b, \
                client(three.connect_string()) as c:
            fired = threading.Event()
            a.create("/t/w", b"0", makepath=True)
            c.sync("/t/w")
            c.get("/t/w", watch=lambda event: fired.set())
            for value in range(20):
                b.set("/t/w", str(value).encode())
                a.sync("/t/w")
                assert a.get("/t/w")[0] == str(value).encode()  # sync, then read: fresh
            assert fired.wait(10), "a data watch set on one follower did not fire"


def test_kill_the_leader_under_pipelined_writers_repeatedly() -> None:
    """kill -9 of the leader, ten times, while three sessions pipeline writes through the
    whole connect string: every acknowledged write is on every server afterwards, sequence
    numbers are never reused, and the writers keep their sessions."""
    with Cluster("fastzk", 3, cfg=FAST) as cluster:
        cluster.wait_for_leader()
        with Writers(cluster.connect_string()) as writers:
            writers.wait_for(200)
            for _ in range(10):
                leader = cluster.wait_for_leader()
                before = len(writers.acked)
                leader.kill()
                cluster.wait_for_leader(members=[m for m in cluster.members if m is not leader])
                writers.wait_for(before + 100)  # writes go on without the old leader
                leader.restart()
                cluster.wait_serving(leader)
        _check_writes(cluster, writers)
        assert len(set(writers.sessions)) == 3
        for member in cluster.followers():  # the replicas compared digests and agreed
            stats = mntr(member)
            assert int(stats["zk_digest_checks"]) > 0, stats
            assert stats["zk_digest_mismatches"] == "0"


def test_restarted_follower_catches_up_from_the_log() -> None:
    with Cluster("fastzk", 3) as cluster:
        leader = cluster.wait_for_leader()
        follower = cluster.followers()[0]
        with client(leader.connect_string()) as zk:
            zk.create("/t/before", b"x", makepath=True)
            follower.kill()
            for i in range(50):
                zk.create(f"/t/n{i}", str(i).encode())
            follower.restart()
            cluster.wait_serving(follower)
            zk.create("/t/after", b"y")
        tree = converge(cluster)
        assert len(tree) == 53 and tree["/t/n49"] == b"49"
        assert "a snapshot at zxid" not in leader.log_tail(200)  # caught up from the log


@pytest.mark.parametrize(("nodes", "size"), [(400, 100), (100, 1_000_000)])
def test_wiped_follower_gets_a_snapshot(nodes: int, size: int) -> None:
    """400 small nodes: beyond the 100-txn log window. 100 nodes of 1 MB: beyond the 64 MB
    byte window, and a snapshot larger than a peer link's send bound, so it must be paced."""
    with Cluster("fastzk", 3, cfg=FAST) as cluster:
        leader = cluster.wait_for_leader()
        follower = cluster.followers()[0]
        with client(leader.connect_string()) as zk:
            zk.create("/t", b"")
            for i in range(nodes):
                zk.create_async(f"/t/n{i}", b"v" * size)
            zk.sync("/t")
            follower.kill()
            follower.wipe()
            follower.restart()
            cluster.wait_serving(follower)
            zk.set("/t/n0", b"changed")
        tree = converge(cluster)
        assert len(tree) == nodes + 1 and tree["/t/n0"] == b"changed"
        assert f"sending server.{follower.sid} a snapshot" in leader.log_tail(400)
        # the installed snapshot is durable: a restart of the follower keeps everything
        follower.kill()
        follower.restart()
        cluster.wait_serving(follower)
        assert snapshot_of(follower) == tree


@pytest.mark.parametrize("crash", [None, "log-truncated"])
def test_old_leader_uncommitted_writes_are_truncated_when_it_rejoins(crash: str | None) -> None:
    """With `crash`, the old leader dies right after cutting its log (before it writes the
    leader's entries) and is restarted: nothing committed is lost, nothing cut comes back."""
    cfg = {"fastzk.crashPoints": crash} if crash else {}
    with Cluster("fastzk", 3, proxied=True, cfg=cfg) as cluster:
        old = cluster.wait_for_leader()
        with client(cluster.connect_string()) as zk:
            zk.create("/t/base", b"", makepath=True)
        lost = KazooClient(hosts=old.connect_string(), timeout=4.0)
        lost.start(timeout=30)
        try:
            cluster.isolate(old.sid)
            # proposed by the cut-off leader, never committed: these must vanish
            pending = [lost.create_async(f"/t/lost{i}", b"") for i in range(20)]
            new = cluster.wait_for_leader(members=[m for m in cluster.members if m is not old])
            with client(new.connect_string()) as zk:
                zk.create("/t/kept", b"")
            for result in pending:
                with pytest.raises((KazooException, KazooTimeoutError)):
                    result.get(timeout=30)
        finally:
            lost.stop()
            lost.close()
        cluster.heal()
        if crash:
            cluster.wait_until(lambda: not old.running, f"the crash at {crash}")
            assert (old.data_dir / f"crashed-at-{crash}").exists()
            old.restart()
        cluster.wait_for_leader()
        tree = converge(cluster)
        assert sorted(tree) == ["/t", "/t/base", "/t/kept"]


def test_a_cut_off_minority_refuses_clients_and_catches_up_after_healing() -> None:
    with Cluster("fastzk", 3, proxied=True) as cluster:
        cluster.wait_for_leader()
        lonely = cluster.followers()[0]
        cluster.isolate(lonely.sid)
        cluster.wait_until(lambda: lonely.mode() is None, "the cut-off server stops serving")
        text = four_letter_word("127.0.0.1", lonely.client_port, "srvr").decode()
        assert "not currently serving" in text
        with pytest.raises((KazooException, KazooTimeoutError)):
            with client(lonely.connect_string(), timeout=2.0, start_timeout=3.0) as zk:
                zk.get("/")
        majority = [m for m in cluster.members if m is not lonely]
        with client(",".join(m.connect_string() for m in majority)) as zk:
            zk.create("/t/during", b"partition", makepath=True)
        cluster.heal()
        cluster.wait_serving(lonely)
        assert converge(cluster)["/t/during"] == b"partition"


def test_paused_leader_steps_down_and_acknowledges_nothing_after() -> None:
    """SIGSTOP the leader past the session timeout: the others elect a new one; after SIGCONT
    the old leader must step down, and every write any client saw acknowledged is kept."""
    with Cluster("fastzk", 3) as cluster:
        old = cluster.wait_for_leader()
        with Writers(old.connect_string(), count=1, depth=8, name="stuck") as stuck, \
                Writers(cluster.connect_string(), count=1, depth=8, name="moving") as moving:
            stuck.wait_for(50)
            moving.wait_for(50)
            old.pause()
            others = [m for m in cluster.members if m is not old]
            cluster.wait_for_leader(members=others)
            time.sleep(2.0)  # past the session timeout of the writers (6 s negotiated down)
            old.resume()
            cluster.wait_until(lambda: old.mode() in ("follower", None), "old leader steps down")
            cluster.wait_for_leader()
            moving.wait_for(len(moving.acked) + 20)
        for writers in (stuck, moving):
            writers.errors = [e for e in writers.errors if "lost its session" not in str(e)]
            _check_writes(cluster, writers)


def test_sessions_and_ephemerals_survive_failover() -> None:
    with Cluster("fastzk", 3) as cluster:
        leader = cluster.wait_for_leader()
        follower = cluster.followers()[0]
        hosts = ",".join(m.connect_string() for m in (follower, leader))
        with client(hosts, timeout=8.0) as zk:
            zk.create("/t/owner", b"", ephemeral=True, makepath=True)
            session = zk.client_id[0]
            leader.kill()
            cluster.wait_for_leader(members=[m for m in cluster.members if m is not leader])
            zk.sync("/t")
            assert zk.exists("/t/owner") is not None
            assert zk.client_id[0] == session
            leader.restart()
            cluster.wait_serving(leader)
        assert converge(cluster) == {"/t": b""}  # closing the session removed it everywhere


def test_an_expired_session_loses_its_ephemerals_on_every_server() -> None:
    """A client on a follower goes silent (socket open, no pings): the leader alone expires
    the session, and its ephemeral disappears from every server."""
    with Cluster("fastzk", 3) as cluster:
        cluster.wait_for_leader()
        follower = cluster.followers()[0]
        with client(cluster.connect_string()) as zk:
            zk.ensure_path("/t")
        sock, response = handshake("127.0.0.1", follower.client_port, timeout_ms=400)
        try:
            assert response.session_id != 0
            sock.sendall(create_request(1, "/t/eph", flags=1))
            header, _ = read_reply(sock)
            assert header.err == 0
            assert converge(cluster) == {"/t": b"", "/t/eph": b""}
            cluster.wait_until(lambda: converge(cluster) == {"/t": b""}, "expiry everywhere")
        finally:
            sock.close()


def test_observer_serves_reads_forwards_writes_and_never_votes() -> None:
    with Cluster("fastzk", 3, observers=1) as cluster:
        cluster.wait_for_leader()
        observer = cluster.members[3]
        assert observer.mode() == "observer"
        with client(observer.connect_string()) as zk:
            zk.create("/t/from-observer", b"o", makepath=True)
            assert zk.get("/t/from-observer")[0] == b"o"
        voters = cluster.members[:3]
        victim = cluster.leader()
        assert victim is not None and victim is not observer
        victim.kill()
        cluster.wait_for_leader(members=[m for m in voters if m is not victim] + [observer])
        assert cluster.leader() is not observer
        victim.restart()
        assert converge(cluster)["/t/from-observer"] == b"o"


def test_five_servers_survive_two_failures() -> None:
    with Cluster("fastzk", 5) as cluster:
        leader = cluster.wait_for_leader()
        followers = cluster.followers()
        followers[0].kill()
        leader.kill()
        cluster.wait_for_leader(members=followers[1:])
        with client(",".join(m.connect_string() for m in followers[1:])) as zk:
            zk.create("/t/five", b"5", makepath=True)
        followers[0].restart()
        leader.restart()
        assert converge(cluster)["/t/five"] == b"5"


def test_impostors_and_garbage_on_the_quorum_port_are_refused() -> None:
    with Cluster("fastzk", 3) as cluster:
        leader = cluster.wait_for_leader()
        target = cluster.followers()[0]
        port = target.quorum_port
        attempts = [
            b"GET / HTTP/1.0\r\n\r\n",  # not a peer
            struct.pack(">8sIii", b"FZKPEER1", 1, 9, target.sid),  # unknown id
            struct.pack(">8sIii", b"FZKPEER1", 1, target.sid, target.sid),  # its own id
            struct.pack(">8sIii", b"FZKPEER1", 1, leader.sid, target.sid)
            + struct.pack(">I", 1 << 31),  # an oversized frame
            struct.pack(">8sIii", b"FZKPEER1", 1, leader.sid, target.sid)
            + struct.pack(">I", 5) + b"\xff" * 5,  # undecodable
        ]
        for data in attempts:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(data)
                sock.settimeout(5)
                assert sock.recv(100) == b""  # closed by the server
        # without fastzk.quorumSecretFile an address is all a member shows: an impostor with a
        # member's id replaces that member's connection until it is caught; the ensemble
        # recovers by itself (with the secret it is refused outright: the next test)
        cluster.wait_until(lambda: target.mode() == "follower", "the target follows again")
        assert cluster.wait_for_leader() is leader
        assert target.log_tail(100).count("peer connection from 127.0.0.1 rejected") >= 4
        with client(target.connect_string()) as zk:
            zk.create("/t/still", b"fine", makepath=True)


def test_peers_without_the_quorum_secret_cannot_join_or_impersonate(tmp_path: Path) -> None:
    """fastzk.quorumSecretFile: a member proves the secret before a peer link carries
    anything, so a process that claims a member's id without it is refused (and logged), and
    a member with the wrong secret cannot vote or follow until it is given the right one."""
    secret_file = tmp_path / "quorum.secret"
    secret = base64.b64encode(os.urandom(32)) + b"\n"
    secret_file.write_bytes(secret)
    secret_file.chmod(0o600)
    with Cluster("fastzk", 3, cfg={"fastzk.quorumSecretFile": str(secret_file)}) as cluster:
        leader = cluster.wait_for_leader()
        target = cluster.followers()[0]
        hello = struct.pack(">8sIii", b"FZKPEER1", 2, leader.sid, target.sid)
        with socket.create_connection(("127.0.0.1", target.quorum_port), timeout=5) as sock:
            sock.sendall(hello + os.urandom(16) + b"\0")  # the leader's id, no secret
            sock.settimeout(5)
            challenge = sock.recv(48)
            assert len(challenge) == 48  # the target's nonce and proof: nothing about us
            sock.sendall(os.urandom(32))  # a guessed proof
            assert sock.recv(100) == b""  # closed
        for version in (1, 2):  # no handshake at all / a hello with no nonce and proof
            with socket.create_connection(("127.0.0.1", target.quorum_port),
                                          timeout=5) as sock:
                sock.sendall(struct.pack(">8sIii", b"FZKPEER1", version, leader.sid,
                                         target.sid) + b"\0" * (4 if version == 1 else 0))
                sock.settimeout(10)
                assert sock.recv(100) == b""
        log = target.log_tail(200)
        assert f"it claims to be server.{leader.sid} but does not know the key of its user " \
            "(fastzk.quorumSecretFile)" in log
        assert "it does not authenticate and this server requires members to " \
            "(fastzk.quorumSecretFile)" in log
        assert cluster.wait_for_leader() is leader  # the impostor disturbed nothing

        outsider = next(m for m in cluster.members if m is not leader and m is not target)
        outsider.stop()
        secret_file.write_bytes(base64.b64encode(os.urandom(32)))  # read at start only
        outsider.start()
        cluster.wait_until(lambda: "does not know the key of user ''" in outsider.log_tail(50),
                           "the outsider refused by its peers")
        with client(leader.connect_string()) as zk:
            zk.create("/t/guarded", b"yes", makepath=True)  # the other two are a quorum
        assert outsider.mode() != "follower"
        outsider.stop()
        secret_file.write_bytes(secret)
        outsider.start()
        cluster.wait_for_leader(members=cluster.members)
        with client(outsider.connect_string()) as zk:
            zk.sync("/t")
            assert zk.get("/t/guarded")[0] == b"yes"


QUORUM_JAAS = """
QuorumServer {{ org.apache.zookeeper.server.auth.DigestLoginModule required
    user_zkpeer="{server}"; }};
QuorumLearner {{ org.apache.zookeeper.server.auth.DigestLoginModule required
    username="zkpeer" password="{learner}"; }};
"""


def test_quorum_sasl_keys_authenticate_members_through_a_rolling_upgrade(
        tmp_path: Path) -> None:
    """ZooKeeper's quorum.auth.* with the JAAS QuorumServer/QuorumLearner users, and its
    rolling upgrade: with enableSasl on two members and nothing required, a member without
    authentication still belongs; restarted one by one with everything required, the ensemble
    stays whole; then a process with an unknown user, a guessed proof or no authentication is
    refused and logged, and a member with the wrong password cannot join."""
    jaas = tmp_path / "jaas.conf"
    jaas.write_text(QUORUM_JAAS.format(server="peerpass", learner="peerpass"))
    lax = {"java.security.auth.login.config": str(jaas), "quorum.auth.enableSasl": "true"}
    cluster = Cluster("fastzk", 3, cfg=lax)
    late = cluster.members[2]
    for key in lax:
        del late._start_args[key]
    with cluster:
        with client(cluster.connect_string()) as zk:
            zk.create("/t/mixed", b"1", makepath=True)
        strict = {"quorum.auth.serverRequireSasl": "true",
                  "quorum.auth.learnerRequireSasl": "true"}
        for member, keys in ((late, lax), *((m, strict) for m in cluster.members)):
            member.stop()
            assert member.process is not None
            cfg = member.process.cfg_path
            cfg.write_text(cfg.read_text() + "".join(f"{k}={v}\n" for k, v in keys.items()))
            member.start()
            cluster.wait_for_leader(members=cluster.members)
        leader = cluster.wait_for_leader(members=cluster.members)
        target = cluster.followers()[0]
        hello = struct.pack(">8sIii", b"FZKPEER1", 2, leader.sid, target.sid)
        for user, expect_challenge in ((b"zkpeer", True), (b"mallory", False)):
            with socket.create_connection(("127.0.0.1", target.quorum_port),
                                          timeout=5) as sock:
                sock.sendall(hello + os.urandom(16) + bytes([len(user)]) + user)
                sock.settimeout(10)
                if expect_challenge:
                    assert len(sock.recv(48)) == 48  # the target's nonce and proof
                    sock.sendall(os.urandom(32))  # a guessed proof
                assert sock.recv(100) == b""  # closed
        with socket.create_connection(("127.0.0.1", target.quorum_port), timeout=5) as sock:
            sock.sendall(struct.pack(">8sIii", b"FZKPEER1", 1, leader.sid, target.sid))
            sock.settimeout(10)
            assert sock.recv(100) == b""
        log = target.log_tail(200)
        assert f"it claims to be server.{leader.sid} but does not know the key of its user" in log
        assert f"server.{leader.sid} authenticates as user 'mallory', which is not one" in log
        assert "it does not authenticate and this server requires members to (quorum.auth" in log
        assert cluster.wait_for_leader() is leader  # the impostors disturbed nothing

        outsider = next(m for m in cluster.members if m is not leader and m is not target)
        outsider.stop()
        jaas.write_text(QUORUM_JAAS.format(server="guessed", learner="guessed"))
        outsider.start()
        cluster.wait_until(
            lambda: "does not know the key of user 'zkpeer'" in outsider.log_tail(50),
            "the outsider cannot prove its password")
        with client(leader.connect_string()) as zk:
            zk.create("/t/guarded", b"yes")  # the other two are a quorum
        assert outsider.mode() != "follower"
        outsider.stop()
        jaas.write_text(QUORUM_JAAS.format(server="peerpass", learner="peerpass"))
        outsider.start()
        cluster.wait_for_leader(members=cluster.members)
        with client(outsider.connect_string()) as zk:
            zk.sync("/t")
            assert zk.get("/t/guarded")[0] == b"yes" and zk.get("/t/mixed")[0] == b"1"


def test_members_talk_over_mutual_tls_and_refuse_untrusted_certificates(
        tmp_path: Path) -> None:
    """sslQuorum: every peer link is mutual TLS; a member whose certificate the others do
    not trust, or that is for another host (ssl.quorum.hostnameVerification, the default),
    cannot join, and plaintext on a quorum port gets nowhere. Changed store files are
    reloaded: once the trust store adds a new CA, a member with a certificate of that CA
    joins without the others restarting."""
    ca, rogue, next_ca = Issuer("quorum CA"), Issuer("rogue CA"), Issuer("next quorum CA")

    def store(sid: int, issuer: Issuer, hosts: tuple[str, ...] = ("localhost",)) -> None:
        key, cert = issuer.issue("CN=member,O=fastzk", hosts)
        (tmp_path / f"member{sid}.pem").write_bytes(key_pem(key) + pem(cert) + pem(issuer.cert))

    (tmp_path / "ca.pem").write_bytes(pem(ca.cert))
    cluster = Cluster("fastzk", 3, cfg={
        "sslQuorum": "true", "ssl.quorum.trustStore.location": str(tmp_path / "ca.pem")})
    for member in cluster.members:
        store(member.sid, ca)
        member._start_args["ssl.quorum.keyStore.location"] = str(
            tmp_path / f"member{member.sid}.pem")
    with cluster:
        leader = cluster.wait_for_leader()
        with client(leader.connect_string()) as zk:
            zk.create("/t/tls", b"over tls", makepath=True)
        target = cluster.followers()[0]
        with socket.create_connection(("127.0.0.1", target.quorum_port), timeout=5) as sock:
            sock.sendall(struct.pack(">8sIii", b"FZKPEER1", 1, leader.sid, target.sid))
            sock.settimeout(10)
            answer = b""
            while chunk := sock.recv(100):
                answer += chunk
            assert len(answer) <= 7  # at most a TLS alert record, then closed
        outsider = next(m for m in cluster.members if m is not leader and m is not target)
        prefix = f"server.{outsider.sid} (127.0.0.1:{outsider.quorum_port}): TLS handshake " \
            "failed: CERTIFICATE_VERIFY_FAILED"
        for issuer, hosts, refusal in (
                (rogue, ("localhost",), prefix),
                (ca, ("elsewhere.example",), f"{prefix} (IP address mismatch")):
            outsider.stop()
            store(outsider.sid, issuer, hosts)  # read at start, and reloaded
            outsider.start()
            cluster.wait_until(lambda: refusal in leader.log_tail(50),  # noqa: B023
                               "the outsider's certificate refused by the leader")
            assert outsider.mode() != "follower"
        assert f"it claims to be server.{outsider.sid}, but its certificate is not for " \
            "127.0.0.1" in leader.log_tail(200) + target.log_tail(200)
        outsider.stop()
        (tmp_path / "ca.pem").write_bytes(pem(ca.cert) + pem(next_ca.cert))
        cluster.wait_until(lambda: all("TLS certificate files reloaded" in m.log_tail(100)
                                       for m in (leader, target)), "the new trust store reloaded")
        store(outsider.sid, next_ca)
        outsider.start()
        cluster.wait_for_leader(members=cluster.members)
        with client(outsider.connect_string()) as zk:
            zk.sync("/t")
            assert zk.get("/t/tls")[0] == b"over tls"


def test_zxid_counter_rollover_moves_to_the_next_epoch_without_an_election() -> None:
    """Each epoch starts 256 txns before the end of the 32-bit counter: writes go on across
    several epoch changes with the same leader, no election and no client disconnected; every
    acknowledged write is kept and zxids only grow."""
    start = 0xFFFFFF00
    with Cluster("fastzk", 3, cfg={"fastzk.firstZxidCounter": start}) as cluster:
        leader = cluster.wait_for_leader()
        first_epoch = int(mntr(leader)["zk_epoch"])
        states: list[str] = []
        with client(cluster.connect_string()) as watcher:
            watcher.add_listener(lambda state: states.append(state))
            with Writers(cluster.connect_string(), count=2, depth=8) as writers:
                writers.wait_for(700, timeout=120)
            seen = list(states)  # before stop() adds its own LOST
        _check_writes(cluster, writers)
        assert cluster.wait_for_leader() is leader
        stats = mntr(leader)
        assert int(stats["zk_epoch"]) >= first_epoch + 2
        assert stats["zk_elections_won"] == "1"  # renewed, never re-elected
        assert seen == [] and writers.losses == 0, (seen, writers.losses)
        with client(leader.connect_string()) as zk:
            zxids = sorted(zk.exists(path).czxid for path in writers.acked)
        assert all((z & 0xFFFFFFFF) >= start for z in zxids)
        assert len({z >> 32 for z in zxids}) >= 3  # the writes span three epochs or more


def test_read_only_mode_serves_reads_without_a_quorum() -> None:
    """readonlymode.enabled: a member cut off from the majority serves clients that ask for
    read-only sessions, from its last state; writes and syncs get NOTREADONLY; once it is back
    in the quorum it closes them and they reconnect read-write."""
    from kazoo.exceptions import NotReadOnlyCallError
    from kazoo.protocol.states import KeeperState

    with Cluster("fastzk", 3, proxied=True, cfg={"readonlymode.enabled": "true"}) as cluster:
        cluster.wait_for_leader()
        with client(cluster.connect_string()) as zk:
            zk.create("/t/seen", b"before", makepath=True)
            zk.sync("/t")
        lonely = cluster.followers()[0]
        cluster.wait_until(lambda: snapshot_of(lonely).get("/t/seen") == b"before", "replicated")
        cluster.isolate(lonely.sid)
        cluster.wait_until(lambda: "Mode: read-only" in lonely.srvr(), "read-only mode")
        assert four_letter_word("127.0.0.1", lonely.client_port, "isro") == b"ro"
        with pytest.raises((KazooException, KazooTimeoutError)):  # read-write clients: refused
            with client(lonely.connect_string(), timeout=2.0, start_timeout=3.0):
                pass
        with client(lonely.connect_string(), read_only=True) as ro:
            assert ro.client_state == KeeperState.CONNECTED_RO
            assert ro.get("/t/seen")[0] == b"before"
            with pytest.raises(NotReadOnlyCallError):
                ro.create("/t/nope", b"")
            cluster.heal()
            cluster.wait_until(lambda: lonely.mode() == "follower", "back in the quorum")
            cluster.wait_until(lambda: ro.client_state == KeeperState.CONNECTED,
                               "the client is read-write again")
            ro.create("/t/after", b"")
        assert sorted(converge(cluster)) == ["/t", "/t/after", "/t/seen"]


@pytest.mark.parametrize("crash", ["snapshot-written", "snapshot-renamed", "log-dropped"])
def test_a_crash_in_the_middle_of_a_snapshot_install_loses_nothing(crash: str) -> None:
    """A follower far behind (its stale log still on disk) gets a snapshot and dies in the
    middle of installing it: after the written temporary file, after the rename, or after its
    old log is dropped. Restarted, it comes back with everything, and agrees with the others."""
    with Cluster("fastzk", 3, cfg={**FAST, "fastzk.crashPoints": crash}) as cluster:
        leader = cluster.wait_for_leader()
        follower = cluster.followers()[0]
        with client(leader.connect_string()) as zk:
            zk.create("/t", b"")
            for i in range(50):
                zk.create(f"/t/a{i}", b"old")
            zk.sync("/t")
            follower.kill()
            for i in range(400):  # far beyond the 100-txn window: a snapshot is needed
                zk.create_async(f"/t/b{i}", b"new")
            zk.sync("/t")
            follower.restart()
            cluster.wait_until(lambda: not follower.running, f"the crash at {crash}")
            assert (follower.data_dir / f"crashed-at-{crash}").exists()
            follower.restart()
            cluster.wait_serving(follower)
            zk.create("/t/last", b"")
        tree = converge(cluster)
        assert len(tree) == 452
        assert mntr(follower)["zk_digest_mismatches"] == "0"


def test_sync_on_a_cut_off_old_leader_never_returns_stale_data() -> None:
    """sync is confirmed by a majority: on a leader that is cut off (and may not know it
    yet) it cannot complete, so sync-then-read never returns a value the majority has
    already replaced (ZOOKEEPER-1675 allows exactly that on ZooKeeper)."""
    with Cluster("fastzk", 3, proxied=True) as cluster:
        old = cluster.wait_for_leader()
        with client(old.connect_string()) as stale:
            stale.create("/t/x", b"v0", makepath=True)
            cluster.isolate(old.sid, state="blackhole")  # it notices only by silence
            synced = stale.sync_async("/t/x")
            read = stale.get_async("/t/x")
            new = cluster.wait_for_leader(members=[m for m in cluster.members if m is not old])
            with client(new.connect_string()) as fresh:
                fresh.set("/t/x", b"v1")
            try:
                synced.get(timeout=15)
                value = read.get(timeout=15)[0]
            except (KazooException, KazooTimeoutError):
                value = None  # refused or cut off: never stale
            assert value in (None, b"v1"), value
        cluster.heal()
        assert converge(cluster)["/t/x"] == b"v1"


def test_zkcli_writes_through_a_leader_kill() -> None:
    """The README's promise with ZooKeeper's own CLI: kill any one server of the ensemble
    and zkCli, given the whole connect string, keeps writing and reading everything back.
    A one-shot zkCli that happens to try the dead server first fails with ConnectionLoss
    (it does the same against ZooKeeper): it is run again, as a user would."""
    from types import SimpleNamespace

    from test_zkcli import ZKCLI, CliResult, zkcli

    if not ZKCLI.exists():
        pytest.skip("the Debian zookeeper package (zkCli.sh) is required")

    def cli(*args: str) -> CliResult:
        for _ in range(6):
            result = zkcli(ensemble, *args)  # type: ignore[arg-type]
            if "ConnectionLoss" not in result.text:
                break
        assert result.returncode == 0, result.raw
        return result

    with Cluster("fastzk", 3) as cluster:
        ensemble = SimpleNamespace(connect_string=cluster.connect_string())
        cli("create", "/cli1", "one")
        leader = cluster.wait_for_leader()
        leader.kill()
        cluster.wait_for_leader(members=[m for m in cluster.members if m is not leader])
        cli("create", "/cli2", "two")
        assert "one" in cli("get", "/cli1").lines
        assert "two" in cli("get", "/cli2").lines

"""Differential conformance of a 3-server ensemble: Apache ZooKeeper 3.8 vs fastzk.

Every scenario runs unchanged against a real ZooKeeper ensemble and a real fastzk ensemble
(fastzk/nemesis/cluster.py: both on loopback, every process stopped by PID, files kept when a ``with
Cluster`` block raises) and reduces what a client or an operator observes to a value with the
timing taken out: kazoo connection states and watch callbacks, the sequence of frames on a raw
session, reply zxids relative to a write's zxid, the line labels and keys of the four-letter
words.  Each kind must produce the same value; where fastzk knowingly differs from ZooKeeper the
difference is spelt out next to the expected value (``FASTZK_*``, ``kind == "fastzk"``, or a
strict xfail naming a suspected fastzk bug), so that a new drift in either direction fails.
The ZooKeeper side is skipped when ZooKeeper is not installed; the fastzk side then still checks
its value against the one ZooKeeper produced when this file was written.

kazoo 2.11 does not send setWatches: on a lost connection it fires every one-shot watcher with
a NONE event and forgets it; an application sets its watches again once CONNECTED.  The
failover scenario therefore checks both that (the watches set again fire for changes made
through another member) and the server side of setWatches, sent on a raw session resumed on a
surviving member, as the Java client does.
"""

from __future__ import annotations

import re
import socket
import struct
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError
from kazoo.protocol.states import WatchedEvent
from test_cluster_reference import kazoo
from wire import (
    NO_NODE,
    XID_NOTIFICATION,
    XID_PING,
    XID_SET_WATCHES,
    ConnectionClosed,
    create_request,
    exists_request,
    get_children_request,
    get_data_request,
    handshake,
    ping_request,
    read_reply,
    set_watches_request,
)

from fastzk.nemesis.cluster import Cluster, Kind, Member, zookeeper_installed
from fastzk.nemesis.servers import four_letter_word

pytestmark = pytest.mark.timeout(120)

needs_zookeeper = pytest.mark.skipif(
    not zookeeper_installed(), reason="Apache ZooKeeper (Debian package zookeeper) not installed"
)
KINDS = [pytest.param("zookeeper", marks=needs_zookeeper), "fastzk"]

#: Sessions outlive an election even on a busy 2-core machine (tickTime is 200 ms, so the
#: default maximum would be 4 s).
CFG = {"maxSessionTimeout": 10000}
SESSION_TIMEOUT = 8.0
#: kazoo's default reconnect backoff grows to a minute; an election takes well under a second.
#: Below the tests' own timeout, so that an ensemble that never elects fails with its logs.
START_TIMEOUT = 60.0
NOT_SERVING = "This ZooKeeper instance is not currently serving requests\n"

# -- helpers -----------------------------------------------------------------------------------


def word(member: Member, cmd: str) -> str:
    """The raw reply of a four-letter word."""
    return four_letter_word("127.0.0.1", member.client_port, cmd).decode()


def server_lines(cluster: Cluster) -> list[str]:
    """The ``server.N=host:quorum:election:role`` lines ZooKeeper prints for this ensemble."""
    return [
        f"server.{m.sid}=127.0.0.1:{m.quorum_port}:{m.election_port}:participant"
        for m in cluster.members
    ]


def serving(cluster: Cluster, session_id: int) -> Member | None:
    """The member whose ``cons`` lists the session (None while it is connected nowhere)."""
    tag = f"sid=0x{session_id:x},"
    return next((m for m in cluster.members if m.running and tag in word(m, "cons")), None)


def watched_paths(member: Member, session_id: int) -> set[str]:
    """The paths *member*'s ``wchc`` lists under the session."""
    paths: dict[str, set[str]] = {}
    current = ""
    for line in word(member, "wchc").splitlines():
        if line.startswith("0x"):
            current = line.strip()
            paths[current] = set()
        elif line.startswith("\t") and current:
            paths[current].add(line.strip())
    return paths.get(f"0x{session_id:x}", set())


def read_frames(sock: socket.socket, count: int) -> list[tuple[Any, ...]]:
    """The next *count* frames of a raw session: ``("event", type, path)`` for a watch
    notification, ``("reply", xid, err)`` otherwise."""
    frames: list[tuple[Any, ...]] = []
    for _ in range(count):
        header, body = read_reply(sock, timeout=15.0)
        if header.xid == XID_NOTIFICATION:
            event_type, _state, length = struct.unpack_from(">iii", body)
            frames.append(("event", event_type, body[12 : 12 + length].decode()))
        else:
            frames.append(("reply", header.xid, header.err))
    return frames


def one_queued(member: Member) -> bool:
    """*member*'s ``cons`` shows a connection with one request awaiting its outcome."""
    return "queued=1," in word(member, "cons")


def outcome(sock: socket.socket, xid: int, timeout: float) -> str:
    """Wait for the reply to request *xid* of a raw session, pinging so that the session
    stays alive: ``reply <err>``, ``connection closed``, or ``none`` after *timeout*."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            sock.sendall(ping_request())
            header, _ = read_reply(sock)
            while header.xid != XID_PING:
                if header.xid == xid:
                    return f"reply {header.err}"
                header, _ = read_reply(sock)
            time.sleep(0.2)
    except ConnectionError:  # ConnectionClosed, or reset while sending
        return "connection closed"
    return "none"


# -- 1. failover of a client -------------------------------------------------------------------

NODE_DATA_CHANGED = 3
NODE_CHILDREN_CHANGED = 4

#: The same for both kinds, timing aside.
EXPECTED_FAILOVER: dict[str, Any] = {
    "kazoo states: SUSPENDED then CONNECTED, never LOST": True,
    "same session after failover": True,
    "ephemeral still owned by the session": True,
    # wchc lists data and exists watches only (ZooKeeper 3.8 leaves child watches out).
    "wchc of the new member": {"/t/data"},
    "kazoo watch events": [
        # kazoo itself, on the lost connection (no server involved): each one-shot watcher
        # is fired with a NONE event and forgotten, child watchers first ...
        ("child", "NONE", "CONNECTING", None),
        ("data", "NONE", "CONNECTING", None),
        # ... and the watches set again once CONNECTED fire for changes made through
        # another member.
        ("data", "CHANGED", "CONNECTED", "/t/data"),
        ("child", "CHILD", "CONNECTED", "/t"),
    ],
    "raw session resumed on a survivor": True,
    # setWatches with the zxid seen before the kill: the change made meanwhile fires at once,
    # before setWatches' own reply.
    "raw frames after setWatches": [
        ("event", NODE_DATA_CHANGED, "/t/data"),
        ("reply", XID_SET_WATCHES, 0),
    ],
    "raw frames after a create through another member": [("event", NODE_CHILDREN_CHANGED, "/t")],
}


@pytest.mark.parametrize("kind", KINDS)
def test_client_failover_keeps_session_ephemeral_and_watches(kind: Kind) -> None:
    """kill -9 of the leader under a kazoo client connected to the whole ensemble (leader
    first) and a raw session on the leader: both resume their session on a survivor, the
    ephemeral stays, and watches fire for changes made through the other survivor.

    fastzk's client may go SUSPENDED, CONNECTED, SUSPENDED, CONNECTED: a follower that has not
    yet seen the leader die re-attaches the session on its own, then drops it moments later
    (test_session_reattach_on_a_follower_needs_the_leader shows that deterministically), so
    the number of SUSPENDED/CONNECTED rounds is not compared, only their order.
    """
    seen: dict[str, Any] = {}
    with Cluster(kind, 3, cfg=CFG, start_timeout=START_TIMEOUT) as cluster:
        leader = cluster.wait_for_leader()
        hosts = ",".join(m.connect_string() for m in [leader, *cluster.followers()])
        states: list[str] = []
        events: list[tuple[str, str, str, str | None]] = []

        def watcher(name: str) -> Callable[[WatchedEvent], None]:
            def record(event: WatchedEvent) -> None:
                events.append((name, event.type, event.state, event.path))

            return record

        def set_watches(zk: KazooClient) -> None:
            zk.get("/t/data", watch=watcher("data"))
            zk.get_children("/t", watch=watcher("child"))

        with kazoo(hosts, timeout=SESSION_TIMEOUT, randomize_hosts=False) as zk:
            zk.create("/t/data", b"0", makepath=True)
            zk.create("/t/eph", b"", ephemeral=True)
            session = zk.client_id[0]
            set_watches(zk)
            zk.add_listener(states.append)

            raw, raw_session = handshake(
                "127.0.0.1", leader.client_port, timeout_ms=int(SESSION_TIMEOUT * 1000)
            )
            with raw:
                raw.sendall(get_data_request(1, "/t/data", watch=True))
                raw.sendall(get_children_request(2, "/t", watch=True))
                replies = [read_reply(raw)[0] for _ in range(2)]
                assert [r.err for r in replies] == [0, 0]
                raw_zxid = max(r.zxid for r in replies)
                leader.kill()
            survivors = [m for m in cluster.members if m is not leader]
            cluster.wait_for_leader(members=survivors)
            cluster.wait_until(lambda: states[-1:] == ["CONNECTED"], "the kazoo client reconnects")
            home = cluster.wait_until(lambda: serving(cluster, session), "the client's member")
            assert home in survivors
            other = next(m for m in survivors if m is not home)
            seen["same session after failover"] = zk.client_id[0] == session
            set_watches(zk)
            seen["wchc of the new member"] = watched_paths(home, session)

            resumed, response = handshake(
                "127.0.0.1",
                home.client_port,
                session_id=raw_session.session_id,
                passwd=raw_session.passwd,
                last_zxid_seen=raw_zxid,
                timeout_ms=int(SESSION_TIMEOUT * 1000),
            )
            with resumed, kazoo(other.connect_string(), timeout=SESSION_TIMEOUT) as writer:
                seen["raw session resumed on a survivor"] = (
                    response.session_id == raw_session.session_id and response.timeout_ms > 0
                )
                writer.sync("/t")
                eph = writer.exists("/t/eph")
                seen["ephemeral still owned by the session"] = (
                    eph is not None and eph.ephemeralOwner == session
                )
                writer.set("/t/data", b"1")
                zk.sync("/t")  # the raw session's member has applied the change too
                resumed.sendall(
                    set_watches_request(XID_SET_WATCHES, raw_zxid, ["/t/data"], (), ["/t"])
                )
                seen["raw frames after setWatches"] = read_frames(resumed, 2)
                cluster.wait_until(lambda: len(events) >= 3, "the data watch fires")
                writer.create("/t/new", b"")
                seen["raw frames after a create through another member"] = read_frames(resumed, 1)
                cluster.wait_until(lambda: len(events) >= 4, "the child watch fires")
            observed_states = list(states)
            rounds = len(observed_states) // 2
            seen["kazoo states: SUSPENDED then CONNECTED, never LOST"] = (
                rounds > 0 and observed_states == ["SUSPENDED", "CONNECTED"] * rounds
            )
            seen["kazoo watch events"] = list(events)
        assert seen == EXPECTED_FAILOVER, f"kazoo states: {observed_states}"


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("zookeeper", marks=needs_zookeeper),
        "fastzk",
    ],
)
def test_session_reattach_on_a_follower_needs_the_leader(kind: Kind) -> None:
    """A session moving to a follower is revalidated by the leader (ZooKeeper's REVALIDATE):
    with the leader paused the follower gives no ConnectResponse, and closes the connection
    once it gives up on the leader (about syncLimit ticks later)."""
    with Cluster(kind, 3, cfg=CFG, start_timeout=START_TIMEOUT) as cluster:
        leader = cluster.wait_for_leader()
        first, second = sorted(cluster.followers(), key=lambda m: m.sid)
        sock, session = handshake(
            "127.0.0.1", first.client_port, timeout_ms=int(SESSION_TIMEOUT * 1000)
        )
        sock.close()  # the session lives on, without a connection
        leader.pause()
        try:
            with pytest.raises((ConnectionClosed, TimeoutError)):
                reattached, _ = handshake(
                    "127.0.0.1",
                    second.client_port,
                    session_id=session.session_id,
                    passwd=session.passwd,
                    timeout=5.0,
                )
                reattached.close()
        finally:
            leader.resume()


# -- 2. four-letter words on the leader, a follower and a member without a quorum -------------

SRVR_LABELS = [
    "Zookeeper version",
    "Latency min/avg/max",
    "Received",
    "Sent",
    "Connections",
    "Outstanding",
    "Zxid",
    "Mode",
    "Node count",
]
#: ZooKeeper's leader ends srvr and stat with this line; fastzk's does not print it.
LEADER_PROPOSAL_LINE = "Proposal sizes last/min/max"
STAT_LABELS = [SRVR_LABELS[0], "Clients", "<client>", "", *SRVR_LABELS[1:]]
CONF_KEYS = [
    "clientPort",
    "secureClientPort",
    "dataDir",
    "dataDirSize",
    "dataLogDir",
    "dataLogSize",
    "tickTime",
    "maxClientCnxns",
    "minSessionTimeout",
    "maxSessionTimeout",
    "clientPortListenBacklog",
    "serverId",
    "initLimit",
    "syncLimit",
    "electionAlg",
    "electionPort",
    "quorumPort",
    "peerType",
    "membership: ",
    "server.1",
    "server.2",
    "server.3",
    "version",
]

#: mntr keys (other than the avg/min/max/cnt/sum/pNN families) both kinds print in both roles,
#: and those the leader adds.
MNTR_SHARED = set(
    "zk_approximate_data_size zk_avg_latency zk_ephemerals_count zk_global_sessions "
    "zk_local_sessions zk_max_file_descriptor_count zk_max_latency zk_min_latency "
    "zk_num_alive_connections zk_open_file_descriptor_count zk_outstanding_requests "
    "zk_packets_received zk_packets_sent zk_peer_state zk_server_state zk_uptime zk_version "
    "zk_watch_count zk_znode_count".split()
)
MNTR_SHARED_LEADER = {
    "zk_learners",
    "zk_pending_syncs",
    "zk_synced_followers",
    "zk_synced_non_voting_followers",
}
#: Summary families (zk_avg_X, zk_min_X, ...) both print; ZooKeeper prints ~65 more.
MNTR_SHARED_SUMMARIES = {"fsynctime", "sync_processor_batch_size"}
#: fastzk's own mntr keys, in both roles and on the leader.
FASTZK_MNTR_ONLY = {
    "zk_commit_zxid",
    "zk_digest_checks",
    "zk_digest_mismatches",  # ZooKeeper's own key for these is zk_digest_mismatches_count
    "zk_elections_won",
    "zk_epoch",
    "zk_last_processed_zxid",
    "zk_leader_id",
    "zk_log_zxid",
    "zk_persistent_watch_count",
}
FASTZK_MNTR_ONLY_LEADER = {"zk_followers", "zk_follower_lag_txns"}
#: ZooKeeper's mntr keys (summary families aside) that fastzk lacks, in both roles and on the
#: leader.
ZOOKEEPER_MNTR_ONLY = set(
    "zk_add_dead_watcher_stall_time zk_auth_failed_count zk_bytes_received_count "
    "zk_cnxn_closed_without_zk_server_running zk_commit_count zk_connection_drop_count "
    "zk_connection_drop_probability zk_connection_rejected zk_connection_request_count "
    "zk_connection_revalidate_count zk_dead_watchers_cleared zk_dead_watchers_queued "
    "zk_diff_count zk_digest_mismatches_count zk_ensemble_auth_fail zk_ensemble_auth_skip "
    "zk_ensemble_auth_success zk_insecure_admin_count zk_large_requests_rejected "
    "zk_last_client_response_size zk_learner_commit_received_count "
    "zk_learner_proposal_received_count zk_looking_count zk_max_client_response_size "
    "zk_min_client_response_size zk_non_mtls_local_conn_count zk_non_mtls_remote_conn_count "
    "zk_outstanding_changes_queued zk_outstanding_changes_removed zk_outstanding_tls_handshake "
    "zk_prep_processor_request_queued zk_proposal_count zk_quit_leading_due_to_disloyal_voter "
    "zk_quorum_size zk_request_commit_queued zk_request_throttle_wait_count "
    "zk_requests_not_forwarded_to_commit_processor zk_response_bytes "
    "zk_response_packet_cache_hits zk_response_packet_cache_misses "
    "zk_response_packet_get_children_cache_hits zk_response_packet_get_children_cache_misses "
    "zk_revalidate_count zk_sessionless_connections_expired "
    "zk_skip_learner_request_to_next_processor_count zk_snap_count zk_stale_replies "
    "zk_stale_requests zk_stale_requests_dropped zk_stale_sessions_expired "
    "zk_sync_processor_request_queued zk_throttled_ops zk_tls_handshake_exceeded "
    "zk_unrecoverable_error_count zk_unsuccessful_handshake zk_watch_bytes".split()
)
ZOOKEEPER_MNTR_ONLY_LEADER = {
    "zk_last_proposal_size",
    "zk_leader_uptime",
    "zk_max_proposal_size",
    "zk_min_proposal_size",
    "zk_synced_observers",
}
_SUMMARY_KEY = re.compile(r"^zk_(?:avg|min|max|cnt|sum|p50|p95|p99|p999)_(.+)$")


def labels(text: str) -> list[str]:
    """The label of every line (text before the first ``:``); client lines of ``stat`` become
    one ``<client>`` (how many connections are listed is timing)."""
    out: list[str] = []
    for line in text.splitlines():
        label = "<client>" if line.startswith(" /") else line.split(":", 1)[0]
        if label != "<client>" or out[-1:] != ["<client>"]:
            out.append(label)
    return out


def mntr_shape(text: str) -> tuple[set[str], set[str]]:
    """(plain keys, summary family names) of a ``mntr`` reply; ``zk_avg_X`` etc. belong to the
    family X when ``zk_cnt_X`` exists (``zk_avg_latency`` alone does not make a family)."""
    keys = {line.split("\t", 1)[0] for line in text.splitlines() if "\t" in line}

    def family(key: str) -> str | None:
        match = _SUMMARY_KEY.match(key)
        return match.group(1) if match and f"zk_cnt_{match.group(1)}" in keys else None

    families = {f for f in map(family, keys) if f is not None}
    return {k for k in keys if family(k) is None}, families


def shapes(member: Member, lines: list[str]) -> dict[str, Any]:
    """What srvr, stat, mntr, conf, ruok and isro show of a serving member, values aside."""
    srvr, stat, conf, mntr = (word(member, cmd) for cmd in ("srvr", "stat", "conf", "mntr"))
    plain, families = mntr_shape(mntr)
    values = dict(line.split("\t", 1) for line in mntr.splitlines() if "\t" in line)
    return {
        "srvr": labels(srvr),
        "stat": labels(stat),
        "Mode": [line for line in srvr.splitlines() if line.startswith("Mode:")],
        "mntr state": (values["zk_server_state"], values["zk_peer_state"]),
        "mntr keys": plain,
        "mntr shared summary families": families & MNTR_SHARED_SUMMARIES,
        "mntr has other summary families": bool(families - MNTR_SHARED_SUMMARIES),
        "conf keys": [line.split("=", 1)[0] for line in conf.splitlines()],
        "conf membership": conf.split("membership: \n", 1)[1].splitlines()[:-1],
        "conf ends with a newline": conf.endswith("\n"),
        "ruok": word(member, "ruok"),
        "isro": word(member, "isro"),
    }


def expected_shapes(kind: Kind, role: str, lines: list[str]) -> dict[str, Any]:
    """ZooKeeper 3.8.0's shapes for *role*, with fastzk's known differences for fastzk."""
    leader = role == "leader"
    proposal = [LEADER_PROPOSAL_LINE] if leader and kind == "zookeeper" else []
    shared = MNTR_SHARED | (MNTR_SHARED_LEADER if leader else set())
    if kind == "zookeeper":
        own = ZOOKEEPER_MNTR_ONLY | (ZOOKEEPER_MNTR_ONLY_LEADER if leader else set())
    else:
        own = FASTZK_MNTR_ONLY | (FASTZK_MNTR_ONLY_LEADER if leader else set())
    return {
        "srvr": SRVR_LABELS + proposal,
        "stat": STAT_LABELS + proposal,
        "Mode": [f"Mode: {role}"],
        "mntr state": (role, "leading - broadcast" if leader else "following - broadcast"),
        "mntr keys": shared | own,
        "mntr shared summary families": MNTR_SHARED_SUMMARIES,
        # ZooKeeper's ~65 others (request processors, learner handlers, namespaces...).
        "mntr has other summary families": kind == "zookeeper",
        "conf keys": CONF_KEYS,
        "conf membership": lines,
        # ZooKeeper's conf ends with "version=0" and no newline; so does fastzk's.
        "conf ends with a newline": False,
        "ruok": "imok",
        "isro": "rw",
    }


@pytest.mark.parametrize("kind", KINDS)
def test_four_letter_words_match_zookeeper_role_for_role(kind: Kind) -> None:
    """srvr/stat/mntr/conf/ruok/isro on the leader and a follower show the same lines and keys
    as ZooKeeper's (fastzk's known differences listed above); a member left without a quorum
    answers like ZooKeeper's."""
    with Cluster(kind, 3, start_timeout=START_TIMEOUT) as cluster:
        leader = cluster.wait_for_leader()
        follower = cluster.followers()[0]
        lines = server_lines(cluster)
        for member, role in ((leader, "leader"), (follower, "follower")):
            assert shapes(member, lines) == expected_shapes(kind, role, lines), role
        for member in cluster.followers():
            member.stop()
        cluster.wait_until(lambda: leader.mode() is None, "the lone member stops serving")
        alone = {cmd: word(leader, cmd) for cmd in ("srvr", "stat", "mntr", "conf", "ruok", "isro")}
        assert alone == {
            "srvr": NOT_SERVING,
            "stat": NOT_SERVING,
            "mntr": NOT_SERVING,
            "conf": NOT_SERVING,
            "ruok": "imok",
            "isro": "null",
        }


# -- 3. /zookeeper/config ----------------------------------------------------------------------

#: The stat version of /zookeeper/config: ZooKeeper writes it outside the versioned path.
CONFIG_NODE_VERSION = {"zookeeper": -1, "fastzk": 0}


@pytest.mark.parametrize("kind", KINDS)
def test_zookeeper_config_node_publishes_the_ensemble_read_only(kind: Kind) -> None:
    """/zookeeper/config holds the server lines and ``version=0`` (no dynamic reconfig),
    readable by anyone and writable by no one, on a follower as on the leader."""
    with Cluster(kind, 3, start_timeout=START_TIMEOUT) as cluster:
        with kazoo(cluster.followers()[0].connect_string()) as zk:
            data, _ = zk.get("/zookeeper/config")
            assert data.decode() == "\n".join([*server_lines(cluster), "version=0"])
            assert sorted(zk.get_children("/zookeeper")) == ["config", "quota"]
            acl, stat = zk.get_acls("/zookeeper/config")
            assert [(a.perms, a.id.scheme, a.id.id) for a in acl] == [(1, "world", "anyone")]
            assert stat.version == CONFIG_NODE_VERSION[kind]
            with pytest.raises(NoAuthError):
                zk.set("/zookeeper/config", b"server.9=127.0.0.1:1:2")
            with pytest.raises(NoAuthError):
                zk.create("/zookeeper/config/child", b"")


# -- 4. read-your-writes across followers, zxid order, a client ahead of a member --------------

#: Reply zxids relative to the zxid of a create made through one follower.
EXPECTED_ZXIDS = {
    "create's reply": 0,
    "sync's reply on the other follower": 0,
    "read's reply on the other follower": 0,
    "read's mzxid": 0,
    "set's reply on the other follower": 1,
    "set's mzxid": 1,
    "sync's reply back on the first follower": 1,
    "read's reply back on the first follower": 1,
}


@pytest.mark.parametrize("kind", KINDS)
def test_sync_then_read_through_the_other_follower(kind: Kind) -> None:
    """A write through one follower is read after sync through the other, with the reply
    zxids ordered as in ZooKeeper."""
    with Cluster(kind, 3, start_timeout=START_TIMEOUT) as cluster:
        cluster.wait_for_leader()
        first, second = sorted(cluster.followers(), key=lambda m: m.sid)
        with kazoo(first.connect_string()) as a, kazoo(second.connect_string()) as b:
            a.create("/t", b"")
            _, created = a.create("/t/x", b"v", include_data=True)
            base = created.czxid
            zxids = {"create's reply": a.last_zxid}
            b.sync("/t/x")
            zxids["sync's reply on the other follower"] = b.last_zxid
            data, stat = b.get("/t/x")
            assert data == b"v"
            zxids["read's reply on the other follower"] = b.last_zxid
            zxids["read's mzxid"] = stat.mzxid
            zxids["set's mzxid"] = b.set("/t/x", b"w").mzxid
            zxids["set's reply on the other follower"] = b.last_zxid
            a.sync("/t/x")
            zxids["sync's reply back on the first follower"] = a.last_zxid
            assert a.get("/t/x")[0] == b"w"
            zxids["read's reply back on the first follower"] = a.last_zxid
            assert {k: v - base for k, v in zxids.items()} == EXPECTED_ZXIDS


@pytest.mark.parametrize("kind", KINDS)
def test_a_lagging_member_refuses_a_client_that_has_seen_more(kind: Kind) -> None:
    """A follower cut off by a black hole keeps serving from its older state until it notices
    (about syncLimit ticks); meanwhile a client that has seen a newer zxid through another
    member is refused by it (connection closed, no ConnectResponse)."""
    with Cluster(kind, 3, proxied=True, start_timeout=START_TIMEOUT) as cluster:
        cluster.wait_for_leader()
        first, second = sorted(cluster.followers(), key=lambda m: m.sid)
        with kazoo(first.connect_string()) as zk:
            zk.create("/t", b"")
            sock, _ = handshake("127.0.0.1", second.client_port)
            with sock:
                cluster.isolate(second.sid, "blackhole")
                try:
                    zk.create("/t/x", b"")
                    with pytest.raises(ConnectionClosed):
                        handshake("127.0.0.1", second.client_port, last_zxid_seen=zk.last_zxid)
                    # Still serving its sessions (a member that stops drops them), but behind.
                    sock.sendall(exists_request(1, "/t/x"))
                    assert read_reply(sock)[0].err == NO_NODE
                finally:
                    cluster.heal()


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("zookeeper", marks=needs_zookeeper),
        "fastzk",
    ],
)
def test_a_write_forwarded_into_a_lost_link_is_not_left_hanging(kind: Kind) -> None:
    """A write a follower forwarded into a black hole, which the heal then resets, gets an
    outcome: a reply, or (ZooKeeper's follower gives up on the leader and drops its clients)
    a closed connection, so that the client knows the outcome is unknown and retries
    elsewhere.  Three rounds: fastzk sometimes drops its clients too, but rarely."""
    with Cluster(kind, 3, proxied=True, start_timeout=START_TIMEOUT) as cluster:
        for round_ in range(3):
            cluster.wait_for_leader()
            follower = cluster.followers()[0]
            sock, _ = handshake("127.0.0.1", follower.client_port, timeout=15.0)
            with sock:
                cluster.isolate(follower.sid, "blackhole")
                sock.sendall(create_request(1, f"/lost{round_}", b""))
                cluster.wait_until(partial(one_queued, follower), "the create is forwarded")
                cluster.heal()
                assert outcome(sock, 1, timeout=5.0) != "none", f"round {round_}"

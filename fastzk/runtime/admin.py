"""Operator commands: four-letter words on the client port and the AdminServer's JSON commands.

Each command is one function returning a dict of fields (what `/commands/<name>` serves as
JSON) and a four-letter word renders that dict in Apache ZooKeeper's text format, so the two
interfaces cannot drift apart.
"""

from __future__ import annotations

import getpass
import os
import platform
import socket
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastzk import __version__
from fastzk.quorum.replica import REPLICATE
from fastzk.server.watches import CHILD, DATA, PERSISTENT, RECURSIVE

if TYPE_CHECKING:
    from fastzk.config import Config
    from fastzk.node import Client
    from fastzk.runtime.view import ServerView

VERSION = f"3.8.0-fastzk-{__version__}"
VERSION_LINE = f"Zookeeper version: {VERSION}, built on fastzk {__version__}"
TRACE_MASK = 306  # ZooKeeper's default; fastzk has no request tracing, so stmk only stores it


def _outstanding(server: ServerView) -> int:
    return sum(len(client.fifo) for client in server.protocols)


# --- command bodies (dicts) ----------------------------------------------------------------------
def server_stats(server: ServerView) -> dict[str, Any]:
    node = server.node
    stats = node.stats
    return {
        "version": VERSION,
        "read_only": node.role == "read-only",
        "server_stats": {
            "packets_sent": stats.packets_sent,
            "packets_received": stats.packets_received,
            "max_latency": stats.latency_ms.max,
            "min_latency": stats.latency_ms.min,
            "avg_latency": round(stats.latency_ms.avg, 4),
            "num_alive_client_connections": len(server.protocols),
            "outstanding_requests": _outstanding(server),
            "server_state": node.role,
            "last_processed_zxid": node.applied_zxid,
            "data_dir_size": server.storage.sizes.snap_bytes,
            "uptime": int(time.time() * 1000) - server.started_ms,
        },
        "client_response": {"last_buffer_size": -1, "min_buffer_size": -1, "max_buffer_size": -1},
        # ZooKeeper's count includes its internal "" alias of the root (a fresh server: 5)
        "node_count": len(node.tree) + 1,
    }


def _connection_info(server: ServerView, client: Client, full: bool) -> dict[str, Any]:
    protocol = server.protocols[client]
    peer = protocol.transport.get_extra_info("peername") if protocol.transport else None
    info: dict[str, Any] = {
        "remote_socket_address": f"{client.address}:{peer[1] if peer else 0}",
        "interest_ops": 0 if protocol.reading_paused else 1,
        "outstanding_requests": len(client.fifo),
        "packets_received": client.received,
        "packets_sent": client.sent,
    }
    if full and client.session is not None:
        info.update(
            session_id=f"0x{client.session.session_id:x}",
            last_operation=client.last_op,
            established=client.established_ms,
            session_timeout=client.session.timeout,
            last_cxid=f"0x{client.last_xid & 0xFFFFFFFF:x}",
            last_zxid=f"0x{client.last_zxid:x}",
            last_response_time=client.last_response_ms,
            last_latency=client.last_latency_ms,
            min_latency=client.latency_ms.min,
            avg_latency=int(client.latency_ms.avg),
            max_latency=client.latency_ms.max,
        )
    return info


def connections(server: ServerView) -> dict[str, Any]:
    return {
        "connections": [_connection_info(server, c, True) for c in server.protocols],
        "secure_connections": [],
    }


def stats(server: ServerView) -> dict[str, Any]:
    result = server_stats(server)
    result.update(connections(server))
    return result


def configuration(server: ServerView) -> dict[str, Any]:
    cfg = server.cfg
    sizes = server.storage.sizes
    return {
        "client_port": cfg.client_port,
        "secure_client_port": cfg.secure_client_port or -1,
        "data_dir": str(cfg.data_dir),
        "data_dir_size": sizes.snap_bytes,
        "data_log_dir": str(cfg.data_log_dir or cfg.data_dir),
        "data_log_size": sizes.log_bytes,
        "tick_time": cfg.tick_time,
        "max_client_cnxns": cfg.max_client_cnxns,
        "min_session_timeout": cfg.min_session_timeout,
        "max_session_timeout": cfg.max_session_timeout,
        "client_port_listen_backlog": 1024,
        "server_id": cfg.server_id if cfg.ensemble else 0,
        **(_ensemble_configuration(cfg) if cfg.ensemble else {}),
    }


def _ensemble_configuration(cfg: Config) -> dict[str, Any]:
    me = cfg.member(cfg.server_id)
    return {
        "init_limit": cfg.init_limit,
        "sync_limit": cfg.sync_limit,
        "election_alg": 3,
        "election_port": me.election_port,
        "quorum_port": me.quorum_port,
        "peer_type": 1 if me.observer else 0,
        "membership": cfg.membership,
    }


def _user_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no USER/LOGNAME (some containers)
        return str(os.getuid())


def environment(server: ServerView) -> dict[str, Any]:
    return {
        "zookeeper.version": VERSION,
        "host.name": socket.gethostname(),
        "python.version": platform.python_version(),
        "python.implementation": platform.python_implementation(),
        "python.executable": sys.executable,
        "os.name": platform.system(),
        "os.arch": platform.machine(),
        "os.version": platform.release(),
        "user.name": _user_name(),
        "user.home": os.path.expanduser("~"),
        "user.dir": os.getcwd(),
        "pid": os.getpid(),
    }


def _watched(server: ServerView, kinds: tuple[int, ...]) -> dict[str, list[Client]]:
    result: dict[str, list[Client]] = {}
    for kind in kinds:
        for path, conns in server.node.watches.tables[kind].items():
            result.setdefault(path, []).extend(conns)
    return result


# ZooKeeper's wchs/wchc/wchp count data, exists and persistent watches, not child watches.
_SUMMARY_KINDS = (DATA, PERSISTENT, RECURSIVE)


def watch_summary(server: ServerView) -> dict[str, Any]:
    watched = _watched(server, _SUMMARY_KINDS)
    conns = {conn for clients in watched.values() for conn in clients}
    return {
        "num_connections": len(conns),
        "num_paths": len(watched),
        "num_total_watches": sum(len(clients) for clients in watched.values()),
    }


def watches(server: ServerView) -> dict[str, Any]:
    by_session: dict[str, list[str]] = {}
    for path, clients in _watched(server, _SUMMARY_KINDS).items():
        for client in clients:
            by_session.setdefault(f"0x{client.session_id:x}", []).append(path)
    return {"session_id_to_watched_paths": by_session}


def watches_by_path(server: ServerView) -> dict[str, Any]:
    return {
        "path_to_session_ids": {
            path: [f"0x{c.session_id:x}" for c in clients]
            for path, clients in _watched(server, _SUMMARY_KINDS).items()
        }
    }


def dirs(server: ServerView) -> dict[str, Any]:
    sizes = server.storage.sizes
    return {"datadir_size": sizes.snap_bytes, "logdir_size": sizes.log_bytes}


def monitor(server: ServerView) -> dict[str, Any]:
    node = server.node
    tree = node.tree
    stats = node.stats
    ephemerals = sum(len(p) for p in tree.sessions_with_ephemerals().values())
    return {
        "version": VERSION,
        "server_state": node.role,
        "avg_latency": round(stats.latency_ms.avg, 4),
        "max_latency": stats.latency_ms.max,
        "min_latency": stats.latency_ms.min,
        "packets_received": stats.packets_received,
        "packets_sent": stats.packets_sent,
        "num_alive_connections": len(server.protocols),
        "outstanding_requests": _outstanding(server),
        "znode_count": len(tree) + 1,  # as srvr's Node count: ZooKeeper's root alias too
        "watch_count": node.watches.count(DATA) + node.watches.count(CHILD),
        "persistent_watch_count": node.watches.count(PERSISTENT) + node.watches.count(RECURSIVE),
        "ephemerals_count": ephemerals,
        "approximate_data_size": tree.data_size,
        "open_file_descriptor_count": len(os.listdir("/proc/self/fd")),
        "max_file_descriptor_count": os.sysconf("SC_OPEN_MAX"),
        "global_sessions": len(node.sessions),
        "local_sessions": 0,
        "last_processed_zxid": node.applied_zxid,
        "uptime": int(time.time() * 1000) - server.started_ms,
        **_wal_summaries(server),
        **(_quorum_summaries(server) if server.cfg.ensemble else {}),
    }


PEER_STATES = {"leader": "leading - broadcast", "follower": "following - broadcast",
               "observer": "observing - broadcast", "looking": "looking",
               "read-only": "read-only"}


def _quorum_summaries(server: ServerView) -> dict[str, Any]:
    """ZooKeeper's ensemble keys of mntr, plus fastzk's epoch and election count."""
    node = server.node
    replica = node.replica
    body: dict[str, Any] = {
        "peer_state": PEER_STATES[node.role],
        "epoch": replica.epoch,
        "leader_id": replica.leader_id if replica.leader_id is not None else -1,
        "elections_won": replica.elections,
        "commit_zxid": replica.commit,
        "log_zxid": replica.log.last,
        "digest_checks": node.digests_compared,
        "digest_mismatches": len(node.digest_mismatches),
    }
    if replica.is_leader:
        voters = [p for p in replica.progress if p in node.quorum.voters]
        body.update(
            learners=len(replica.progress),
            followers=len(voters),
            synced_followers=len(replica.synced_followers()),
            synced_non_voting_followers=sum(
                1 for p, pr in replica.progress.items()
                if p in node.quorum.observers and pr.state == REPLICATE),
            pending_syncs=len(replica.reads) + len(replica.reads_before_barrier),
            follower_lag_txns=max((replica.log.count_between(pr.match, replica.log.last)
                                   for pr in replica.progress.values()), default=0),
        )
    return body


def _wal_summaries(server: ServerView) -> dict[str, Any]:
    """fsync time (ms) and group-commit batch size under ZooKeeper's mntr names."""
    writer = server.storage.writer
    if writer is None:
        return {}
    fsync = writer.fsync_us
    batches = dict(writer.batch_sizes)
    count = sum(batches.values())
    total = sum(size * n for size, n in batches.items())
    return {
        "avg_fsynctime": round(fsync.avg / 1000, 4),
        "min_fsynctime": fsync.min // 1000,
        "max_fsynctime": fsync.max // 1000,
        "cnt_fsynctime": fsync.count,
        "sum_fsynctime": fsync.total // 1000,
        "avg_sync_processor_batch_size": round(total / count, 4) if count else 0.0,
        "min_sync_processor_batch_size": min(batches, default=0),
        "max_sync_processor_batch_size": max(batches, default=0),
        "cnt_sync_processor_batch_size": count,
        "sum_sync_processor_batch_size": total,
    }


def dump(server: ServerView) -> dict[str, Any]:
    node = server.node
    return {
        "expiry_time_to_session_ids": _expiry_buckets(server),
        "session_id_to_ephemeral_paths": {
            f"0x{sid:x}": sorted(paths)
            for sid, paths in node.tree.sessions_with_ephemerals().items()
        },
    }


def _expiry_buckets(server: ServerView) -> dict[int, list[str]]:
    """Deadlines as wall-clock ms, grouped like ZooKeeper's expiry buckets."""
    node = server.node
    offset = node.now_ms - node.mono_ms
    buckets: dict[int, list[str]] = {}
    for session in node.sessions.sessions.values():
        buckets.setdefault(session.deadline + offset, []).append(f"0x{session.session_id:x}")
    return buckets


def connection_stat_reset(server: ServerView) -> dict[str, Any]:
    for client in server.protocols:
        client.reset_stats()
    return {}


def stat_reset(server: ServerView) -> dict[str, Any]:
    server.node.stats.reset()
    return {}


def is_read_only(server: ServerView) -> dict[str, Any]:
    return {"read_only": server.node.role == "read-only"}


def ruok(server: ServerView) -> dict[str, Any]:
    return {}


def get_trace_mask(server: ServerView) -> dict[str, Any]:
    return {"tracemask": server.trace_mask}


def digest(server: ServerView) -> dict[str, Any]:
    node = server.node
    return {"digests": [{"zxid": node.applied_zxid, "digest": node.tree.digest()}]}


def ready(server: ServerView) -> dict[str, Any]:
    is_ready, reason = server.ready()
    return {"ready": is_ready, "reason": reason}


# primary name -> (function, aliases); the four-letter word is the first alias of 4 letters
COMMANDS: dict[str, tuple[Callable[[ServerView], dict[str, Any]], tuple[str, ...]]] = {
    "configuration": (configuration, ("conf", "config")),
    "connection_stat_reset": (connection_stat_reset, ("crst",)),
    "connections": (connections, ("cons",)),
    "dirs": (dirs, ()),
    "dump": (dump, ()),
    "environment": (environment, ("envi", "env")),
    "get_trace_mask": (get_trace_mask, ("gtmk",)),
    "hash": (digest, ()),
    "is_read_only": (is_read_only, ("isro",)),
    "monitor": (monitor, ("mntr",)),
    "ready": (ready, ()),
    "ruok": (ruok, ()),
    "server_stats": (server_stats, ("srvr",)),
    "stat_reset": (stat_reset, ("srst",)),
    "stats": (stats, ("stat",)),
    "watch_summary": (watch_summary, ("wchs",)),
    "watches": (watches, ("wchc",)),
    "watches_by_path": (watches_by_path, ("wchp",)),
}
ALIASES = {alias: name for name, (_, aliases) in COMMANDS.items() for alias in aliases}


def run_command(name: str, server: ServerView) -> dict[str, Any]:
    """The JSON body of `/commands/<name>`, as ZooKeeper's AdminServer shapes it."""
    primary = ALIASES.get(name, name)
    entry = COMMANDS.get(primary)
    if entry is None:
        return {"command": name, "error": f"Unknown command: {name}"}
    body = entry[0](server)
    body.update(command=primary, error=None)
    return body


# --- four-letter words (text) --------------------------------------------------------------------
def _srvr_text(server: ServerView, with_clients: bool) -> str:
    body = server_stats(server)
    inner = body["server_stats"]
    lines = [VERSION_LINE]
    if with_clients:
        lines.append("Clients:")
        lines.extend(_brief(server, c) for c in server.protocols)
        lines.append("")
    lines += [
        f"Latency min/avg/max: {inner['min_latency']}/{inner['avg_latency']:.4f}/"
        f"{inner['max_latency']}",
        f"Received: {inner['packets_received']}",
        f"Sent: {inner['packets_sent']}",
        f"Connections: {inner['num_alive_client_connections']}",
        f"Outstanding: {inner['outstanding_requests']}",
        f"Zxid: 0x{inner['last_processed_zxid']:x}",
        f"Mode: {inner['server_state']}",
        f"Node count: {body['node_count']}",
    ]
    return "\n".join(lines) + "\n"


def _brief(server: ServerView, client: Client) -> str:
    info = _connection_info(server, client, False)
    return (
        f" /{info['remote_socket_address']}[{info['interest_ops']}]"
        f"(queued={info['outstanding_requests']},recved={info['packets_received']},"
        f"sent={info['packets_sent']})"
    )


def _cons_line(server: ServerView, client: Client) -> str:
    info = _connection_info(server, client, True)
    line = _brief(server, client)
    if "session_id" not in info:
        return line
    return line[:-1] + (
        f",sid={info['session_id']},lop={info['last_operation']},est={info['established']},"
        f"to={info['session_timeout']},lcxid={info['last_cxid']},lzxid={info['last_zxid']},"
        f"lresp={info['last_response_time']},llat={info['last_latency']},"
        f"minlat={info['min_latency']},avglat={info['avg_latency']},"
        f"maxlat={info['max_latency']})"
    )


def _mntr_text(server: ServerView) -> str:
    lines = []
    for key, value in monitor(server).items():
        lines.append(f"zk_{key}\t{value}")
    return "\n".join(lines) + "\n"


def _dump_text(server: ServerView) -> str:
    body = dump(server)
    buckets = body["expiry_time_to_session_ids"]
    lines = ["SessionTracker dump:",
             f"Session Sets ({len(buckets)})/({len(server.node.sessions)}):"]
    for deadline in sorted(buckets):
        stamp = time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime(deadline / 1000))
        lines.append(f"{len(buckets[deadline])} expire at {stamp}:")
        lines.extend(f"\t{sid}" for sid in buckets[deadline])
    owners = body["session_id_to_ephemeral_paths"]
    lines += ["ephemeral nodes dump:", f"Sessions with Ephemerals ({len(owners)}):"]
    for sid, paths in owners.items():
        lines.append(f"{sid}:")
        lines.extend(f"\t{path}" for path in paths)
    lines.append("Connections dump:")
    lines.append(f"Connections Sets (1)/({len(server.protocols)}):")
    # ZooKeeper's NIO server buckets connections by idle expiry; fastzk has one bucket:
    # the sessions' own expiry decides when an idle connection goes
    stamp = time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime(server.node.now_ms / 1000))
    lines.append(f"{len(server.protocols)} expire at {stamp}:")
    for client in server.protocols:
        address = _connection_info(server, client, False)["remote_socket_address"]
        lines.append(f"\tip: /{address} sessionId: 0x{client.session_id:x}")
    return "\n".join(lines) + "\n"


def _grouped(mapping: dict[str, list[str]]) -> str:
    return "".join(
        f"{key}\n" + "".join(f"\t{value}\n" for value in values) for key, values in mapping.items()
    ) + "\n"


NEEDS_SERVING = frozenset({"srvr", "stat", "cons", "crst", "srst", "dump", "wchs", "wchc",
                           "wchp", "mntr", "dirs", "hash", "conf"})
NOT_SERVING = "This ZooKeeper instance is not currently serving requests\n"


def four_letter_word(word: str, server: ServerView, argument: bytes = b"") -> str:
    """ZooKeeper's text output for `word` (already checked against the whitelist)."""
    if word == "ruok":
        return "imok"
    node = server.node
    if word == "isro":
        return "rw" if node.serving else ("ro" if node.role == "read-only" else "null")
    if word in NEEDS_SERVING and not node.serving and node.role != "read-only":
        return NOT_SERVING
    if word == "srvr":
        return _srvr_text(server, False)
    if word == "stat":
        return _srvr_text(server, True)
    if word == "cons":
        return "".join(_cons_line(server, c) + "\n" for c in server.protocols) + "\n"
    if word == "conf":
        cfg = configuration(server)
        names = {
            "client_port": "clientPort", "secure_client_port": "secureClientPort",
            "data_dir": "dataDir", "data_dir_size": "dataDirSize", "data_log_dir": "dataLogDir",
            "data_log_size": "dataLogSize", "tick_time": "tickTime",
            "max_client_cnxns": "maxClientCnxns", "min_session_timeout": "minSessionTimeout",
            "max_session_timeout": "maxSessionTimeout",
            "client_port_listen_backlog": "clientPortListenBacklog", "server_id": "serverId",
            "init_limit": "initLimit", "sync_limit": "syncLimit", "election_alg": "electionAlg",
            "election_port": "electionPort", "quorum_port": "quorumPort", "peer_type": "peerType",
        }
        text = "".join(f"{names[key]}={value}\n" for key, value in cfg.items()
                       if key != "membership")
        if "membership" in cfg:
            text += "membership: \n" + cfg["membership"]  # no newline after it: ZooKeeper's
        return text
    if word == "envi":
        return "Environment:\n" + "".join(f"{k}={v}\n" for k, v in environment(server).items())
    if word == "dirs":
        body = dirs(server)
        return f"datadir_size: {body['datadir_size']}\nlogdir_size: {body['logdir_size']}\n"
    if word == "wchs":
        body = watch_summary(server)
        return (
            f"{body['num_connections']} connections watching {body['num_paths']} paths\n"
            f"Total watches:{body['num_total_watches']}\n"
        )
    if word == "wchc":
        return _grouped(watches(server)["session_id_to_watched_paths"])
    if word == "wchp":
        return _grouped(watches_by_path(server)["path_to_session_ids"])
    if word == "mntr":
        return _mntr_text(server)
    if word == "dump":
        return _dump_text(server)
    if word == "crst":
        connection_stat_reset(server)
        return "Connection stats reset.\n"
    if word == "srst":
        stat_reset(server)
        return "Server stats reset.\n"
    if word == "gtmk":
        return str(server.trace_mask)
    if word == "stmk":
        server.trace_mask = int.from_bytes(argument, "big", signed=True)
        return str(server.trace_mask)
    if word == "hash":
        return "".join(f"{d['zxid']:x}: {d['digest']}\n" for d in digest(server)["digests"])
    raise ValueError(f"not a four-letter word: {word}")

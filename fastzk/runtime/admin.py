"""Four-letter words on the client port, with Apache ZooKeeper's output formats."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from fastzk import __version__
from fastzk.server.watches import DATA, PERSISTENT, RECURSIVE

if TYPE_CHECKING:
    from fastzk.runtime.server import Server

VERSION_LINE = f"Zookeeper version: 3.8.0-fastzk-{__version__}, built on fastzk {__version__}"


def _dir_size(path: os.PathLike[str] | str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


def _srvr_lines(server: Server) -> tuple[list[str], list[str]]:
    node = server.node
    head = [VERSION_LINE]
    tail = [
        f"Latency min/avg/max: {node.latency_min}/{node.latency_avg:.4f}/{node.latency_max}",
        f"Received: {node.packets_received}",
        f"Sent: {node.packets_sent}",
        f"Connections: {len(server.protocols)}",
        f"Outstanding: {sum(len(c.fifo) for c in server.protocols)}",
        f"Zxid: 0x{node.applied_zxid:x}",
        "Mode: standalone",
        f"Node count: {len(node.tree)}",
    ]
    return head, tail


def _connection_brief(server: Server) -> list[str]:
    lines = []
    for client, protocol in server.protocols.items():
        port = protocol.transport.get_extra_info("peername")[1] if protocol.transport else 0
        lines.append(
            f" /{client.address}:{port}[{1 if not protocol.reading_paused else 0}]"
            f"(queued={len(client.fifo)},recved={client.received},sent={client.sent})"
        )
    return lines


def four_letter_word(word: str, server: Server) -> str:
    node = server.node
    cfg = server.cfg
    if word == "ruok":
        return "imok"
    if word == "isro":
        return "rw"
    if word == "srvr":
        head, tail = _srvr_lines(server)
        return "\n".join(head + tail) + "\n"
    if word == "stat":
        head, tail = _srvr_lines(server)
        return "\n".join(head + ["Clients:"] + _connection_brief(server) + [""] + tail) + "\n"
    if word == "conf":
        return "".join(
            f"{key}={value}\n"
            for key, value in (
                ("clientPort", cfg.client_port),
                ("secureClientPort", -1),
                ("dataDir", cfg.data_dir),
                ("dataDirSize", _dir_size(cfg.data_dir)),
                ("dataLogDir", cfg.data_dir),
                ("dataLogSize", _dir_size(cfg.data_dir)),
                ("tickTime", cfg.tick_time),
                ("maxClientCnxns", cfg.max_client_cnxns),
                ("minSessionTimeout", cfg.min_session_timeout),
                ("maxSessionTimeout", cfg.max_session_timeout),
                ("clientPortListenBacklog", 1024),
                ("serverId", 0),
            )
        )
    if word == "dirs":
        size = _dir_size(cfg.data_dir)
        return f"datadir_size: {size}\nlogdir_size: {size}\n"
    if word == "wchs":
        watched = [node.watches.tables[kind] for kind in (DATA, PERSISTENT, RECURSIVE)]
        connections = {conn for table in watched for conns in table.values() for conn in conns}
        paths = {path for table in watched for path in table}
        total = sum(len(conns) for table in watched for conns in table.values())
        return f"{len(connections)} connections watching {len(paths)} paths\nTotal watches:{total}\n"
    if word == "mntr":
        tree = node.tree
        metrics = [
            ("zk_version", VERSION_LINE.split(": ", 1)[1]),
            ("zk_server_state", "standalone"),
            ("zk_avg_latency", f"{node.latency_avg:.4f}"),
            ("zk_max_latency", node.latency_max),
            ("zk_min_latency", node.latency_min),
            ("zk_packets_received", node.packets_received),
            ("zk_packets_sent", node.packets_sent),
            ("zk_num_alive_connections", len(server.protocols)),
            ("zk_outstanding_requests", sum(len(c.fifo) for c in server.protocols)),
            ("zk_znode_count", len(tree)),
            ("zk_watch_count", node.watches.total),
            ("zk_ephemerals_count", sum(len(p) for p in tree.sessions_with_ephemerals().values())),
            ("zk_approximate_data_size", tree.data_size),
            ("zk_open_file_descriptor_count", len(os.listdir("/proc/self/fd"))),
            ("zk_max_file_descriptor_count", os.sysconf("SC_OPEN_MAX")),
            ("zk_global_sessions", len(node.sessions)),
            ("zk_uptime", int(time.time() * 1000) - server.started_ms),
        ]
        return "".join(f"{key}\t{value}\n" for key, value in metrics)
    return f"fastzk: the four-letter word {word} is not implemented yet\n"

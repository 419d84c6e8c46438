"""Prometheus metrics, collected at scrape time from the server's own counters.

Nothing is observed per request through prometheus_client (its locks and objects would cost
more than the request itself); the pipeline keeps plain integer histograms (server/stats.py)
and this collector turns them into metric families when /metrics is read.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest

from fastzk.server.stats import BUCKETS_MS, LatencyHistogram
from fastzk.server.watches import CHILD, DATA, PERSISTENT, RECURSIVE

if TYPE_CHECKING:
    from fastzk.runtime.view import ServerView

_WATCH_KINDS = {"data": DATA, "child": CHILD, "persistent": PERSISTENT, "recursive": RECURSIVE}


class ServerCollector:
    def __init__(self, server: ServerView) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        server = self.server
        node = server.node
        stats = node.stats
        latency = HistogramMetricFamily(
            "fastzk_request_latency_seconds",
            "Time from a request's arrival (writes: its prep) to its reply, by opcode",
            labels=["op"],
        )
        for op, op_stats in sorted(stats.ops.items()):
            cumulative = 0
            buckets = []
            for bound, count in zip(BUCKETS_MS, op_stats.buckets, strict=False):
                cumulative += count
                buckets.append((str(bound / 1000), cumulative))
            buckets.append(("+Inf", op_stats.count))
            latency.add_metric([op], buckets, op_stats.total_ms / 1000)
        yield latency
        for name, help_text, value in (
            ("fastzk_packets_received", "Requests received", stats.packets_received),
            ("fastzk_packets_sent", "Replies and notifications sent", stats.packets_sent),
        ):
            yield CounterMetricFamily(name, help_text, value=value)
        tree = node.tree
        gauges = (
            ("fastzk_outstanding_requests", "Requests waiting for a reply",
             sum(len(c.fifo) for c in server.protocols)),
            ("fastzk_connections", "Open client connections", len(server.protocols)),
            ("fastzk_sessions", "Live sessions", len(node.sessions)),
            ("fastzk_znodes", "Znodes in the tree, root included", len(tree)),
            ("fastzk_approximate_data_size_bytes", "Sum of path and data lengths",
             tree.data_size),
            ("fastzk_ephemerals", "Ephemeral znodes",
             sum(len(p) for p in tree.sessions_with_ephemerals().values())),
            ("fastzk_last_zxid", "zxid of the last applied txn", node.applied_zxid),
        )
        for name, help_text, value in gauges:
            yield GaugeMetricFamily(name, help_text, value=value)
        watches = GaugeMetricFamily("fastzk_watches", "Watch registrations", labels=["kind"])
        for kind, index in _WATCH_KINDS.items():
            watches.add_metric([kind], node.watches.count(index))
        yield watches
        stages = HistogramMetricFamily(
            "fastzk_write_stage_seconds",
            "Time a write spent in each stage of the pipeline: gather (decoding and prep until "
            "the log submission), wal (until durable here), quorum (until committed and "
            "applied), apply (tree, watch events and replies), flush (replies to the sockets)",
            labels=["stage"],
        )
        for stage, histogram in server.stages.histograms.items():
            stages.add_metric([stage], *_us_buckets(histogram))
        yield stages
        writer = server.storage.writer
        if writer is not None:
            histogram = HistogramMetricFamily(
                "fastzk_fsync_latency_seconds", "fdatasync time of each group commit of the WAL"
            )
            histogram.add_metric([], *_us_buckets(writer.fsync_us))
            yield histogram
            yield CounterMetricFamily("fastzk_wal_writes", "Group commits (one writev and one "
                                      "fdatasync each)", value=writer.writes)
            yield CounterMetricFamily("fastzk_wal_synced_bytes", "Bytes made durable",
                                      value=writer.synced_bytes)
        yield from _quorum_metrics(server)
        ready, _ = server.ready()
        yield GaugeMetricFamily("fastzk_ready", "1 when the server can serve writes now",
                                value=int(ready))


def _us_buckets(histogram: LatencyHistogram) -> tuple[list[tuple[str, int]], float]:
    """A microsecond histogram as Prometheus buckets in seconds, and its sum."""
    cumulative = 0
    buckets = []
    for bound, count in zip(histogram.bounds, histogram.buckets, strict=False):
        cumulative += count
        buckets.append((str(bound / 1_000_000), cumulative))
    buckets.append(("+Inf", histogram.count))
    return buckets, histogram.total / 1_000_000


ROLES = ("standalone", "leader", "follower", "observer", "looking", "read-only")


def _quorum_metrics(server: ServerView) -> Iterator[Any]:
    """Role, epoch, elections and replication progress (follower lag in txns, on a leader)."""
    node = server.node
    replica = node.replica
    role = GaugeMetricFamily("fastzk_role", "1 for this server's current role", labels=["role"])
    for name in ROLES:
        role.add_metric([name], int(node.role == name))
    yield role
    yield GaugeMetricFamily("fastzk_epoch", "Current epoch (ZooKeeper's term)",
                            value=replica.epoch)
    yield CounterMetricFamily("fastzk_elections_won", "Times this server became leader",
                              value=replica.elections)
    yield CounterMetricFamily("fastzk_role_changes", "Times this server's role changed",
                              value=server.role_changes)
    yield GaugeMetricFamily("fastzk_commit_zxid", "Highest zxid known committed",
                            value=replica.commit)
    yield CounterMetricFamily("fastzk_digest_checks", "Tree digests compared with the leader's",
                              value=node.digests_compared)
    yield CounterMetricFamily("fastzk_digest_mismatches",
                              "Tree digests that differed from the leader's at the same zxid",
                              value=len(node.digest_mismatches))
    lag = GaugeMetricFamily("fastzk_follower_lag_txns",
                            "Committed txns a peer does not have durably (leader only)",
                            labels=["peer"])
    if replica.is_leader:
        for peer, progress in sorted(replica.progress.items()):
            lag.add_metric([str(peer)], replica.log.count_between(progress.match, replica.commit))
    yield lag


def registry_for(server: ServerView) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServerCollector(server))  # type: ignore[arg-type]
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)

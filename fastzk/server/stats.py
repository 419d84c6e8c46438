"""Request counters and latency histograms, kept as plain ints on the request path and turned
into Prometheus metrics, `srvr` and `mntr` lines only when someone asks."""

from __future__ import annotations

from bisect import bisect_left

from fastzk._core import Extremes

# Upper bounds in milliseconds; the last bucket is +Inf.
BUCKETS_MS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)
FAST_READ = "fastRead"  # exists/getData/getChildren answered by _core.serve_reads
# Upper bounds in microseconds for the WAL's fdatasync times.
FSYNC_BUCKETS_US = (100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000,
                    1000000)


class LatencyHistogram(Extremes):
    """Counts per bucket beside the extremes."""

    __slots__ = ("bounds", "buckets")

    def __init__(self, bounds: tuple[int, ...]) -> None:
        super().__init__()
        self.bounds = bounds
        self.buckets = [0] * (len(bounds) + 1)

    def add(self, value: int, times: int = 1) -> None:
        self.buckets[bisect_left(self.bounds, value)] += times
        super().add(value, times)


class OpStats:
    __slots__ = ("buckets", "total_ms", "count")

    def __init__(self) -> None:
        self.buckets = [0] * (len(BUCKETS_MS) + 1)
        self.total_ms = 0
        self.count = 0


class RequestStats:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.ops: dict[str, OpStats] = {}
        self.latency_ms = Extremes()  # every request's
        self.packets_received = 0
        self.packets_sent = 0

    def record(self, op: str, latency_ms: int, requests: int = 1) -> None:
        stats = self.ops.get(op)
        if stats is None:
            stats = self.ops[op] = OpStats()
        stats.buckets[0 if latency_ms <= 1 else bisect_left(BUCKETS_MS, latency_ms)] += requests
        stats.total_ms += latency_ms * requests
        stats.count += requests
        self.latency_ms.add(latency_ms, requests)

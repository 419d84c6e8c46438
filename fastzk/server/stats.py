"""Request counters and latency histograms, kept as plain ints on the request path and turned
into Prometheus metrics, `srvr` and `mntr` lines only when someone asks."""

from __future__ import annotations

from bisect import bisect_left

# Upper bounds in milliseconds; the last bucket is +Inf.
BUCKETS_MS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)
FAST_READ = "fastRead"  # exists/getData/getChildren answered by _core.serve_reads
# Upper bounds in microseconds for the WAL's fdatasync times.
FSYNC_BUCKETS_US = (100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000,
                    1000000)


class LatencyHistogram:
    """Counts per bucket plus sum, min and max; plain ints, safe to read from another thread
    for reporting (a torn read only skews one scrape)."""

    __slots__ = ("bounds", "buckets", "total", "count", "min", "max")

    def __init__(self, bounds: tuple[int, ...]) -> None:
        self.bounds = bounds
        self.buckets = [0] * (len(bounds) + 1)
        self.total = self.count = self.min = self.max = 0

    def add(self, value: int) -> None:
        self.buckets[bisect_left(self.bounds, value)] += 1
        self.total += value
        if not self.count or value < self.min:
            self.min = value
        self.max = max(self.max, value)
        self.count += 1


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
        self.min_ms = 0
        self.max_ms = 0
        self.total_ms = 0
        self.count = 0
        self.packets_received = 0
        self.packets_sent = 0

    @property
    def avg_ms(self) -> float:
        return self.total_ms / self.count if self.count else 0.0

    def record(self, op: str, latency_ms: int, requests: int = 1) -> None:
        stats = self.ops.get(op)
        if stats is None:
            stats = self.ops[op] = OpStats()
        stats.buckets[0 if latency_ms <= 1 else bisect_left(BUCKETS_MS, latency_ms)] += requests
        stats.total_ms += latency_ms * requests
        stats.count += requests
        if not self.count or latency_ms < self.min_ms:
            self.min_ms = latency_ms
        if latency_ms > self.max_ms:
            self.max_ms = latency_ms
        self.total_ms += latency_ms * requests
        self.count += requests

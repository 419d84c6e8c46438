"""Latency bookkeeping of `fastzk load`: the clock, quantized counts, HDR histograms, summaries.

Every process of a run records latencies (integer microseconds of ``time.perf_counter_ns``,
CLOCK_MONOTONIC: the same clock in every process of the machine) into a :class:`Recorder`;
the parent merges the processes' encoded HDR histograms, and the reports and the bench
harness summarise them with :func:`histogram_summary`. Kept apart from the engine so that the
report, the presets and bench/ can use it without the sessions.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from itertools import chain
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from hdrh.histogram import HdrHistogram

#: HDR histogram range in microseconds: 1 µs .. 60 s, 3 significant digits.
HIST_LOW, HIST_HIGH, HIST_DIGITS = 1, 60_000_000, 3


def now_us() -> int:
    """Now, in integer microseconds of the monotonic clock every load process shares."""
    return time.perf_counter_ns() // 1000


def new_histogram() -> HdrHistogram:
    """A latency histogram with the range every run and merge uses (imported lazily so that
    ``fastzk --help`` does not pay for hdrhistogram)."""
    from hdrh.histogram import HdrHistogram

    return HdrHistogram(HIST_LOW, HIST_HIGH, HIST_DIGITS)


def histogram_summary(hist: HdrHistogram) -> dict[str, float]:
    """The percentiles the reports quote (µs)."""
    if hist.get_total_count() == 0:
        return {k: 0.0 for k in ("p50", "p90", "p99", "p99.9", "max", "mean")}
    return {
        "p50": float(hist.get_value_at_percentile(50)),
        "p90": float(hist.get_value_at_percentile(90)),
        "p99": float(hist.get_value_at_percentile(99)),
        "p99.9": float(hist.get_value_at_percentile(99.9)),
        "max": float(hist.get_max_value()),
        "mean": round(float(hist.get_mean_value()), 1),
    }


def merge_histograms(encoded: Sequence[str]) -> HdrHistogram:
    """Decode and add encoded histograms (from workers, intervals or repeated runs)."""
    hist = new_histogram()
    for item in encoded:
        if item:
            hist.decode_and_add(item.encode("ascii") if isinstance(item, str) else item)
    return hist


def encode(hist: HdrHistogram) -> str:
    return hist.encode().decode("ascii")


#: Buckets of a 3-digit HDR histogram up to HIST_HIGH: values below 2048 exactly, then 1024
#: per power of two (1/1024 relative steps). Counting values per bucket and recording each
#: bucket's lowest value later gives exactly the HDR histogram of the raw values.
BUCKETS = 2048 + (HIST_HIGH.bit_length() - 11) * 1024
#: The lowest value of every bucket (HdrHistogram.get_lowest_equivalent_value).
BUCKET_VALUES = np.array(
    [i if i < 2048 else ((i - 2048) % 1024 + 1024) << ((i - 2048) // 1024 + 1)
     for i in range(BUCKETS)], dtype=np.int64)


def bucket_index(values: np.ndarray) -> np.ndarray:
    """Bucket of each latency (µs), vectorized (values outside 1..HIST_HIGH are clamped)."""
    v = np.clip(values, HIST_LOW, HIST_HIGH)
    _, exponent = np.frexp(v.astype(np.float64))  # bit length, exact below 2**53
    shift = np.maximum(exponent - 11, 0)
    return np.where(shift == 0, v, 2048 + (shift - 1) * 1024 + ((v >> shift) - 1024))


def counts_summary(counts: dict[int, int]) -> dict[str, float]:
    """p50/p90/p99/p99.9/max/mean of quantized counts (an interval, without a histogram)."""
    total = sum(counts.values())
    if not total:
        return {k: 0.0 for k in ("p50", "p90", "p99", "p99.9", "max", "mean")}
    items = sorted(counts.items())
    out: dict[str, float] = {}
    wants = [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999)]
    seen = 0
    i = 0
    for value, count in items:
        seen += count
        while i < len(wants) and seen >= math.ceil(wants[i][1] * total):
            out[wants[i][0]] = float(value)
            i += 1
    for name, _ in wants[i:]:
        out[name] = float(items[-1][0])
    out["max"] = float(items[-1][0])
    out["mean"] = round(sum(v * c for v, c in items) / total, 1)
    return out


def merge_counts(items: Sequence[Sequence[tuple[int, int]] | dict[int, int]]) -> dict[int, int]:
    merged: dict[int, int] = {}
    for pairs in items:
        it = pairs.items() if isinstance(pairs, dict) else pairs
        for value, count in it:
            merged[value] = merged.get(value, 0) + count
    return merged


def buckets_histogram(counts: np.ndarray) -> HdrHistogram:
    """The HDR histogram of bucket counts (one record per non-empty bucket)."""
    hist = new_histogram()
    nonzero = np.flatnonzero(counts)
    for value, count in zip(BUCKET_VALUES[nonzero].tolist(), counts[nonzero].tolist(),
                            strict=True):
        hist.record_value(value, count)
    return hist



# --- recording -----------------------------------------------------------------------------------

#: A timeline interval: (t at its end, quantized (latency, count) pairs, errors, events)
Interval = tuple[float, list[tuple[int, int]], int, int]
#: What a session notes per batch of replies it received together: (receive time, send
#: time, replies, open-loop index j of the first request or -1 in closed loop), µs.
Mark = tuple[int, int, int, int]


class Recorder:
    """Latencies of one process, recorded only inside the measured window.

    The sessions' hot path notes one :data:`Mark` per batch of replies and nothing per
    request; :meth:`add_marks` turns a session's marks into latencies with numpy (in open
    loop, one per request, from its intended send time ``base + j * step``) and counts them
    in one array of HDR buckets per kind. HDR histograms are built once at the end
    (:meth:`encoded`): building them per interval would stall the event loop for tens of
    milliseconds, which an open-loop run would charge to the server. Request kinds feed
    ``all`` and the timeline; event kinds (notify, acquire, connect...) only their own.
    """

    def __init__(self) -> None:
        self.kinds: dict[str, np.ndarray] = {}
        self.request_kinds: set[str] = set()
        self.service = np.zeros(BUCKETS, dtype=np.int64)
        self.interval = np.zeros(BUCKETS, dtype=np.int64)
        self.interval_events = 0
        #: single values (:meth:`one`) not yet counted: (kind, request) -> latencies
        self.pending: dict[tuple[str, bool], list[int]] = {}
        self.timeline: list[Interval] = []
        self.t0 = 0.0
        self.recording = False

    def _count(self, kind: str, values: np.ndarray, weights: np.ndarray | None,
               request: bool) -> None:
        # only up to the largest bucket seen: a pass over all BUCKETS per call would cost
        # more than the counting itself at closed-loop batch sizes
        counts = np.bincount(bucket_index(values), weights).astype(np.int64)
        top = len(counts)
        total = self.kinds.get(kind)
        if total is None:
            total = self.kinds[kind] = np.zeros(BUCKETS, dtype=np.int64)
        total[:top] += counts
        if request:
            self.request_kinds.add(kind)
            self.interval[:top] += counts
        else:
            self.interval_events += int(counts.sum())

    def add_marks(self, kind: str, marks: list[Mark], base: float = 0.0,
                  step: float = 0.0) -> None:
        """Count the requests of a session's reply batches (see :data:`Mark`): in closed loop
        each batch's requests took ``now - sent``; in open loop (*step* > 0) request j was
        intended at ``base + j * step`` and its service time ``now - sent`` is kept too."""
        if not marks:
            return
        flat = np.fromiter(chain.from_iterable(marks), np.int64, 4 * len(marks))
        now, sent, count, j = flat.reshape(-1, 4).T
        if not step:
            self._count(kind, now - sent, count, True)
            return
        ends = np.cumsum(count)
        first = np.repeat(ends - count, count)
        index = np.repeat(j, count) + np.arange(int(ends[-1])) - first
        intended = (base + index * step).astype(np.int64)
        self._count(kind, np.repeat(now, count) - intended, None, True)
        service = np.bincount(bucket_index(now - sent), count).astype(np.int64)
        self.service[: len(service)] += service

    def one(self, kind: str, latency_us: int, request: bool = True) -> None:
        """Note one value (presets, per event): counted with the others at the next
        :meth:`flush`, so that a single value costs a list append, not a numpy call."""
        if self.recording:
            values = self.pending.get((kind, request))
            if values is None:
                values = self.pending[(kind, request)] = []
            values.append(latency_us)

    def flush(self) -> None:
        """Count the values noted by :meth:`one`."""
        pending, self.pending = self.pending, {}
        for (kind, request), values in pending.items():
            self._count(kind, np.array(values, dtype=np.int64), None, request)

    def close_interval(self, errors: int) -> Interval:
        """End the current interval; returns (t end, pairs, errors, events)."""
        self.flush()
        nonzero = np.flatnonzero(self.interval)
        pairs = list(zip(BUCKET_VALUES[nonzero].tolist(), self.interval[nonzero].tolist(),
                         strict=True))
        item = (round(time.monotonic() - self.t0, 3), pairs, errors, self.interval_events)
        self.timeline.append(item)
        self.interval[:] = 0
        self.interval_events = 0
        return item

    def encoded(self) -> tuple[str, str, dict[str, str]]:
        """(all requests, service time, per kind) as encoded HDR histograms."""
        self.flush()
        everything = sum((self.kinds[k] for k in self.request_kinds),
                         np.zeros(BUCKETS, dtype=np.int64))
        return (
            encode(buckets_histogram(everything)),
            encode(buckets_histogram(self.service)) if self.service.any() else "",
            {k: encode(buckets_histogram(counts)) for k, counts in self.kinds.items()},
        )

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
from typing import TYPE_CHECKING

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


def quantize(value: int) -> int:
    """*value* (µs) reduced to the lowest value of its bucket in a 3-digit HDR histogram:
    exact below 2048, then 1/1024 relative steps. Counting quantized values in a dict and
    recording each distinct one later gives exactly the histogram of the raw values."""
    if value < 2048:
        return value if value > 0 else 1
    shift = value.bit_length() - 11
    return (value >> shift) << shift


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


def counts_histogram(counts: dict[int, int]) -> HdrHistogram:
    hist = new_histogram()
    for value, count in counts.items():
        hist.record_value(min(max(value, HIST_LOW), HIST_HIGH), count)
    return hist



# --- recording -----------------------------------------------------------------------------------

#: A timeline interval: (t at its end, quantized (latency, count) pairs, errors, events)
Interval = tuple[float, list[tuple[int, int]], int, int]


class Recorder:
    """Latencies of one process, recorded only inside the measured window.

    During the window values are only counted in dicts keyed by their quantized value
    (a C-speed dict update per value); HDR histograms are built once at the end
    (:meth:`encoded`). Building them per interval would stall the event loop for tens of
    milliseconds, which an open-loop run would charge to the server. Request kinds feed
    ``all`` and the timeline; event kinds (notify, acquire, connect...) only their own.
    """

    def __init__(self) -> None:
        self.kinds: dict[str, dict[int, int]] = {}
        self.request_kinds: set[str] = set()
        self.service: dict[int, int] = {}
        self.interval: dict[int, int] = {}
        self.interval_events = 0
        self.timeline: list[Interval] = []
        self.t0 = 0.0
        self.recording = False

    def add(self, kind: str, pairs: list[tuple[int, int]], request: bool = True) -> None:
        """Count (latency µs, count) pairs of *kind*."""
        if not pairs:
            return
        d = self.kinds.get(kind)
        if d is None:
            d = self.kinds[kind] = {}
        get = d.get
        if request:
            self.request_kinds.add(kind)
            iv = self.interval
            iget = iv.get
            for value, count in pairs:
                q = quantize(value)
                d[q] = get(q, 0) + count
                iv[q] = iget(q, 0) + count
        else:
            n = 0
            for value, count in pairs:
                q = quantize(value)
                d[q] = get(q, 0) + count
                n += count
            self.interval_events += n

    def one(self, kind: str, latency_us: int, request: bool = True) -> None:
        """Record one value now (presets; the engine batches with :meth:`add`)."""
        if self.recording:
            self.add(kind, [(latency_us, 1)], request)

    def add_service(self, pairs: list[tuple[int, int]]) -> None:
        d = self.service
        for value, count in pairs:
            q = quantize(value)
            d[q] = d.get(q, 0) + count

    def close_interval(self, errors: int) -> Interval:
        """End the current interval; returns (t end, pairs, errors, events)."""
        item = (round(time.monotonic() - self.t0, 3), list(self.interval.items()), errors,
                self.interval_events)
        self.timeline.append(item)
        self.interval = {}
        self.interval_events = 0
        return item

    def encoded(self) -> tuple[str, str, dict[str, str]]:
        """(all requests, service time, per kind) as encoded HDR histograms."""
        everything = merge_counts([self.kinds[k] for k in self.request_kinds])
        return (
            encode(counts_histogram(everything)),
            encode(counts_histogram(self.service)) if self.service else "",
            {k: encode(counts_histogram(d)) for k, d in self.kinds.items()},
        )


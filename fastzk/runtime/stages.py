"""Where a write's time goes, stage by stage: the latency budget `/metrics` shows.

A slow write is slow in one of a few places, and each needs a different fix (a busy loop, a
slow disk, a slow follower, a large fan-out, a client that does not read). The runtime handles
writes in batches (one log write per loop iteration's input, one commit per acknowledgement),
so the stages are timed once per batch and counted once per txn of it: the histograms then
read as "how long did a write spend in this stage", at a cost of a few clock reads per batch
rather than per request.

Stages, in the order a write passes them:

- ``gather``: from the input that started the loop iteration to the batch's log submission
  (decoding and prep of every request of the iteration: the group-commit window);
- ``wal``: from submission until the loop learns the batch is durable (waiting behind the log
  write in flight, the write, fdatasync, the hand-off from the writer thread);
- ``quorum``: from durable here to applied (a majority's acknowledgements on a leader, the
  leader's commit on a follower; about zero standalone);
- ``apply``: the step that applied the batch (tree changes, watch events and replies written
  into the connections' buffers);
- ``flush``: handing those replies to the sockets.

Not a stage here: time a request spends unread in a connection's buffer while that connection
or the server is at a limit (see "Resource limits" in README).
"""

from __future__ import annotations

import time
from collections import deque

from fastzk.server.stats import LatencyHistogram

STAGES = ("gather", "wal", "quorum", "apply", "flush")
# Upper bounds in microseconds.
STAGE_BUCKETS_US = (10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 100000,
                    1000000)


class WriteStages:
    def __init__(self) -> None:
        self.histograms = {stage: LatencyHistogram(STAGE_BUCKETS_US) for stage in STAGES}
        self.recording = False  # set once the server serves clients
        self._input_ns = 0  # when the input that scheduled the pending step arrived
        self._submitted: deque[tuple[int, int, int]] = deque()  # (last zxid, txns, ns)
        self._durable: deque[tuple[int, int, int]] = deque()  # (last zxid, txns, ns)

    def input(self) -> None:
        """The first input of a loop iteration (it schedules the step that submits)."""
        self._input_ns = time.perf_counter_ns()

    def submitted(self, last_zxid: int, txns: int) -> None:
        now = time.perf_counter_ns()
        if self._input_ns:
            self._observe("gather", now - self._input_ns, txns)
            self._input_ns = 0  # a later submission without new input has no gather time
        self._submitted.append((last_zxid, txns, now))

    def durable(self) -> None:
        """The oldest submitted batch is durable (batches complete in submission order)."""
        now = time.perf_counter_ns()
        last_zxid, txns, since = self._submitted.popleft()
        self._observe("wal", now - since, txns)
        self._durable.append((last_zxid, txns, now))

    def truncated(self, zxid: int) -> None:
        """Log entries after `zxid` were cut: batches of them will never be applied."""
        for queue in (self._submitted, self._durable):
            kept = [entry for entry in queue if entry[0] <= zxid]
            if len(kept) != len(queue):
                queue.clear()
                queue.extend(kept)

    def applied(self, applied_zxid: int, txns: int, started_ns: int, ended_ns: int) -> None:
        """A step that began at `started_ns` applied `txns` txns, up to `applied_zxid`."""
        durable = self._durable
        while durable and durable[0][0] <= applied_zxid:
            _, count, since = durable.popleft()
            self._observe("quorum", max(0, started_ns - since), count)
        self._observe("apply", ended_ns - started_ns, txns)

    def flushed(self, txns: int, started_ns: int) -> None:
        self._observe("flush", time.perf_counter_ns() - started_ns, txns)

    def _observe(self, stage: str, elapsed_ns: int, txns: int) -> None:
        if self.recording:
            self.histograms[stage].add(elapsed_ns // 1000, txns)

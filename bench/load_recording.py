"""Per-request CPU cost of the load engine's reply path, with and without latency recording.

`fastzk load` must not be the bottleneck of what it measures, so what recording a latency
costs is measured here, not asserted in a test. A FastSession is driven without a network
(a fake transport; replies written straight into its receive buffer, everything in flight
answered per read, as a real socket read does), in closed loop (32 in flight) and open loop
(every request timed from its intended send time); the recorder is fed every ~4096 replies
and the HDR histograms are built at the end, as a real run does.

Run: .venv/bin/python bench/load_recording.py
"""

from __future__ import annotations

import asyncio
import gc
import struct
import time

from fastzk.load.engine import FastSession
from fastzk.load.latency import Recorder, now_us

HEADER = struct.Struct(">iiqi")  # frame length, xid, zxid, err
SCHEDULE = 256
REQUESTS = 400_000
REPEATS = 5


class NullTransport:
    """Accepts every write (the requests go nowhere; the replies are made up)."""

    def write(self, data: bytes) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def abort(self) -> None:
        pass


async def reply_path(open_loop: bool, recording: bool, depth: int = 32) -> float:
    """ns of CPU per request over REQUESTS replies."""
    frames = [HEADER.pack(16, i + 1, 0, 0) for i in range(SCHEDULE)]
    s = FastSession(0, "get", frames)
    s.connection_made(NullTransport())  # type: ignore[arg-type]
    s.hot = True
    s.depth = depth
    s.recording = recording
    if open_loop:
        s.max_inflight = depth
        s.start(now_us() - 1e9, 0.001)  # every request overdue: the cap decides
    else:
        s.start()
    rec = Recorder()
    rec.recording = True
    replies = [HEADER.pack(16, i + 1, 7, 0) for i in range(SCHEDULE)]
    gc.disable()
    t0 = time.process_time_ns()
    done = 0
    while done < REQUESTS:
        k = s.inflight
        first = s.rx_xid
        data = b"".join(replies[(first - 1 + i) % SCHEDULE] for i in range(k))
        s.get_buffer(len(data))[: len(data)] = data
        s.buffer_updated(len(data))
        done += k
        if done % 4096 < k:
            for kind, marks in s.take().items():
                rec.add_marks(kind, marks, s.base, s.step)
    for kind, marks in s.take().items():
        rec.add_marks(kind, marks, s.base, s.step)
    rec.encoded()
    elapsed = time.process_time_ns() - t0
    gc.enable()
    return elapsed / done


def main() -> None:
    for open_loop in (False, True):
        cost = {rec: min(asyncio.run(reply_path(open_loop, rec)) for _ in range(REPEATS))
                for rec in (False, True)}
        print(f"{'open' if open_loop else 'closed'} loop: reply path {cost[False]:.0f} ns/request"
              f" unrecorded, {cost[True]:.0f} recorded: recording {cost[True] - cost[False]:.0f}"
              " ns/request")


if __name__ == "__main__":
    main()

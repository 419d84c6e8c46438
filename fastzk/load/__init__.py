"""`fastzk load`: load generator and correctness checker for ZooKeeper-protocol servers.

Model: N sessions (one TCP connection each, spread over the servers of the connect string),
each with up to D requests in flight, in one or several processes.

* **Closed loop** (default): every reply releases the next request; the rate is what the
  server sustains at that concurrency, latencies are service times under that load.
* **Open loop** (``--rate R``): requests are sent at a fixed total arrival rate whatever the
  server does; latency is measured from each request's *intended* send time, so a stall is
  charged to every request it delayed (no coordinated omission). The service time (from the
  actual send) is reported next to it.
* **Simple ops** (``--op``): get, set, exists, children, create[:seq|:eph|:eph-seq], delete,
  create-delete, multi and mixed:R (R % reads), over ``--keys`` keys of ``--value-size`` bytes;
  for a duration after a warm-up, or ``--ops N`` operations.
* **Presets** (``--preset``): kafka, lock, watch-fanout, session-churn: workloads modelled
  on real users, see ``presets.py``.
* **--history FILE**: a workload made to be checked for linearizability, recorded and
  checked (``history.py``).
* **--check**: every reply is verified (values carry their writer and a counter; see
  ``workload.py``), sequential names must be unique and increasing, watch events must arrive;
  violations make the exit status 1, like any error reply.

Why it is fast enough not to be the bottleneck: unchecked simple ops use pre-encoded frames
and parse only reply headers (``engine.FastSession``), latencies are folded into HDR
histograms in batches, and ``--processes`` spreads sessions over several processes. See the
README for the measured capacity of one process. The client codec is pure Python ``struct``
(``fastzk.client.codec``); the server's Cython ``_core.WriteBuffer`` frames replies only, and
keeping the client independent of the server it measures means a shared codec bug cannot
cancel out.

Modules, each importing only those below it (no cycle)::

    command   the options of ``fastzk load`` (wired into fastzk/cli.py) and the run's output
    report    the live line, the table and the figures (rich, matplotlib: imported lazily)
    history   ``--history``: a checkable workload on kazoo clients, recorded and checked
    run       orchestration: set-up, one process's sessions, spawned processes, the merge
    presets   kafka, lock, watch-fanout, session-churn
    keyspace  set-up and clean-up of the key space (pipelined)
    engine    the sessions (FastSession, ModelSession), the pacer, the measured window
    latency   the clock, HDR buckets (numpy), the Recorder, histograms and summaries
    cpu       CPU of the load process, the server and the machine, from /proc
    config    LoadConfig and LoadResult: the records everything above shares
    workload  op specs, the key space layout and checkable values

The protocol client itself (``fastzk.client``) knows nothing of the load generator.
"""

from fastzk.load.config import LoadConfig, LoadResult
from fastzk.load.run import run_load, run_load_async

__all__ = ["LoadConfig", "LoadResult", "run_load", "run_load_async"]

"""The replication core: a pure, synchronous, deterministic state machine.

Raft-style log replication expressed in ZooKeeper's terms (epoch = term, zxid = epoch << 32 |
counter). It takes messages, ticks and "persisted up to" reports and returns what to persist,
what to send and what is committed (`Ready`). No sockets, files, clocks or module-level
randomness: the host (fastzk/node.py) executes its output, the runtime or the simulator feeds it
input. It imports only the standard library.
"""

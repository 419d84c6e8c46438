"""The request pipeline: plain, deterministic code (no sockets, clocks or threads).

prep turns requests into idempotent txns, apply executes committed txns against the tree,
reads answers queries, sessions/watches/acl hold the state those stages consult.
"""

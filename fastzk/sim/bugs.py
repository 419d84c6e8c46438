"""Planted bugs: known ways to lose data or diverge, re-introduced one at a time on purpose.

A checker that never fires proves nothing. Each bug here is a switch in the production code
(`QuorumConfig.bugs`, `Limits.bugs`) or in the simulator's shell (its stand-in for the
runtime's storage), off unless the simulator turns it on; tests/test_sim.py shows that the
simulator catches every one within the number of seeds given here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Bug:
    name: str
    where: str  # "quorum" (QuorumConfig.bugs), "node" (Limits.bugs) or "shell" (the simulator)
    what: str
    seeds: int  # the seeds 1..seeds catch it (tests/test_sim.py holds this)


BUGS: dict[str, Bug] = {bug.name: bug for bug in (
    Bug("ack-before-fsync", "shell",
        "the log reports entries durable as soon as they are written, before fsync returns "
        "(a crash then loses acknowledged writes)", 20),
    Bug("follower-acks-unsynced", "quorum",
        "a follower acknowledges entries it has received but not yet made durable", 20),
    Bug("commit-without-quorum", "quorum",
        "the leader commits an entry once one voter fewer than a majority has it", 20),
    Bug("vote-for-stale-log", "quorum",
        "voters grant their vote whatever the candidate's log holds, so a leader may be "
        "elected without the newest committed txn", 20),
    Bug("replay-twice", "node",
        "after a restart, txns replayed over a fuzzy snapshot stay in the replication log and "
        "are applied a second time when the leader commits them", 20),
    Bug("verdict-before-commit", "node",
        "a failed write is answered at once, although the writes it was decided against may "
        "not be applied (or committed) yet: a read right after it misses them", 60),
    Bug("stale-leader-verdicts", "node",
        "a leader answers failed writes from its own state without confirming it still "
        "leads: a deposed leader says \"nonode\" for a node created meanwhile", 60),
    Bug("follower-expires-sessions", "node",
        "a follower expires the sessions it does not hear from on its own, without a txn",
        20),
)}


def split(names: frozenset[str]) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """The (quorum, node, shell) switches for a set of bug names; raises KeyError on an
    unknown name."""
    bugs = [BUGS[name] for name in sorted(names)]
    return tuple(frozenset(b.name for b in bugs if b.where == where)  # type: ignore[return-value]
                 for where in ("quorum", "node", "shell"))

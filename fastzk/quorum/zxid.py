"""zxid arithmetic: a zxid is epoch << 32 | counter, so comparing zxids compares epochs first."""

from __future__ import annotations

COUNTER_BITS = 32
MAX_COUNTER = (1 << COUNTER_BITS) - 1


def make_zxid(epoch: int, counter: int) -> int:
    return (epoch << COUNTER_BITS) | counter


def epoch_of(zxid: int) -> int:
    return zxid >> COUNTER_BITS


def counter_of(zxid: int) -> int:
    return zxid & MAX_COUNTER


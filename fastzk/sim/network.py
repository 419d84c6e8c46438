"""The simulated network between servers: one connection per direction, as runtime/peers.py
has (server i dials server j and sends i's messages to j on it).

A connection delivers in order, after a delay, until it breaks; then both ends learn it is
down (peer_down), what was in flight is usually lost, and the dialer retries every
RETRY_US. Faults: a cut link refuses connections (and resets an open one), a held link
black-holes its traffic until released (TCP retransmits: it arrives late, in order), extra
delay, and two things TCP does not do, to stress the replication core, which must not care:
stale messages of a broken connection delivered after the new one's (reordering across
reconnects) and duplicated replication messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from fastzk.quorum import messages as msgs
from fastzk.runtime.peers import decode, encode
from fastzk.sim.parts import Scheduler
from fastzk.sim.server import SimServer


class NetWorld(Scheduler, Protocol):
    """The world as the network sees it."""

    servers: Mapping[int, SimServer]

RETRY_US = 50_000
QUORUM_KINDS = frozenset(msgs.QUORUM_MESSAGES)


class Link:
    __slots__ = ("src", "dst", "up", "gen", "last_us", "cut", "held", "hold", "delay_us",
                 "stale_gens")

    def __init__(self, src: int, dst: int) -> None:
        self.src = src
        self.dst = dst
        self.up = False
        self.gen = 0  # the connection's incarnation
        self.last_us = 0  # delivery time of the last message sent (FIFO)
        self.cut = False
        self.hold = False
        self.held: list[bytes] = []
        self.delay_us = 0  # extra delay (a slow link)
        self.stale_gens: set[int] = set()  # broken connections whose data still arrives


class Network:
    def __init__(self, world: NetWorld, ids: list[int]) -> None:
        self.world = world
        self.links = {(i, j): Link(i, j) for i in ids for j in ids if i != j}
        self.duplicate_rate = 0.0
        self.stale_rate = 0.0

    def send(self, src: int, dst: int, message: Any) -> None:
        link = self.links[src, dst]
        if not link.up:
            return  # lost with the link: the replication core resends, the host gives up
        data = encode(message)[4:]  # the frame's body: the link delimits messages
        if link.hold:
            link.held.append(data)
            return
        self._deliver_later(link, data)
        world = self.world
        if self.duplicate_rate and type(message) in QUORUM_KINDS \
                and world.rng.random() < self.duplicate_rate:
            world.at(world.rng.randrange(1000, 50_000), self._deliver, link, link.gen,
                     world.servers[dst].boot, data, target=world.servers[dst])

    def _deliver_later(self, link: Link, data: bytes) -> None:
        world = self.world
        when = max(world.now_us + world.rng.randrange(200, 2000) + link.delay_us,
                   link.last_us + 1)
        link.last_us = when
        dst = world.servers[link.dst]
        world.at(when - world.now_us, self._deliver, link, link.gen, dst.boot, data, target=dst)

    def _deliver(self, link: Link, gen: int, boot: int, data: bytes) -> None:
        if gen != link.gen and gen not in link.stale_gens:
            return
        server = self.world.servers[link.dst]
        if server.node is None or server.boot != boot:
            return  # a connection to a process that is gone
        server.peer_message(link.src, decode(data))

    def describe(self, args: tuple[Any, ...]) -> str:
        link, gen, _, data = args
        text = repr(decode(data))
        return (f"server.{link.src} -> server.{link.dst} (conn {gen}"
                f"{'' if gen == link.gen else ', stale'}): "
                + (text if len(text) <= 200 else text[:197] + "..."))

    # --- connections ---------------------------------------------------------------------
    def dial(self, link: Link, boot: int) -> None:
        """The dialer's retry loop (one per link and boot of the dialing server)."""
        world = self.world
        src, dst = world.servers[link.src], world.servers[link.dst]
        if src.node is None or src.boot != boot or link.up:
            return
        if dst.node is not None and not link.cut:
            link.up = True
            link.gen += 1
            link.last_us = world.now_us
            src.peer_up(link.dst)
            return
        world.at(RETRY_US, self.dial, link, boot)

    def break_link(self, link: Link) -> None:
        """The connection closes (reset, or an end died): both ends learn it."""
        if not link.up:
            return
        world = self.world
        link.up = False
        if self.stale_rate and world.rng.random() < self.stale_rate:
            link.stale_gens.add(link.gen)
        link.held.clear()
        src, dst = world.servers[link.src], world.servers[link.dst]
        world.at(world.rng.randrange(100, 2000), src.link_down, link.dst, src.boot, target=src)
        world.at(world.rng.randrange(100, 2000), dst.link_down, link.src, dst.boot, target=dst)
        world.at(RETRY_US, self.dial, link, src.boot)

    def set_cut(self, link: Link, cut: bool) -> None:
        link.cut = cut
        if cut:
            self.break_link(link)

    def set_hold(self, link: Link, hold: bool) -> None:
        link.hold = hold
        if not hold:
            held, link.held = link.held, []
            for data in held:
                self._deliver_later(link, data)

    def server_down(self, sid: int) -> None:
        for (i, j), link in sorted(self.links.items()):
            if sid in (i, j):
                self.break_link(link)

    def server_up(self, sid: int, boot: int) -> None:
        for (i, _), link in sorted(self.links.items()):
            if i == sid:
                self.dial(link, boot)

    def heal(self) -> None:
        for link in self.links.values():
            link.delay_us = 0
            link.cut = False
            if link.hold:
                self.set_hold(link, False)

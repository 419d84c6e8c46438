"""Differential conformance: sessions, ephemerals, closeSession, expiry, resume.

Expiry needs a short session timeout: those scenarios run on a fresh server
pair with tickTime=500 (so the minimum session timeout is 1 s) and drop the
client's TCP connection without closeSession -- what a crashed client looks
like -- then wait (bounded) for the expiry's notifications at an observer.
Each ephemeral that disappears is watched by its own observer client, because
the order in which a session's ephemerals are deleted is not specified.
"""

from __future__ import annotations

from typing import Any

import wire
from differential import Differential, ScenarioContext, parse_frame

from fastzk.nemesis.servers import ServerProcess

SHORT_SESSION_CFG = {"tickTime": 500, "minSessionTimeout": 1000, "maxSessionTimeout": 3000}


def test_close_session_deletes_ephemerals_and_notifies(differential: Differential) -> None:
    """closeSession deletes the ephemerals, fires others' watches and the owner's own first."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        ctx.op("create", p("dir"), b"")
        ctx.op("create", p("dir", "eph"), b"", ephemeral=True, client="owner")
        ctx.op("create", p("other"), b"", ephemeral=True, client="owner")
        ctx.op("create", p("kept"), b"", client="owner")
        ctx.op("exists", p("dir", "eph"), watch=ctx.watcher("own", client="owner"), client="owner")
        ctx.op("get", p("dir", "eph"), watch=ctx.watcher("eph", client="w1"), client="w1")
        ctx.op("get_children", p("dir"), watch=ctx.watcher("dir", client="w1"), client="w1")
        ctx.op("exists", p("other"), watch=ctx.watcher("other", client="w2"), client="w2")
        ctx.op("get", p("kept"), watch=ctx.watcher("kept", client="w3"), client="w3")
        ctx.stop_client("owner")
        for observer in ("w1", "w2", "w3"):
            ctx.barrier(observer)
            ctx.record_events(observer)
        ctx.record_events("owner")
        ctx.op("get_children", p(), client="w1", include_data=True)
        ctx.op("get_children", p("dir"), client="w1", include_data=True)

    differential.run(scenario)


def test_ephemerals_of_several_sessions_are_independent(differential: Differential) -> None:
    """Closing one session removes only its own ephemerals; owners are tracked per session."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        for name in ("a", "b", "c"):
            ctx.op("create", p(f"{name}-"), b"", ephemeral=True, sequence=True, client=name)
            ctx.op("create", p(f"{name}-plain"), b"", ephemeral=True, client=name)
        ctx.op("get_children", p(), include_data=True)
        for child in ("a-0000000000", "b-0000000002", "c-0000000004", "b-plain"):
            ctx.op("exists", p(child))
        ctx.stop_client("b")
        ctx.op("get_children", p(), include_data=True)
        ctx.op("exists", p("a-plain"))

    differential.run(scenario)


def test_negotiated_session_timeout_is_clamped(differential: Differential) -> None:
    """timeout = min(max(requested, minSessionTimeout), maxSessionTimeout) (2x/20x tickTime)."""

    def scenario(ctx: ScenarioContext) -> None:
        for seconds in (0.5, 4, 10, 39, 100):
            name = f"t{seconds}"
            ctx.client(name, timeout=seconds)
            ctx.record(f"negotiated timeout for {seconds}s", ctx.negotiated_timeout(name))

    differential.run(scenario)


def test_configured_session_timeout_bounds(differential: Differential) -> None:
    """minSessionTimeout/maxSessionTimeout from zoo.cfg override the tickTime defaults."""

    def scenario(ctx: ScenarioContext) -> None:
        for seconds in (0.2, 1, 2, 3, 60):
            name = f"t{seconds}"
            ctx.client(name, timeout=seconds)
            ctx.record(f"negotiated timeout for {seconds}s", ctx.negotiated_timeout(name))

    differential.run(scenario, parallel=True, **SHORT_SESSION_CFG)


def test_session_expiry_deletes_ephemerals_and_notifies(differential: Differential) -> None:
    """A session whose client vanished expires: its ephemerals go, watchers hear it."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        ctx.client("owner", timeout=1.0)
        ctx.record("owner timeout", ctx.negotiated_timeout("owner"))
        ctx.op("create", p("eph"), b"", ephemeral=True, client="owner")
        ctx.op("create", p("seq-"), b"", ephemeral=True, sequence=True, client="owner")
        ctx.op("exists", p("eph"), watch=ctx.watcher("eph", client="w1"), client="w1")
        ctx.op("get", p("seq-0000000001"), watch=ctx.watcher("seq", client="w2"), client="w2")
        ctx.op("get_children", p(), watch=ctx.watcher("root", client="w4"), client="w4")
        ctx.stop_client("owner", close_session=False)
        ctx.op("exists", p("eph"), client="w3")
        for observer in ("w1", "w2", "w4"):
            ctx.wait_events(1, client=observer)
        for observer in ("w1", "w2", "w4"):
            ctx.barrier(observer)
            ctx.record_events(observer)
        ctx.op("get_children", p(), include_data=True, client="w3")

    differential.run(scenario, parallel=True, **SHORT_SESSION_CFG)


def test_resume_session_before_expiry_keeps_ephemerals(differential: Differential) -> None:
    """A new connection with the session id and password resumes it; ephemerals stay."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        owner = ctx.client("owner", timeout=4.0)
        ctx.op("create", p("eph"), b"", ephemeral=True, client="owner")
        session = owner.client_id
        ctx.stop_client("owner", close_session=False)
        resumed = ctx.client("resumed", timeout=4.0, client_id=session)
        ctx.record("same session id", resumed.client_id[0] == session[0])
        ctx.record("resumed timeout", ctx.negotiated_timeout("resumed"))
        ctx.op("exists", p("eph"), client="resumed")
        ctx.op("create", p("eph2"), b"", ephemeral=True, client="resumed")
        ctx.op("exists", p("eph2"), client="observer")
        ctx.op("get", p("eph"), watch=ctx.watcher("eph", client="observer"), client="observer")
        ctx.stop_client("resumed")
        ctx.barrier("observer")
        ctx.record_events("observer")
        ctx.op("get_children", p(), client="observer")

    differential.run(scenario)


def test_resume_with_wrong_password_is_refused(differential: Differential) -> None:
    """A resume with a bad password gets the 'invalid session' handshake (kazoo: LOST).

    kazoo then starts a brand-new session; the original session survives.
    Apache ZooKeeper 3.8 also drops the *owner's* connection before it checks the
    password (the owner then silently resumes). fastzk deliberately does not: a client
    that knows only a session id must not be able to disconnect its owner. So whether the
    owner was dropped is not compared, only that its session and ephemeral survive.
    """

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        owner = ctx.client("owner", record_wire=False)  # its reconnect is the quirk above
        ctx.op("create", p("eph"), b"", ephemeral=True, client="owner")
        ctx.record_states("owner", label="owner states before")
        sid, passwd = owner.client_id
        bad = bytes(b ^ 0xFF for b in passwd)
        intruder = ctx.client("intruder", client_id=(sid, bad))
        ctx.record("intruder got another session", intruder.client_id[0] != sid)
        ctx.record_states("intruder")
        dropped = ctx.wait_state("SUSPENDED", client="owner", timeout=3.0, quiet=True)
        if dropped:
            ctx.wait_state("CONNECTED", client="owner")
        ctx.op("exists", p("eph"), client="intruder")
        ctx.op("create", p("intruder-eph"), b"", ephemeral=True, client="intruder")
        ctx.op("exists", p("intruder-eph"), client="owner")
        ctx.op("set", p("eph"), b"still mine", client="owner")

    differential.run(scenario)


def test_resume_after_expiry_is_refused(differential: Differential) -> None:
    """Resuming an expired session fails (kazoo reports LOST, then opens a new session)."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        owner = ctx.client("owner", timeout=1.0)
        ctx.op("create", p("eph"), b"", ephemeral=True, client="owner")
        session = owner.client_id
        ctx.op("exists", p("eph"), watch=ctx.watcher("eph", client="observer"), client="observer")
        ctx.stop_client("owner", close_session=False)
        ctx.wait_events(1, client="observer")
        ctx.record_events("observer")
        late = ctx.client("late", timeout=1.0, client_id=session)
        ctx.record("late got another session", late.client_id[0] != session[0])
        ctx.op("exists", p("eph"), client="late")
        ctx.op("create", p("eph"), b"", ephemeral=True, client="late")
        ctx.op("get", p("eph"), client="observer")

    differential.run(scenario, parallel=True, **SHORT_SESSION_CFG)


def test_session_stays_alive_while_client_pings(differential: Differential) -> None:
    """An idle but connected client keeps its session well past the timeout."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        ctx.client("owner", timeout=1.0)
        ctx.op("create", p("eph"), b"", ephemeral=True, client="owner")
        ctx.sleep(2.5)
        ctx.op("exists", p("eph"), client="observer")
        ctx.op("get", p("eph"), client="owner")
        ctx.record_states("owner")

    differential.run(scenario, parallel=True, **SHORT_SESSION_CFG)


def _raw_session_frames(server: ServerProcess, path: str) -> list[Any]:
    """The frames of one raw session (tests/wire.py), as differential.parse_frame splits them.

    Covers what kazoo scenarios cannot pin down: ping replies (kazoo pings on a timer), sync,
    setWatches (101) with its catch-up notification, a successful auth, closeSession, and an
    auth packet with an unknown scheme.  A reply zxid is shown as the newest write of this
    session it covers (allowed difference "failed-write-zxid"), so the ping after a failed
    create is compared too.
    """
    committed: list[int] = []
    out: list[Any] = []

    def record(label: str, frame: bytes, opcode: int | None) -> None:
        raw = parse_frame(frame, opcode)
        if raw.committed:
            committed.append(raw.zxid)
        covered = sum(1 for z in committed if z <= raw.zxid)
        zxid = str(raw.zxid) if raw.zxid in (-1, 0) else f">=w{covered}"
        out.append((label, raw.xid, zxid, raw.err, raw.fields))

    def call(label: str, request: bytes, opcode: int, frames: int = 1) -> None:
        sock.sendall(request)
        for i in range(frames):
            frame = wire.read_frame(sock)
            record(label, frame, opcode if i == frames - 1 else None)

    sock, hello = wire.handshake(server.host, server.port)
    try:
        out.append(("connect", hello.protocol_version, hello.timeout_ms, hello.read_only))
        call("ping", wire.ping_request(), wire.OP_PING)
        call("create", wire.create_request(1, path, b"x"), wire.OP_CREATE)
        call("create again", wire.create_request(2, path, b"x"), wire.OP_CREATE)
        call("ping after a failed write", wire.ping_request(), wire.OP_PING)
        call("sync", wire.sync_request(3, path), wire.OP_SYNC)
        call("sync of a missing path", wire.sync_request(4, path + "-missing"), wire.OP_SYNC)
        set_watches = wire.set_watches_request(wire.XID_SET_WATCHES, 0, [path], (), ())
        call("setWatches", set_watches, wire.OP_SET_WATCHES, frames=2)
        auth = wire.p_int(0) + wire.p_ustring("digest") + wire.p_buffer(b"u:p")
        call("auth", wire.request(wire.XID_AUTH, wire.OP_AUTH, auth), wire.OP_AUTH)
        call("delete", wire.delete_request(5, path), wire.OP_DELETE)
        call("closeSession", wire.close_session_request(6), wire.OP_CLOSE_SESSION)
    finally:
        sock.close()
    sock, _ = wire.handshake(server.host, server.port)
    try:
        bad = wire.p_int(0) + wire.p_ustring("nosuch") + wire.p_buffer(b"u:p")
        call("auth, unknown scheme", wire.request(wire.XID_AUTH, wire.OP_AUTH, bad), wire.OP_AUTH)
        out.append(("then closed", wire.recv_until_closed(sock, 3.0)))
    finally:
        sock.close()
    return out


def test_raw_frames_of_ping_sync_set_watches_auth_and_close(
    zookeeper: ServerProcess, fastzk: ServerProcess
) -> None:
    """Byte for byte (zxids by what they cover): frames kazoo scenarios cannot pin down."""
    path = "/raw-frames-sessions"
    reference = _raw_session_frames(zookeeper, path)
    candidate = _raw_session_frames(fastzk, path)
    assert candidate == reference

"""`fastzk shell` against both servers: one-shot commands, a scripted session, a watch."""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from kazoo.client import KazooClient

from fastzk.nemesis.servers import ServerProcess

SHELL = [sys.executable, "-m", "fastzk", "shell"]


def shell(server: ServerProcess, *args: str, stdin: str | None = None) -> tuple[int, str]:
    result = subprocess.run(
        [*SHELL, "--server", server.connect_string, *args], input=stdin,
        capture_output=True, text=True, timeout=30,
    )
    return result.returncode, result.stdout


def test_one_shot_commands_print_and_set_the_exit_status(
    server: ServerProcess, unique_path: str
) -> None:
    assert shell(server, "create", unique_path, "v1") == (0, f"Created {unique_path}\n")
    assert shell(server, "get", unique_path) == (0, "v1\n")
    status, output = shell(server, "create", unique_path)
    assert (status, output) == (1, f"Node already exists: {unique_path}\n")
    assert shell(server, "get", f"{unique_path}/missing")[0] == 1


def test_a_scripted_session_runs_every_command(server: ServerProcess, unique_path: str) -> None:
    script = "\n".join([
        f"create {unique_path} a",
        f"create -s {unique_path}/q- x",
        f"ls {unique_path}",
        f"set {unique_path} b 0",
        f"set {unique_path} c 0",
        f"get -s {unique_path}",
        f"delete {unique_path}",
        f"deleteall {unique_path}",
        f"stat {unique_path}",
        "sync /",
    ]) + "\n"
    status, output = shell(server, stdin=script)
    lines = output.splitlines()
    assert status == 1  # the failing commands below
    assert lines[:3] == [f"Created {unique_path}", f"Created {unique_path}/q-0000000000",
                         "[q-0000000000]"]
    assert lines[3] == f"version No is not valid : {unique_path}"  # second set, stale version
    assert lines[4] == "b" and "dataVersion = 1" in lines and "numChildren = 1" in lines
    assert f"Node not empty: {unique_path}" in lines
    assert lines[-2:] == [f"Node does not exist: {unique_path}", "Sync is OK"]


def test_watch_events_are_printed_as_they_arrive(
    server: ServerProcess, unique_path: str, kazoo_factory: Callable[..., KazooClient]
) -> None:
    writer = kazoo_factory(server)
    writer.create(unique_path, b"0")
    proc = subprocess.Popen(
        [*SHELL, "--server", server.connect_string], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()

    def expect(text: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if text in lines.get(timeout=max(0.01, deadline - time.monotonic())):
                    return
            except queue.Empty:
                break
        raise AssertionError(f"{text!r} not printed")

    try:
        assert proc.stdin is not None
        proc.stdin.write(f"get -w {unique_path}\n")
        proc.stdin.flush()
        expect("0")
        writer.set(unique_path, b"1")
        expect(f"type:NodeDataChanged path:{unique_path}")
        proc.stdin.write("quit\n")
        proc.stdin.flush()
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)

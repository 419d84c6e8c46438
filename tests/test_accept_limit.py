"""The TLS client port at the open-file limit: a failed accept must not be retried in a busy
loop (the pending connection keeps the listening socket readable), nor logged per attempt;
the port serves again once descriptors are free. (The plaintext port is covered in
test_limits.py: the event loop's own accept handles the limit there.)"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from test_tls import Certs

from fastzk.nemesis.servers import LOOPBACK, start_server


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return Certs(tmp_path_factory.mktemp("certs"))


def test_the_tls_port_rests_at_the_open_file_limit_and_logs_once(
    certs: Certs, tmp_path: Path,
) -> None:
    srv = start_server("fastzk", tmp_path, **certs.tls_keys())
    try:
        port = int(srv.cfg["secureClientPort"])
        limit = len(os.listdir(f"/proc/{srv.pid}/fd")) + 3
        subprocess.run(["prlimit", f"--pid={srv.pid}", f"--nofile={limit}:{limit}"],
                       check=True, timeout=10)
        held = [socket.create_connection((LOOPBACK, port), timeout=2.0) for _ in range(8)]
        try:
            before = cpu_seconds(srv.pid)
            time.sleep(2.0)
            assert cpu_seconds(srv.pid) - before < 0.5  # a busy loop burns the whole 2 s
            log = srv.log_text()
            assert log.count("cannot accept a TLS connection") == 1, log[-2000:]
            assert "Too many open files" in log
        finally:
            for sock in held:
                sock.close()
        context = certs.context()
        deadline = time.monotonic() + 10.0
        while True:  # the held connections' handshakes time out, freeing descriptors
            try:
                with contextlib.closing(socket.create_connection((LOOPBACK, port),
                                                                 timeout=2.0)) as raw, \
                        context.wrap_socket(raw, server_hostname="localhost") as tls:
                    assert tls.version() is not None
                break
            except (OSError, ssl.SSLError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        srv.stop()

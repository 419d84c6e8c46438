"""CPU accounting of a measured window: the load process, the server and the whole machine.

Read from /proc so that the load can report how busy the server and the neighbours were
without an agent on the server; bench/ensembles.py samples the same counters.
"""

from __future__ import annotations

import os
import time

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pid: int) -> float | None:
    """utime+stime of *pid* in seconds (all its threads), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def machine_busy_seconds() -> float | None:
    """Busy CPU seconds of the whole machine so far (all cores; idle and iowait excluded)."""
    try:
        with open("/proc/stat", "rb") as f:
            parts = f.readline().split()
    except OSError:
        return None
    values = [int(v) for v in parts[1:]]
    busy = sum(values[:8]) - values[3] - values[4]  # up to steal; minus idle, iowait
    return busy / _CLK_TCK


class CpuWindow:
    """Samples own/server/machine CPU at the start and end of the measured window
    (percent of one core)."""

    def __init__(self, server_pid: int | None, machine: bool) -> None:
        self.server_pid = server_pid
        self.machine = machine
        self.t0 = self.own0 = 0.0
        self.srv0: float | None = None
        self.mach0: float | None = None
        self.result: tuple[float, float | None, float | None] = (0.0, None, None)

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.own0 = time.process_time()
        self.srv0 = proc_cpu_seconds(self.server_pid) if self.server_pid else None
        self.mach0 = machine_busy_seconds() if self.machine else None

    def stop(self) -> None:
        wall = max(time.monotonic() - self.t0, 1e-9)
        own = (time.process_time() - self.own0) / wall * 100
        srv = None
        if self.server_pid and self.srv0 is not None:
            now = proc_cpu_seconds(self.server_pid)
            srv = None if now is None else (now - self.srv0) / wall * 100
        mach = None
        if self.mach0 is not None:
            now_m = machine_busy_seconds()
            mach = None if now_m is None else (now_m - self.mach0) / wall * 100
        self.result = (own, srv, mach)


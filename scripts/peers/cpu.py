"""CPU per completed job: every process of the system under test plus the server, from /proc.

A `Meter` samples, every `every_s`, the CPU time (user + system, with that of reaped children) of
every process in the given process groups (each worker and helper of a system leads its own group:
Dramatiq's, Celery's and taskiq's forked workers are in it) and of the server. The drain's first and
last job start times (host clock, as the jobs stamp them) pick the two samples around the drain, so
start-up (imports) and idle time are not counted: CPU per job = CPU between them / jobs between them.
"""

from __future__ import annotations

import bisect
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: str) -> tuple[int, float] | None:
    """(process group, CPU seconds incl. reaped children) of one process, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return int(fields[2]), (utime + stime + cutime + cstime) / TICK


@dataclass
class Meter:
    """CPU seconds over time of `groups` (process group ids) and of the server process."""

    groups: set[int]
    server_pid: int
    samples: list[tuple[int, float, float]] = field(default_factory=list)  # (ns, workers s, server s)
    _dead: float = 0.0
    _seen: dict[int, float] = field(default_factory=dict)

    def sample(self) -> None:
        """Read /proc once: every process in the groups (a process that exited keeps its last reading,
        unless its parent reaped it into cutime/cstime) and the server."""
        now = time.time_ns()
        alive: dict[int, float] = {}
        server = 0.0
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            stat = _stat(pid)
            if stat is None:
                continue
            group, seconds = stat
            if int(pid) == self.server_pid:
                server = seconds
            elif group in self.groups:
                alive[int(pid)] = seconds
        for pid, seconds in self._seen.items():
            if pid not in alive:
                self._dead += seconds  # gone since the last sample: keep what it had used
        self._seen = alive
        self.samples.append((now, self._dead + sum(alive.values()), server))

    def between(self, first_ns: int, last_ns: int) -> tuple[float, float]:
        """(workers, server) CPU seconds between two moments, linearly interpolated between samples."""
        return (self._at(last_ns, 1) - self._at(first_ns, 1), self._at(last_ns, 2) - self._at(first_ns, 2))

    def _at(self, ns: int, column: int) -> float:
        times = [s[0] for s in self.samples]
        i = bisect.bisect_left(times, ns)
        if i <= 0:
            return self.samples[0][column]
        if i >= len(self.samples):
            return self.samples[-1][column]
        (t0, *a), (t1, *b) = self.samples[i - 1], self.samples[i]
        share = (ns - t0) / max(1, t1 - t0)
        return a[column - 1] + (b[column - 1] - a[column - 1]) * share

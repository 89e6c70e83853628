"""A handler's processes never outlive their agent, however the agent dies.

Each agent process starts one watchdog: a tiny child process (this file, run by path with no
imports beyond the standard library) whose stdin is a pipe that only the agent holds. The agent
writes `+PGID` when a command handler starts a process group and `-PGID` when the group is gone.
When the pipe reaches end of file, the agent has exited: by returning, by an exception, or by
SIGKILL, where no code of the agent's runs at all, but the kernel still closes its end of the
pipe. The watchdog then sends SIGKILL to every group still registered and exits.

What escapes it: a process that leaves its process group (`setsid`, a daemonising program). POSIX
only; on Windows there is no watchdog and a handler's processes end only with their own timeout.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from typing import IO


class Lifeline:
    """The agent's side: start the watchdog, register and forget process groups, close at exit."""

    def __init__(self) -> None:
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._pipe: IO[bytes] | None = None

    def start(self) -> None:
        """Start the watchdog (no-op where there is no `os.killpg`)."""
        if not hasattr(os, "killpg") or self._watchdog is not None:
            return
        # Its own session: a Ctrl-C or a group kill meant for the agent must not take it first.
        self._watchdog = subprocess.Popen(
            [sys.executable, "-I", "-S", __file__], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            start_new_session=True, close_fds=True,
        )
        self._pipe = self._watchdog.stdin

    def hold(self, pgid: int) -> None:
        """Kill process group `pgid` if the agent dies before `drop`."""
        self._say(f"+{pgid}\n")

    def drop(self, pgid: int) -> None:
        """The group `pgid` is gone (or killed by the agent itself): forget it."""
        self._say(f"-{pgid}\n")

    def close(self) -> None:
        """Close the pipe: the watchdog kills what is still registered, and exits."""
        if self._pipe is not None:
            with contextlib.suppress(OSError):
                self._pipe.close()
            self._pipe = None
        if self._watchdog is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._watchdog.wait(timeout=5)
            self._watchdog = None

    def _say(self, line: str) -> None:
        if self._pipe is None:
            return
        with contextlib.suppress(OSError):  # a dead watchdog: the agent's own kills still apply
            self._pipe.write(line.encode())
            self._pipe.flush()


def watch(lines: IO[bytes]) -> set[int]:
    """The watchdog's loop: track groups until end of file; return those still registered."""
    groups: set[int] = set()
    for raw in lines:
        line = raw.strip()
        if line[:1] in (b"+", b"-") and line[1:].isdigit():
            (groups.add if line[:1] == b"+" else groups.discard)(int(line[1:]))
    return groups


def _main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only end of file, its agent's death, ends it
    for pgid in watch(sys.stdin.buffer):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


if __name__ == "__main__":
    _main()

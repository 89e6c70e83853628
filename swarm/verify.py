"""The verifier: a command (a card's `verify`, `swarm agent run --verify`) that must pass in the task's
workspace after the handler finished, or the task is not done.

It runs as a shell script (`sh -c`: `pytest -q && ruff check .` works as typed), in the task's
folder, with the handler's environment and the `SWARM_TASK_*` variables, in a process group of its
own that never outlives it: past `timeout_s` the whole group is killed; when the task is lost or the
agent stops, it gets SIGTERM, then SIGKILL; when the agent dies, its lifeline kills it. Exit 0 passes;
anything else fails with the tail of its output (stdout and stderr, interleaved as it wrote them).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import anyio
from anyio.abc import ByteReceiveStream, Process

from swarm.board import Task
from swarm.lifeline import Lifeline

TAIL = 2_000
"""Characters of the verifier's output a failure keeps (its end: where test runners summarize)."""
_KEEP = 64 * 1024
"""Bytes of output held while it runs (the tail is cut from them)."""


@dataclass(frozen=True)
class Verdict:
    """What the verifier said: `passed`, a one-line `summary` and, on failure, the tail of its output."""

    passed: bool
    summary: str
    output: str = ""


class Verifier:
    """Runs `command` for a task; see the module doc."""

    def __init__(self, command: str, *, timeout_s: float = 600.0, term_grace_s: float = 2.0) -> None:
        self.command = command.strip()
        self.timeout_s = timeout_s
        self.term_grace_s = term_grace_s

    async def run(self, task: Task, folder: Path, env: dict[str, str] | None = None,
                  lifeline: Lifeline | None = None) -> Verdict:
        """Run the verifier in `folder` for `task`: `Verdict(True, "CMD: passed")`, or a failed one that
        says how it failed (`CMD exited N`, `CMD timed out after Ns and was killed`)."""
        full_env = {**os.environ, **(env or {}), "SWARM_TASK_ID": task.id, "SWARM_TASK_KIND": task.kind,
                    "SWARM_TASK_TITLE": task.title}
        out = bytearray()
        try:
            async with await anyio.open_process(
                ["sh", "-c", self.command], cwd=folder, env=full_env, stdin=subprocess.DEVNULL,
                stderr=subprocess.STDOUT, start_new_session=True,
            ) as proc:
                if lifeline is not None:
                    lifeline.hold(proc.pid)
                try:
                    with anyio.move_on_after(self.timeout_s) as timer:
                        async with anyio.create_task_group() as tg:
                            tg.start_soon(_collect, proc.stdout, out)
                            code = await proc.wait()
                            # What it left running would hold its output open: gone, the output ends.
                            _signal_group(proc.pid, signal.SIGKILL)
                finally:
                    with anyio.CancelScope(shield=True):
                        await self._stop_group(proc, now=timer.cancelled_caught)
                        if lifeline is not None:
                            lifeline.drop(proc.pid)
        except OSError as exc:  # the folder is gone, or no `sh`
            return Verdict(False, f"{self.command} could not start", f"{type(exc).__name__}: {exc}")
        tail = out.decode(errors="replace").strip()[-TAIL:] or "(no output)"
        if timer.cancelled_caught:
            return Verdict(False, f"{self.command} timed out after {self.timeout_s:g}s and was killed", tail)
        if code != 0:
            return Verdict(False, f"{self.command} exited {code}", tail)
        return Verdict(True, f"{self.command}: passed")

    async def _stop_group(self, proc: Process, *, now: bool) -> None:
        """Leave nothing of the verifier running (a test runner's workers included): SIGKILL to the
        group at once when `now` (its timeout), else SIGTERM and `term_grace_s` first."""
        if proc.returncode is None and not now:
            _signal_group(proc.pid, signal.SIGTERM)
            with anyio.move_on_after(self.term_grace_s):
                await proc.wait()
        _signal_group(proc.pid, signal.SIGKILL)
        await proc.wait()


async def _collect(stream: ByteReceiveStream | None, sink: bytearray) -> None:
    """Read all the output, holding only its last `_KEEP` bytes."""
    if stream is None:
        return
    async for chunk in stream:
        sink += chunk
        if len(sink) > 2 * _KEEP:
            del sink[:-_KEEP]


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)

"""The command handler: hand a task to any program (an AI coding agent's CLI, a script).

The template is split like a shell would (no shell runs it: write `sh -c '...'` to get one) and
`{id}`, `{kind}`, `{title}` in it are replaced per task. In the script of a shell (`sh -c SCRIPT`,
`bash -c SCRIPT`, ...) they are replaced shell-quoted, so a title like `x; touch PWNED` stays one
word of text; the safe way to use task fields in a script is still the environment
(`"$SWARM_TASK_TITLE"`). The program gets the task as JSON on stdin
and in `SWARM_TASK_*` environment variables (`SWARM_TASK_PROMPT` is the task as a prompt for an AI
coding agent's CLI: `Task ID (KIND): TITLE`, a blank line, the body). Exit 0: done, stdout is the
result. Non-zero: failed with the tail of stderr. Past the timeout the process is killed and the task
fails. When the task has a worktree of its own (`swarm.workspace`), the command runs in it.

The command runs in a process group of its own, and the group never outlives the handler: when the
handler is cancelled (its lease was lost, or the agent shuts down past its grace period) the group
gets SIGTERM, then SIGKILL after `term_grace_s`; when the command exits, whatever it left running
in its group is killed; and when the agent dies, even by SIGKILL, its lifeline's watchdog kills
the group (see `swarm.lifeline`).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal

import anyio
from anyio.abc import ByteReceiveStream, ByteSendStream, Process

from swarm.board import Task
from swarm.errors import CommandFailed, ConfigError
from swarm.lifeline import Lifeline

TAIL = 2_000


class CommandHandler:
    """A handler that runs `template` once per task."""

    def __init__(self, template: str, *, timeout_s: float = 600.0, term_grace_s: float = 2.0) -> None:
        self.template = template
        self.argv = shlex.split(template)
        if not self.argv:
            raise ConfigError("command handler needs a command after 'cmd:', e.g. cmd:./review.sh {id}")
        self.timeout_s = timeout_s
        self.term_grace_s = term_grace_s

    async def __call__(self, task: Task, ctx: object) -> str:
        """Run the command for `task`; see the module doc for the contract."""
        script = _shell_script_index(self.argv)
        argv = [_fill(arg, task, quote=i == script) for i, arg in enumerate(self.argv)]
        env = {**os.environ, **getattr(ctx, "env", {}),
               "SWARM_TASK_ID": task.id, "SWARM_TASK_KIND": task.kind, "SWARM_TASK_TITLE": task.title,
               "SWARM_TASK_TOKEN": str(task.token), "SWARM_TASK_BODY": task.body[:16_000],
               "SWARM_TASK_PROMPT": _prompt(task)}
        # In the task's own checkout when it has one; else where the agent runs, as always.
        cwd = getattr(ctx, "workspace", None) if getattr(ctx, "worktree", None) is not None else None
        stdin = task.model_dump_json().encode()
        out: list[bytes] = []
        err: list[bytes] = []
        lifeline: Lifeline | None = getattr(ctx, "lifeline", None)
        try:
            # Its own session, so a timeout, a lost lease or shutdown stops the whole process group:
            # a shell's children or an AI CLI's workers must not go on editing a reassigned task.
            async with await anyio.open_process(argv, env=env, cwd=cwd, start_new_session=True) as proc:
                if lifeline is not None:
                    lifeline.hold(proc.pid)
                try:
                    with anyio.move_on_after(self.timeout_s) as timer:
                        async with anyio.create_task_group() as tg:
                            tg.start_soon(_feed, proc.stdin, stdin)
                            tg.start_soon(_drain, proc.stdout, out)
                            tg.start_soon(_drain, proc.stderr, err)
                        code = await proc.wait()
                finally:
                    with anyio.CancelScope(shield=True):
                        await self._stop_group(proc, now=timer.cancelled_caught)
                        if lifeline is not None:
                            lifeline.drop(proc.pid)
                if timer.cancelled_caught:
                    raise CommandFailed(f"command timed out after {self.timeout_s:g}s: {self.template}")
        except FileNotFoundError as exc:
            raise CommandFailed(f"command not found: {argv[0]} ({exc.strerror})") from None
        if code != 0:
            tail = b"".join(err).decode(errors="replace").strip()[-TAIL:] or "(no stderr)"
            raise CommandFailed(f"command exited {code}: {tail}")
        return b"".join(out).decode(errors="replace").strip()[-16_000:]


    async def _stop_group(self, proc: Process, *, now: bool) -> None:
        """Leave nothing of the command running: a leader still running gets SIGTERM and
        `term_grace_s` to exit (SIGKILL at once when `now`), then the whole group gets SIGKILL."""
        if proc.returncode is None and not now:
            _signal_group(proc.pid, signal.SIGTERM)
            with anyio.move_on_after(self.term_grace_s):
                await proc.wait()
        _signal_group(proc.pid, signal.SIGKILL)  # also what the leader left behind when it exited
        await proc.wait()


SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "ash", "fish"})


def _shell_script_index(argv: list[str]) -> int | None:
    """The index of the script in `sh -c SCRIPT ...` (any shell of SHELLS), or None."""
    if os.path.basename(argv[0]) in SHELLS and "-c" in argv[1:-1]:
        return argv.index("-c", 1) + 1
    return None


def _fill(arg: str, task: Task, *, quote: bool = False) -> str:
    """`{id}`, `{kind}` and `{title}` replaced (shell-quoted in a shell's script); any other brace is
    the command's own (jq, awk...)."""
    values = {"{id}": task.id, "{kind}": task.kind, "{title}": task.title}
    for placeholder, value in values.items():
        arg = arg.replace(placeholder, shlex.quote(value) if quote else value)
    return arg


def _prompt(task: Task) -> str:
    """The task as a prompt. It starts with `Task`, never with `-`: passed as an argument, a title
    cannot turn into an option of the CLI it is given to."""
    prompt = f"Task {task.id} ({task.kind}): {task.title}"
    return f"{prompt}\n\n{task.body[:16_000]}" if task.body.strip() else prompt


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


async def _feed(stream: ByteSendStream | None, data: bytes) -> None:
    """Write the task to stdin; a command that never reads it is fine."""
    if stream is None:
        return
    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
        await stream.send(data)
    await stream.aclose()


async def _drain(stream: ByteReceiveStream | None, sink: list[bytes]) -> None:
    if stream is not None:
        async for chunk in stream:
            sink.append(chunk)


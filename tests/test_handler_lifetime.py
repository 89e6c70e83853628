"""A handler never outlives its agent or its lease: real processes, real signals, a real server."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import anyio
import pytest
from redis.asyncio import Redis

from swarm.agent import Agent, Context
from swarm.board import Board, Task, TaskSpec
from swarm.handlers.command import CommandHandler
from swarm.lifeline import watch
from swarm.registry import AgentCard
from swarm.settings import Settings
from tests.helpers import eventually, spawn


@pytest.fixture
def fast(settings: Settings) -> Settings:
    return settings.model_copy(update={"lease_s": 1.0, "heartbeat_s": 0.1, "retry_backoff_s": 0.0})


async def _pids(pattern: str) -> list[int]:
    found = await anyio.run_process(["pgrep", "-f", pattern], check=False)
    return [int(p) for p in found.stdout.split()]


async def _none_left(pattern: str) -> bool:
    return not await _pids(pattern)


async def test_a_command_and_its_children_die_with_their_sigkilled_agent(redis: Redis, fast: Settings,
                                                                         tmp_path: Path) -> None:
    board = Board(redis, fast)
    task, _ = await board.create(TaskSpec(kind="work", title="long job"))
    mark = tmp_path / "started"
    # A shell that starts a child in the background and waits: the child is the grandchild that
    # only a process-group kill reaches.
    proc = spawn(fast, "a1", f"cmd:sh -c 'sleep 41.31 & touch {mark}; wait'")
    try:
        await eventually(lambda: _exists(mark))
        assert len(await _pids("^sleep 41.31")) == 1
        assert len(await _pids("^sh -c sleep 41.31")) == 1
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        await eventually(lambda: _none_left("^sleep 41.31"), within=3)
        assert await _none_left("^sh -c sleep 41.31")  # the shell too
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (await board.get(task.id)).state == "running"  # the lease is the board's business


async def _exists(path: Path) -> bool:
    return await anyio.Path(path).exists()


async def test_a_lost_lease_stops_a_running_python_handler_at_once(redis: Redis, fast: Settings) -> None:
    board = Board(redis, fast)
    task, _ = await board.create(TaskSpec(kind="work", title="long job"))
    started = anyio.Event()
    outcome: list[str] = []

    async def handler(t: Task, ctx: Context) -> str:
        started.set()
        try:
            await anyio.sleep(30)
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):  # (a cancelled handler's own clean-up needs a shield)
                outcome.append(f"cancelled, still owned: {await ctx.owns(t)}")
            raise
        return "finished"  # never: the task went to a2

    agent = Agent(redis, fast, AgentCard(name="a1", capabilities=("work",)), handler, claim=True)
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        await tg.start(agent.run, stop)
        with anyio.fail_after(5):
            await started.wait()
        assert await agent.ctx.owns(await board.get(task.id))
        await board.assign(task.id, "a2", force=True)  # a1's token is stale from here on
        await eventually(lambda: _true(bool(outcome)), within=2 * fast.heartbeat_period_s + 1)
        stop.set()
    assert outcome == ["cancelled, still owned: False"]
    assert (await board.get(task.id)).owner == "a2"


async def _true(value: bool) -> bool:
    return value


async def test_a_lost_lease_gives_a_command_sigterm_then_kills_its_group(redis: Redis, fast: Settings,
                                                                          tmp_path: Path) -> None:
    board = Board(redis, fast)
    task, _ = await board.create(TaskSpec(kind="work", title="long job"))
    marks = tmp_path / "marks"
    # The shell notes SIGTERM and then ignores it: SIGKILL after the grace must still end it all.
    script = f"trap 'echo term >> {marks}' TERM; echo start >> {marks}; sleep 42.71 & while :; do wait; done"
    handler = CommandHandler(f"sh -c \"{script}\"", term_grace_s=0.5)
    agent = Agent(redis, fast, AgentCard(name="a1", capabilities=("work",)), handler)
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        await tg.start(agent.run, stop)
        await eventually(lambda: _exists(marks))
        await board.assign(task.id, "a2", force=True)
        await eventually(lambda: _none_left("^sleep 42.71"), within=2 * fast.heartbeat_period_s + 3)
        stop.set()
    assert marks.read_text().split() == ["start", "term"]
    assert agent.completed == 0


async def test_a_lease_that_ran_out_while_the_agent_was_paused_stops_the_handler(
    redis: Redis, fast: Settings, tmp_path: Path
) -> None:
    board = Board(redis, fast)
    await board.create(TaskSpec(kind="work", title="long job"))
    outcome: list[str] = []

    async def handler(t: Task, ctx: Context) -> str:
        try:
            await anyio.sleep(30)
        except anyio.get_cancelled_exc_class():
            outcome.append("stopped")
            raise
        return "finished"

    agent = Agent(redis, fast, AgentCard(name="a1", capabilities=("work",)), handler)
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        await tg.start(agent.run, stop)
        await eventually(lambda: _true(bool(agent.jobs)))
        [job] = agent.jobs.values()
        job.deadline = 0.0  # as after a pause past the lease: the next heartbeat sees it ran out
        await eventually(lambda: _true(bool(outcome)), within=2 * fast.heartbeat_period_s + 1)
        stop.set()
    assert outcome == ["stopped"]


def test_the_watchdog_keeps_the_groups_still_registered_at_end_of_file(tmp_path: Path) -> None:
    lines = tmp_path / "lines"
    lines.write_bytes(b"+10\n+11\n-10\n+12\nnoise\n-\n+x\n")
    with lines.open("rb") as f:
        assert watch(f) == {11, 12}


async def test_a_shell_template_gets_task_fields_quoted(tmp_path: Path) -> None:
    out = tmp_path / "out"
    handler = CommandHandler(f"sh -c 'echo {{title}} > {out}'")
    task = Task(id="t-1", kind="work", title="x; touch PWNED", state="running", token=1)
    await handler(task, None)
    assert await anyio.Path(out).read_text() == "x; touch PWNED\n"
    assert not await anyio.Path(tmp_path / "PWNED").exists()
    assert not await anyio.Path("PWNED").exists()

"""The agent runtime with real processes: SIGKILL, SIGTERM, failing handlers, commands, concurrency."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import anyio.abc
import pytest
from redis.asyncio import Redis
from structlog.testing import capture_logs

from swarm.agent import Agent, Context, Handler
from swarm.board import Board, Task, TaskSpec
from swarm.captain import Captain
from swarm.connection import open_redis
from swarm.errors import CommandFailed, ConfigError, StaleToken
from swarm.handlers import load_handler
from swarm.handlers.command import CommandHandler
from swarm.registry import AgentCard, Registry
from swarm.roster import load_roster
from swarm.settings import Settings
from tests.helpers import HANDLERS, ROOT, eventually, running, spawn


@pytest.fixture
def fast(settings: Settings) -> Settings:
    return settings.model_copy(update={"lease_s": 1.0, "heartbeat_s": 0.1, "retry_backoff_s": 0.0})


async def log(redis: Redis) -> list[str]:
    return [x.decode() if isinstance(x, bytes) else x for x in await redis.lrange("test:log", 0, -1)]


async def test_sigkill_mid_task_completes_on_another_agent_exactly_once(redis: Redis, fast: Settings) -> None:
    board = Board(redis, fast)
    task, _ = await board.create(TaskSpec(kind="work", title="long job"))
    first = spawn(fast, "a1", "slow")
    try:
        await eventually(lambda: _started(redis, task.id, first.pid))
        stale = await board.get(task.id)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        second = spawn(fast, "a2", "noop")
        try:
            done = await eventually(lambda: _done(board, task.id), within=15)
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(timeout=10) == 0
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert done.owner == "a2"
    events = [e.body.event for e in await board.history(task.id)]
    assert events.count("done") == 1
    assert events == ["created", "claimed", "expired", "claimed", "done"]
    with pytest.raises(StaleToken, match=rf"^token {stale.token} for task {task.id} is stale"):
        await board.complete(task.id, stale.token, "late", agent=stale.owner or "")
    agents = {a.card.name: a.liveness for a in await Registry(redis, fast).all()}
    assert agents["a2"] == "gone"  # deregistered on SIGTERM
    await eventually(lambda: _liveness(redis, fast, "a1", "gone"), within=5)


async def _started(redis: Redis, task_id: str, pid: int) -> bool:
    return f"start {task_id} {pid}" in await log(redis)


async def _done(board: Board, task_id: str) -> Task | None:
    task = await board.get(task_id)
    return task if task.state == "done" else None


async def _liveness(redis: Redis, settings: Settings, name: str, want: str) -> bool:
    return any(a.card.name == name and a.liveness == want for a in await Registry(redis, settings).all())


async def test_sigterm_lets_a_running_task_finish_within_grace(redis: Redis, fast: Settings) -> None:
    board = Board(redis, fast)
    task, _ = await board.create(TaskSpec(kind="work", title="short job"))
    proc = spawn(fast, "a1", "slow", "--grace", "10", env={"SWARM_TEST_SLEEP": "1"})
    await eventually(lambda: _started(redis, task.id, proc.pid))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    finished = await board.get(task.id)
    assert finished.state == "done"
    assert finished.result == f"slow done by {proc.pid}"


async def test_sigterm_past_grace_releases_the_task_uncounted(redis: Redis, fast: Settings) -> None:
    board = Board(redis, fast)
    task, _ = await board.create(TaskSpec(kind="work", title="endless job"))
    proc = spawn(fast, "a1", "slow", "--grace", "0.3", env={"SWARM_TEST_SLEEP": "60"})
    await eventually(lambda: _started(redis, task.id, proc.pid))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    released = await board.get(task.id)
    assert (released.state, released.owner, released.attempts) == ("open", None, 0)
    assert [e.body.event for e in await board.history(task.id)][-1] == "released"
    assert await _liveness(redis, fast, "a1", "gone")


async def test_a_raising_handler_fails_the_task_with_its_text_and_retries(redis: Redis, fast: Settings) -> None:
    board = Board(redis, fast)
    task, _ = await board.create(TaskSpec(kind="work", title="bad input", max_attempts=2))
    agent = Agent(redis, fast, AgentCard(name="a1", capabilities=("work",)), load_handler(f"{HANDLERS}:boom", ROOT))
    async with running(agent):
        failed = await eventually(lambda: _in_state(board, task.id, "failed"))
    assert failed.reason == "ValueError: cannot handle bad input"
    assert failed.attempts == 2
    events = [(e.body.event, e.body.detail) for e in await board.history(task.id)]
    assert events == [
        ("created", "bad input"), ("claimed", ""), ("retry", "ValueError: cannot handle bad input"),
        ("claimed", ""), ("failed", "ValueError: cannot handle bad input"),
    ]


async def _in_state(board: Board, task_id: str, state: str) -> Task | None:
    task = await board.get(task_id)
    return task if task.state == state else None


async def test_concurrency_k_is_respected_under_load(redis: Redis, fast: Settings) -> None:
    board = Board(redis, fast)
    now = 0
    peak = 0

    async def handler(task: Task, ctx: Context) -> str:
        nonlocal now, peak
        now += 1
        peak = max(peak, now)
        await anyio.sleep(0.05)
        now -= 1
        return "ok"

    ids = [(await board.create(TaskSpec(kind="work", title=f"job {i}")))[0].id for i in range(15)]
    agent = Agent(redis, fast, AgentCard(name="a1", capabilities=("work",), concurrency=3), handler)
    async with running(agent):
        await eventually(lambda: _all_done(board, ids))
    assert peak == 3
    assert agent.completed == 15


async def test_prefetch_holds_tasks_ahead_but_runs_only_k_and_gives_them_back_on_stop(
    redis: Redis, fast: Settings
) -> None:
    board = Board(redis, fast)
    started: list[str] = []
    gate = anyio.Event()

    async def handler(task: Task, ctx: Context) -> str:
        started.append(task.id)
        await gate.wait()
        return "ok"

    ids = [(await board.create(TaskSpec(kind="work", title=f"job {i}")))[0].id for i in range(6)]
    agent = Agent(redis, fast, AgentCard(name="a1", capabilities=("work",), concurrency=2), handler,
                  prefetch=2, grace_s=5)
    async with running(agent) as stop:
        await eventually(lambda: _true(len(started) == 2))
        await anyio.sleep(3 * fast.lease_s)  # the held tasks stay ours: heartbeated, not reclaimed
        assert sorted(await board.owned("a1")) == sorted(ids[:4])
        assert started == ids[:2]
        stop.set()
        await eventually(lambda: _true(agent.stopping))  # it saw the stop while both still ran
        gate.set()
    states = {t.id: t.state for t in [await board.get(i) for i in ids]}
    assert states == dict.fromkeys(ids[:2], "done") | dict.fromkeys(ids[2:], "open")
    assert [e.body.event for e in await board.history(ids[2])] == ["created", "claimed", "released"]
    assert started == ids[:2]


async def _true(value: bool) -> bool:
    return value


async def test_an_agent_whose_tasks_all_failed_still_claims_new_work(redis: Redis, fast: Settings) -> None:
    board = Board(redis, fast)

    async def handler(task: Task, ctx: Context) -> str:
        if task.title == "bad":
            raise ValueError("no")
        return "ok"

    bad, _ = await board.create(TaskSpec(kind="work", title="bad", max_attempts=1))
    agent = Agent(redis, fast, AgentCard(name="a1", capabilities=("work",), concurrency=1), handler)
    async with running(agent):
        await eventually(lambda: _state_is(board, bad.id, "failed"))
        await eventually(lambda: _true(not agent.jobs))  # idle now: nothing left to claim
        good, _ = await board.create(TaskSpec(kind="work", title="good"))
        await eventually(lambda: _state_is(board, good.id, "done"))


async def _state_is(board: Board, task_id: str, state: str) -> bool:
    return (await board.get(task_id)).state == state


async def _all_done(board: Board, ids: list[str]) -> bool:
    return await _all_in(board, ids, "done")


async def _all_in(board: Board, ids: list[str], state: str) -> bool:
    return all(t.state == state for t in [await board.get(i) for i in ids])


async def test_assignment_for_an_earlier_instance_is_ignored(redis: Redis, fast: Settings) -> None:
    board = Board(redis, fast)
    seen: list[str] = []

    async def handler(task: Task, ctx: Context) -> str:
        seen.append(task.id)
        return "ok"

    agent = Agent(redis, fast, AgentCard(name="a1", capabilities=("work",)), handler, claim=False)
    async with running(agent):
        old, _ = await board.create(TaskSpec(kind="work", title="for the old instance"))
        await board.assign(old.id, "a1", instance="01OLDINSTANCE")
        new, _ = await board.create(TaskSpec(kind="work", title="for this instance"))
        await board.assign(new.id, "a1", instance=agent.instance)
        await eventually(lambda: _in_state(board, new.id, "done"))
        assert (await board.get(old.id)).state == "assigned"  # not run by this instance
    assert seen == [new.id]
    # ...and given back when the agent leaves, rather than left to wait for its lease.
    assert [e.body.event for e in await board.history(old.id)] == ["created", "assigned", "released"]


async def test_the_captain_hands_tasks_out_running_and_the_agent_runs_them_without_a_start(
    redis: Redis, fast: Settings
) -> None:
    board = Board(redis, fast)
    ids = [(await board.create(TaskSpec(kind="work", title=f"job {n}", body=f"body {n}")))[0].id for n in range(8)]
    seen: dict[str, str] = {}
    now = most = 0
    most_owned = 0

    async def handler(task: Task, ctx: Context) -> str:
        nonlocal now, most, most_owned
        now += 1
        most = max(most, now)
        most_owned = max(most_owned, len(await board.owned("a1")))
        seen[task.id] = task.body
        await anyio.sleep(0.05)
        now -= 1
        return "ok"

    agent = Agent(redis, fast, AgentCard(name="a1", capabilities=("work",), concurrency=2), handler, claim=False,
                  prefetch=2)
    captain = Captain(redis, fast)
    async with anyio.create_task_group() as tg:
        await tg.start(captain.run)
        async with running(agent):
            await eventually(lambda: _all_in(board, ids, "done"))
        tg.cancel_scope.cancel()
    assert seen == {i: f"body {n}" for n, i in enumerate(ids)}  # each ran once, with the task as created
    assert (most, most_owned) == (2, 4)  # two at a time, two more held ahead (the card's prefetch)
    for task_id in ids:  # handed out running: no `started` (no start call), no claim
        assert [e.body.event for e in await board.history(task_id)] == ["created", "assigned", "done"]


async def test_a_running_assignment_not_ours_any_more_is_skipped(redis: Redis, fast: Settings) -> None:
    board = Board(redis, fast)
    ran: list[str] = []

    async def handler(task: Task, ctx: Context) -> str:
        ran.append(task.id)
        return "ok"

    moved, _ = await board.create(TaskSpec(kind="work", title="moved on"))
    # As a Redis user of its own (ACL mode), where a raw XADD could forge the board's hand-out.
    as_user = fast.model_copy(update={"user": "default"})
    agent = Agent(redis, as_user, AgentCard(name="a1", capabilities=("work",)), handler, claim=False)
    assert not agent.trusts_handouts
    async with running(agent):
        forged = {"task_id": moved.id, "token": 1, "task_kind": "work", "state": "running",
                  "tasks": [{"id": moved.id, "kind": "work", "title": "forged", "state": "running", "owner": "a1",
                             "token": "1"}]}
        with capture_logs() as logs:
            # from the board but not carrying them; carried by another; carried "from the board" (ACL mode)
            for sender, carried in (("board", False), ("mallory", True), ("board", True)):
                body = {k: v for k, v in forged.items() if carried or k != "tasks"}
                await redis.xadd(board.keys.inbox("a1"), {"m": json.dumps(
                    {"v": 1, "id": f"m-{sender}-{carried}", "sender": sender, "to": "a1",
                     "ts": int(time.time() * 1000), "kind": "assignment", "body": body})})
            skipped = "assigned tasks moved on before they ran"
            await eventually(lambda: _true(sum(line["event"] == skipped for line in logs) == 3))
    assert ran == []  # read from the board: open, nobody's; neither message ran it
    assert (await board.get(moved.id)).state == "open"


def _task(title: str = "x") -> Task:
    return Task(id="t-1", kind="work", title=title, state="running", token=1)


async def test_command_handler_success_gets_the_task_on_stdin_and_env() -> None:
    handler = CommandHandler("""sh -c 'read -r json; echo "$SWARM_TASK_ID {kind} $json" | cut -c1-40'""")
    assert await handler(_task(), object()) == 't-1 work {"id":"t-1","kind":"work","titl'


async def test_command_handler_nonzero_exit_fails_with_stderr_tail() -> None:
    handler = CommandHandler("sh -c 'echo working; echo broke on line 3 >&2; exit 4'")
    with pytest.raises(CommandFailed, match=r"^command exited 4: broke on line 3$"):
        await handler(_task(), object())


async def test_command_handler_timeout_kills_the_command() -> None:
    handler = CommandHandler("sleep 30", timeout_s=0.3)
    with anyio.fail_after(5), pytest.raises(CommandFailed, match=r"^command timed out after 0.3s: sleep 30$"):
        await handler(_task(), object())


async def test_command_handler_through_an_agent_reports_stdout(redis: Redis, fast: Settings) -> None:
    board = Board(redis, fast)
    task, _ = await board.create(TaskSpec(kind="work", title="echo me"))
    handler: Handler = load_handler("cmd:sh -c 'echo handled $SWARM_TASK_TITLE'")
    agent = Agent(redis, fast, AgentCard(name="a1", capabilities=("work",)), handler)
    async with running(agent):
        done = await eventually(lambda: _in_state(board, task.id, "done"))
    assert done.result == "handled echo me"


def test_bad_handler_specs_fail_at_start_with_exact_errors() -> None:
    cases = {
        "nohandler": "handler 'nohandler' must be builtin, cmd:<command>, FILE.py:FUNCTION or MODULE:FUNCTION "
                     "(e.g. agents/reviewer.py:handle)",
        "missing.py:handle": f"handler file {ROOT}/missing.py does not exist; "
                             "give a path like agents/reviewer.py:handle",
        f"{HANDLERS}:nope": f"{ROOT}/{HANDLERS} has no function 'nope'; define `async def nope(task, ctx)` there",
        f"{HANDLERS}:not_async": f"{ROOT}/{HANDLERS}:not_async is not an async function; "
                                 "define it as `async def not_async(task, ctx)`",
        "no_such_module_xyz:handle": "cannot import handler module 'no_such_module_xyz': No module named "
                                     "'no_such_module_xyz'",
    }
    for spec, expected in cases.items():
        with pytest.raises(ConfigError) as info:
            load_handler(spec, ROOT)
        assert str(info.value) == expected


def test_bad_cards_fail_with_file_and_field(tmp_path: Path) -> None:
    def roster(**cards: str) -> str:
        folder = tmp_path / f"r{len(list(tmp_path.iterdir()))}"
        folder.mkdir()
        for name, text in cards.items():
            (folder / f"{name}.toml").write_text(text)
        with pytest.raises(ConfigError) as info:
            load_roster(folder)
        return str(info.value).replace(str(folder), "DIR")

    assert roster(a='name = "a"\nconcurrency = 0\n') == (
        "DIR/a.toml: field 'concurrency': Input should be greater than or equal to 1")
    assert roster(a='name = "a"\ncolour = "red"\n') == "DIR/a.toml: field 'colour': Extra inputs are not permitted"
    assert roster(a='name = "a b"\n') == (
        "DIR/a.toml: field 'name': String should match pattern '^[A-Za-z0-9_.-]{1,64}$'")
    assert roster(a='name = \n') == "DIR/a.toml: not valid TOML: Invalid value (at line 1, column 8)"
    assert roster(a='name = "x"\n', b='name = "x"\n') == "DIR/b.toml: field 'name': 'x' is also used by DIR/a.toml"
    assert roster(a='name = "a"\ncapabilities = ["Audit"]\n') == (
        "DIR/a.toml: field 'capabilities': capability 'Audit' must be '*' or lowercase letters, digits, '_' or '-'")
    assert roster(a='name = "a"\ncapabilities = ["audit"]\nhandler = "gone.py:handle"\n') == (
        "DIR/a.toml: field 'handler': handler file DIR/gone.py does not exist; give a path like "
        "agents/reviewer.py:handle")
    assert roster(a='name = "a"\ncapabilities = ["code"]\nworkspace = "tree"\n') == (
        "DIR/a.toml: field 'workspace': Input should be 'shared' or 'worktree'")
    assert roster(a='name = "a"\ncapabilities = ["code"]\nverify_timeout_s = 0\n') == (
        "DIR/a.toml: field 'verify_timeout_s': Input should be greater than 0")
    assert roster(a='name = "a"\ncaptain = true\n', b='name = "b"\ncaptain = true\n') == (
        "DIR/b.toml: field 'captain': only one card may be the captain (DIR/a.toml is already)")


def test_the_repository_roster_is_valid() -> None:
    cards = load_roster(ROOT / "agents")
    # `swarm up` runs the enabled ones; the coding agents' recipes are there to turn on.
    assert [c.name for c in cards if c.enabled] == [f"agent-{i}" for i in range(1, 9)]
    assert [(c.name, c.workspace) for c in cards if not c.enabled] == [
        ("aider", "worktree"), ("claude", "worktree"), ("codex", "worktree")]
    assert [c.name for c in cards if c.captain] == ["agent-4"]


async def test_command_handler_leaves_other_braces_alone() -> None:
    handler = CommandHandler("""sh -c 'echo "{id} {\\"x\\": 1}" | cat'""")
    assert await handler(_task(), object()) == 't-1 {"x": 1}'


async def test_command_handler_timeout_kills_the_whole_process_group() -> None:
    handler = CommandHandler("sh -c 'sleep 31.77 & sleep 31.78 & wait'", timeout_s=0.3)
    with anyio.fail_after(5), pytest.raises(CommandFailed):
        await handler(_task(), object())
    await anyio.sleep(0.1)
    left = await anyio.run_process(["pgrep", "-f", "sleep 31.7"], check=False)
    assert left.stdout == b""


async def test_the_builtin_handler_fails_a_kind_it_does_not_do_with_the_reason(redis: Redis, fast: Settings,
                                                                                tmp_path: Path) -> None:
    board = Board(redis, fast)
    task, _ = await board.create(TaskSpec(kind="manual", title="paint the fence", max_attempts=1))
    agent = Agent(redis, fast, AgentCard(name="a1", capabilities=("manual",)), load_handler("builtin"),
                  workspace=tmp_path)
    async with running(agent):
        failed = await eventually(lambda: _in_state(board, task.id, "failed"))
    assert failed.reason == ("UnknownKind: the built-in handler does not do 'manual' tasks (it does consolidation, "
                             "audit, docs, todo); run an agent with a handler for them (--handler)")
    assert agent.completed == 0


async def test_a_stopping_agent_leaves_before_it_gives_work_back_so_none_comes_back_to_it(
    redis: Redis, fast: Settings
) -> None:
    board = Board(redis, fast)
    started = anyio.Event()

    async def endless(task: Task, ctx: Context) -> str:
        started.set()
        await anyio.sleep(60)
        return "never"

    task, _ = await board.create(TaskSpec(kind="work", title="long job"))
    agent = Agent(redis, fast, AgentCard(name="a1", capabilities=("work",)), endless, claim=False, grace_s=0.2)
    captain = Captain(redis, fast)
    async with anyio.create_task_group() as tg:
        await tg.start(captain.run)
        async with running(agent):
            with anyio.fail_after(10):
                await started.wait()
        await anyio.sleep(1.0)  # a captain that still saw a1 would have assigned the task back by now
        tg.cancel_scope.cancel()
    events = [(e.body.event, e.body.owner) for e in await board.history(task.id)]
    assert events[-1] == ("released", None)
    assert events.count(("assigned", "a1")) == 1
    assert (await board.get(task.id)).state == "open"


async def test_a_failure_report_that_meets_a_lost_connection_is_retried(redis: Redis, fast: Settings) -> None:
    # The handler fails just as the network between the agent and Redis goes down: the failure is
    # the work's outcome, so it is reported once the network is back, like a completion would be.
    board = Board(redis, fast)
    task, _ = await board.create(TaskSpec(kind="work", title="bad input", max_attempts=1))
    async with link_to(str(fast.redis_url)) as link:
        cut = fast.model_copy(update={"redis_url": link.url, "connect_retries": 0, "lease_s": 30.0,
                                      "presence": False})

        async def handler(task: Task, ctx: Context) -> str:
            link.cut()
            raise ValueError("cannot handle bad input")

        with capture_logs() as logs:
            async with open_redis(cut) as own:
                agent = Agent(own, cut, AgentCard(name="a1", capabilities=("work",)), handler, claim=False)
                async with running(agent):
                    await board.assign(task.id, "a1", instance=agent.instance)
                    retried = "cannot reach Redis to report a task failed; retrying"
                    await eventually(lambda: _true(any(line["event"] == retried for line in logs)))
                    link.mend()
                    failed = await eventually(lambda: _in_state(board, task.id, "failed"))
    assert failed.reason == "ValueError: cannot handle bad input"
    assert agent.failed == 1
    [first] = [line for line in logs if line["event"] == retried][:1]
    assert (first["task"], first["log_level"], first["error"].startswith("Redis unreachable while ")) == (
        task.id, "warning", True)
    assert not [line for line in logs if line["event"] in ("task could not be started", "failure report refused")]


class Link:
    """A TCP link to the test server that a test can cut and mend: a network partition between one
    client and a real Redis (no fake one). Cut, it drops every connection through it and closes new
    ones as they open."""

    def __init__(self, host: str, port: int, url: str) -> None:
        self.host, self.port, self.url = host, port, url
        self.up = True
        self._open: set[anyio.CancelScope] = set()

    def cut(self) -> None:
        self.up = False
        for scope in self._open:
            scope.cancel()

    def mend(self) -> None:
        self.up = True

    async def serve(self, client: anyio.abc.SocketStream) -> None:
        async with client:
            if not self.up:
                return
            with anyio.CancelScope() as scope, contextlib.suppress(OSError):
                self._open.add(scope)
                try:
                    async with await anyio.connect_tcp(self.host, self.port) as server, \
                            anyio.create_task_group() as tg:
                        tg.start_soon(_pipe, client, server, scope)
                        tg.start_soon(_pipe, server, client, scope)
                finally:
                    self._open.discard(scope)


async def _pipe(source: anyio.abc.SocketStream, sink: anyio.abc.SocketStream, scope: anyio.CancelScope) -> None:
    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        async for chunk in source:
            await sink.send(chunk)
    scope.cancel()  # one side closed: close the other


@asynccontextmanager
async def link_to(url: str) -> AsyncIterator[Link]:
    """A `Link` to the server at `url`; its own `url` is the one to connect through."""
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610  (anyio's typed attribute, not Django)
    link = Link(parts.hostname, parts.port, f"redis://127.0.0.1:{port}{parts.path}")
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, link.serve)
        yield link
        tg.cancel_scope.cancel()

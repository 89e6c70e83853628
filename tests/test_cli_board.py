"""The board CLI (`swarm task ...`, `swarm board`, `swarm agents`, `swarm captain ...`), in-process.

CliRunner runs a command in this process and the command calls anyio.run itself, so these tests
are plain functions; they seed and inspect the board through `sync`, their own short event loop.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

import anyio
import pytest
import structlog
from redis.asyncio import Redis
from typer.testing import CliRunner, Result

from swarm.board import Board, Task, TaskSpec
from swarm.captain import Captain
from swarm.cli import app
from swarm.cli.board import snapshot
from swarm.connection import open_redis, text
from swarm.handlers import BUILTIN_KINDS
from swarm.registry import AgentCard, Registry
from swarm.roster import RosterCard
from swarm.settings import Settings

T = TypeVar("T")
NOT_FOUND = "error: no task t-404 on this board; `swarm task list` shows the ids\n"
STATES = "open, assigned, running, blocked, done, failed, cancelled"


class Cli(Protocol):
    def __call__(self, *args: str, input: str | None = None) -> Result: ...


def sync(settings: Settings, fn: Callable[[Redis], Awaitable[T]]) -> T:
    """Run `fn` against the test server on a short-lived connection of its own."""

    async def go() -> T:
        async with open_redis(settings) as redis:
            return await fn(redis)

    return anyio.run(go)


def on_board(settings: Settings, fn: Callable[[Board], Awaitable[T]]) -> T:
    return sync(settings, lambda r: fn(Board(r, settings)))


def create(settings: Settings, spec: TaskSpec) -> None:
    on_board(settings, lambda b: b.create(spec))


def env_of(settings: Settings) -> dict[str, str]:
    assert settings.redis_url
    return {"SWARM_REDIS_URL": settings.redis_url, "SWARM_NAME": settings.name, "SWARM_HOME": str(settings.home)}


@pytest.fixture
def cli(settings: Settings) -> Cli:
    sync(settings, lambda r: r.flushdb())
    runner = CliRunner()
    env = env_of(settings)

    def invoke(*args: str, input: str | None = None) -> Result:
        try:
            return runner.invoke(app, list(args), env=env, input=input)
        finally:
            # The command pointed structlog at the runner's stderr, closed now; in-process code
            # that logs later in the test must not write to it.
            structlog.reset_defaults()

    return invoke


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.exit_code, result.stdout, result.stderr, result.exception)
    return result.stdout


def data(result: Result) -> Any:
    return json.loads(ok(result))


def refused(result: Result, line: str) -> None:
    """A user mistake: exactly one `error: ...` line on stderr, exit code 1, no traceback."""
    assert (result.exit_code, result.stderr) == (1, line), result.stdout
    assert "Traceback" not in result.output


def make(cli: Cli, kind: str = "audit", title: str = "check secrets", *extra: str) -> str:
    task_id: str = data(cli("task", "create", "--kind", kind, "--title", title, "--json", *extra))["id"]
    return task_id


# --- create, list, show ----------------------------------------------------------------------------
def test_create_prints_the_task_and_list_filters(cli: Cli) -> None:
    assert ok(cli("task", "create", "--kind", "audit", "--title", "check secrets", "--priority", "7")) == (
        "created t-1 (audit, priority 7): check secrets\n"
    )
    created = data(cli("task", "create", "--kind", "docs", "--title", "doc it", "--can", "docs,writing",
                       "--blocked-by", "t-1", "--file", "a.py", "--json"))
    assert (created["id"], created["new"]) == ("t-2", True)
    assert (created["kind"], created["title"], created["state"], created["owner"]) == ("docs", "doc it", "open", None)
    assert (created["caps"], created["blocked_by"], created["files"]) == (["docs", "writing"], ["t-1"], ["a.py"])

    listed = data(cli("task", "list", "--json"))
    assert [(t["id"], t["kind"], t["title"], t["state"], t["owner"]) for t in listed] == [
        ("t-1", "audit", "check secrets", "open", None), ("t-2", "docs", "doc it", "open", None),
    ]
    assert [t["id"] for t in data(cli("task", "list", "--kind", "docs", "--json"))] == ["t-2"]
    assert data(cli("task", "list", "--state", "done", "--json")) == []
    table = ok(cli("task", "list"))
    assert all(text in table for text in ("t-1", "check secrets", "doc it"))


def test_create_with_a_used_key_returns_the_first_task(cli: Cli) -> None:
    first = data(cli("task", "create", "--kind", "audit", "--title", "one", "--key", "k1", "--json"))
    again = data(cli("task", "create", "--kind", "audit", "--title", "two", "--key", "k1", "--json"))
    assert (again["id"], again["title"], again["new"]) == (first["id"], "one", False)
    assert ok(cli("task", "create", "--kind", "audit", "--title", "two", "--key", "k1")) == (
        "t-1 already exists with key k1 (open): one\n"
    )


def test_create_reads_the_body_from_stdin(cli: Cli) -> None:
    created = data(cli("task", "create", "--kind", "docs", "--title", "t", "--body", "-", "--json",
                       input="line one\nline two\n"))
    assert created["body"] == "line one\nline two\n"


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--kind", "Bad Kind"], "error: --kind 'Bad Kind' is not a task kind: use 1-32 characters, a lowercase "
         "letter first, then lowercase letters, digits, '_' or '-' (for example audit)\n"),
        (["--kind", "audit", "--priority", "12"], "error: --priority 12 is not valid (Input should be less than or "
         "equal to 9); use 0 (lowest) to 9 (most urgent)\n"),
        (["--kind", "audit", "--priority", "-1"], "error: --priority -1 is not valid (Input should be greater than or "
         "equal to 0); use 0 (lowest) to 9 (most urgent)\n"),
        (["--kind", "audit", "--max-attempts", "0"], "error: --max-attempts 0 is not valid (Input should be greater "
         "than or equal to 1); use 1 to 100\n"),
        (["--kind", "audit", "--can", "Audit"], "error: --can 'Audit' is not a capability: use comma-separated names "
         "of 1-32 characters, a lowercase letter first, then lowercase letters, digits, '_' or '-' (for example "
         "--can audit,docs), or * for any task\n"),
        (["--kind", "audit", "--blocked-by", "t-404"],
         "error: blocked-by task t-404 does not exist; create it first or drop it\n"),
    ],
)
def test_create_refuses_bad_options(cli: Cli, args: list[str], line: str) -> None:
    refused(cli("task", "create", "--title", "x", *args), line)
    assert data(cli("task", "list", "--json")) == []


def test_create_refuses_an_empty_title_and_a_non_numeric_priority(cli: Cli) -> None:
    refused(cli("task", "create", "--kind", "audit", "--title", ""),
            "error: --title '' is not valid (String should have at least 1 character); give 1-300 characters\n")
    result = cli("task", "create", "--kind", "audit", "--title", "x", "--priority", "high")
    assert result.exit_code == 1
    assert "Invalid value for '--priority': Input should be a valid integer" in result.stderr


def test_list_and_board_refuse_a_bad_state_or_kind(cli: Cli) -> None:
    line = f"error: --state 'nope' is not a task state; use one of: {STATES}\n"
    refused(cli("task", "list", "--state", "nope"), line)
    refused(cli("board", "--state", "nope"), line)
    refused(cli("board", "--kind", "NO"), "error: --kind 'NO' is not a task kind: use 1-32 characters, a lowercase "
            "letter first, then lowercase letters, digits, '_' or '-' (for example audit)\n")


def test_show_prints_the_whole_history(cli: Cli) -> None:
    task_id = make(cli)
    token = data(cli("task", "next", "--agent", "a1", "--can", "audit", "--json"))["token"]
    ok(cli("task", "done", task_id, "--token", str(token), "--agent", "a1", "--result", "no secrets found"))
    shown = data(cli("task", "show", task_id, "--json"))
    assert (shown["id"], shown["state"], shown["owner"], shown["result"]) == (task_id, "done", "a1", "no secrets found")
    assert [(e["event"], e["state"], e["owner"], e["token"], e["detail"]) for e in shown["history"]] == [
        ("created", "open", None, 0, "check secrets"), ("claimed", "running", "a1", 1, ""),
        ("done", "done", "a1", 1, "no secrets found"),
    ]
    assert all(isinstance(e["ts"], int) and e["id"] for e in shown["history"])
    human = ok(cli("task", "show", task_id))
    assert human.startswith("t-1 done audit, priority 5: check secrets\n")
    assert all(text in human for text in ("result: no secrets found", "claimed", "history"))


@pytest.mark.parametrize(
    "args",
    [
        ["show", "t-404"], ["why", "t-404"], ["assign", "t-404", "--to", "a1"], ["reassign", "t-404", "--to", "a1"],
        ["cancel", "t-404"], ["unblock", "t-404"], ["start", "t-404", "--token", "1", "--agent", "a1"],
        ["heartbeat", "t-404", "--token", "1", "--agent", "a1"], ["done", "t-404", "--token", "1", "--agent", "a1"],
        ["fail", "t-404", "--token", "1", "--agent", "a1", "--reason", "r"], ["block", "t-404", "--token", "1",
                                                                              "--agent", "a1", "--reason", "r"],
        ["release", "t-404", "--token", "1", "--agent", "a1"],
    ],
)
def test_a_wrong_id_is_one_line(cli: Cli, args: list[str]) -> None:
    refused(cli("task", *args), NOT_FOUND)


def test_an_id_with_control_characters_is_refused_before_it_reaches_the_terminal(cli: Cli) -> None:
    refused(cli("task", "show", "t-1\x1b[2J"),
            "error: task id 't-1\\x1b[2J' is not valid: ids look like t-42; `swarm task list` shows them\n")


def test_user_text_is_neutralised_in_human_output(cli: Cli) -> None:
    make(cli, "audit", "evil \x1b[31mred[/] [bold]x")
    for args in (["board"], ["task", "list"], ["task", "show", "t-1"]):
        shown = ok(cli(*args))
        assert "\x1b" not in shown
        assert "evil \ufffd[31mred[/] [bold]x" in shown


# --- the shell-agent path ------------------------------------------------------------------------
def test_next_claims_the_most_urgent_task_it_can_do(cli: Cli) -> None:
    make(cli, "audit", "low", "--priority", "1")
    make(cli, "audit", "high", "--priority", "8")
    make(cli, "docs", "not mine", "--priority", "9")
    claimed = data(cli("task", "next", "--agent", "a1", "--can", "audit,tests", "--json"))
    assert (claimed["id"], claimed["token"], claimed["state"], claimed["owner"], claimed["title"]) == (
        "t-2", 1, "running", "a1", "high")
    human = ok(cli("task", "next", "--agent", "a2", "--can", "audit"))
    assert human.startswith("claimed t-1 token 1: low\n")
    assert "swarm task done t-1 --token 1 --agent a2" in human
    assert data(cli("task", "next", "--agent", "a3", "--can", "*", "--json"))["id"] == "t-3"


def test_next_exits_3_when_nothing_is_ready(cli: Cli) -> None:
    result = cli("task", "next", "--agent", "a1", "--can", "audit,docs", "--json")
    assert (result.exit_code, result.stdout) == (3, "")
    assert result.stderr == "no ready task for a1 (can audit,docs); try again later\n"
    make(cli, "security", "not for a1")
    assert cli("task", "next", "--agent", "a1", "--can", "audit", "--can", "docs").exit_code == 3


def test_next_refuses_bad_options(cli: Cli) -> None:
    refused(cli("task", "next", "--agent", "a1"), "error: --can is missing: name your capabilities, for example "
            "--can audit,docs (or --can '*' for any task)\n")
    refused(cli("task", "next", "--agent", "a 1", "--can", "audit"), "error: --agent 'a 1' is not an agent name: use "
            "1-64 letters, digits, '_', '.' or '-' (for example agent-1)\n")
    refused(cli("task", "next", "--agent", "a1", "--can", "audit,Docs!"), "error: --can 'Docs!' is not a capability: "
            "use comma-separated names of 1-32 characters, a lowercase letter first, then lowercase letters, digits, "
            "'_' or '-' (for example --can audit,docs), or * for any task\n")


def test_owner_verbs_and_stale_tokens(cli: Cli, settings: Settings) -> None:
    task_id = make(cli)
    claimed = data(cli("task", "next", "--agent", "a1", "--can", "audit", "--json"))
    assert ok(cli("task", "heartbeat", task_id, "--token", "1", "--agent", "a1")).startswith("t-1 lease extended: ")
    assert data(cli("task", "heartbeat", task_id, "--token", "1", "--agent", "a1",
                    "--json"))["lease_until"] >= claimed["lease_until"]
    refused(cli("task", "done", task_id, "--token", "7", "--agent", "a1"),
            "error: token 7 for task t-1 was never issued: use the token your claim or assignment gave you\n")
    assert ok(cli("task", "reassign", task_id, "--to", "a2")) == "reassigned t-1 to a2 (token 2)\n"
    refused(cli("task", "heartbeat", task_id, "--token", "1", "--agent", "a1"),
            "error: token 1 for task t-1 is stale: the task moved on since (it is assigned now); drop it\n")
    assert ok(cli("task", "start", task_id, "--token", "2", "--agent", "a2")).startswith("t-1 running; lease ")
    assert ok(cli("task", "done", task_id, "--token", "2", "--agent", "a2", "--result", "-",
                  input="all clean")) == "t-1 done\n"
    assert on_board(settings, lambda b: b.get(task_id)).result == "all clean"
    refused(cli("task", "done", task_id, "--token", "2", "--agent", "a2"),
            "error: task t-1 is done; only an assigned or running task can do that\n")


def test_owner_verbs_need_the_owner_and_refuse_anyone_else(cli: Cli) -> None:
    task_id = make(cli)
    ok(cli("task", "next", "--agent", "a1", "--can", "audit"))
    refused(cli("task", "done", task_id, "--token", "1"),
            "error: --agent is missing: name the task's owner, for example "
            "--agent agent-1 (or set SWARM_AGENT)\n")
    refused(cli("task", "done", task_id, "--token", "1", "--agent", "mallory"),
            "error: task t-1 is owned by a1, not mallory\n")
    assert data(cli("task", "show", task_id, "--json"))["state"] == "running"


def test_fail_retries_after_a_backoff_or_fails_for_good(cli: Cli) -> None:
    task_id = make(cli, "audit", "flaky")
    ok(cli("task", "next", "--agent", "a1", "--can", "audit"))
    assert ok(cli("task", "fail", task_id, "--token", "1", "--agent", "a1", "--reason", "timeout")) == (
        "t-1 will be retried (attempt 1 of 3 failed): timeout\n")
    shown = data(cli("task", "show", task_id, "--json"))
    assert (shown["state"], shown["reason"], shown["owner"]) == ("open", "timeout", None)
    refused(cli("task", "assign", task_id, "--to", "a1"),
            f"error: task t-1 is backing off until {shown['not_before']} (ms) after a failure\n")
    other = make(cli, "docs", "hopeless")
    ok(cli("task", "next", "--agent", "a1", "--can", "docs"))
    failed = data(cli("task", "fail", other, "--token", "1", "--agent", "a1", "--reason", "no such file",
                      "--no-retry", "--json"))
    assert (failed["state"], failed["reason"]) == ("failed", "no such file")
    assert cli("task", "fail", other, "--token", "1", "--agent", "a1").exit_code == 1  # --reason is required


def test_block_and_unblock(cli: Cli) -> None:
    task_id = make(cli)
    ok(cli("task", "next", "--agent", "a1", "--can", "audit"))
    assert ok(cli("task", "block", task_id, "--token", "1", "--agent", "a1", "--reason", "needs a decision")) == (
        "t-1 blocked: needs a decision; `swarm task unblock t-1` reopens it\n")
    assert "t-1 is blocked: needs a decision" in data(cli("task", "why", task_id, "--json"))["why"]
    refused(cli("task", "done", task_id, "--token", "1", "--agent", "a1"),
            "error: token 1 for task t-1 is stale: the task moved on since (it is blocked now); drop it\n")
    assert ok(cli("task", "unblock", task_id, "--note", "decided")) == "unblocked t-1; it is open again\n"
    refused(cli("task", "unblock", task_id), "error: task t-1 is open, not blocked\n")
    claimed = data(cli("task", "next", "--agent", "a2", "--can", "audit", "--json"))
    assert (claimed["id"], claimed["token"]) == (task_id, 3)
    assert ok(cli("task", "release", task_id, "--token", "3", "--agent", "a2")) == "released t-1; it is open again\n"
    assert data(cli("task", "show", task_id, "--json"))["attempts"] == 1  # a release is not a failed attempt


# --- a human steering -----------------------------------------------------------------------------
def test_assign_reassign_cancel(cli: Cli, settings: Settings) -> None:
    task_id = make(cli)
    assert ok(cli("task", "assign", task_id, "--to", "a1")) == "assigned t-1 to a1 (token 1)\n"
    inbox = cast(list[Any], sync(settings, lambda r: r.xrange(Board(r, settings).keys.inbox("a1"))))
    assert json.loads(inbox[0][1][b"m"])["body"]["task_id"] == task_id
    refused(cli("task", "assign", task_id, "--to", "a2"),
            "error: task t-1 is assigned by a1, not open; use reassign to move it\n")
    moved = data(cli("task", "reassign", task_id, "--to", "a2", "--json"))
    assert (moved["owner"], moved["token"], moved["state"]) == ("a2", 2, "assigned")
    refused(cli("task", "reassign", task_id, "--to", "a2"), "error: task t-1 is already assigned by a2\n")
    assert ok(cli("task", "cancel", task_id, "--reason", "no longer needed")) == "cancelled t-1: no longer needed\n"
    refused(cli("task", "cancel", task_id),
            "error: task t-1 is cancelled, a terminal state; it never changes again\n")
    refused(cli("task", "assign", task_id, "--to", "a1"), "error: task t-1 is cancelled by a2, not open\n")
    refused(cli("task", "assign", task_id, "--to", "@all"), "error: --to '@all' is not an agent name: use 1-64 "
            "letters, digits, '_', '.' or '-' (for example agent-1)\n")


def test_assign_refuses_a_task_that_waits_on_another(cli: Cli) -> None:
    first = make(cli)
    second = make(cli, "docs", "after", "--blocked-by", first)
    refused(cli("task", "assign", second, "--to", "a1"), "error: task t-2 waits on 1 unfinished blocked-by task(s)\n")
    why = data(cli("task", "why", second, "--json"))
    assert why == {"id": second, "why": "t-2 is open but waits on blocked-by t-1 (open)."}
    assert ok(cli("task", "why", second)) == "t-2 is open but waits on blocked-by t-1 (open).\n"


def test_why_matches_the_captain(cli: Cli, settings: Settings) -> None:
    task_id = make(cli)
    expected = sync(settings, lambda r: Captain(r, settings).why(task_id))
    assert expected.startswith("t-1 is ready but no live agent can do [audit]")
    assert data(cli("task", "why", task_id, "--json")) == {"id": task_id, "why": expected}


# --- board, agents, captain -----------------------------------------------------------------------
def test_board_counts_and_tables(cli: Cli) -> None:
    assert ok(cli("board")) == (
        "swarm board\nno tasks to show\nopen 0 · assigned 0 · running 0 · blocked 0 · done 0 · failed 0 · cancelled 0"
        "  (0 tasks)\n"
    )
    make(cli, "audit", "first")
    make(cli, "audit", "urgent", "--priority", "9")
    make(cli, "docs", "gone")
    ok(cli("task", "cancel", "t-3"))
    view = data(cli("board", "--json"))
    assert view["counts"] == {"open": 2, "assigned": 0, "running": 0, "blocked": 0, "done": 0, "failed": 0,
                              "cancelled": 1}
    assert [t["id"] for t in view["tasks"]] == ["t-2", "t-1"]  # active only, in claim order
    assert {"id", "kind", "title", "state", "owner"} <= set(view["tasks"][0])
    assert [t["id"] for t in data(cli("board", "--all", "--json"))["tasks"]] == ["t-1", "t-2", "t-3"]
    assert [t["id"] for t in data(cli("board", "--state", "cancelled", "--json"))["tasks"]] == ["t-3"]
    assert data(cli("board", "--kind", "docs", "--json"))["tasks"] == []
    human = ok(cli("board"))
    assert "urgent" in human
    assert "first" in human
    assert "gone" not in human
    assert "open 2 · assigned 0 · running 0 · blocked 0 · done 0 · failed 0 · cancelled 1  (3 tasks)" in human
    refused(cli("board", "--watch", "--json"), "error: --watch and --json do not combine; follow changes as JSON "
            "with `swarm tail --stream events --json`\n")


def test_board_watch_redraws_on_board_events(cli: Cli, settings: Settings) -> None:
    stop = threading.Event()

    def create_until_stopped() -> None:  # keeps events coming, whenever the watcher starts reading
        n = 0
        while not stop.wait(0.1):
            n += 1
            create(settings, TaskSpec(kind="audit", title=f"new {n}"))

    feeder = threading.Thread(target=create_until_stopped)
    feeder.start()
    started = time.monotonic()
    try:
        result = cli("board", "--watch", "--count", "2", "--interval", "20")
    finally:
        stop.set()
        feeder.join()
    # Woken by an event, not by the 20 s fallback interval: correctness, not a timing goal.
    assert time.monotonic() - started < 10
    assert "swarm board" in ok(result)
    assert "new 1" in result.stdout


def test_agents_show_liveness_and_load(cli: Cli, settings: Settings) -> None:
    assert ok(cli("agents")) == "no agents registered; start one with `swarm agent run --name NAME --can CAPS`\n"
    assert data(cli("agents", "--json")) == []

    async def seed(r: Redis) -> None:
        registry = Registry(r, settings)
        await registry.register(AgentCard(name="a1", capabilities=("audit", "docs"), concurrency=2), "i-1")
        await registry.register(AgentCard(name="a2", capabilities=("docs",)), "i-2")
        await registry.deregister("a2", "i-2")

    sync(settings, seed)
    make(cli)
    ok(cli("task", "next", "--agent", "a1", "--can", "audit"))
    rows = data(cli("agents", "--json"))
    assert [(a["name"], a["capabilities"], a["concurrency"], a["liveness"], a["load"], a["tasks"]) for a in rows] == [
        ("a1", ["audit", "docs"], 2, "alive", 1, ["t-1"]), ("a2", ["docs"], 1, "gone", 0, []),
    ]
    assert rows[0]["last_seen"] > 0
    assert rows[0]["instance"] == "i-1"
    human = ok(cli("agents"))
    assert all(text in human for text in ("a1", "audit,docs", "1/2", "alive", "gone"))


def test_captain_status(cli: Cli, settings: Settings) -> None:
    result = cli("captain", "status")
    assert (result.exit_code, result.stdout) == (1, "no captain leads (last epoch 0); `swarm captain run` starts one\n")
    result = cli("captain", "status", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {"leading": False, "instance": None, "epoch": None, "lease_ms": None,
                                         "last_epoch": 0}
    assert sync(settings, lambda r: Captain(r, settings, instance="cap-1").elect()) == 1
    info = data(cli("captain", "status", "--json"))
    assert (info["leading"], info["instance"], info["epoch"], info["last_epoch"]) == (True, "cap-1", 1, 1)
    assert 0 < info["lease_ms"] <= settings.leader_lease_s * 1000
    assert ok(cli("captain", "status")).startswith("captain cap-1 leads: epoch 1, lease ")


@pytest.fixture
def captain_process(cli: Cli, settings: Settings) -> Iterator[subprocess.Popen[str]]:
    swarm = Path(sys.executable).parent / "swarm"
    proc = subprocess.Popen([str(swarm), "captain", "run"], env={**os.environ, **env_of(settings)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


def test_captain_run_assigns_and_resigns_on_sigterm(
    cli: Cli, settings: Settings, captain_process: subprocess.Popen[str]
) -> None:
    deadline = time.monotonic() + 20
    while cli("captain", "status").exit_code != 0:
        assert captain_process.poll() is None, captain_process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    sync(settings, lambda r: Registry(r, settings).register(AgentCard(name="a1", capabilities=("audit",)), "i-1"))
    task_id = make(cli)
    while data(cli("task", "show", task_id, "--json"))["state"] != "running":  # the captain hands out running
        assert time.monotonic() < deadline
        time.sleep(0.05)
    captain_process.send_signal(signal.SIGTERM)
    stdout, stderr = captain_process.communicate(timeout=15)
    assert captain_process.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert stdout.splitlines()[-1].endswith("stopped after 1 assignment(s); leader lease released")
    assert cli("captain", "status").exit_code == 1  # resigned at once, not left to expire


async def test_board_view_survives_tasks_that_change_state_while_it_reads(redis: Redis, settings: Settings) -> None:
    # `swarm board --watch` failed with "ValueError: tuple.index(x): x not in tuple" when a task
    # listed under an active state was finished before its fields were read.
    class Racing(Board):
        """Cancels every task between reading a state's index and reading the tasks, once: what a
        worker finishing tasks in the middle of a redraw does."""

        raced = False

        async def _many(self, ids: Sequence[bytes | str]) -> list[Task]:
            if ids and not self.raced:
                self.raced = True
                for task_id in ids:
                    await self.cancel(text(task_id), "finished during the redraw")
            return await super()._many(ids)

    board = Racing(redis, settings)
    for title in ("first", "second"):
        await board.create(TaskSpec(kind="audit", title=title))
    view = await snapshot(board, None, None, False, 200)
    assert [(t.id, t.state) for t in view["tasks"]] == [("t-1", "cancelled"), ("t-2", "cancelled")]
    assert view["counts"]["cancelled"] == 2


def test_assign_refuses_an_agent_without_the_tasks_capability_unless_forced(cli: Cli, settings: Settings) -> None:
    task_id = make(cli, "manual", "paint the fence")
    sync(settings, lambda r: Registry(r, settings).register(AgentCard(name="a1", capabilities=("audit", "docs")),
                                                             "i1"))
    refused(cli("task", "assign", task_id, "--to", "a1"),
            "error: a1 cannot do task t-1: it needs manual, a1 can audit,docs; give it to an agent that can, "
            "or add --force\n")
    assert data(cli("task", "show", task_id, "--json"))["state"] == "open"
    assert ok(cli("task", "assign", task_id, "--to", "a1", "--force")) == "assigned t-1 to a1 (token 1)\n"


def test_an_agent_run_without_can_takes_only_what_its_handler_does(cli: Cli) -> None:
    refused(cli("agent", "run", "--name", "a1", "--handler", "cmd:echo hi"),
            "error: --can is missing: name the task kinds handler 'cmd:echo hi' does, for example --can audit,docs "
            "(or --can '*' for any kind)\n")
    assert RosterCard(name="a1").capabilities == BUILTIN_KINDS  # the built-in handler's own kinds, not '*'


# --- operator verbs -------------------------------------------------------------------------------
def test_cli_retry_edit_delay_and_list(cli: Cli) -> None:
    created = data(cli("task", "create", "--kind", "audit", "--title", "later", "--in", "1h", "--json"))
    assert created["not_before"] > time.time() * 1000 + 3_500_000
    assert ok(cli("task", "edit", "t-1", "--priority", "8")) == "edited t-1 (priority 8): later\n"
    refused(cli("task", "create", "--kind", "audit", "--title", "x", "--in", "soon"),
            "error: --in 'soon' is not a duration: use a number with s, m, h, d or w (for example 10m or 7d)\n")
    refused(cli("task", "create", "--kind", "audit", "--title", "x", "--at", "tomorrow"),
            "error: --at 'tomorrow' is not a time: use ISO 8601, for example 2026-12-01T09:00 or "
            "2026-12-01T09:00+01:00\n")
    ok(cli("task", "create", "--kind", "audit", "--title", "flaky", "--key", "f1", "--max-attempts", "1"))
    ok(cli("task", "next", "--agent", "a1", "--can", "audit"))
    ok(cli("task", "fail", "t-2", "--token", "1", "--agent", "a1", "--reason", "boom"))
    assert ok(cli("task", "create", "--kind", "audit", "--title", "flaky", "--key", "f1")) == (
        "t-2 already exists with key f1 (failed): flaky; `swarm task retry t-2` runs it again\n")
    assert ok(cli("task", "retry", "--state", "failed")) == "retrying 1 failed task(s)\n"
    assert [t["id"] for t in data(cli("task", "list", "--search", "FLAK", "--json"))] == ["t-2"]
    assert [t["id"] for t in data(cli("task", "list", "--limit", "1", "--page", "2", "--json"))] == ["t-2"]
    refused(cli("task", "retry"), "error: give a task id, or --state failed (or cancelled) to retry every such task\n")


def test_cli_create_from_json_lines(cli: Cli, tmp_path: Path) -> None:
    lines = tmp_path / "tasks.jsonl"
    lines.write_text('{"kind": "docs", "title": "a"}\n\n{"kind": "docs", "title": "b", "key": "b"}\n')
    assert ok(cli("task", "create", "--from", str(lines))) == "created 2 task(s); 0 already existed (same key)\n"
    assert data(cli("task", "create", "--from", "-", "--json", input='{"kind": "docs", "title": "b", "key": "b"}\n')
                ) == [{"id": "t-2", "new": False}]
    lines.write_text('{"kind": "docs", "title": "c"}\n{"kind": "docs"}\n')
    refused(cli("task", "create", "--from", str(lines)),
            f"error: {lines}, line 2: not a task spec (Field required); each line is a JSON object like "
            '{"kind": "docs", "title": "Document swarm.bus"}\n')
    assert len(data(cli("task", "list", "--json"))) == 2  # nothing of the bad file was created


def test_cli_pause_resume_and_purge(cli: Cli) -> None:
    make(cli, "docs", "write")
    assert ok(cli("pause", "docs")) == (
        "paused docs: no claim or assignment hands out its tasks; `swarm resume docs` undoes it\n")
    assert data(cli("board", "--json"))["paused"] == ["docs"]
    assert "paused: docs" in ok(cli("board"))
    assert cli("task", "next", "--agent", "a1", "--can", "docs").exit_code == 3
    assert ok(cli("resume", "docs")) == "resumed docs: its tasks are handed out again\n"
    ok(cli("task", "next", "--agent", "a1", "--can", "docs"))
    ok(cli("task", "done", "t-1", "--token", "1", "--agent", "a1"))
    assert ok(cli("board", "purge", "--older-than", "1d")) == (
        "purged 0 finished task(s) (done, failed, cancelled) older than 1d\n")
    assert data(cli("board", "purge", "--older-than", "0s", "--state", "done", "--json"))["purged"] == 1
    refused(cli("board", "purge", "--older-than", "1d", "--state", "open"),
            "error: --state 'open' cannot be purged: only finished tasks are (done, failed, cancelled)\n")
    refused(cli("pause", "Docs!"), "error: KIND 'Docs!' is not a task kind: use 1-32 characters, a lowercase "
            "letter first, then lowercase letters, digits, '_' or '-' (for example audit)\n")


def test_cli_acl_add_list_rotate_remove(cli: Cli, tmp_path: Path) -> None:
    secret = tmp_path / "bot.pass"
    try:
        assert ok(cli("acl", "add", "bot-1", "--out", str(secret))) == (
            f"added agent bot-1; its password is in {secret} (mode 0600)\n")
        assert secret.stat().st_mode & 0o777 == 0o600
        assert len(secret.read_text().strip()) >= 40
        assert data(cli("acl", "list", "--json")) == [{"name": "bot-1", "role": "agent", "enabled": True}]
        refused(cli("acl", "add", "bot-1"), "error: Redis user 'bot-1' exists already; `swarm acl rotate bot-1` "
                "gives it a new password, `swarm acl remove bot-1` deletes it\n")
        refused(cli("acl", "add", "x", "--role", "boss"), "error: --role 'boss' is not a role: use agent, captain or "
                "viewer\n")
        rotated = ok(cli("acl", "rotate", "bot-1"))
        assert rotated.startswith("rotated bot-1; its password (shown once, keep it safe):\n")
        assert ok(cli("acl", "refresh")) == "refreshed bot-1 (agent)\n"
        refused(cli("acl", "refresh", "nobody"), "error: no Redis user 'nobody' for this swarm; `swarm acl list` "
                "shows them\n")
    finally:
        cli("acl", "remove", "bot-1")
    assert data(cli("acl", "list", "--json")) == []

"""The shell agent's verbs: `swarm inbox`, `swarm task progress`, and what the shell verbs import."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar, cast

import anyio
import pytest
import structlog
from redis.asyncio import Redis
from typer.testing import CliRunner, Result

from swarm.board import Board, TaskSpec
from swarm.bus import Bus
from swarm.cli import app
from swarm.connection import open_redis
from swarm.protocol import ChatBody, Message, decode, message
from swarm.settings import Settings
from tests.helpers import ROOT

T = TypeVar("T")


class Cli(Protocol):
    def __call__(self, *args: str) -> Result: ...


def sync(settings: Settings, fn: Callable[[Redis], Awaitable[T]]) -> T:
    async def go() -> T:
        async with open_redis(settings) as redis:
            return await fn(redis)

    return anyio.run(go)


def send(settings: Settings, text: str, to: str = "a1", sender: str = "cli") -> None:
    sync(settings, lambda r: Bus(r, settings).publish(message(ChatBody(text=text), sender=sender, to=to)))


def bus_messages(settings: Settings) -> list[Message]:
    """Every message on the broadcast stream, oldest first."""
    rows = sync(settings, lambda r: r.xrange(f"swarm:{{{settings.name}}}:bus"))
    return [decode(fields[b"m"]) for _, fields in cast(list[tuple[bytes, dict[bytes, bytes]]], rows)]


@pytest.fixture
def cli(settings: Settings) -> Cli:
    sync(settings, lambda r: r.flushdb())
    assert settings.redis_url
    env = {"SWARM_REDIS_URL": settings.redis_url, "SWARM_NAME": settings.name, "SWARM_HOME": str(settings.home)}

    def invoke(*args: str) -> Result:
        try:
            return CliRunner().invoke(app, list(args), env=env)
        finally:
            structlog.reset_defaults()  # the command pointed structlog at the runner's closed stderr

    return invoke


def test_inbox_shows_each_message_once(cli: Cli, settings: Settings) -> None:
    send(settings, "please look at t-3", sender="captain")
    send(settings, "deploy freeze at 14:00", to="@all")  # sent before a1 first read: history, not mail
    first = cli("inbox", "--agent", "a1")
    assert first.exit_code == 0, first.output
    [line] = first.stdout.splitlines()
    assert line.endswith(" captain → a1: please look at t-3")
    assert cli("inbox", "--agent", "a1").stdout == "no new messages for a1\n"
    send(settings, "one more")
    send(settings, "to everyone now", to="@all", sender="ops")
    got = json.loads(cli("inbox", "--agent", "a1", "--json").stdout)
    assert [(m["sender"], m["to"], m["kind"], m["text"]) for m in got] == [
        ("cli", "a1", "chat", "one more"), ("ops", "@all", "chat", "to everyone now")]
    assert json.loads(cli("inbox", "--agent", "a1", "--json").stdout) == []


def test_inbox_wait_returns_with_the_first_message(cli: Cli, settings: Settings) -> None:
    cli("inbox", "--agent", "a1")  # joined: broadcasts count from here

    async def later(redis: Redis) -> None:
        await anyio.sleep(0.4)
        await Bus(redis, settings).publish(message(ChatBody(text="hello"), sender="ops", to="@all"))

    import threading  # noqa: PLC0415

    sender = threading.Thread(target=sync, args=(settings, later))
    started = time.monotonic()
    sender.start()
    result = cli("inbox", "--agent", "a1", "--wait", "10", "--json")
    sender.join()
    assert [m["text"] for m in json.loads(result.stdout)] == ["hello"]
    assert 0.3 < time.monotonic() - started < 5
    started = time.monotonic()
    assert cli("inbox", "--agent", "a1", "--wait", "0.3").stdout == "no new messages for a1\n"
    assert time.monotonic() - started >= 0.3


def test_inbox_needs_an_agent(cli: Cli) -> None:
    result = cli("inbox")
    assert (result.exit_code, result.stderr) == (
        1, "error: --agent is missing: name whose mail to read, for example --agent agent-1 (or set SWARM_AGENT)\n")
    result = cli("inbox", "--agent", "a b")
    assert (result.exit_code, result.stderr) == (
        1, "error: --agent 'a b' is not an agent name: use 1-64 letters, digits, '_', '.' or '-' (for example "
           "agent-1)\n")


def test_task_progress_says_it_on_the_bus_and_extends_the_lease(cli: Cli, settings: Settings) -> None:
    sync(settings, lambda r: Board(r, settings).create(TaskSpec(kind="docs", title="Document it")))
    claimed = json.loads(cli("task", "next", "--agent", "a1", "--can", "docs", "--json").stdout)
    before = claimed["lease_until"]
    time.sleep(0.01)
    result = cli("task", "progress", "t-1", "--token", "1", "--agent", "a1", "--text", "tests pass", "--json")
    assert result.exit_code == 0, result.output
    after = json.loads(result.stdout)
    assert (after["id"], after["state"]) == ("t-1", "running")
    assert after["lease_until"] > before
    said = bus_messages(settings)[-1]
    assert (said.sender, said.kind, said.body.model_dump(exclude_none=True)) == (
        "a1", "status", {"text": "tests pass", "state": "working", "task_id": "t-1"})
    human = cli("task", "progress", "t-1", "--token", "1", "--agent", "a1", "--text", "docs drafted")
    assert human.stdout.startswith("t-1 progress: docs drafted (lease ")


def test_task_progress_is_refused_to_anyone_but_the_owner(cli: Cli, settings: Settings) -> None:
    sync(settings, lambda r: Board(r, settings).create(TaskSpec(kind="docs", title="Document it")))
    cli("task", "next", "--agent", "a1", "--can", "docs")
    result = cli("task", "progress", "t-1", "--token", "1", "--agent", "mallory", "--text", "mine now")
    assert (result.exit_code, result.stderr) == (1, "error: task t-1 is owned by a1, not mallory\n")
    result = cli("task", "progress", "t-1", "--token", "1", "--text", "who am I")
    assert (result.exit_code, result.stderr) == (
        1, "error: --agent is missing: name the task's owner, for example --agent agent-1 (or set SWARM_AGENT)\n")
    assert [m.body.model_dump().get("text") for m in bus_messages(settings)] == ["working on t-1: Document it"]


NOT_FOR_SHELL_VERBS = ("swarm.discovery", "swarm.metrics", "prometheus_client", "swarm.cli.demo", "swarm.captain",
                       "swarm.agent", "swarm.web", "swarm.mcp", "mcp", "fastapi", "uvicorn", "rich.live",
                       "rich.progress")


@pytest.mark.parametrize("verb", [
    ["task", "next", "--agent", "a1", "--can", "docs", "--json"],
    ["task", "progress", "t-1", "--token", "1", "--agent", "a1", "--text", "x", "--json"],
    ["task", "done", "t-1", "--token", "1", "--agent", "a1", "--json"],
    ["task", "fail", "t-1", "--token", "1", "--agent", "a1", "--reason", "x", "--json"],
    ["task", "show", "t-1", "--json"],
    ["inbox", "--agent", "a1", "--json"],
])
def test_shell_verbs_import_only_what_they_use(settings: Settings, verb: list[str]) -> None:
    assert settings.redis_url
    code = ("import sys\nfrom swarm.cli import main\nsys.argv = ['swarm', *sys.argv[1:]]\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\nprint(' '.join(sorted(sys.modules)), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code, *verb], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={"SWARM_REDIS_URL": settings.redis_url, "SWARM_NAME": settings.name,
                               "SWARM_HOME": str(settings.home), "PATH": "/usr/bin:/bin"}, check=False)
    modules = done.stderr.splitlines()[-1].split()
    assert "swarm.board" in modules  # it did run
    assert [m for m in modules if m.startswith(NOT_FOR_SHELL_VERBS)] == []

"""`swarm send|broadcast|tail|dlq` against a real server: through typer's CliRunner, and `swarm tail`
as a real process following the bus while garbage arrives."""

from __future__ import annotations

import json
import os
import sys
from functools import partial
from pathlib import Path
from typing import Any, cast

import anyio
import pytest
from redis.asyncio import Redis
from typer.testing import CliRunner, Result

from swarm.bus import Bus
from swarm.cli import app
from swarm.keys import FIELD
from swarm.protocol import ChatBody, decode, message
from swarm.settings import Settings

BAD_RECIPIENT = "error: recipient 'bad name' is not valid: use an agent name, @all, @captain or @role:NAME\n"


@pytest.fixture
def env(settings: Settings, tmp_path: Path) -> dict[str, str | None]:
    """The environment a user of the test swarm would have; `None` unsets a variable."""
    return {
        "SWARM_REDIS_URL": settings.redis_url, "SWARM_NAME": settings.name, "SWARM_HOME": str(tmp_path / "home"),
        "SWARM_AGENT": None, "SWARM_LOG_LEVEL": "warning", "SWARM_BLOCK_MS": "50",
    }


async def swarm(env: dict[str, str | None], *args: str) -> Result:
    """Run `swarm ARGS` in-process. In a worker thread: the command runs its own event loop."""
    invoke = partial(CliRunner().invoke, app, list(args), env=env)
    return await anyio.to_thread.run_sync(invoke)


async def entries(redis: Redis, stream: str) -> list[Any]:
    """The decoded messages of a stream, oldest first."""
    rows = cast(list[tuple[bytes, dict[bytes, bytes]]], await redis.xrange(stream))
    return [decode(fields[FIELD.encode()]) for _, fields in rows]


async def xadd(redis: Redis, stream: str, fields: dict[str, bytes] | dict[str, str]) -> str:
    """A raw XADD, as any client (or `redis-cli`) may do; returns the entry id."""
    entry = cast(bytes, await redis.xadd(stream, fields))  # type: ignore[arg-type]
    return entry.decode()


# --- send and broadcast ------------------------------------------------------------------------


async def test_send_writes_a_chat_to_the_agents_inbox(env: dict[str, str | None], bus: Bus, redis: Redis) -> None:
    result = await swarm(env, "send", "agent-2", "review src/auth.py please")
    assert result.exit_code == 0, result.stderr
    [msg] = await entries(redis, bus.keys.inbox("agent-2"))
    rows = cast(list[tuple[bytes, Any]], await redis.xrange(bus.keys.inbox("agent-2")))
    [entry] = [e.decode() for e, _ in rows]
    assert result.stdout == f"sent {msg.id} to agent-2 (entry {entry})\n"
    assert (msg.kind, msg.sender, msg.to, msg.priority) == ("chat", "cli", "agent-2", "normal")
    assert msg.body == ChatBody(text="review src/auth.py please")


async def test_send_takes_kind_sender_and_urgency(env: dict[str, str | None], bus: Bus, redis: Redis) -> None:
    result = await swarm(env, "send", "@role:audit", "blocked", "--kind", "status", "--from", "agent-1", "--urgent")
    assert result.exit_code == 0, result.stderr
    [msg] = await entries(redis, bus.keys.role("audit"))
    assert (msg.kind, msg.sender, msg.to, msg.priority, msg.body.text) == (
        "status", "agent-1", "@role:audit", "urgent", "blocked"
    )


async def test_send_names_the_sender_from_swarm_agent(env: dict[str, str | None], bus: Bus, redis: Redis) -> None:
    result = await swarm({**env, "SWARM_AGENT": "agent-7"}, "send", "@captain", "done")
    assert result.exit_code == 0, result.stderr
    [msg] = await entries(redis, bus.keys.captain)
    assert msg.sender == "agent-7"


async def test_broadcast_goes_to_the_bus(env: dict[str, str | None], bus: Bus, redis: Redis) -> None:
    result = await swarm(env, "broadcast", "standing by", "--kind", "status")
    assert result.exit_code == 0, result.stderr
    [msg] = await entries(redis, bus.keys.bus)
    assert (msg.kind, msg.to, msg.body.text) == ("status", "@all", "standing by")
    assert result.stdout.startswith(f"sent {msg.id} to @all (entry ")


async def test_send_to_a_bad_recipient_says_what_to_use(env: dict[str, str | None], redis: Redis) -> None:
    result = await swarm(env, "send", "bad name", "hi")
    assert (result.exit_code, result.stdout, result.stderr) == (1, "", BAD_RECIPIENT)
    assert await redis.keys("*") == []


@pytest.mark.anyio  # explicit: the conftest's automatic marking comes too late for parametrized tests
@pytest.mark.parametrize(("args", "says"), [
    (["send"], "Missing argument 'to'."),
    (["send", "agent-1"], "Missing argument 'text'."),
    (["broadcast"], "Missing argument 'text'."),
    (["send", "agent-1", "hi", "--kind", "gossip"], "Invalid value for '--kind'"),
    (["tail", "--count", "-1"], "Invalid value for '--count'"),
])
async def test_usage_mistakes_exit_1_with_the_problem_on_stderr(
    env: dict[str, str | None], redis: Redis, args: list[str], says: str
) -> None:
    result = await swarm(env, *args)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert says in result.stderr
    assert await redis.keys("*") == []


async def test_a_bad_setting_is_one_line_naming_the_variable(env: dict[str, str | None]) -> None:
    result = await swarm({**env, "SWARM_REDIS_URL": "http://localhost:6379"}, "broadcast", "hi")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: SWARM_REDIS_URL: ")
    assert "'http://localhost:6379' must start with redis://, rediss:// or unix://" in result.stderr
    assert result.stderr.count("\n") == 1


async def test_an_unreachable_server_is_one_line_saying_what_to_check(env: dict[str, str | None]) -> None:
    result = await swarm({**env, "SWARM_REDIS_URL": "redis://127.0.0.1:1/0", "SWARM_CONNECT_RETRIES": "0"},
                         "broadcast", "hi")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: Redis unreachable while connecting to redis://127.0.0.1:1/0: ")
    assert result.stderr.endswith("; check SWARM_REDIS_URL or run `swarm server status`\n")


# --- tail ---------------------------------------------------------------------------------------


async def test_tail_json_replays_from_the_start_and_removes_its_group(
    env: dict[str, str | None], bus: Bus, redis: Redis
) -> None:
    sent = [message(ChatBody(text=f"m{i}"), sender="agent-1") for i in range(3)]
    entry_ids = await bus.publish_many(sent)
    result = await swarm(env, "tail", "--json", "--from-start", "--count", "2")
    assert result.exit_code == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(x["stream"], x["entry"], x["id"], x["body"]) for x in lines] == [
        ("bus", entry_ids[i], sent[i].id, {"text": f"m{i}"}) for i in range(2)
    ]
    assert await redis.xinfo_groups(bus.keys.bus) == []


async def test_tail_follows_several_streams(env: dict[str, str | None], bus: Bus) -> None:
    await bus.publish(message(ChatBody(text="to captain"), sender="a1", to="@captain"))
    await bus.publish(message(ChatBody(text="to a2"), sender="a1", to="a2"))
    result = await swarm(env, "tail", "--json", "--from-start", "--count", "2", "--stream", "captain",
                         "--stream", "inbox:a2")
    assert result.exit_code == 0, result.stderr
    assert sorted((x["stream"], x["body"]["text"]) for x in map(json.loads, result.stdout.splitlines())) == [
        ("captain", "to captain"), ("inbox:a2", "to a2"),
    ]


async def test_tail_shows_hostile_text_harmlessly(env: dict[str, str | None], bus: Bus) -> None:
    await bus.publish(message(ChatBody(text="\x1b[2J\x07[bold]boom[/bold]\u202e"), sender="a1", ts=10**20))
    result = await swarm(env, "tail", "--from-start", "--count", "1")
    assert result.exit_code == 0, result.stderr
    assert "\x1b" not in result.stdout
    assert "\x07" not in result.stdout
    assert "\u202e" not in result.stdout
    assert "[bold]boom[/bold]" in result.stdout  # shown as text, not applied as markup
    assert result.stdout.startswith(f"{10**20} a1 → @all chat ")


async def test_tail_dead_letters_garbage_it_reads(env: dict[str, str | None], bus: Bus, redis: Redis) -> None:
    await redis.xadd(bus.keys.bus, {FIELD: b"not json"})
    await bus.publish(message(ChatBody(text="after"), sender="a1"))
    result = await swarm(env, "tail", "--json", "--from-start", "--count", "1")
    assert result.exit_code == 0, result.stderr
    assert [json.loads(line)["body"] for line in result.stdout.splitlines()] == [{"text": "after"}]
    [letter] = await bus.dead_letters()
    assert letter.reason == "invalid JSON: expected ident at line 1 column 2"


# --- dlq ----------------------------------------------------------------------------------------


async def test_dlq_list_when_empty(env: dict[str, str | None], redis: Redis) -> None:
    result = await swarm(env, "dlq", "list")
    assert (result.exit_code, result.stdout) == (0, "no dead letters\n")
    result = await swarm(env, "dlq", "list", "--json")
    assert (result.exit_code, result.stdout) == (0, "[]\n")


async def test_dlq_list_shows_reason_origin_and_raw_bytes(env: dict[str, str | None], bus: Bus, redis: Redis) -> None:
    reader = bus.consumer("agent-1", "agent-1", [bus.keys.bus])
    await reader.setup()
    first = await xadd(redis, bus.keys.bus, {FIELD: b"\xff\x1b[31mred"})
    second = await xadd(redis, bus.keys.bus, {FIELD: b'{"kind":"gossip"}'})
    assert await reader.read() == []

    result = await swarm(env, "dlq", "list", "--json")
    assert result.exit_code == 0, result.stderr
    letters = json.loads(result.stdout)
    assert [(x["entry"], x["stream"], x["group"], x["consumer"], x["reason"], x["raw"]) for x in letters] == [
        (second, bus.keys.bus, "agent-1", "agent-1",
         "unknown kind 'gossip'; expected one of: status, heartbeat, chat, assignment, task_event, signal, command",
         '{"kind":"gossip"}'),
        (first, bus.keys.bus, "agent-1", "agent-1", "invalid JSON: expected value at line 1 column 1",
         "\\xff\x1b[31mred"),
    ]
    assert [x["id"] for x in json.loads((await swarm(env, "dlq", "list", "--json", "--count", "1")).stdout)] == [
        letters[0]["id"]
    ]

    human = await swarm(env, "dlq", "list")
    assert human.exit_code == 0, human.stderr
    lines = human.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{letters[0]['id']} unknown kind 'gossip'; ")
    assert "\x1b" not in human.stdout
    assert lines[1].endswith(f"from {bus.keys.bus} (agent-1): \\xff\ufffd[31mred")


# --- the acceptance check, with real processes -------------------------------------------


def swarm_command() -> list[str]:
    """The installed `swarm` console script next to this Python, or the same entry point via -c."""
    script = Path(sys.executable).with_name("swarm")
    return [str(script)] if script.exists() else [sys.executable, "-c", "from swarm.cli import main; main()"]


async def test_garbage_xadded_while_tail_follows_is_dead_lettered_and_tail_goes_on(
    env: dict[str, str | None], bus: Bus, redis: Redis
) -> None:
    child_env = {k: v for k, v in {**os.environ, **env}.items() if v is not None}
    cmd = [*swarm_command(), "tail", "--count", "3", "--json"]
    with anyio.fail_after(30):
        async with await anyio.open_process(cmd, env=child_env) as proc:
            # tail starts its group at `$`: wait until it exists, or what we send would be before it.
            while not any(g["name"].startswith(b"tail-") for g in await groups(redis, bus.keys.bus)):
                assert proc.returncode is None, "swarm tail exited early"
                await anyio.sleep(0.02)
            await bus.publish(message(ChatBody(text="before"), sender="agent-1"))
            # What `redis-cli XADD 'swarm:{test}:bus' '*' m 'not json'` does: the documented layout,
            # a garbage payload.
            garbage = await xadd(redis, bus.keys.bus, {"m": "not json"})
            await bus.publish_many([message(ChatBody(text=t), sender="agent-2") for t in ("after 1", "after 2")])
            assert proc.stdout is not None
            assert proc.stderr is not None
            out = b"".join([chunk async for chunk in proc.stdout])
            err = b"".join([chunk async for chunk in proc.stderr])
            assert await proc.wait() == 0, err
    shown = [json.loads(line) for line in out.decode().splitlines()]
    assert [(x["sender"], x["body"]["text"]) for x in shown] == [
        ("agent-1", "before"), ("agent-2", "after 1"), ("agent-2", "after 2"),
    ]
    result = await swarm(env, "dlq", "list", "--json")
    assert result.exit_code == 0, result.stderr
    [letter] = json.loads(result.stdout)
    assert letter["entry"] == garbage
    assert letter["stream"] == bus.keys.bus
    assert letter["group"].startswith("tail-")
    assert letter["reason"] == "invalid JSON: expected ident at line 1 column 2"
    assert letter["raw"] == "not json"
    assert await groups(redis, bus.keys.bus) == []  # the tail cleaned its group up on the way out


async def groups(redis: Redis, stream: str) -> list[dict[str, Any]]:
    """The consumer groups of `stream` (none when the stream does not exist yet)."""
    if not await redis.exists(stream):
        return []
    found: list[dict[str, Any]] = await redis.xinfo_groups(stream)
    return found

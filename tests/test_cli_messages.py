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

LAYOUT = "stream entry must have exactly one field 'm' holding the JSON"
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


async def test_tail_json_replays_from_the_start_and_creates_no_group(
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


async def test_tail_from_an_entry_id_shows_what_came_after_it(env: dict[str, str | None], bus: Bus) -> None:
    entry_ids = await bus.publish_many([message(ChatBody(text=f"m{i}"), sender="agent-1") for i in range(3)])
    result = await swarm(env, "tail", "--json", "--from", entry_ids[0], "--count", "2")
    assert result.exit_code == 0, result.stderr
    assert [(x["entry"], x["body"]["text"]) for x in map(json.loads, result.stdout.splitlines())] == [
        (entry_ids[1], "m1"), (entry_ids[2], "m2"),
    ]


@pytest.mark.anyio
@pytest.mark.parametrize(("args", "says"), [
    (["--from", "yesterday"], "error: --from 'yesterday' is not a stream entry id: give one such as "
                              "1718000000000-0, or 0 for the beginning\n"),
    (["--from", "0", "--from-start"], "error: --from and --from-start both say where to start: give one of them\n"),
])
async def test_tail_refuses_a_start_it_cannot_use(
    env: dict[str, str | None], redis: Redis, args: list[str], says: str
) -> None:
    result = await swarm(env, "tail", *args)
    assert (result.exit_code, result.stdout, result.stderr) == (1, "", says)
    assert await redis.keys("*") == []


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


async def test_tail_shows_garbage_as_undecodable_and_changes_nothing(
    env: dict[str, str | None], bus: Bus, redis: Redis
) -> None:
    garbage = await xadd(redis, bus.keys.bus, {FIELD: b"not json"})
    layout = await xadd(redis, bus.keys.bus, {"x": "1", "y": "2"})
    after = await bus.publish(message(ChatBody(text="after"), sender="a1"))
    before = await snapshot(redis)
    result = await swarm(env, "tail", "--json", "--from-start", "--count", "3")
    assert result.exit_code == 0, result.stderr
    assert [json.loads(line) for line in result.stdout.splitlines()[:2]] == [
        {"stream": "bus", "entry": garbage, "undecodable": "invalid JSON: expected ident at line 1 column 2",
         "size": 8, "raw": "not json"},
        {"stream": "bus", "entry": layout, "undecodable": LAYOUT, "size": 17, "raw": '["x","1","y","2"]'},
    ]
    assert json.loads(result.stdout.splitlines()[2])["entry"] == after
    human = await swarm(env, "tail", "--from-start", "--count", "2")
    assert human.exit_code == 0, human.stderr
    assert human.stdout.splitlines() == [
        f"{garbage} undecodable in bus: invalid JSON: expected ident at line 1 column 2: not json",
        f'{layout} undecodable in bus: {LAYOUT}: ["x","1","y","2"]',
    ]
    # A viewer: no group, no dead letter, no ack; the server holds what it held before.
    assert await snapshot(redis) == before
    assert await bus.dead_letters() == []


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


async def test_dlq_list_says_a_dead_letter_keeps_only_the_first_4_kib(
    env: dict[str, str | None], bus: Bus, redis: Redis
) -> None:
    reader = bus.consumer("agent-1", "agent-1", [bus.keys.bus])
    await reader.setup()
    entry = await xadd(redis, bus.keys.bus, {FIELD: b"y" * 100_000})
    assert await reader.read() == []
    result = await swarm(env, "dlq", "list", "--json")
    assert result.exit_code == 0, result.stderr
    [letter] = json.loads(result.stdout)
    assert (letter["entry"], letter["size"], letter["truncated"], letter["raw"]) == (entry, 100_000, True, "y" * 4096)
    assert letter["reason"] == "message is 100000 bytes, over the 65536-byte limit; send large payloads by reference"
    human = await swarm(env, "dlq", "list")
    assert human.exit_code == 0, human.stderr
    assert human.stdout.endswith(f"(agent-1): {'y' * 120} (first 4096 of 100000 bytes kept)\n")


# --- the acceptance check, with real processes -------------------------------------------


def swarm_command() -> list[str]:
    """The installed `swarm` console script next to this Python, or the same entry point via -c."""
    script = Path(sys.executable).with_name("swarm")
    return [str(script)] if script.exists() else [sys.executable, "-c", "from swarm.cli import main; main()"]


def child_env(env: dict[str, str | None]) -> dict[str, str]:
    """The environment of a `swarm` child process."""
    return {k: v for k, v in {**os.environ, **env}.items() if v is not None}


async def client_ids(redis: Redis) -> set[str]:
    """The ids of the server's clients now."""
    return {c["id"] for c in await redis.client_list()}


async def reading(redis: Redis, proc: anyio.abc.Process, others: set[str]) -> None:
    """Wait until the process (a client not among `others`) has sent its first read: from then on,
    whatever is added reaches it."""
    with anyio.fail_after(20):
        while not any(c["id"] not in others and c.get("cmd") in ("xread", "xreadgroup")
                      for c in await redis.client_list()):
            assert proc.returncode is None, "swarm tail exited early"
            await anyio.sleep(0.02)


async def test_garbage_xadded_while_tail_follows_is_shown_as_such_and_tail_goes_on(
    env: dict[str, str | None], bus: Bus, redis: Redis
) -> None:
    await bus.publish(message(ChatBody(text="old"), sender="agent-1"))  # before tail starts: not shown
    cmd = [*swarm_command(), "tail", "--count", "4", "--json"]
    others = await client_ids(redis)
    with anyio.fail_after(30):
        async with await anyio.open_process(cmd, env=child_env(env)) as proc:
            await reading(redis, proc, others)
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
    assert [x.get("undecodable") or (x["sender"], x["body"]["text"]) for x in shown] == [
        ("agent-1", "before"), "invalid JSON: expected ident at line 1 column 2", ("agent-2", "after 1"),
        ("agent-2", "after 2"),
    ]
    assert shown[1] == {"stream": "bus", "entry": garbage, "undecodable": "invalid JSON: expected ident at line 1 "
                        "column 2", "size": 8, "raw": "not json"}
    assert await bus.dead_letters() == []  # a viewer dead-letters nothing: the readers decide
    assert await redis.xinfo_groups(bus.keys.bus) == []


async def test_a_tail_killed_with_sigterm_leaves_nothing_behind(
    env: dict[str, str | None], bus: Bus, redis: Redis
) -> None:
    await bus.publish(message(ChatBody(text="hello"), sender="agent-1"))
    before = await snapshot(redis)
    others = await client_ids(redis)
    with anyio.fail_after(30):
        async with await anyio.open_process([*swarm_command(), "tail"], env=child_env(env)) as proc:
            await reading(redis, proc, others)
            await bus.publish(message(ChatBody(text="seen"), sender="agent-1"))
            await anyio.sleep(0.2)  # it reads and shows that one
            proc.terminate()  # SIGTERM: no finally block runs, so nothing may need cleaning up
            await proc.wait()
    after = await snapshot(redis)
    assert after["keys"] == before["keys"]
    assert after["groups"] == before["groups"] == []  # no consumer group left to lag for ever
    assert await bus.dead_letters() == []


async def snapshot(redis: Redis) -> dict[str, Any]:
    """What a viewer must not change: the keys there are, and every stream's consumer groups."""
    keys = sorted(cast(list[bytes], await redis.keys("*")))
    found: list[tuple[bytes, Any]] = []
    for key in keys:
        if await redis.type(key) == b"stream":
            found += [(key, group) for group in await redis.xinfo_groups(key)]
    return {"keys": keys, "groups": found}

"""The task board as a client in another language sees it (protocols/PROTOCOL.md, section 7).

The client half of each test holds what a Node, Go or redis-cli agent would hold: a bare Redis
client, the script files in protocols/scripts/ and the key names PROTOCOL.md lists. It imports
nothing from `swarm`. The reference (`Board`, `Registry`, `Captain`, `decode`) then checks that it
sees the same board. The error messages the scripts reply with are checked against the text of
section 7 too, so the document cannot drift from the scripts.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import anyio
import pytest
from redis.asyncio import Redis

# The reference implementation: used only to check what the foreign client did, never by it.
from swarm import lua
from swarm.board import Board, TaskSpec
from swarm.captain import Captain
from swarm.connection import open_redis
from swarm.keys import Keys
from swarm.protocol import TaskEvent, decode
from swarm.registry import Registry
from swarm.server import find_binary
from swarm.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "protocols" / "scripts"
DOC = (ROOT / "protocols" / "PROTOCOL.md").read_text(encoding="utf-8")
SECTION = DOC[DOC.index("## 7. The task board"):DOC.index("## Conformance vectors")]
SECTION_WORDS = " ".join(SECTION.split())  # messages in the document may wrap across lines

SWARM = "polyglot"
PREFIX = f"swarm:{{{SWARM}}}:"  # section 1: `swarm:{<swarm>}:`
MAXLEN = "100000"
AGENT = "node-1"
INSTANCE = "01JD7QK6Z8R3N5W2Y4T6V8X0E0"
LEASE_MS = "30000"
BACKOFF_MS = "1000"


def documented_keys() -> set[str]:
    """The key patterns (after the prefix) of the stream table of section 1 and the key table of 7.1."""
    streams = DOC[DOC.index("### Streams"):DOC.index("### Bounds")]
    board = SECTION[SECTION.index("### 7.1"):SECTION.index("### 7.2")]
    pattern = re.compile(r"^\| `([a-z:<>]+)` \|", flags=re.MULTILINE)
    return set(pattern.findall(streams)) | set(pattern.findall(board))


KEYS = documented_keys()


def key(pattern: str, **parts: str) -> str:
    """A full key name from a pattern PROTOCOL.md lists: `key("task:<id>", id="t-1")`."""
    assert pattern in KEYS, f"{pattern!r} is not a key PROTOCOL.md lists"
    name = pattern
    for part, value in parts.items():
        name = name.replace(f"<{part}>", value)
    assert "<" not in name, name
    return PREFIX + name


CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def ulid() -> str:
    """A ULID as any language makes one: 48 bits of milliseconds, 80 random bits, Crockford base32."""
    value = (time.time_ns() // 1_000_000) << 80 | secrets.randbits(80)
    return "".join(CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def now_ms() -> int:
    """The wall clock in milliseconds, as a foreign agent stamps its heartbeats."""
    return time.time_ns() // 1_000_000


@dataclass
class Foreign:
    """A board client that knows only Redis, protocols/scripts/ and PROTOCOL.md."""

    redis: Redis
    shas: dict[str, str]

    @classmethod
    async def connect(cls, redis: Redis) -> Foreign:
        shas: dict[str, str] = {}
        for path in sorted(SCRIPTS.glob("*.lua")):
            shas[path.stem] = await redis.script_load(path.read_text(encoding="utf-8"))
            assert shas[path.stem] == hashlib.sha1(path.read_bytes()).hexdigest()  # noqa: S324 (Redis's digest)
        return cls(redis, shas)

    async def board(self, script: str, *args: str) -> dict[str, Any]:
        """Run a board script the way 7.7 says: KEYS[1] events; prefix, fresh id, MAXLEN, own args."""
        reply = await cast(Awaitable[str], self.redis.evalsha(
            self.shas[script], 1, key("events"), PREFIX, ulid(), MAXLEN, *args))
        parsed: dict[str, Any] = json.loads(reply)
        return parsed

    async def own(self, action: str, task_id: str, token: str, text: str = "", *,
                  lease_ms: str = LEASE_MS, agent: str = AGENT) -> dict[str, Any]:
        """`own.lua` with every argument it lists: retry allowed, status messages on, as `agent`."""
        return await self.board("own", action, task_id, token, lease_ms, text, BACKOFF_MS, "1", "1", agent)

    async def create(self, title: str, *, kind: str = "audit", priority: int = 5, dedup: str = "",
                     deps: tuple[str, ...] = (), caps: str | None = None, files: str = "",
                     max_attempts: int = 3) -> dict[str, Any]:
        spec = {"kind": kind, "title": title, "body": "", "priority": priority, "key": dedup, "evidence": "",
                "deps": list(deps), "caps": kind if caps is None else caps, "files": files,
                "max_attempts": max_attempts}
        return await self.board("create", json.dumps(spec))

    async def claim(self, count: int, caps: str = "audit", *, agent: str = AGENT,
                    lease_ms: str = LEASE_MS) -> dict[str, Any]:
        return await self.board("claim", agent, caps, lease_ms, str(count), "1")

    async def join(self, capabilities: list[str], concurrency: int = 1) -> None:
        """7.8: the inbox group first, then the card and the first heartbeat."""
        await self.redis.xgroup_create(key("inbox:<agent>", agent=AGENT), AGENT, id="$", mkstream=True)
        card = {"name": AGENT, "capabilities": capabilities, "roles": [], "concurrency": concurrency,
                "version": "node-agent 0.1", "host": "ci", "pid": 4242, "started_at": now_ms(),
                "instance": INSTANCE}
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key("agents"), AGENT, json.dumps(card))
            pipe.zadd(key("agents:seen"), {AGENT: now_ms()})
            await pipe.execute()

    async def lines(self, pattern: str, **parts: str) -> list[dict[str, Any]]:
        """The messages (field `m`, parsed) of a stream, oldest first."""
        entries = cast(list[tuple[str, dict[str, str]]], await self.redis.xrange(key(pattern, **parts)))
        return [json.loads(fields["m"]) for _, fields in entries]


def refused(reply: dict[str, Any], code: str, message: str, *, quoted: bool = True) -> None:
    """The documented refusal: exactly `{"error": code, "message": message}`; with `quoted`, the
    message is also one that section 7 quotes, so the document shows what clients really get."""
    assert reply == {"error": code, "message": message}
    if quoted:
        assert message in SECTION_WORDS, f"PROTOCOL.md section 7 does not quote {message!r}"


@pytest.fixture
async def raw(redis: Redis, redis_url: str) -> AsyncIterator[Redis]:
    """A bare client, strings in and strings out, as another language has one (`redis` flushed the db)."""
    client = Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
def reference(settings: Settings) -> Settings:
    """The reference's settings for the foreign client's swarm."""
    return settings.model_copy(update={"name": SWARM})


# --- the shipped scripts -------------------------------------------------------------------------


async def test_shipped_scripts_are_exactly_what_the_reference_runs(raw: Redis) -> None:
    sources = Path(lua.__file__).parent
    included = {line.removeprefix(lua.INCLUDE).strip() for path in sources.glob("*.lua")
                for line in path.read_text(encoding="utf-8").splitlines() if line.startswith(lua.INCLUDE)}
    assert included == {"board_lib"}
    shipped = {p.stem for p in SCRIPTS.glob("*.lua")}
    assert shipped == {p.stem for p in sources.glob("*.lua")} - included
    reference = lua.Scripts(raw)
    for name in sorted(shipped):
        text = (SCRIPTS / f"{name}.lua").read_text(encoding="utf-8")
        assert text == lua.source(name), f"protocols/scripts/{name}.lua is stale: run scripts/gen-schemas"
        assert not [line for line in text.splitlines() if line.startswith(lua.INCLUDE)]
        # One digest for every client: a foreign SCRIPT LOAD and the reference share the cached script.
        assert await raw.script_load(text) == reference[name].sha
        assert f"`{name}.lua`" in DOC or f"`{name}`" in DOC, f"PROTOCOL.md does not mention {name}"


def test_section_7_lists_every_board_key() -> None:
    assert {
        "task:<id>", "history:<id>", "tasks", "state:<state>", "ready", "delayed", "leases", "owned:<agent>",
        "affinity:<agent>", "dependents:<id>", "dedup", "seq", "events", "agents", "agents:seen",
        "captain:leader", "captain:epoch",
    } <= KEYS


# --- a foreign agent's life ------------------------------------------------------------------------


async def test_a_foreign_agent_claims_heartbeats_and_finishes_a_task(
    raw: Redis, redis: Redis, reference: Settings
) -> None:
    client = await Foreign.connect(raw)
    await client.join(["audit", "docs"], concurrency=2)

    made = await client.create("Audit src/auth.py", priority=7, dedup="audit:src/auth.py", files="src/auth.py")
    assert made["ok"] is True
    assert made["created"] is True
    task = made["task"]
    assert (task["id"], task["state"], task["token"], task["attempts"]) == ("t-1", "open", "0", "0")
    again = await client.create("Audit src/auth.py", priority=7, dedup="audit:src/auth.py")
    assert (again["created"], again["task"]["id"]) == (False, "t-1")

    claimed = await client.claim(2, "audit,docs")
    assert claimed["ok"] is True
    [task] = claimed["tasks"]
    assert (task["id"], task["state"], task["owner"], task["token"], task["attempts"]) == (
        "t-1", "running", AGENT, "1", "1")
    lease = int(task["lease_until"])
    assert lease > 0
    [status] = await client.lines("bus")
    assert (status["kind"], status["sender"], status["body"]) == (
        "status", AGENT, {"text": "working on t-1: Audit src/auth.py", "state": "working", "task_id": "t-1"})

    await anyio.sleep(0.01)
    await raw.zadd(key("agents:seen"), {AGENT: now_ms()})
    beat = await client.own("heartbeat", "t-1", "1")
    assert beat["task"]["state"] == "running"
    assert int(beat["task"]["lease_until"]) > lease
    assert int(await raw.zscore(key("leases"), "t-1") or 0) == int(beat["task"]["lease_until"])

    done = await client.own("done", "t-1", "1", "no secrets found")
    assert (done["task"]["state"], done["task"]["result"], done["task"]["token"]) == ("done", "no secrets found", "1")
    assert "claimed" not in done

    history = [json.loads(m) for m in await raw.lrange(key("history:<id>", id="t-1"), 0, -1)]
    assert [(m["body"]["event"], m["body"]["state"], m["body"]["token"]) for m in history] == [
        ("created", "open", 0), ("claimed", "running", 1), ("done", "done", 1)]
    assert [m["body"].get("owner") for m in history] == [None, AGENT, AGENT]
    assert history[-1]["body"]["detail"] == "no secrets found"
    assert history == await client.lines("events")  # the history is a copy of the task's events

    refused(await client.own("heartbeat", "t-1", "0"), "stale_token",
            "token 0 for task t-1 was never issued: use the token your claim or assignment gave you", quoted=False)
    refused(await client.own("done", "t-1", "1", "twice"), "illegal",
            "task t-1 is done; only an assigned or running task can do that")

    # Every key the board wrote is one PROTOCOL.md lists.
    patterns = [re.compile(re.escape(PREFIX) + re.sub(r"<[a-z]+>", "[^:]+", k)) for k in KEYS]
    written = [k async for k in raw.scan_iter(match=f"swarm:{{{SWARM}}}:*")]
    assert written
    assert [k for k in written if not any(p.fullmatch(k) for p in patterns)] == []

    # The reference sees the same board.
    board = Board(redis, reference)
    seen = await board.get("t-1")
    assert (seen.state, seen.owner, seen.token, seen.attempts, seen.result) == ("done", AGENT, 1, 1, "no secrets found")
    assert (seen.priority, seen.key, seen.caps, seen.files) == (7, "audit:src/auth.py", ("audit",), ("src/auth.py",))
    assert [e.body.event for e in await board.history("t-1")] == ["created", "claimed", "done"]
    raw_history = await redis.lrange(key("history:<id>", id="t-1"), 0, -1)
    assert all(isinstance(decode(m), TaskEvent) for m in raw_history)
    assert await board.owned(AGENT) == set()
    assert await board.affinity(AGENT) == {"src/auth.py"}
    assert (await board.counts())["done"] == 1
    [agent] = await Registry(redis, reference).all()
    assert (agent.card.name, agent.card.capabilities, agent.card.concurrency, agent.card.instance, agent.liveness) == (
        AGENT, ("audit", "docs"), 2, INSTANCE, "alive")


async def test_a_foreign_agent_takes_an_assignment_from_the_reference_captain(
    raw: Redis, redis: Redis, reference: Settings
) -> None:
    client = await Foreign.connect(raw)
    await client.join(["docs"], concurrency=1)
    for title in ("Document swarm.board", "Document swarm.bus"):
        await client.create(title, kind="docs")

    captain = Captain(redis, reference)
    assert await captain.elect() == 1
    await captain.tick()  # one round: the foreign card is read, one task fits its concurrency

    inbox = key("inbox:<agent>", agent=AGENT)
    reply = cast(list[tuple[str, list[tuple[str, dict[str, str]]]]],
                 await raw.xreadgroup(AGENT, INSTANCE, {inbox: ">"}, count=10))
    [(_, [(entry, fields)])] = reply
    assert list(fields) == ["m"]
    msg = json.loads(fields["m"])
    assert (msg["kind"], msg["sender"], msg["to"]) == ("assignment", "board", AGENT)
    # The captain's rounds hand tasks out started: `running`, no `own start`, the task carried whole (7.8).
    carried = msg["body"].pop("tasks")
    assert msg["body"] == {"task_id": "t-1", "token": 1, "task_kind": "docs", "title": "Document swarm.board",
                           "instance": INSTANCE, "state": "running"}
    held = await client.redis.hgetall(key("task:<id>", id="t-1"))
    assert carried == [{k: v for k, v in held.items() if v != ""}]  # its fields but the empty ones
    assert await raw.xack(inbox, AGENT, entry) == 1
    # PROTOCOL.md 7.8 shows an assignment (without `tasks`): a valid message, shaped like the real one.
    example = json.loads(re.findall(r'^    (\{"v":1,.*"kind":"assignment".*\})$', SECTION, flags=re.MULTILINE)[0])
    decode(json.dumps(example))
    assert (sorted(example), sorted(example["body"])) == (sorted(msg), sorted(msg["body"]))

    token = str(msg["body"]["token"])
    assert await client.redis.hmget(key("task:<id>", id="t-1"), ["state", "owner", "token"]) == [
        "running", AGENT, "1"]
    refused(await client.own("start", "t-1", token), "illegal", "task t-1 is already running")
    # done and the next task in one call: settle (7.7)
    finished = await client.board("settle", AGENT, "docs", LEASE_MS, "1", "1", "t-1", token, "documented")
    assert [d["id"] for d in finished["done"]] == ["t-1"]
    assert await client.redis.hget(key("task:<id>", id="t-1"), "state") == "done"
    [nxt] = finished["tasks"]
    assert (nxt["id"], nxt["state"], nxt["owner"], nxt["token"]) == ("t-2", "running", AGENT, "1")
    assert [m["body"]["text"] for m in await client.lines("bus")] == [
        "working on t-1: Document swarm.board", "done t-1: Document swarm.board",
        "working on t-2: Document swarm.bus"]

    board = Board(redis, reference)
    assert [e.body.event for e in await board.history("t-1")] == ["created", "assigned", "done"]
    t2 = await board.get("t-2")
    assert (t2.state, t2.owner, t2.token) == ("running", AGENT, 1)
    assert await board.owned(AGENT) == {"t-2"}


async def test_a_foreign_agent_settles_a_batch_and_claims_the_freed_slots(
    raw: Redis, redis: Redis, reference: Settings
) -> None:
    client = await Foreign.connect(raw)
    for n in range(1, 6):
        await client.create(f"Audit file {n}")
    assert [t["id"] for t in (await client.claim(2))["tasks"]] == ["t-1", "t-2"]
    assert [t["id"] for t in (await client.claim(1, agent="node-2"))["tasks"]] == ["t-3"]

    reply = await client.board("settle", AGENT, "audit", LEASE_MS, "2", "1",
                               "t-1", "1", "clean", "t-2", "9", "late", "t-3", "1", "not mine", "t-99", "1", "")
    assert reply["ok"] is True
    ok, stale, other, missing = reply["done"]
    assert ok["id"] == "t-1"
    assert ok["updated"] > 0
    assert (stale["id"], stale["error"]) == ("t-2", "stale_token")
    refused({"error": other["error"], "message": other["message"]}, "illegal",
            "task t-3 is owned by node-2, not node-1")
    refused({"error": missing["error"], "message": missing["message"]}, "not_found",
            "no task t-99 on this board; `swarm task list` shows the ids")
    assert [(t["id"], t["owner"], t["token"]) for t in reply["tasks"]] == [("t-4", AGENT, "1"), ("t-5", AGENT, "1")]
    # A batch of nothing claims nothing: the empty arrays come back as `{}` (7.7).
    assert await client.board("settle", AGENT, "audit", LEASE_MS, "0", "1") == {"ok": True, "done": {}, "tasks": {}}

    board = Board(redis, reference)
    assert [(t.id, t.state, t.result) for t in await board.tasks()] == [
        ("t-1", "done", "clean"), ("t-2", "running", ""), ("t-3", "running", ""), ("t-4", "running", ""),
        ("t-5", "running", "")]
    assert await board.owned(AGENT) == {"t-2", "t-4", "t-5"}


async def test_the_board_refuses_a_foreign_client_with_the_documented_errors(raw: Redis) -> None:
    client = await Foreign.connect(raw)
    await client.join(["audit"])
    await client.create("Audit src/auth.py")

    # A lease that runs out: reclaimed, the token fenced off, the owner counted unseen.
    [task] = (await client.claim(1, lease_ms="50"))["tasks"]
    await anyio.sleep(0.1)
    assert await client.board("reclaim", "100") == {"ok": True, "moved": ["t-1"]}
    assert await raw.zscore(key("agents:seen"), AGENT) == 0
    assert await raw.hget(key("task:<id>", id="t-1"), "state") == "open"
    assert await raw.zrange(key("ready"), 0, -1) == ["t-1"]
    refused(await client.own("heartbeat", "t-1", task["token"]), "stale_token",
            "token 1 for task t-1 is stale: the task moved on since (it is open now); drop it")
    expired = json.loads(await raw.lindex(key("history:<id>", id="t-1"), -1) or "{}")
    assert expired["body"] == {"task_id": "t-1", "event": "expired", "state": "open", "token": 2,
                               "detail": f"lease of {AGENT} expired"}

    refused(await client.own("heartbeat", "t-99", "1"), "not_found",
            "no task t-99 on this board; `swarm task list` shows the ids")
    refused(await client.create("Audit more", deps=("t-99",)), "not_found",
            "blocked-by task t-99 does not exist; create it first or drop it")
    assert (await client.create("Audit after t-1", deps=("t-1",)))["task"]["deps_left"] == "1"
    refused(await client.board("assign", "t-2", AGENT, "", LEASE_MS, "", "0", ulid()), "not_ready",
            "task t-2 waits on 1 unfinished blocked-by task(s)")
    refused(await client.board("manage", "unblock", "t-1", ""), "illegal", "task t-1 is open, not blocked")

    [task] = (await client.claim(1))["tasks"]
    assert (task["id"], task["token"], task["attempts"]) == ("t-1", "3", "2")
    # A third party that read the token (HGET ... token) is refused on every transition that takes one.
    for action in ("start", "heartbeat", "done", "fail", "release", "block"):
        refused(await client.own(action, "t-1", "3", "forged", agent="mallory"), "illegal",
                "task t-1 is owned by node-1, not mallory")
    assert (await client.board("renew", "mallory", LEASE_MS, "t-1", "3"))["results"] == [
        {"id": "t-1", "error": "illegal", "message": "task t-1 is owned by node-1, not mallory"}]
    refused(await client.board("assign", "t-1", "node-2", "", LEASE_MS, "", "0", ulid()), "illegal",
            "task t-1 is running by node-1, not open; use reassign to move it")
    await client.own("done", "t-1", "3", "clean")
    refused(await client.board("manage", "cancel", "t-1", "not needed"), "illegal",
            "task t-1 is done, a terminal state; it never changes again")
    assert (await client.board("manage", "cancel", "t-2", "not needed"))["task"]["state"] == "cancelled"

    # The leader lease (7.9): acquire, stand by, release, and a deposed epoch cannot assign.
    leader = (await raw.script_load((SCRIPTS / "leader.lua").read_text(encoding="utf-8")))
    lease_keys = (key("captain:leader"), key("captain:epoch"))

    async def elect(instance: str, lease: str) -> int:
        return int(await cast(Awaitable[int], raw.evalsha(leader, 2, *lease_keys, instance, lease)))

    assert await elect("cap-a", "5000") == 1
    assert await raw.get(key("captain:leader")) == "1:cap-a"
    assert await elect("cap-a", "5000") == 1
    assert await elect("cap-b", "5000") == 0
    assert await elect("cap-a", "release") == 0
    assert await elect("cap-b", "5000") == 2
    await client.create("Audit src/db.py")
    refused(await client.board("assign", "t-3", AGENT, INSTANCE, LEASE_MS, "1", "0", ulid()), "not_leader",
            "captain epoch 1 no longer holds the leader lease; standing by")
    assigned = await client.board("assign", "t-3", AGENT, INSTANCE, LEASE_MS, "2", "0", ulid())
    assert (assigned["task"]["state"], assigned["task"]["owner"]) == ("assigned", AGENT)


async def test_claim_order_is_priority_then_creation_sequence(raw: Redis) -> None:
    client = await Foreign.connect(raw)
    for n in range(11):
        await client.create(f"Audit file {n}")
    await client.create("Audit the urgent one", priority=9)
    await client.create("Audit whenever", priority=0)
    await client.create("Deploy", kind="deploy")
    order = ["t-12", *(f"t-{n}" for n in range(1, 12)), "t-14", "t-13"]  # t-9 before t-10: by sequence
    assert await raw.zrange(key("ready"), 0, -1) == order
    claimed = await client.claim(20, "audit")
    assert [t["id"] for t in claimed["tasks"]] == [t for t in order if t != "t-14"]  # deploy needs `deploy`
    assert [t["id"] for t in (await client.claim(5, "*"))["tasks"]] == ["t-14"]


async def test_empty_replies_are_as_documented(raw: Redis) -> None:
    client = await Foreign.connect(raw)
    assert await client.claim(1) == {"ok": True, "empty": True, "tip": "0-0"}  # no board event yet
    # cjson writes an empty array as `{}`: 7.7 tells clients to read it as an empty list.
    assert await client.board("reclaim", "100") == {"ok": True, "moved": {}}
    assert await client.board("view", "0", "10", "100", "6000") == {
        "ok": True, "moved": {}, "tasks": {}, "agents": {}, "more": False}


def _walkthrough() -> str:
    """The `sh` block of PROTOCOL.md section 7.10, exactly as the document has it."""
    section = DOC[DOC.index("### 7.10"):]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, "PROTOCOL.md 7.10 has no ```sh block"
    return match[1]


async def test_the_documents_shell_walkthrough_runs_as_written(redis_url: str, tmp_path: Path) -> None:
    cli = Path(find_binary()).with_name("valkey-cli")
    if not cli.exists():
        found = shutil.which("valkey-cli") or shutil.which("redis-cli")
        if found is None:
            pytest.skip("no valkey-cli or redis-cli next to the server binary or on PATH")
        cli = Path(found)
    settings = Settings(redis_url=redis_url, name="default", home=tmp_path)
    async with open_redis(settings) as redis:
        await redis.flushdb()
        board = Board(redis, settings)
        await board.create(TaskSpec(kind="audit", title="Audit src/auth.py"))
        script = tmp_path / "walkthrough.sh"
        script.write_text(_walkthrough())
        done = await anyio.run_process(["bash", str(script)], cwd=ROOT, check=False,
                                       env={**os.environ, "SWARM_REDIS_URL": redis_url, "REDIS_CLI": str(cli)})
        output = done.stdout.decode()
        assert done.returncode == 0, (output, done.stderr.decode())
        replies = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
        assert replies[0]["tasks"][0]["id"] == "t-1"  # the claim
        assert replies[1]["task"]["lease_until"] >= replies[0]["tasks"][0]["lease_until"]  # the heartbeat
        assert (replies[2]["task"]["state"], replies[2]["task"]["result"]) == ("done", "no secrets found")
        assert replies[3] == {"error": "illegal", "message": "task t-1 is done; only an assigned or running task "
                                                             "can do that"}  # the fail after it: refused
        task = await board.get("t-1")
        assert (task.state, task.owner) == ("done", "shell-1")
        assert [e.body.event for e in await board.history("t-1")] == ["created", "claimed", "done"]
        assert await redis.zscore(Keys(settings.name).agent_seen, "shell-1") == 0  # it left

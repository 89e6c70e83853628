"""Metrics: counters move exactly as the run did, scraped over HTTP from live processes; the
exporter's endpoints; log lines bound with swarm, agent, task and message; the Grafana dashboard
and the alert rules query only metrics the code exports."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import anyio
import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from swarm.agent import Agent, Context
from swarm.board import Board, Task, TaskSpec
from swarm.bus import Bus, Delivery
from swarm.captain import Captain
from swarm.connection import client
from swarm.health import Census
from swarm.keys import FIELD
from swarm.logs import configure
from swarm.metrics import Exporter, Metrics
from swarm.protocol import ChatBody, Message, StatusBody, decode, message
from swarm.recorder import Recorder
from swarm.registry import AgentCard
from swarm.settings import Settings
from tests.helpers import eventually

ROOT = Path(__file__).resolve().parent.parent
PORT_LINE = re.compile(r"metrics on http://0\.0\.0\.0:(\d+)/metrics")


# --- helpers -------------------------------------------------------------------------------------

async def http_get(port: int, path: str) -> tuple[int, str]:
    """A plain HTTP/1.1 GET against 127.0.0.1:`port`: (status, body)."""
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        data = b""
        try:
            while True:
                data += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            pass
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


def sample(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels` (0 when there is none)."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def status(text: str, sender: str = "a1") -> Message:
    return message(StatusBody(text=text, state="working"), sender=sender)


# --- the bus, in process -------------------------------------------------------------------------

async def test_bus_counts_published_consumed_failed_and_dead_lettered(redis: Redis, settings: Settings) -> None:
    metrics = Metrics(settings, "tester")
    bus = Bus(redis, settings, metrics)
    for n in range(3):
        await bus.publish(status(f"step {n}"))
    await bus.publish_many([status(f"batch {n}") for n in range(4)] + [message(ChatBody(text="hi"), sender="a1")])
    await redis.xadd(bus.keys.bus, {FIELD: b"{not json"})
    consumer = bus.consumer("g", "c1", [bus.keys.bus], start="0")

    async def handle(delivery: Delivery) -> None:
        if delivery.message.kind == "chat":
            raise RuntimeError("chat refused")

    def text() -> str:
        return metrics.exposition().decode()

    async with anyio.create_task_group() as tg:
        tg.start_soon(consumer.run, handle)
        await eventually(lambda: _true(sample(text(), "swarm_messages_dead_lettered_total", kind="chat") == 1))
        tg.cancel_scope.cancel()
    body = text()
    assert sample(body, "swarm_messages_published_total", kind="status") == 7
    assert sample(body, "swarm_messages_published_total", kind="chat") == 1
    assert sample(body, "swarm_messages_consumed_total", group="g", kind="status") == 7
    assert sample(body, "swarm_messages_consumed_total", kind="chat") == 0
    # delivered max_deliveries (3) times, failing each time, then dead-lettered with its kind
    assert sample(body, "swarm_handler_failures_total", group="g", kind="chat") == 3
    assert sample(body, "swarm_messages_dead_lettered_total", kind="undecodable") == 1
    assert sample(body, "swarm_messages_dead_lettered_total") == 2
    assert 'process="tester",swarm="test"' in body
    assert await redis.xlen(bus.keys.dlq) == 2


async def _true(value: bool) -> bool:
    return value


async def test_no_metrics_by_default(redis: Redis, settings: Settings) -> None:
    bus = Bus(redis, settings)
    assert type(bus.metrics) is Recorder  # which records nothing
    assert not bus.metrics.enabled
    await bus.publish(status("quiet"))


# --- the exporter, in process --------------------------------------------------------------------

async def test_exporter_serves_board_figures_health_and_readiness(redis: Redis, settings: Settings) -> None:
    board = Board(redis, settings)
    for title, kind in (("a", "audit"), ("b", "audit"), ("c", "docs")):
        await board.create(TaskSpec(kind=kind, title=title))
    first = (await board.tasks())[0]
    await board.claim_next("a1", ["audit"])
    await board.cancel((await board.tasks(kind="docs"))[0].id)
    assert first.state == "open"
    metrics = Metrics(settings, "captain", board=True)
    state = {"ready": False}
    exporter = Exporter(metrics, redis, settings, ready=lambda: (state["ready"], "waiting for the lease"))
    async with anyio.create_task_group() as tg:
        port = await tg.start(exporter.serve, 0, "127.0.0.1")
        code, body = await http_get(port, "/metrics")
        assert code == 200
        assert [sample(body, "swarm_tasks", state=s) for s in ("open", "running", "cancelled", "done")] == [1, 1, 1, 0]
        assert sample(body, "swarm_tasks_live", state="open", kind="audit") == 1
        assert sample(body, "swarm_tasks_live", state="running", kind="audit") == 1
        assert sample(body, "swarm_tasks_live", kind="docs") == 0  # cancelled is not live
        assert sample(body, "swarm_leader_present") == 0
        assert sample(body, "swarm_stream_entries_added_total", stream="events") == 5  # 3 created, claimed, cancelled
        assert await http_get(port, "/healthz") == (200, "ok: Redis answers\n")
        assert await http_get(port, "/readyz") == (503, "not ready: waiting for the lease\n")
        state["ready"] = True
        assert await http_get(port, "/readyz") == (200, "ready: waiting for the lease\n")
        assert await http_get(port, "/nope") == (404, "not found: try /metrics, /healthz or /readyz\n")
        tg.cancel_scope.cancel()


async def test_healthz_fails_when_redis_is_unreachable(settings: Settings) -> None:
    dead = client("redis://127.0.0.1:1/0", settings.model_copy(update={"connect_retries": 0}))
    exporter = Exporter(Metrics(settings, "a1"), dead, settings)
    try:
        async with anyio.create_task_group() as tg:
            port = await tg.start(exporter.serve, 0, "127.0.0.1")
            code, body = await http_get(port, "/healthz")
            assert code == 503
            assert body.startswith("unhealthy: Redis unreachable: ")
            assert await http_get(port, "/readyz") == (200, "ready: up\n")
            tg.cancel_scope.cancel()
    finally:
        await dead.aclose()


# --- a real run: captain, discovery and an agent as processes, scraped over HTTP -----------------

@contextmanager
def spawned(settings: Settings, name: str, *args: str) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """A `swarm ...` process against the test server; its stderr goes to a file under SWARM_HOME."""
    assert settings.redis_url is not None
    settings.home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SWARM_REDIS_URL": settings.redis_url, "SWARM_NAME": settings.name,
           "SWARM_HOME": str(settings.home)}
    log = settings.home / f"{name}.log"
    with log.open("wb") as errors:
        proc = subprocess.Popen([sys.executable, "-m", "swarm", *args], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=errors)
    try:
        yield proc, log
        proc.send_signal(signal.SIGTERM)  # the graceful way out, metrics server included
        assert proc.wait(timeout=15) == 0, read(log)
        assert "Traceback" not in read(log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def port_of(proc: subprocess.Popen[bytes], log: Path) -> int:
    """The metrics port a process printed, once its /readyz says ready."""

    async def printed() -> int | None:
        assert proc.poll() is None, read(log)
        found = PORT_LINE.search(read(log))
        return int(found.group(1)) if found else None

    port = cast(int, await eventually(printed))
    await eventually(lambda: _ready(port))
    return port


def read(path: Path) -> str:
    return path.read_text(errors="replace")


async def _ready(port: int) -> bool:
    return (await http_get(port, "/readyz"))[0] == 200


async def sent_by(redis: Redis, stream: str, sender: str) -> dict[str, int]:
    """Kinds of the messages `sender` wrote to `stream`, counted."""
    counts: dict[str, int] = {}
    for _, fields in cast(list[tuple[bytes, dict[bytes, bytes]]], await redis.xrange(stream)):
        msg = decode(fields[FIELD.encode()])
        if msg.sender == sender:
            counts[msg.kind] = counts.get(msg.kind, 0) + 1
    return counts


async def test_live_run_counters_match_what_happened(redis: Redis, settings: Settings, tmp_path: Path) -> None:
    n = 5
    board = Board(redis, settings)
    keys = board.keys
    with (
        spawned(settings, "captain", "captain", "run", "--metrics-port", "0") as captain,
        spawned(settings, "discovery", "discovery", "run", "--path", str(tmp_path), "--metrics-port", "0") as finder,
    ):
        captain_port = await port_of(*captain)
        finder_port = await port_of(*finder)
        with spawned(settings, "a1", "agent", "run", "--name", "a1", "--can", "work", "--no-claim",
                     "--handler", "tests/procs/agent_handlers.py:noop", "--metrics-port", "0") as agent:
            agent_port = await port_of(*agent)
            for i in range(n):
                await board.create(TaskSpec(kind="work", title=f"job {i}"))

            async def all_done() -> bool:
                return (await board.counts())["done"] == n

            await eventually(all_done)

            async def agent_matches_streams() -> str | None:
                """The agent's published counters equal what its messages in the streams say."""
                body = (await http_get(agent_port, "/metrics"))[1]
                on_bus = await sent_by(redis, keys.bus, "a1")
                to_captain = await sent_by(redis, keys.captain, "a1")
                expected = {**on_bus, **to_captain}
                got = {k: sample(body, "swarm_messages_published_total", kind=k) for k in expected}
                # online, then "working on" and "done" (one a round or settle: a round may take several)
                return body if got == expected and on_bus.get("status", 0) >= 3 else None

            body = await eventually(agent_matches_streams)
            # one assignment message per captain's round (a round may hand out several tasks)
            assert sample(body, "swarm_messages_consumed_total", group="a1", kind="assignment") == await redis.xlen(
                keys.inbox("a1"))
            assert sample(body, "swarm_tasks_finished_total", kind="work", outcome="done") == n
            assert sample(body, "swarm_task_lifecycle_seconds_count", kind="work") == n
            assert sample(body, "swarm_task_queue_seconds_count", kind="work") == n
            assert sample(body, "swarm_task_run_seconds_count", kind="work") == n

            async def captain_counted() -> str | None:
                body = (await http_get(captain_port, "/metrics"))[1]
                return body if sample(body, "swarm_task_events_total", event="done") == n else None

            body = await eventually(captain_counted)
            assert sample(body, "swarm_captain_leading") == 1
            assert sample(body, "swarm_captain_assignments_total") == n
            for event in ("created", "assigned"):
                assert sample(body, "swarm_task_events_total", event=event) == n, event
            assert sample(body, "swarm_task_events_total", event="started") == 0  # handed out running
            assert sample(body, "swarm_task_reassignments_total") == 0
            assert sample(body, "swarm_lease_expiries_total") == 0
            assert sample(body, "swarm_tasks", state="done") == n
            assert sample(body, "swarm_tasks_live") == 0
            assert sample(body, "swarm_agents", liveness="alive") == 1
            assert sample(body, "swarm_leader_present") == 1
            assert sample(body, "swarm_stream_entries_added_total", stream="inbox:a1") == n
            assert sample(body, "swarm_consumer_pending", stream="inbox:a1", group="a1") == 0
            assert sample(body, "swarm_consumer_lag", stream="inbox:a1", group="a1") == 0

            async def discovery_saw_everything() -> bool:
                body = (await http_get(finder_port, "/metrics"))[1]
                return sample(body, "swarm_discovery_messages_observed_total") == await redis.xlen(keys.bus)

            await eventually(discovery_saw_everything)


# --- logs ----------------------------------------------------------------------------------------

async def test_log_lines_name_swarm_agent_task_and_message(redis: Redis, settings: Settings) -> None:
    lines = io.StringIO()
    saved = sys.stderr
    sys.stderr = lines
    configure("info", json=True, swarm=settings.name)
    seen: list[str] = []

    async def handler(task: Task, ctx: Context) -> str:
        structlog.get_logger("test").info("handling", title=task.title)
        seen.append(task.id)
        return "ok"

    try:
        agent = Agent(redis, settings, AgentCard(name="a1", capabilities=("work",)), handler, claim=False)
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            await tg.start(agent.run, stop)
            task, _ = await Board(redis, settings).create(TaskSpec(kind="work", title="logged"))
            assert await Captain(redis, settings).elect() == 1
            assigned = await Board(redis, settings).assign(task.id, "a1", instance=agent.instance, epoch=1)
            await eventually(lambda: _true(bool(seen)))
            stop.set()
    finally:
        sys.stderr = saved
        structlog.reset_defaults()
        structlog.contextvars.clear_contextvars()
    records = [json.loads(line) for line in lines.getvalue().splitlines()]
    handling = next(r for r in records if r["event"] == "handling")
    inbox = cast(list[tuple[bytes, dict[bytes, bytes]]], await redis.xrange(agent.bus.keys.inbox("a1")))
    assignment = decode(inbox[0][1][FIELD.encode()])
    assert {k: handling[k] for k in ("swarm", "agent", "task", "message_id", "level")} == {
        "swarm": "test", "agent": "a1", "task": assigned.id, "message_id": assignment.id, "level": "info",
    }


# --- the dashboard and the alert rules -----------------------------------------------------------

async def exported_names(redis: Redis, settings: Settings) -> set[str]:
    """Every sample name the code exports (with board figures, so every family is there)."""
    metrics = Metrics(settings, "captain", board=True)
    assert metrics.board is not None
    metrics.board.snapshot = await Census(redis, settings).take()
    names: set[str] = set()
    for family in metrics.registry.collect():
        names.add(family.name)
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
        names.update(s.name for s in family.samples)
    return names


def queried(text: str) -> set[str]:
    """The metric names a PromQL text mentions (ours all start with `swarm_`)."""
    return set(re.findall(r"\bswarm_[a-z0-9_]+", text))


def _exprs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value
            else:
                yield from _exprs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _exprs(item)


async def test_dashboard_queries_only_exported_metrics(redis: Redis, settings: Settings) -> None:
    dashboard = json.loads((ROOT / "scripts" / "grafana" / "swarm.json").read_text())
    exprs = list(_exprs(dashboard))
    assert len(exprs) >= 12
    used = set().union(*(queried(e) for e in exprs))
    exported = await exported_names(redis, settings)
    assert used - exported == set()
    titles = {p["title"] for p in dashboard["panels"]}
    for subject in ("Throughput", "Consumer lag", "Board by state", "Lease expiries", "Agents", "Discovery"):
        assert any(t.startswith(subject) for t in titles), subject


async def test_alert_rules_query_only_exported_metrics(redis: Redis, settings: Settings) -> None:
    rules = (ROOT / "scripts" / "prometheus" / "alerts.yml").read_text()
    exprs = re.findall(r"^\s+expr: (.+)$", rules, flags=re.MULTILINE)
    alerts = re.findall(r"^\s+- alert: (\w+)$", rules, flags=re.MULTILINE)
    assert len(exprs) == len(alerts)
    assert {"SwarmNoLeader", "SwarmConsumerLagGrowing", "SwarmDeadLettersRising", "SwarmAgentsGone",
            "SwarmTasksStuckPastLease"} <= set(alerts)
    used = set().union(*(queried(e) for e in exprs))
    assert used - await exported_names(redis, settings) == set()


@pytest.mark.parametrize("command", [["agent", "run"], ["captain", "run"], ["discovery", "run"]])
def test_long_running_commands_take_metrics_port(command: list[str]) -> None:
    from typer.testing import CliRunner  # noqa: PLC0415

    from swarm.cli import app  # noqa: PLC0415

    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert "--metrics-port" in result.stdout

"""Prometheus metrics of one swarm process, and the HTTP endpoint that serves them with health checks.

A `Metrics` owns its own `CollectorRegistry` (no process-wide default registry): build one per
process and pass it to Bus, Agent, Captain or Discovery; without one they get a `Recorder`, which
records nothing. Counters count what this process did (published, consumed, dead-lettered,
assigned, scanned). Board-wide figures (tasks by state, agents by liveness, lag) are read from
Redis at scrape time by the `Exporter` of a process built with `board=True` (the captain and the
discovery engine): every such process reports the same figures, so dashboards take `max`.

Every sample carries two constant labels: `swarm` (the swarm name) and `process` (the agent's
name, `captain` or `discovery`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Literal
from urllib.parse import urlsplit

import anyio
import structlog
from anyio.abc import SocketAttribute, SocketStream
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.asyncio import Redis

from swarm.errors import DecodeError, SwarmError
from swarm.health import Census, Snapshot
from swarm.protocol import TaskEvent, decode
from swarm.recorder import Recorder
from swarm.settings import Settings

log = structlog.get_logger("swarm.metrics")

SECONDS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
"""Histogram buckets for task and scan durations: a no-op task takes milliseconds, an audit minutes."""

Role = Literal["agent", "captain", "discovery"]
Readiness = Callable[[], tuple[bool, str]]
"""Answers /readyz: (ready, a sentence saying why)."""


class Metrics(Recorder):
    """Every metric one swarm process exports, in a registry of its own (`registry` is what to expose)."""

    enabled = True

    def __init__(self, settings: Settings, process: str, *, role: Role | None = None, board: bool = False) -> None:
        """`role` keeps the other roles' metrics out of the exposition (they still work, unexported);
        None exports every family. `board` adds the board-wide figures read from Redis."""
        self.swarm = settings.name
        self.process = process
        own = CollectorRegistry()
        self.registry = CollectorRegistry()
        self.registry.register(_Labelled(own, {"swarm": settings.name, "process": process}))
        ProcessCollector(registry=own)

        agent, captain, discovery = ((own if role in (None, of) else None) for of in ("agent", "captain", "discovery"))
        # --- the bus (any process) ---
        self.published = Counter("swarm_messages_published", "Messages published, by kind.", ["kind"], registry=own)
        self.refused = Counter("swarm_messages_refused", "Messages the publish script refused, by reason "
                               "(rate_limited: the sender was over SWARM_PUBLISH_RATE; forbidden: this Redis "
                               "user may not send as the sender).", ["reason"], registry=own)
        self.consumed = Counter("swarm_messages_consumed", "Messages handled and acked through a consumer group.",
                                ["group", "kind"], registry=own)
        self.handler_failures = Counter("swarm_handler_failures", "Deliveries whose handler raised (left pending).",
                                        ["group", "kind"], registry=own)
        self.dead_lettered = Counter("swarm_messages_dead_lettered",
                                     "Entries moved to the dead-letter stream, by kind (`undecodable` when it "
                                     "did not decode).", ["kind"], registry=own)
        self.redis_errors = Counter("swarm_redis_errors", "Times Redis was unreachable, by the loop that saw it.",
                                    ["where"], registry=own)
        self.redis_reconnects = Counter("swarm_redis_reconnects", "Recoveries after Redis was unreachable.",
                                        ["where"], registry=own)
        # --- tasks, as the agent that ran them saw them ---
        self.tasks_finished = Counter("swarm_tasks_finished", "Tasks this agent finished, by kind and outcome "
                                      "(done, failed, lost).", ["kind", "outcome"], registry=agent)
        self.queue_seconds = Histogram("swarm_task_queue_seconds", "Created -> assigned (or claimed).", ["kind"],
                                       buckets=SECONDS, registry=agent)
        self.run_seconds = Histogram("swarm_task_run_seconds", "Assigned -> done or failed.", ["kind"],
                                     buckets=SECONDS, registry=agent)
        self.lifecycle_seconds = Histogram("swarm_task_lifecycle_seconds", "Created -> done.", ["kind"],
                                           buckets=SECONDS, registry=agent)
        # --- the captain ---
        self.leading = Gauge("swarm_captain_leading", "1 while this captain holds the leader lease.", registry=captain)
        self.assignments = Counter("swarm_captain_assignments", "Tasks this captain assigned.", registry=captain)
        self.task_events = Counter("swarm_task_events", "Board transitions, by event (counted by the leading "
                                   "captain from the board-event stream).", ["event"], registry=captain)
        self.lease_expiries = Counter("swarm_lease_expiries", "Leases that ran out (the task reopened or failed).",
                                      registry=captain)
        self.reassignments = Counter("swarm_task_reassignments", "Tasks handed out again after an earlier owner "
                                     "lost or gave them up.", registry=captain)
        # --- the discovery engine ---
        self.observed = Counter("swarm_discovery_messages_observed", "Broadcast messages the engine counted.",
                                registry=discovery)
        self.signals = Counter("swarm_repetition_signals", "Repetition signals fired, by scope (agent, swarm).",
                               ["scope"], registry=discovery)
        self.discovery_runs = Counter("swarm_discovery_runs", "Scans of the workspace, by source.", ["source"],
                                      registry=discovery)
        self.findings = Counter("swarm_discovery_findings", "Findings reported by scans, by source.", ["source"],
                                registry=discovery)
        self.tasks_created = Counter("swarm_discovery_tasks_created", "New tasks from findings, by source.",
                                     ["source"], registry=discovery)
        self.tasks_obsolete = Counter("swarm_discovery_tasks_obsolete", "Tasks cancelled because their finding "
                                      "went away, by source.", ["source"], registry=discovery)
        self.scan_seconds = Histogram("swarm_discovery_scan_seconds", "Time one source took to scan.", ["source"],
                                      buckets=SECONDS, registry=discovery)
        # --- board-wide figures, read from Redis at scrape time ---
        self.board: BoardFigures | None = None
        if board:
            self.board = BoardFigures()
            own.register(self.board)
        self._published: dict[str, Counter] = {}

    # --- the hot path: one dict lookup per call once a kind has been seen ---
    def on_publish(self, kind: str) -> None:
        """One message published."""
        child = self._published.get(kind)
        if child is None:
            child = self._published[kind] = self.published.labels(kind)
        child.inc()

    def on_publish_many(self, kinds: Iterable[str]) -> None:
        """A batch published."""
        counts: dict[str, int] = {}
        for kind in kinds:
            counts[kind] = counts.get(kind, 0) + 1
        for kind, n in counts.items():
            self.published.labels(kind).inc(n)

    def on_refused(self, reason: str, count: int) -> None:
        """Messages refused by the publish script."""
        self.refused.labels(reason).inc(count)

    def on_handled(self, group: str, kinds: Sequence[str], failed: Sequence[str]) -> None:
        """A batch of deliveries handled by a consumer: `kinds` acked, `failed` left pending."""
        for kind in kinds:
            self.consumed.labels(group, kind).inc()
        for kind in failed:
            self.handler_failures.labels(group, kind).inc()

    def on_board_events(self, raws: Iterable[bytes]) -> None:
        """Board-event stream entries: count transitions, lease expiries and reassignments."""
        for raw in raws:
            try:
                msg = decode(raw)
            except DecodeError:
                continue
            if not isinstance(msg, TaskEvent):
                continue
            event, body = msg.body.event, msg.body
            self.task_events.labels(event).inc()
            if event == "expired" or (event == "failed" and body.detail.startswith("lease of ")):
                self.lease_expiries.inc()
            # The token grows on every change of ownership: a hand-out with token 2 or more had an
            # earlier owner (expired, released, failed and retried, blocked, or forced away).
            if event in ("assigned", "claimed", "reassigned") and body.token > 1:
                self.reassignments.inc()

    def on_dead_letter(self, kind: str) -> None:
        """One entry moved to the dead-letter stream."""
        self.dead_lettered.labels(kind).inc()

    def on_redis_error(self, where: str) -> None:
        """Redis was unreachable from the loop `where`."""
        self.redis_errors.labels(where).inc()

    def on_reconnect(self, where: str) -> None:
        """The loop `where` reached Redis again after it was unreachable."""
        self.redis_reconnects.labels(where).inc()

    def on_leading(self, leading: bool) -> None:
        """The captain took or lost the leader lease."""
        self.leading.set(1 if leading else 0)

    def on_assigned(self, count: int) -> None:
        """The captain assigned `count` tasks."""
        self.assignments.inc(count)

    def on_observed(self) -> None:
        """The discovery engine counted one broadcast message."""
        self.observed.inc()

    def on_signal(self, scope: str) -> None:
        """A repetition signal fired (`agent` or `swarm` scope)."""
        self.signals.labels(scope).inc()

    def on_discovered(self, source: str, created: int, obsolete: int) -> None:
        """Findings of `source` became `created` new tasks and closed `obsolete` ones."""
        self.tasks_created.labels(source).inc(created)
        self.tasks_obsolete.labels(source).inc(obsolete)

    def on_task_taken(self, kind: str, created_ms: int, taken_ms: int) -> None:
        """An agent got a task (assigned or claimed) at `taken_ms` (Redis clock)."""
        self.queue_seconds.labels(kind).observe(max(0, taken_ms - created_ms) / 1000)

    def on_task_finished(self, kind: str, outcome: str, created_ms: int, taken_ms: int, finished_ms: int) -> None:
        """An agent finished a task (`done`, `failed` or `lost`)."""
        self.tasks_finished.labels(kind, outcome).inc()
        if outcome != "lost" and taken_ms:
            self.run_seconds.labels(kind).observe(max(0, finished_ms - taken_ms) / 1000)
        if outcome == "done":
            self.lifecycle_seconds.labels(kind).observe(max(0, finished_ms - created_ms) / 1000)

    def on_scan(self, source: str, findings: int, seconds: float) -> None:
        """A source scanned the workspace."""
        self.discovery_runs.labels(source).inc()
        self.findings.labels(source).inc(findings)
        self.scan_seconds.labels(source).observe(seconds)

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)


class _Labelled(Collector):
    """Another registry's metrics with constant labels added to every sample."""

    def __init__(self, inner: CollectorRegistry, labels: dict[str, str]) -> None:
        self.inner = inner
        self.labels = labels

    def collect(self) -> Iterator[Metric]:
        for family in self.inner.collect():
            family.samples = [s._replace(labels={**self.labels, **s.labels}) for s in family.samples]
            yield family


class BoardFigures(Collector):
    """Gauges made from the latest `Snapshot` (empty families until the first one)."""

    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None

    def collect(self) -> Iterator[Metric]:
        s = self.snapshot
        tasks = GaugeMetricFamily("swarm_tasks", "Tasks on the board, by state.", labels=["state"])
        by_kind = GaugeMetricFamily("swarm_tasks_live", "Tasks in a non-terminal state, by state and kind.",
                                    labels=["state", "kind"])
        agents = GaugeMetricFamily("swarm_agents", "Registered agents, by liveness (alive, stale, gone).",
                                   labels=["liveness"])
        leader = GaugeMetricFamily("swarm_leader_present", "1 when some captain holds the leader lease.")
        epoch = GaugeMetricFamily("swarm_leader_epoch", "The leader epoch (grows at every takeover).")
        length = GaugeMetricFamily("swarm_stream_length", "Entries kept in a stream.", labels=["stream"])
        added = CounterMetricFamily("swarm_stream_entries_added", "Entries ever added to a stream (swarm-wide "
                                    "throughput).", labels=["stream"])
        lag = GaugeMetricFamily("swarm_consumer_lag", "Entries not yet delivered to a consumer group.",
                                labels=["stream", "group"])
        pending = GaugeMetricFamily("swarm_consumer_pending", "Entries delivered to a group and not yet acked.",
                                    labels=["stream", "group"])
        dead = GaugeMetricFamily("swarm_dead_letters", "Entries in the dead-letter stream.")
        expired = GaugeMetricFamily("swarm_leases_expired", "Owned tasks past their lease, not reclaimed yet.")
        open_signals = GaugeMetricFamily("swarm_repetition_signals_open", "Repetition signals still collecting "
                                         "repeats, by scope.", labels=["scope"])
        kept = GaugeMetricFamily("swarm_repetition_signals_kept", "Repetition signals kept, by scope.",
                                 labels=["scope"])
        coalesced = GaugeMetricFamily("swarm_messages_coalesced", "Messages that kept signals stand for "
                                      "(chatter the captain saw once, as a signal), by scope.", labels=["scope"])
        spent = GaugeMetricFamily("swarm_spend_usd", "Dollars reported spent (swarm, agent:<name>).", labels=["scope"])
        budget = GaugeMetricFamily("swarm_budget_usd", "Budgets in dollars (swarm, agent:<name>).", labels=["scope"])
        if s is not None:
            for state, n in s.tasks.items():
                tasks.add_metric([state], n)
            for state, kinds in s.live_by_kind.items():
                for kind, n in kinds.items():
                    by_kind.add_metric([state, kind], n)
            for liveness, n in s.agents.items():
                agents.add_metric([liveness], n)
            leader.add_metric([], 0 if s.leader.instance is None else 1)
            epoch.add_metric([], s.leader.epoch or s.leader.last_epoch)
            for st in s.streams:
                length.add_metric([st.stream], st.length)
                added.add_metric([st.stream], st.added)
            for g in s.groups:
                lag.add_metric([g.stream, g.group], float("nan") if g.lag is None else g.lag)
                pending.add_metric([g.stream, g.group], g.pending)
            dead.add_metric([], s.dead_letters)
            expired.add_metric([], s.expired_leases)
            for scope, figures in s.signals.items():
                open_signals.add_metric([scope], figures["open"])
                kept.add_metric([scope], figures["open"] + figures["closed"])
                coalesced.add_metric([scope], figures["coalesced"])
            for scope, usd in s.spend.items():
                if scope.startswith("budget:"):
                    budget.add_metric([scope.removeprefix("budget:")], usd)
                elif not scope.startswith("tokens:"):
                    spent.add_metric([scope], usd)
        yield from (tasks, by_kind, agents, leader, epoch, length, added, lag, pending, dead, expired, open_signals,
                    kept, coalesced, spent, budget)


class Exporter:
    """Serves `/metrics`, `/healthz` (process up, Redis answers) and `/readyz` (the component's own
    answer) on one port, from the event loop: no thread, and nothing runs between scrapes."""

    def __init__(self, metrics: Metrics, redis: Redis, settings: Settings, *, ready: Readiness | None = None,
                 timeout_s: float = 2.0) -> None:
        self.metrics = metrics
        self.redis = redis
        self.ready = ready
        self.timeout_s = timeout_s
        self.census = Census(redis, settings) if metrics.board is not None else None
        self._lock = anyio.Lock()
        self._refreshed = 0.0

    async def serve(self, port: int = 0, host: str = "0.0.0.0",  # noqa: S104  (scraped from other hosts)
                    *, task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        """Listen on `port` (0: a free one) until cancelled; `task_status` gets the bound port."""
        listener = await anyio.create_tcp_listener(local_host=host, local_port=port, reuse_port=False)
        bound = int(listener.extra(SocketAttribute.local_port))  # noqa: S610  (anyio's typed attribute, not Django)
        log.info("serving metrics", url=f"http://{host}:{bound}/metrics", process=self.metrics.process)
        task_status.started(bound)
        async with listener:
            await listener.serve(self._connection)

    async def refresh(self) -> None:
        """Read the board-wide figures again (at most once a second, whoever asks)."""
        if self.census is None or self.metrics.board is None:
            return
        async with self._lock:
            if time.monotonic() - self._refreshed < 1.0:
                return
            try:
                with anyio.fail_after(self.timeout_s):
                    self.metrics.board.snapshot = await self.census.take()
                self._refreshed = time.monotonic()
            except (SwarmError, TimeoutError) as exc:  # serve the last figures; the error is counted
                self.metrics.redis_errors.labels("census").inc()
                log.warning("cannot read board figures", error=str(exc) or "timed out")

    async def answer(self, method: str, target: str) -> tuple[int, str, bytes]:
        """(status, content type, body) for one request."""
        path = urlsplit(target).path
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"only GET\n"
        if path in ("/metrics", "/"):
            await self.refresh()
            return 200, CONTENT_TYPE_LATEST, self.metrics.exposition()
        if path == "/healthz":
            ok, why = await self._redis_answers()
            return (200 if ok else 503), "text/plain", f"{'ok' if ok else 'unhealthy'}: {why}\n".encode()
        if path == "/readyz":
            ok, why = self.ready() if self.ready is not None else (True, "up")
            return (200 if ok else 503), "text/plain", f"{'ready' if ok else 'not ready'}: {why}\n".encode()
        return 404, "text/plain", b"not found: try /metrics, /healthz or /readyz\n"

    async def _redis_answers(self) -> tuple[bool, str]:
        try:
            with anyio.fail_after(self.timeout_s):
                await self.redis.ping()
        except TimeoutError:
            return False, f"Redis did not answer PING within {self.timeout_s:g}s"
        except Exception as exc:  # any failure to answer is the verdict, not a crash of the endpoint
            return False, f"Redis unreachable: {exc}"
        return True, "Redis answers"

    async def _connection(self, client: SocketStream) -> None:
        async with client:
            try:
                with anyio.move_on_after(10):  # a client that never finishes its request is dropped
                    head = b""
                    while b"\r\n\r\n" not in head and len(head) < 8192:
                        head += await client.receive(4096)
                    method, target, *_ = [*head.split(b"\r\n", 1)[0].decode("latin-1").split(" "), "", ""]
                    status, ctype, body = await self.answer(method, target)
                    reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}
                    await client.send(
                        f"HTTP/1.1 {status} {reason[status]}\r\nContent-Type: {ctype}\r\n"
                        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                        + (b"" if method == "HEAD" else body)
                    )
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                pass  # the client went away
            except Exception:  # one bad request must never take the process down
                log.exception("metrics request failed")

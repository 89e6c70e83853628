"""The agent runtime: register, heartbeat, take assignments (or claim work when idle), run up to K
tasks at once, report results, and shut down without losing work.

Work is fenced: every board call carries the task's token, so a task this agent lost (its lease ran
out while it was paused) is refused and its handler cancelled; SIGKILL needs no code here at all:
the lease expires and the captain gives the task to someone else.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import structlog
from anyio.abc import TaskGroup
from redis.asyncio import Redis

from swarm.board import Board, Task
from swarm.bus import Bus, Consumer, Delivery
from swarm.errors import BackendError, StaleToken, SwarmError
from swarm.protocol import Assignment, Command, HeartbeatBody, StatusBody, message, new_id
from swarm.registry import AgentCard, Registry
from swarm.settings import Settings

if TYPE_CHECKING:
    from swarm.metrics import Metrics

log = structlog.get_logger("swarm.agent")


@dataclass
class Context:
    """What a handler gets besides its task: who runs it, where to write, how to say progress."""

    agent: str
    settings: Settings
    workspace: Path
    bus: Bus
    env: dict[str, str] = field(default_factory=dict)

    @property
    def artifacts(self) -> Path:
        """Where handlers write their artifacts: `<SWARM_HOME>/artifacts`."""
        path = self.settings.home / "artifacts"
        path.mkdir(parents=True, exist_ok=True)
        return path

    async def progress(self, text: str, task_id: str | None = None) -> None:
        """Tell the swarm what the handler is doing (a status message on the bus)."""
        await self.bus.publish(message(StatusBody(text=text, state="working", task_id=task_id), sender=self.agent))


Result = str | dict[str, Any] | None
Handler = Callable[[Task, Context], Awaitable[Result]]


@dataclass
class _Job:
    task_id: str
    token: int
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    lost: bool = False
    reported: bool = False
    """Its outcome is queued for the settler (or settled): nothing to release on the way out."""
    taken_ms: int = 0
    """When the task became ours (Redis clock): the assignment's or the claim's time; for metrics."""
    log_context: dict[str, str] = field(default_factory=dict)
    """Bound on every line logged while it runs, besides the task id (the assignment's message id)."""


class Agent:
    """One agent process's runtime. `run(stop)` returns after a graceful shutdown."""

    def __init__(
        self, redis: Redis, settings: Settings, card: AgentCard, handler: Handler, *,
        workspace: Path | None = None, grace_s: float = 10.0, claim: bool = True,
        idle_chatter_s: float | None = None, env: dict[str, str] | None = None, metrics: Metrics | None = None,
        prefetch: int = 0,
    ) -> None:
        self.settings = settings
        self.card = card
        self.handler = handler
        self.grace_s = grace_s
        self.claim = claim
        self.hold = card.concurrency + max(0, prefetch)
        """Most tasks held at once when claiming: `concurrency` running plus `prefetch` claimed ahead, so
        that a worker that finishes never waits for a round trip to get its next task. Held tasks count as
        running on the board, are heartbeated like the rest, and are released, not run, on shutdown."""
        self.idle_chatter_s = idle_chatter_s
        self.instance = new_id()
        self.metrics = metrics
        self.bus = Bus(redis, settings, metrics)
        self.inbox: Consumer | None = None
        self.board = Board(redis, settings)
        self.registry = Registry(redis, settings)
        self.ctx = Context(card.name, settings, workspace or Path.cwd(), self.bus, env or {})
        self.jobs: dict[str, _Job] = {}
        self.completed = 0
        self.failed = 0
        self._changed = anyio.Event()
        self._workers: TaskGroup | None = None
        # Jobs wait here for one of the K worker tasks (a pool: no task is spawned per job).
        self._send_job, self._next_job = anyio.create_memory_object_stream[tuple[_Job, Task | None]](math.inf)
        self._hungry = anyio.Event()
        self._replaced = anyio.Event()
        self._claiming = anyio.Lock()
        self._stopping = False
        self._outbox: list[_Done] = []
        self._starts: list[_Start] = []
        self._kick = anyio.Event()

    @property
    def name(self) -> str:
        """The agent's name."""
        return self.card.name

    def readiness(self) -> tuple[bool, str]:
        """What /readyz says: ready once the inbox consumer group is attached."""
        if self.inbox is None or not self.inbox.attached:
            return False, "inbox consumer group not attached yet"
        return True, f"inbox group attached, {len(self.jobs)}/{self.card.concurrency} busy"

    async def run(self, stop: anyio.Event, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
                  ) -> None:
        """Register, work until `stop` is set (or another instance takes the name), then drain:
        running tasks get `grace_s` to finish; what is left is released back to the board."""
        # The inbox group must exist before the captain can know us: an assignment written between
        # registering and creating a group at `$` would never be delivered.
        streams = [self.bus.keys.inbox(self.name)] + [self.bus.keys.role(r) for r in self.card.roles]
        inbox = self.bus.consumer(self.name, self.instance, streams, start="$")
        await inbox.setup()
        self.inbox = inbox
        self.card = await self.registry.register(self.card, self.instance)
        structlog.contextvars.bind_contextvars(agent=self.name)
        await self._say("online, ready for work", "idle")
        await self.bus.publish(message(HeartbeatBody(instance=self.instance, capacity=self.card.concurrency),
                                       sender=self.name, to="@captain"))
        try:
            async with anyio.create_task_group() as life:
                life.start_soon(self._heartbeats)
                life.start_soon(self._settler)
                async with anyio.create_task_group() as workers:
                    self._workers = workers
                    for _ in range(self.card.concurrency):
                        workers.start_soon(self._worker)
                    async with anyio.create_task_group() as intake:
                        intake.start_soon(inbox.run, self._on_message)
                        if self.claim:
                            intake.start_soon(self._claimer)
                        if self.idle_chatter_s:
                            intake.start_soon(self._chatter, self.idle_chatter_s)
                        task_status.started()
                        with anyio.CancelScope() as waiting:
                            intake.start_soon(_set_on, self._replaced, waiting)
                            await stop.wait()
                        self._stopping = True
                        intake.cancel_scope.cancel()
                    await self._drain()
                    workers.cancel_scope.cancel()
                await self._release_queued()
                await self._flush()
                life.cancel_scope.cancel()
        finally:
            self._send_job.close()
            self._next_job.close()
            with anyio.CancelScope(shield=True):
                await self.registry.deregister(self.name, self.instance)
                await self._say("offline", "done")

    async def _drain(self) -> None:
        if self.jobs:
            log.info("draining", running=len(self.jobs), grace_s=self.grace_s)
        with anyio.move_on_after(self.grace_s):
            while self.jobs:
                await self._changed.wait()
        unfinished = sorted(task_id for task_id, job in self.jobs.items() if not job.reported)
        if unfinished:  # (finished ones still being reported are settled on the way out, not released)
            log.warning("grace period over; releasing unfinished tasks", tasks=unfinished)

    # --- intake ----------------------------------------------------------------------------------
    async def _on_message(self, delivery: Delivery) -> None:
        msg = delivery.message
        if isinstance(msg, Assignment):
            if msg.body.instance and msg.body.instance != self.instance:
                log.info("assignment for an earlier instance ignored", task=msg.body.task_id)
                return
            self._spawn(msg.body.task_id, msg.body.token, None, msg.ts, {"message_id": msg.id})
        elif isinstance(msg, Command) and msg.body.name == "ping":
            await self._say(f"pong ({len(self.jobs)}/{self.card.concurrency} busy)", "idle")

    async def _claimer(self) -> None:
        """Claim when there is room and maybe work: at start, and after any claim came back short
        (a settle's, or one after a failed or lost job), by waiting for board events after the moment
        it did: not on a timer, and not while busy (a busy agent's completions claim its next tasks)."""
        events = self.bus.keys.events
        while True:
            self._hungry = anyio.Event()
            tip = await self._claim_some()
            if tip is None:  # got all it asked for, or had no room: wait until a claim comes back short
                await self._hungry.wait()
                continue
            try:
                if tip:
                    await self.bus.redis.xread({events: tip}, block=1000, count=1)
                else:
                    await anyio.sleep(0.5)  # Redis trouble: try again shortly
            except Exception as exc:  # connection trouble: the next loop turn retries
                log.warning("cannot read board events", error=str(exc))
                await anyio.sleep(0.5)

    async def _claim_some(self) -> str | None:
        """Claim ready tasks up to spare capacity; the lock keeps two runs from overfilling. Returns
        the board's event id to watch when it took fewer than it asked for ('' when Redis could
        not be reached), else None."""
        async with self._claiming:
            free = self.hold - len(self.jobs)
            if self._stopping or free <= 0:
                return None
            try:
                tasks = await self.board.claim(self.name, self._caps, free)  # one call for all free slots
            except BackendError as exc:
                log.warning("cannot reach Redis to claim", error=str(exc))
                return ""
            self._said(len(tasks))
            self._take(tasks)
            return self.board.short_at

    def _take(self, claimed: list[Task]) -> None:
        """Run what a claim (or a settle's claim) took; when it took fewer than it asked for, the queue
        ran dry, and the claimer starts watching for new work."""
        for task in claimed:
            self._spawn(task.id, task.token, task, task.updated)
        if self.board.short_at is not None:
            self._hungry.set()

    def _said(self, count: int) -> None:
        """Count the status messages a board script wrote on this agent's behalf as published by it."""
        if self.metrics is not None and count and self.board.speak:
            self.metrics.on_publish_many(["status"] * count)

    @property
    def _caps(self) -> tuple[str, ...]:
        return self.card.capabilities or ("*",)

    async def _chatter(self, period: float) -> None:
        while True:
            await anyio.sleep(period)
            if not self.jobs:
                await self._say("idle, awaiting orders", "idle")

    # --- work ------------------------------------------------------------------------------------
    def _spawn(self, task_id: str, token: int, claimed: Task | None, taken_ms: int = 0,
               log_context: dict[str, str] | None = None) -> None:
        """Run a task: `claimed` (already running, from a claim) or an assignment still to start."""
        if self._workers is None:
            return
        old = self.jobs.get(task_id)
        if old is not None:
            if token <= old.token:
                return  # a redelivery of what we already run
            # The task came back to us with a newer token (our lease ran out while we were paused,
            # and it was handed to us again): the old run is fenced off; the new one takes over.
            old.lost = True
            old.scope.cancel()
        job = _Job(task_id, token, taken_ms=taken_ms, log_context=log_context or {})
        self.jobs[task_id] = job
        self._send_job.send_nowait((job, claimed))

    async def _worker(self) -> None:
        """One of the K workers: runs queued jobs one after another."""
        async for job, claimed in self._next_job:
            if job.lost:  # it came back with a newer token before it started: that one runs instead
                self._finished(job)
                continue
            if self._stopping:  # shutting down: what has not started goes back to the board now
                await self._give_back(job)
                self._finished(job)
                continue
            # Lines logged while it runs name the task (and the assignment message it came in).
            structlog.contextvars.bind_contextvars(task=job.task_id, **job.log_context)
            try:
                await self._work(job, claimed)
            finally:
                structlog.contextvars.unbind_contextvars("task", *job.log_context)

    async def _release_queued(self) -> None:
        """At shutdown: give back the jobs no worker got to."""
        while True:
            try:
                job, _ = self._next_job.receive_nowait()
            except anyio.WouldBlock:
                return
            if not job.lost:
                await self._give_back(job)
            self._finished(job)

    async def _give_back(self, job: _Job) -> None:
        """Release the job's task at shutdown (shielded): the next owner need not wait for the lease."""
        with anyio.CancelScope(shield=True):
            try:
                await self.board.release(job.task_id, job.token, f"{self.name} shut down")
            except SwarmError as exc:
                log.warning("release refused", task=job.task_id, reason=str(exc))

    async def _work(self, job: _Job, claimed: Task | None) -> None:
        went_on = False
        try:
            task = claimed if claimed is not None else await self._start(job)
            if self.metrics is not None:
                self.metrics.on_task_taken(task.kind, task.created, job.taken_ms or task.updated)
            # The claim or start script already said "working on" for us, in the same step.
            outcome = await self._run_handler(job, task)
            if outcome is None:
                if self.metrics is not None:
                    self.metrics.on_task_finished(task.kind, "lost", task.created, 0, 0)
            elif outcome[0]:
                went_on = self._report(job, task, outcome[1])
            else:
                await self._report_failure(job, task, outcome[1])
        except StaleToken as exc:
            log.warning("task lost to another owner", task=job.task_id, reason=str(exc))
        except SwarmError as exc:
            log.warning("task could not be started", task=job.task_id, reason=str(exc))
        except anyio.get_cancelled_exc_class():
            # Shutdown past the grace period: give the task back now rather than leave it to its
            # lease. A reported outcome is settled instead.
            if not job.lost and not job.reported:
                await self._give_back(job)
            raise
        finally:
            if not job.reported:  # a reported job stays counted until the settler has settled it
                self._finished(job)
        if self.claim and not self._stopping and not went_on:
            await self._claim_some()  # straight on to the next task, without waiting for an event

    def _finished(self, job: _Job) -> None:
        if self.jobs.get(job.task_id) is job:
            del self.jobs[job.task_id]
            self._changed.set()
            self._changed = anyio.Event()

    async def _run_handler(self, job: _Job, task: Task) -> tuple[bool, str] | None:
        """(ok, text) from the handler; None when its lease was lost (the heartbeat cancelled it)."""
        with job.scope:
            try:
                result = await self.handler(task, self.ctx)
            except Exception as exc:
                return False, _describe(exc)
            return True, _result_text(result)
        return None

    def _report(self, job: _Job, task: Task, result: str) -> bool:
        """Queue the task's completion for the settler, which reports it with the others that finish
        meanwhile (the script says it on the bus too) and claims the freed slots in the same call;
        the worker goes straight on to its next job. True: the freed slot is the settler's to refill."""
        job.reported = True
        self._outbox.append(_Done(job, task, result))
        self._kick.set()
        return True

    async def _report_failure(self, job: _Job, task: Task, reason: str) -> None:
        after = await self.board.fail(job.task_id, job.token, reason)
        self._said(1)
        self.failed += 1
        if self.metrics is not None:
            self.metrics.on_task_finished(task.kind, "failed", task.created, job.taken_ms, after.updated)
        log.warning("task failed", task=task.id, error=reason, state=after.state)

    async def _start(self, job: _Job) -> Task:
        """Start an assignment through the settler, batched with the others that arrived meanwhile."""
        request = _Start(job)
        self._starts.append(request)
        self._kick.set()
        await request.done.wait()
        if isinstance(request.result, SwarmError):
            raise request.result
        assert request.result is not None
        return request.result

    async def _start_batch(self, batch: list[_Start]) -> None:
        backoff = 0.1
        while True:
            try:
                results = await self.board.start_many(self.name, [(r.job.task_id, r.job.token) for r in batch])
                break
            except BackendError as exc:
                log.warning("cannot reach Redis to start tasks; retrying", error=str(exc), backoff=backoff)
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        self._said(sum(isinstance(result, Task) for _, result in results))
        for request, (_, result) in zip(batch, results, strict=True):
            request.result = result
            request.done.set()

    async def _settler(self) -> None:
        """Start assignments and report finished tasks in batches (claiming the slots they free).

        Group commit: while one call is in flight, tasks finishing meanwhile queue up and go
        together in the next, so a busy agent pays one round trip for many tasks."""
        while True:
            await self._kick.wait()
            self._kick = anyio.Event()
            while self._outbox or self._starts:
                if self._starts:
                    starts, self._starts = self._starts, []
                    await self._start_batch(starts)
                if self._outbox:
                    batch, self._outbox = self._outbox, []
                    await self._settle(batch)

    async def _flush(self) -> None:
        """Report what finished but is not settled yet (the settler may be mid-call), before the
        settler is cancelled: finished work is never left to a lease to be done again."""
        with anyio.move_on_after(5.0, shield=True):
            async with self._claiming:  # wait for a settle call in flight
                pass
            while self._outbox:
                batch, self._outbox = self._outbox, []
                await self._settle(batch, claim=False)

    async def _settle(self, batch: list[_Done], *, claim: bool = True) -> None:
        went_on = claim and self.claim and not self._stopping
        reports = [(d.job.task_id, d.job.token, d.result) for d in batch]
        backoff = 0.1
        async with self._claiming:  # the freed slots are refilled in the same call
            more = self.hold - len(self.jobs) + len(batch) if went_on else 0
            while True:
                try:
                    settled, claimed = await self.board.settle(self.name, reports, claim=max(0, more), caps=self._caps)
                    break
                except BackendError as exc:  # the handlers' work is done: keep trying to say so
                    log.warning("cannot reach Redis to report; retrying", error=str(exc), backoff=backoff)
                    await anyio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
            self._said(sum(r.error is None for r in settled) + len(claimed))
            for report, result in zip(batch, settled, strict=True):
                if result.error is None:
                    self.completed += 1
                    if self.metrics is not None:
                        task = report.task
                        self.metrics.on_task_finished(task.kind, "done", task.created, report.job.taken_ms,
                                                      result.updated)
                else:
                    log.warning("completion refused", task=result.id, reason=str(result.error))
                self._finished(report.job)
            self._take(claimed)

    async def _heartbeats(self) -> None:
        """Keep the registry and every owned task's lease fresh; stop work that was lost."""
        period = min(self.settings.heartbeat_s, self.settings.lease_s / 3)
        while True:
            try:
                if not await self.registry.heartbeat(self.name, self.instance):
                    log.error("another instance registered with this name; stopping", agent=self.name)
                    self._replaced.set()
                # Finished jobs are the settler's to report: their leases no longer matter.
                held = [job for job in self.jobs.values() if not job.reported]
                renewed = await self.board.renew(self.name, [(job.task_id, job.token) for job in held]) if held else []
                for job, (_, error) in zip(held, renewed, strict=True):
                    if error is not None and not job.reported:  # (not one that finished meanwhile)
                        log.warning("lease lost; abandoning task", task=job.task_id, reason=str(error))
                        job.lost = True
                        job.scope.cancel()
            except BackendError as exc:
                log.warning("cannot reach Redis to heartbeat", error=str(exc))
                if self.metrics is not None:
                    self.metrics.redis_errors.labels("agent").inc()
            await anyio.sleep(period)

    async def _say(self, text: str, state: str, task_id: str | None = None) -> None:
        try:
            await self.bus.publish(message(StatusBody(text=text, state=state, task_id=task_id),
                                           sender=self.name))
        except SwarmError as exc:
            log.warning("status not sent", error=str(exc))


@dataclass
class _Start:
    """An assignment waiting for the settler to start it."""

    job: _Job
    done: anyio.Event = field(default_factory=anyio.Event)
    result: Task | SwarmError | None = None


@dataclass
class _Done:
    """A finished task waiting for the settler to report it."""

    job: _Job
    task: Task
    result: str


async def _set_on(event: anyio.Event, scope: anyio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


def _describe(exc: BaseException) -> str:
    """`Type: message` of the exception that matters (unwrapping single-exception groups)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


def _result_text(result: Result) -> str:
    if result is None:
        return ""
    return result if isinstance(result, str) else json.dumps(result, default=str)

"""The agent runtime: register, heartbeat, take assignments (or claim work when idle), run up to K
tasks at once, report results, and shut down without losing work.

Work is fenced: every board call carries the task's token, so a task this agent lost is refused.
A handler never outlives its lease: when a renewal is refused, or the lease ran out while the agent
was paused, the handler is stopped at once (a Python handler is cancelled; a command gets SIGTERM,
then SIGKILL). Nor does it outlive the agent: a command's processes are killed by the agent's
lifeline even when the agent is killed with SIGKILL (see `swarm.lifeline`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import anyio.lowlevel
import structlog
from anyio.abc import TaskGroup
from redis.asyncio import Redis

from swarm.board import Board, Claimed, Settled, Task
from swarm.bus import Bus, Consumer, Delivery
from swarm.connection import retrying
from swarm.errors import BackendError, RateLimited, StaleToken, SwarmError
from swarm.keys import Keys
from swarm.lifeline import Lifeline
from swarm.presence import Presence, named
from swarm.protocol import Assignment, Command, HeartbeatBody, StatusBody, message, new_id
from swarm.recorder import Recorder
from swarm.registry import AgentCard, Registry
from swarm.settings import Settings
from swarm.settler import Finished, Settler

log = structlog.get_logger("swarm.agent")


@dataclass
class Context:
    """What a handler gets besides its task: who runs it, where to write, how to say progress."""

    agent: str
    settings: Settings
    workspace: Path
    bus: Bus
    env: dict[str, str] = field(default_factory=dict)
    board: Board | None = None
    lifeline: Lifeline | None = None
    """Where command handlers register their process groups, to die with the agent."""
    report_usage: Callable[[int, float], Awaitable[bool]] | None = None
    """The agent's way to report the running task's usage (see `usage`)."""
    worktree: Path | None = None
    """The task's own git checkout, when the agent runs each task in one (`swarm.workspace`); then
    `workspace` is the folder in it to work in, and a `cmd:` handler's working directory."""

    @property
    def artifacts(self) -> Path:
        """Where handlers write their artifacts: `<SWARM_HOME>/artifacts`."""
        path = self.settings.home / "artifacts"
        path.mkdir(parents=True, exist_ok=True)
        return path

    async def owns(self, task: Task) -> bool:
        """True while this agent still holds `task`: same owner and token, lease not run out. Ask
        before an irreversible step (a push, a payment): a task whose lease was lost may already run
        elsewhere, and its handler is about to be stopped."""
        board = self.board or Board(self.bus.redis, self.settings)
        return await board.holds(task.id, self.agent, task.token)

    async def usage(self, *, tokens: int = 0, usd: float = 0.0) -> bool:
        """Report what the running task used (model tokens, money): added to the task's, this agent's
        and the swarm's spend, which the board holds against their budgets. Returns False when that
        put the task over its own budget: it has failed, and this handler is being stopped."""
        if self.report_usage is None:
            raise RuntimeError("usage is reported from inside a handler that an Agent runs")
        return await self.report_usage(tokens, usd)

    async def progress(self, text: str, task_id: str | None = None) -> None:
        """Tell the swarm what the handler is doing (a status message on the bus). Over the publish
        rate (SWARM_PUBLISH_RATE) the message is dropped with a warning: the work goes on."""
        try:
            await self.bus.publish(message(StatusBody(text=text, state="working", task_id=task_id),
                                           sender=self.agent))
        except RateLimited as exc:
            log.warning("progress not sent", error=str(exc))


Result = str | dict[str, Any] | None
Handler = Callable[[Task, Context], Awaitable[Result]]


@dataclass
class _Job:
    task_id: str
    token: int
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    lost: bool = False
    reported: bool = False
    """Its completion is queued for the settler (or settled): nothing to release on the way out."""
    deadline: float = 0.0
    """When its lease runs out (monotonic clock) unless renewed: past it, the task is lost."""
    taken_ms: int = 0
    """When the task became ours (Redis clock): the assignment's or the claim's time; for metrics."""
    log_context: dict[str, str] = field(default_factory=dict)
    """Bound on every line logged while it runs, besides the task id (the assignment's message id)."""


IDLE_WAIT_S = 1.0
"""How long an idle agent blocks on its handoff list before it claims again (renewing its wait)."""
IDLE_ANNOUNCE_S = 2.0
"""How long the board keeps an idle agent's wait after its claim: past it (a dead agent's), nothing more
is handed to it. Longer than `IDLE_WAIT_S`, so that a live agent renews it before it lapses."""

_RUNNING: ContextVar[_Job | None] = ContextVar("swarm_running_job", default=None)
"""The job a worker runs (so a handler's `ctx.usage` knows which task it reports for)."""


class Agent:
    """One agent process's runtime. `run(stop)` returns after a graceful shutdown."""

    def __init__(
        self, redis: Redis, settings: Settings, card: AgentCard, handler: Handler, *,
        workspace: Path | None = None, grace_s: float = 10.0, claim: bool = True,
        idle_chatter_s: float | None = None, env: dict[str, str] | None = None, metrics: Recorder | None = None,
        prefetch: int = 0,
    ) -> None:
        self.settings = settings
        # The card says how many it holds ahead, so that a captain hands it that many beyond its workers too.
        self.card = card.model_copy(update={"prefetch": max(0, prefetch)}) if prefetch else card
        self.handler = handler
        self.grace_s = grace_s
        self.claim = claim
        self.hold = card.concurrency + max(0, prefetch)
        """Most tasks held at once: `concurrency` running plus `prefetch` claimed (or assigned) ahead, so
        that a worker that finishes never waits for a round trip to get its next task. Held tasks count as
        running on the board, are heartbeated like the rest, and are released, not run, on shutdown."""
        self.idle_chatter_s = idle_chatter_s
        self.instance = new_id()
        self.connection = Keys(settings.name).connection(self.instance)
        self.trusts_handouts = not (settings.user or urlsplit(settings.redis_url or "").username)
        """Run tasks a hand-out from the board carries as it carries them. Not under ACL users (this agent
        connects as a user of its own): a raw XADD could forge one, so they are read back first."""
        # Every connection of this instance carries its name: when they are all gone, so is the
        # instance, and a sweeper puts its tasks back on the board in seconds (swarm.presence).
        redis = named(redis, self.connection)
        self.redis = redis
        self.metrics = metrics or Recorder()
        self.bus = Bus(redis, settings, self.metrics)
        self.inbox: Consumer | None = None
        self.board = Board(redis, settings, metrics=self.metrics)
        self.registry = Registry(redis, settings)
        self.lifeline = Lifeline()
        self.ctx = Context(card.name, settings, workspace or Path.cwd(), self.bus, env or {}, self.board, self.lifeline,
                           self._usage)
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
        self._left = False
        self.settler = Settler[_Job](self.board, card.name, self._caps, claiming=self._claiming,
                                     room=self._room, settled=self._settled)

    @property
    def name(self) -> str:
        """The agent's name."""
        return self.card.name

    @property
    def stopping(self) -> bool:
        """True once the agent stopped taking work and is draining what it runs."""
        return self._stopping

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
        self.lifeline.start()
        self.inbox = inbox
        self.card = await self.registry.register(
            self.card, self.instance, connection=self.connection if self.settings.presence else "")
        self.settler.caps = self._caps
        if self.settings.budget_usd is not None:  # SWARM_BUDGET_USD: the board enforces it from now on
            await self.board.set_budget(self.settings.budget_usd)
        structlog.contextvars.bind_contextvars(agent=self.name)
        await self._say("online, ready for work", "idle")
        await self.bus.publish(message(HeartbeatBody(instance=self.instance, capacity=self.card.concurrency),
                                       sender=self.name, to="@captain"))
        try:
            async with anyio.create_task_group() as life:
                life.start_soon(self._heartbeats)
                life.start_soon(self.settler.run)
                if self.claim:  # with no captain, the agents that claim recover the dead ones' tasks
                    life.start_soon(Presence(self.redis, self.settings).run)
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
                    # Gone from the captain's view before anything is given back: a released task
                    # must not be assigned straight back to an agent that is leaving.
                    await self._leave()
                    await self._drain()
                    workers.cancel_scope.cancel()
                await self._release_queued()
                await self.settler.flush()
                life.cancel_scope.cancel()
        finally:
            self._send_job.close()
            self._next_job.close()
            self.lifeline.close()
            with anyio.CancelScope(shield=True):
                await self._leave()
                await self._release_leftovers()
                await self._say("offline", "done")
                await self.redis.aclose()

    async def _leave(self) -> None:
        """Deregister (once): no more assignments come our way."""
        if not self._left:
            self._left = True
            try:
                await self.registry.deregister(self.name, self.instance)
            except SwarmError as exc:
                log.warning("cannot deregister", error=str(exc))

    async def _release_leftovers(self) -> None:
        """Give back what the board still says we own: assignments made while we were leaving, which
        we never read. Not when a newer instance took the name: those tasks are its own."""
        if self._replaced.is_set():
            return
        try:
            for task_id in sorted(await self.board.owned(self.name)):
                task = await self.board.get(task_id)
                if task.owner == self.name and not task.terminal:
                    await self.board.release(task_id, task.token, f"{self.name} shut down", agent=self.name)
        except SwarmError as exc:
            log.warning("cannot give back the tasks left", error=str(exc))

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
            body = msg.body
            if body.instance and body.instance != self.instance:
                log.info("assignment for an earlier instance ignored", tasks=[ref[0] for ref in body.refs()])
                return
            context = {"message_id": msg.id}
            if body.state == "running":
                if msg.sender == "board" and self.board.speak:  # the board said "working on" in our name
                    self.metrics.on_publish_many(["status"])
                # The captain handed these out started: run them now, as the message carries them (or,
                # when too big to carry, as read in one round trip: one that moved on since is skipped).
                refs = body.refs()
                # Carried tasks are as the board held them at hand-out: trusted only while that is recent
                # (a paused agent reading late reads them again, and skips those no longer its own).
                fresh = time.time() * 1000 - msg.ts < self.settings.lease_s * 500
                tasks = _carried(msg) if fresh and self.trusts_handouts else None
                if tasks is None:
                    tasks = await self.board.received(self.name, refs)
                if len(tasks) < len(refs):
                    mine = {t.id for t in tasks}
                    log.info("assigned tasks moved on before they ran", tasks=[i for i, _ in refs if i not in mine])
                for task in tasks:
                    self._spawn(task.id, task.token, task, msg.ts, context)
            else:  # `assigned`: accepted with `own start` (batched by the settler) when a worker takes it
                for task_id, token in body.refs():
                    self._spawn(task_id, token, None, msg.ts, context)
        elif isinstance(msg, Command) and msg.body.name == "ping":
            await self._say(f"pong ({len(self.jobs)}/{self.card.concurrency} busy)", "idle")

    async def _claimer(self) -> None:
        """Claim when there is room and maybe work: at start, and after any claim came back short
        (a settle's, or one after a failed or lost job). A claim that came back short leaves the
        agent waiting idle on the board (the idle hand-off, PROTOCOL.md 7.12): whatever makes a task
        ready meanwhile claims it for this agent and pushes it onto its handoff list, which the agent
        blocks on, so a new task reaches it in one hop. After `IDLE_WAIT_S` without one it claims
        again, which renews the wait and takes what became ready without a hand-off (a retry whose
        backoff ended, a kind resumed). Never while busy: a busy agent's completions claim its next
        tasks."""
        while True:
            self._hungry = anyio.Event()
            tip = await self._claim_some()
            if tip is None:  # got all it asked for, or had no room: wait until a claim comes back short
                await self._hungry.wait()
            elif not tip:
                await anyio.sleep(0.5)  # Redis trouble: try again shortly
            else:
                await self._wait_handoff(time.monotonic() + IDLE_WAIT_S)

    async def _wait_handoff(self, until: float) -> None:
        """Pop what the board hands this agent (up to its free slots) until `until` (monotonic)."""
        while not self._stopping and not self._replaced.is_set():
            free, left = self.hold - len(self.jobs), until - time.monotonic()
            if free <= 0 or left < 0.005:
                return
            try:
                handed = await self.board.handoff(self.name, free, wait_s=left)
            except BackendError as exc:  # connection trouble: the claimer's next turn retries
                log.warning("cannot wait for a hand-off", error=str(exc))
                await anyio.sleep(0.5)
                return
            now_ms = time.time() * 1000
            for task in handed:
                if task.lease_until > now_ms:
                    self._spawn(task.id, task.token, task, task.updated)
                else:  # handed before a pause longer than its lease: it is someone else's by now
                    log.warning("handed task's lease ran out before it was taken", task=task.id)
            await anyio.lowlevel.checkpoint()  # the workers start what came before this waits again

    async def _claim_some(self) -> str | None:
        """Claim ready tasks up to spare capacity; the lock keeps two runs from overfilling. Returns
        the board's event id when it took fewer than it asked for (the agent then waits idle for a
        hand-off; '' when Redis could not be reached), else None."""
        async with self._claiming:
            free = self.hold - len(self.jobs)
            if self._stopping or free <= 0:
                return None
            try:  # one call for all free slots; short, it waits idle for the rest (`_wait_handoff`)
                claimed = await self.board.claim(self.name, self._caps, free, wait_s=IDLE_ANNOUNCE_S)
            except BackendError as exc:
                log.warning("cannot reach Redis to claim", error=str(exc))
                return ""
            self._take(claimed)
            return claimed.tip

    def _take(self, claimed: Claimed) -> None:
        """Run what a claim (or a settle's claim) took; when it took fewer than it asked for, the queue
        ran dry, and the claimer starts watching for new work."""
        for task in claimed.tasks:
            self._spawn(task.id, task.token, task, task.updated)
        if claimed.tip is not None:
            self._hungry.set()

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
        job = _Job(task_id, token, taken_ms=taken_ms, log_context=log_context or {},
                   deadline=time.monotonic() + self.settings.lease_s)
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
            running = _RUNNING.set(job)
            try:
                await self._work(job, claimed)
            finally:
                _RUNNING.reset(running)
                structlog.contextvars.unbind_contextvars("task", *job.log_context)

    async def _usage(self, tokens: int, usd: float) -> bool:
        """`Context.usage` for the job this worker runs: stop it at once when it went over budget."""
        job = _RUNNING.get()
        if job is None:
            raise RuntimeError("usage is reported from inside a running handler")
        _, over = await self.board.usage(job.task_id, job.token, agent=self.name, tokens=tokens, usd=usd)
        if over:
            self._lose(job, "the task went over its budget")
        return not over

    async def _release_queued(self) -> None:
        """At shutdown: give back the jobs no worker got to, and the tasks handed to us not popped."""
        while True:
            try:
                job, _ = self._next_job.receive_nowait()
            except anyio.WouldBlock:
                break
            if not job.lost:
                await self._give_back(job)
            self._finished(job)
        await self._release_handed()

    async def _release_handed(self) -> None:
        """At shutdown: give back what the board handed us and we never popped. (We left first, so
        nothing more is handed to us; not when a newer instance took the name: the list is its own.)"""
        if not self.claim or self._replaced.is_set():
            return
        with anyio.CancelScope(shield=True):
            try:
                handed = await self.board.handoff(self.name, 1000)
            except SwarmError as exc:
                log.warning("cannot take back the tasks handed over", error=str(exc))
                return
            for task in handed:
                try:
                    await self.board.release(task.id, task.token, f"{self.name} shut down", agent=self.name)
                except SwarmError as exc:
                    log.warning("release refused", task=task.id, reason=str(exc))

    async def _give_back(self, job: _Job) -> None:
        """Release the job's task at shutdown (shielded): the next owner need not wait for the lease."""
        with anyio.CancelScope(shield=True):
            try:
                await self.board.release(job.task_id, job.token, f"{self.name} shut down", agent=self.name)
            except SwarmError as exc:
                log.warning("release refused", task=job.task_id, reason=str(exc))

    async def _work(self, job: _Job, claimed: Task | None) -> None:
        went_on = False
        try:
            task = claimed if claimed is not None else await self.settler.start(job.task_id, job.token)
            self.metrics.on_task_taken(task.kind, task.created, job.taken_ms or task.updated)
            # The claim or start script already said "working on" for us, in the same step.
            outcome = await self._run_handler(job, task)
            if outcome is None:
                self.metrics.on_task_finished(task.kind, "lost", task.created, 0, 0)
            elif outcome[0]:
                # The settler reports it with the others that finish meanwhile and refills the
                # freed slot in the same call; this worker goes straight on to its next job.
                job.reported = True
                self.settler.report(Finished(job, task, job.token, outcome[1]))
                went_on = True
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

    async def _report_failure(self, job: _Job, task: Task, reason: str) -> None:
        """Record that the handler failed. The work is over, so its outcome must reach the board as
        a completion's does: retried while Redis is unreachable (a lease that runs out meanwhile makes
        it stale, reported as lost). A refusal is logged as what it is, not as a start that failed."""
        try:
            after = await retrying(lambda: self.board.fail(job.task_id, job.token, reason, agent=self.name),
                                   "report a task failed", task=job.task_id)
        except StaleToken:
            raise
        except SwarmError as exc:
            log.warning("failure report refused", task=job.task_id, reason=str(exc))
            return
        self.failed += 1
        self.metrics.on_task_finished(task.kind, "failed", task.created, job.taken_ms, after.updated)
        log.warning("task failed", task=task.id, error=reason, state=after.state)

    def _room(self, finishing: int) -> int:
        """How many tasks a settle of `finishing` tasks should claim: the slots it frees and any
        others free (none when this agent does not claim, or is stopping)."""
        if not self.claim or self._stopping:
            return 0
        return self.hold - len(self.jobs) + finishing

    def _settled(self, outcomes: list[tuple[Finished[_Job], Settled]], claimed: Claimed) -> None:
        """A settle's outcome: count what was done, free the jobs, run what it claimed."""
        for finished, result in outcomes:
            if result.error is None:
                self.completed += 1
                task = finished.task
                self.metrics.on_task_finished(task.kind, "done", task.created, finished.job.taken_ms, result.updated)
            else:
                log.warning("completion refused", task=result.id, reason=str(result.error))
            self._finished(finished.job)
        self._take(claimed)

    async def _heartbeats(self) -> None:
        """Keep the registry and every owned task's lease fresh; stop work that was lost."""
        period = self.settings.heartbeat_period_s
        while True:
            try:
                if not self._stopping and not await self.registry.heartbeat(self.name, self.instance, self.card):
                    log.error("another instance registered with this name; stopping", agent=self.name)
                    self._replaced.set()
                # Finished jobs are the settler's to report: their leases no longer matter.
                held = [job for job in self.jobs.values() if not job.reported]
                sent = time.monotonic()
                for job in held:  # (first thing after a pause: a lease that ran out meanwhile is lost)
                    if sent > job.deadline:
                        self._lose(job, "the lease ran out before it was renewed (was the agent paused?)")
                held = [job for job in held if not job.lost]
                renewed = await self.board.renew(self.name, [(job.task_id, job.token) for job in held]) if held else []
                for job, (_, error) in zip(held, renewed, strict=True):
                    if error is None:
                        job.deadline = sent + self.settings.lease_s
                    elif not job.reported:  # (not one that finished meanwhile)
                        self._lose(job, str(error))
            except BackendError as exc:
                log.warning("cannot reach Redis to heartbeat", error=str(exc))
                self.metrics.on_redis_error("agent")
            await anyio.sleep(period)

    def _lose(self, job: _Job, reason: str) -> None:
        """The task is no longer ours: stop its handler now (it may already run elsewhere)."""
        log.warning("lease lost; stopping the task's handler", task=job.task_id, reason=reason)
        job.lost = True
        job.scope.cancel()

    async def _say(self, text: str, state: str, task_id: str | None = None) -> None:
        try:
            await self.bus.publish(message(StatusBody(text=text, state=state, task_id=task_id),
                                           sender=self.name))
        except SwarmError as exc:
            log.warning("status not sent", error=str(exc))


async def _set_on(event: anyio.Event, scope: anyio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


def _carried(msg: Assignment) -> list[Task] | None:
    """The tasks an assignment from the board carries whole (`body.tasks`), or None when it does not
    (too big to carry, or not from the board): then they are read."""
    body = msg.body
    if msg.sender != "board" or body.tasks is None or len(body.tasks) != len(body.refs()):
        return None
    try:
        tasks = [Task.from_redis(fields) for fields in body.tasks]
    except ValueError:
        return None
    return tasks if [(t.id, t.token) for t in tasks] == body.refs() else None


def _describe(exc: BaseException) -> str:
    """`Type: message` of the exception that matters (unwrapping single-exception groups)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


def _result_text(result: Result) -> str:
    if result is None:
        return ""
    return result if isinstance(result, str) else json.dumps(result, default=str)

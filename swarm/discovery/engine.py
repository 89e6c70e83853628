"""The discovery engine: repeated chatter in, claimable tasks out.

It reads the broadcast stream through its own consumer group. Each status or chat message goes
to the `Detector`; a repetition signal is published to `@captain` (one signal, not the flood) and
runs the work sources for the capabilities of the agent that keeps repeating itself (every source
for a swarm-wide signal). Findings become tasks with the board's idempotent create, so a rescan
never duplicates; a task whose findings are gone on a rescan is cancelled as obsolete. When a
signal keeps repeating and no new work turns up, the captain gets one escalation for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import anyio
import structlog
from redis.asyncio import Redis

from swarm.board import Board, TaskSpec
from swarm.bus import Bus, Consumer, Delivery
from swarm.connection import doing, text
from swarm.discovery.findings import TaskDraft
from swarm.discovery.limits import DiscoveryLimits
from swarm.discovery.repetition import SWARM_SCOPE, Detector, RepetitionSettings
from swarm.discovery.sources import Source, load_sources
from swarm.discovery.workspace import Workspace
from swarm.errors import IllegalTransition
from swarm.keys import CAPTAIN, Keys
from swarm.protocol import ChatBody, Signal, message
from swarm.recorder import Recorder
from swarm.registry import Registry
from swarm.settings import Settings

log = structlog.get_logger("swarm.discovery")

GROUP = "discovery"
RESCAN_S = 30.0
"""A source's drafts are reused for this long before a new signal scans the tree again."""

Progress = Callable[[str, int, int], None]
"""Called as (source name, sources done, sources in all) while a scan runs."""


@dataclass
class Outcome:
    """What one discovery run did to the board."""

    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    obsolete: list[str] = field(default_factory=list)
    drafts: list[TaskDraft] = field(default_factory=list)
    placed: list[tuple[TaskDraft, str, bool]] = field(default_factory=list)
    """Each draft put on the board, in order, with its task id and whether it was new."""

    def merge(self, other: Outcome) -> None:
        """Add another run's results to this one."""
        self.created += other.created
        self.existing += other.existing
        self.obsolete += other.obsolete
        self.drafts += other.drafts
        self.placed += other.placed


class Discovery:
    """Signals to sources to tasks, for one swarm and one workspace."""

    def __init__(
        self, redis: Redis, settings: Settings, workspace: Path, *,
        sources: Sequence[Source] | None = None, repetition: RepetitionSettings | None = None,
        limits: DiscoveryLimits | None = None, sender: str = "discovery", metrics: Recorder | None = None,
    ) -> None:
        self.settings = settings
        self.root = workspace.resolve()
        self.keys = Keys(settings.name)
        self.redis = redis
        self.metrics = metrics or Recorder()
        self.bus = Bus(redis, settings, metrics)
        self.consumer: Consumer | None = None
        self.board = Board(redis, settings)
        self.registry = Registry(redis, settings)
        self.detector = Detector(redis, settings, repetition)
        self.sources = list(sources) if sources is not None else load_sources(limits=limits)
        self.sender = sender
        self.seen = 0
        self.signals = 0
        self.outcome = Outcome()
        self._cache: dict[str, tuple[float, list[TaskDraft]]] = {}
        self._lock = anyio.Lock()

    def readiness(self) -> tuple[bool, str]:
        """What /readyz says: ready once the engine's consumer group on the broadcast stream is attached."""
        if self.consumer is None or not self.consumer.attached:
            return False, f"consumer group {GROUP!r} not attached yet"
        return True, f"consumer group {GROUP!r} attached, {self.seen} messages seen"

    # --- scanning --------------------------------------------------------------------------------
    def sources_for(self, capabilities: Sequence[str]) -> list[Source]:
        """The sources whose task kind an agent with `capabilities` could do (all for `*`)."""
        if not capabilities or "*" in capabilities:  # no capabilities declared: the agent takes anything
            return list(self.sources)
        return [s for s in self.sources if s.kind in capabilities]

    def scan(self, sources: Sequence[Source], progress: Progress | None = None) -> dict[str, list[TaskDraft]]:
        """Run `sources` over the workspace now (blocking; one shared Workspace) -> drafts per source."""
        workspace = Workspace(self.root)
        out: dict[str, list[TaskDraft]] = {}
        for n, source in enumerate(sources):
            if progress:
                progress(source.name, n, len(sources))
            started = time.perf_counter()
            out[source.name] = source.drafts(workspace)
            log.debug("scanned", source=source.name, drafts=len(out[source.name]),
                      ms=round((time.perf_counter() - started) * 1000))
            self.metrics.on_scan(source.name, sum(len(d.findings) for d in out[source.name]),
                                 time.perf_counter() - started)
        if progress:
            progress("done", len(sources), len(sources))
        return out

    async def discover(
        self, sources: Sequence[Source] | None = None, *, evidence: Sequence[str] = (),
        dry_run: bool = False, progress: Progress | None = None, fresh: bool = True,
    ) -> Outcome:
        """Scan with `sources` (all by default) and put what they found on the board.

        Every source that ran is authoritative for its own findings: its earlier tasks whose key
        it no longer reports are cancelled as obsolete (unless they already finished).
        """
        chosen = list(self.sources if sources is None else sources)
        async with self._lock:
            now = time.monotonic()
            stale = [s for s in chosen if fresh or now - self._cache.get(s.name, (-1e9, []))[0] > RESCAN_S]
            if stale:
                scanned = await anyio.to_thread.run_sync(self.scan, stale, progress)
                for name, drafts in scanned.items():
                    self._cache[name] = (time.monotonic(), drafts)
            outcome = Outcome()
            for source in chosen:
                drafts = self._cache[source.name][1]
                outcome.drafts += drafts
                if not dry_run:
                    outcome.merge(await self._apply(source, drafts, evidence))
        if not dry_run:
            self.outcome.merge(Outcome(outcome.created, outcome.existing, outcome.obsolete))
        return outcome

    async def _apply(self, source: Source, drafts: Sequence[TaskDraft], evidence: Sequence[str]) -> Outcome:
        outcome = Outcome()
        index = self.keys.discovered(source.name)
        with doing("reading discovered tasks"):
            before = {text(k): text(v) for k, v in (await self.redis.hgetall(index)).items()}
        found: dict[str, str] = {}
        for d in drafts:
            task, created = await self.board.create(TaskSpec(
                kind=d.kind, title=d.title[:300], body=d.body, priority=d.priority, key=d.key,
                evidence=tuple(evidence), caps=d.capabilities, files=d.files,
            ))
            found[d.key] = task.id
            (outcome.created if created else outcome.existing).append(task.id)
            outcome.placed.append((d, task.id, created))
        for key, task_id in before.items():  # keys the sources no longer report
            if key in found:
                continue
            try:
                await self.board.cancel(task_id, f"obsolete: {source.name} no longer finds this on rescan")
                outcome.obsolete.append(task_id)
                # Forget the key of a task closed as obsolete: should the finding come back (a branch
                # switch, a revert), a new task is made for it instead of the cancelled one returned.
                with doing("forgetting an obsolete task's key"):
                    await self.redis.hdel(self.keys.dedup, key)
            except IllegalTransition:
                pass  # finished already: its history stands
        with doing("recording discovered tasks"):
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(index)
                if found:
                    pipe.hset(index, mapping=cast(dict[Any, Any], found))
                await pipe.execute()
        self.metrics.on_discovered(source.name, len(outcome.created), len(outcome.obsolete))
        return outcome

    # --- the live engine ---------------------------------------------------------------------------
    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Consume the broadcast stream until cancelled (resumes where the group left off)."""
        structlog.contextvars.bind_contextvars(agent=self.sender)
        consumer = self.bus.consumer(GROUP, self.sender, [self.keys.bus], start="$")
        await consumer.setup()
        self.consumer = consumer
        task_status.started()
        await consumer.run(self.on_message)

    async def on_message(self, delivery: Delivery) -> None:
        """Count one message; act on the signals it fires."""
        self.seen += 1
        self.metrics.on_observed()
        for signal in await self.detector.observe(delivery.message):
            self.signals += 1
            self.metrics.on_signal("swarm" if signal.body.agent == SWARM_SCOPE else "agent")
            await self.bus.publish(signal)
            await self.on_signal(signal)

    async def on_signal(self, signal: Signal) -> Outcome:
        """Run the sources fitting the repeating agent, and escalate once if nothing new turns up."""
        agent = signal.body.agent
        if agent == SWARM_SCOPE:
            sources = list(self.sources)
        else:
            card = await self.registry.card(agent)
            sources = self.sources_for(card.capabilities if card else ("*",))
        outcome = await self.discover(sources, evidence=(signal.id, *signal.body.evidence[:16]), fresh=False)
        log.info("signal", agent=agent, count=signal.body.count, sample=signal.body.sample,
                 created=len(outcome.created), sources=[s.name for s in sources])
        ready = [t for t in outcome.created + outcome.existing if (await self.board.get(t)).state == "open"]
        if not ready:
            await self._escalate(signal, [s.name for s in sources])
        return outcome

    async def _escalate(self, signal: Signal, sources: list[str]) -> None:
        with doing("recording an escalation"):
            first = await self.redis.sadd(self.keys.escalated, signal.id)
        if not first:
            return
        who = "the swarm" if signal.body.agent == SWARM_SCOPE else signal.body.agent
        text = (f"{who} keeps repeating {signal.body.sample!r} ({signal.body.count} times) and the sources "
                f"({', '.join(sources) or 'none fit its capabilities'}) found no open work in {self.root}; "
                "give it a task or change its capabilities")
        await self.bus.publish(message(ChatBody(text=text[:4000]), sender=self.sender, to=CAPTAIN,
                                       correlation_id=signal.id, priority="urgent"))

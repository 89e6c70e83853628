"""The discovery engine: repeated chatter in, claimable tasks out.

It reads the broadcast stream through its own consumer group. Each status or chat message goes
to the `Detector`; a repetition signal is published to `@captain` (one signal, not the flood) and
runs the work sources for the capabilities of the agent that keeps repeating itself (every source
for a swarm-wide signal). Findings become tasks with the board's idempotent `create_many`, so a
rescan never duplicates. The rest of a rescan is one script (`swarm/lua/rescan.lua`): a task whose
findings changed (one fixed, lines moved) gets the new title, body and line numbers (a `refreshed`
event), a task whose findings are gone is cancelled as obsolete and its dedup key freed, and the
source's index is rewritten, all in one step. When a signal keeps repeating and no new work turns
up, the captain gets one escalation for it. A `blocked` signal (an agent that keeps saying it is
blocked) finds no work: it is escalated to the captain, saying who is blocked on what, once.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import structlog
from redis.asyncio import Redis

from swarm.board import Board, TaskSpec, refused
from swarm.bus import Bus, Consumer, Delivery
from swarm.connection import doing, text
from swarm.discovery.findings import TaskDraft
from swarm.discovery.limits import DiscoveryLimits
from swarm.discovery.repetition import SWARM_SCOPE, Detector, RepetitionSettings
from swarm.discovery.sources import Source, former_names, load_sources
from swarm.discovery.text import BLOCKED_FAMILY
from swarm.discovery.workspace import Workspace
from swarm.errors import RateLimited
from swarm.keys import CAPTAIN, Keys
from swarm.lua import Scripts
from swarm.protocol import ChatBody, Message, Signal, message, new_id
from swarm.recorder import Recorder
from swarm.registry import Registry
from swarm.settings import Settings

log = structlog.get_logger("swarm.discovery")

GROUP = "discovery"
RESCAN_S = 30.0
"""A source's drafts are reused for this long before a new signal scans the tree again."""

Progress = Callable[[str, int, int], None]
"""Called as (source name, sources done, sources in all) while a scan runs."""

_BLOCKED_PREFIX = re.compile(
    r"^\W*(?:(?:i am|i'm|im|still|currently|now)\s+)*blocked\b[\s:,.;-]*(?:(?:on|by)\s+)?", re.IGNORECASE
)


@dataclass
class Outcome:
    """What one discovery run did to the board."""

    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    obsolete: list[str] = field(default_factory=list)
    refreshed: list[str] = field(default_factory=list)
    """Existing tasks whose title, body or line numbers the rescan brought up to date."""
    drafts: list[TaskDraft] = field(default_factory=list)
    placed: list[tuple[TaskDraft, str, bool]] = field(default_factory=list)
    """Each draft put on the board, in order, with its task id and whether it was new."""

    def merge(self, other: Outcome) -> None:
        """Add another run's results to this one."""
        self.created += other.created
        self.existing += other.existing
        self.obsolete += other.obsolete
        self.refreshed += other.refreshed
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
        self.limits = limits or DiscoveryLimits()
        """What the walk of the tree obeys (`max_file_bytes`), and the sources loaded here."""
        self.sources = list(sources) if sources is not None else load_sources(limits=self.limits)
        self._scripts = Scripts(redis)
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
        workspace = Workspace(self.root, self.limits)
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
            self.outcome.merge(Outcome(outcome.created, outcome.existing, outcome.obsolete, outcome.refreshed))
        return outcome

    async def _apply(self, source: Source, drafts: Sequence[TaskDraft], evidence: Sequence[str]) -> Outcome:
        outcome = Outcome()
        former = former_names(source.name)
        with doing("reading discovered tasks"):
            async with self.redis.pipeline(transaction=False) as pipe:
                for name in (*former, source.name):  # a renamed source's old index first: the new one wins
                    pipe.hgetall(self.keys.discovered(name))
                indexes: list[dict[Any, Any]] = await pipe.execute()
        before = {text(k): text(v) for index in indexes for k, v in index.items()}
        specs = [
            TaskSpec(kind=d.kind, title=d.title[:300], body=d.body, priority=d.priority, key=d.key,
                     evidence=tuple(evidence), caps=d.capabilities, files=d.files)
            for d in drafts
        ]
        placed = await self.board.create_many(specs)
        found: dict[str, str] = {}
        existing: list[tuple[TaskSpec, str]] = []
        for d, spec, (task_id, created) in zip(drafts, specs, placed, strict=True):
            found[d.key] = task_id
            (outcome.created if created else outcome.existing).append(task_id)
            outcome.placed.append((d, task_id, created))
            if not created:
                existing.append((spec, task_id))
        scan = {
            "found": found,
            "refresh": await self._changed(existing),
            "obsolete": [[key, task_id] for key, task_id in before.items() if key not in found],
            "reason": f"obsolete: {source.name} no longer finds this on rescan",
            "forget": list(former),
        }
        reply = await self._rescan(source.name, scan)
        outcome.obsolete += reply.get("obsolete") or []
        outcome.refreshed += reply.get("refreshed") or []
        self.metrics.on_discovered(source.name, len(outcome.created), len(outcome.obsolete))
        return outcome

    async def _changed(self, existing: Sequence[tuple[TaskSpec, str]]) -> list[dict[str, Any]]:
        """The existing tasks whose title, body, priority or files differ from the rescan's: what to refresh."""
        if not existing:
            return []
        fields = ("title", "body", "priority", "files")
        with doing("reading discovered tasks"):
            async with self.redis.pipeline(transaction=False) as pipe:
                for _, task_id in existing:
                    pipe.hmget(self.keys.task(task_id), fields)
                stored: list[list[Any]] = await pipe.execute()
        out: list[dict[str, Any]] = []
        for (spec, task_id), values in zip(existing, stored, strict=True):
            now = {"title": spec.title, "body": spec.body, "priority": str(spec.priority),
                   "files": "\n".join(spec.files)}
            if [text(v) if v is not None else None for v in values] != [now[f] for f in fields]:
                out.append({"id": task_id, "key": spec.key, **now, "evidence": ",".join(spec.evidence)})
        return out

    async def _rescan(self, source: str, scan: dict[str, Any]) -> dict[str, Any]:
        with doing("closing a rescan"):
            raw = await self._scripts["rescan"](
                keys=[self.keys.events],
                args=[self.keys.prefix, new_id(), self.settings.stream_maxlen, source, json.dumps(scan)],
            )
        reply: dict[str, Any] = json.loads(raw)
        error = refused(reply)
        if error is not None:
            raise error
        return reply

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
            await self._tell(signal)
            await self.on_signal(signal)

    async def _tell(self, msg: Message) -> None:
        """Publish `msg` (a signal, an escalation); over the publish rate it is dropped with a warning
        and the engine goes on (the signal's work is still looked for)."""
        try:
            await self.bus.publish(msg)
        except RateLimited as exc:
            log.warning("message to the captain not sent", kind=msg.kind, error=str(exc))

    async def on_signal(self, signal: Signal) -> Outcome:
        """Run the sources fitting the repeating agent, and escalate once if nothing new turns up.

        A `blocked` signal runs no source: the agent is not idle, it waits for something; the
        captain is told who is blocked on what, once per signal (a signal lasts while the reports
        keep coming within a window).
        """
        agent = signal.body.agent
        if signal.body.fingerprint == BLOCKED_FAMILY:
            await self._escalate_blocked(signal)
            return Outcome()
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

    async def _first_escalation(self, signal: Signal) -> bool:
        with doing("recording an escalation"):
            return bool(await self.redis.sadd(self.keys.escalated, signal.id))

    async def _escalate_blocked(self, signal: Signal) -> None:
        if not await self._first_escalation(signal):
            return
        body = signal.body
        what = _BLOCKED_PREFIX.sub("", body.sample).strip() or body.sample
        text = (f"{body.agent} is blocked: {what} (said {body.count} times); give it what it needs, "
                f"or reassign its work (`swarm task list --owner {body.agent}`)")
        await self._tell(message(ChatBody(text=text[:4000]), sender=self.sender, to=CAPTAIN,
                                 correlation_id=signal.id, priority="urgent", tags=("blocked",)))

    async def _escalate(self, signal: Signal, sources: list[str]) -> None:
        if not await self._first_escalation(signal):
            return
        who = "the swarm" if signal.body.agent == SWARM_SCOPE else signal.body.agent
        text = (f"{who} keeps repeating {signal.body.sample!r} ({signal.body.count} times) and the sources "
                f"({', '.join(sources) or 'none fit its capabilities'}) found no open work in {self.root}; "
                "give it a task or change its capabilities")
        await self._tell(message(ChatBody(text=text[:4000]), sender=self.sender, to=CAPTAIN,
                                 correlation_id=signal.id, priority="urgent"))

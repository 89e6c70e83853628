"""Repetition detection: count idle and look-alike chatter per agent and swarm-wide, coalesce it.

`Detector.observe` classifies each status or chat message (`swarm.discovery.text`) and hands the
verdicts to one Lua script (`swarm/lua/repetition_observe.lua`) that, atomically per batch:
records the message id (a redelivery changes nothing), slides the agent's and the swarm's windows,
counts the message under its family (`idle` for every idle paraphrase, else its family of
near-duplicates: close SimHash or overlapping feature sets), and fires a signal when a count
reaches its threshold. Later repeats only raise the open signal's count in Redis, so the captain's
feed sees one signal, not forty "standing by"s.

Chatter needs no lexicon to be caught: a family of near-duplicates that one agent repeats with no
progress in between ("Inbox checked at 14:02:11: no new messages" twice) is chatter from its first
repeat on, whatever its wording: its messages move into the agent's `idle` family and count with the
idle paraphrases (`repeats_are_chatter`). Progress is never counted and empties the agent's window.
Lifecycle statuses ("online, ready for work", "offline") are not counted at all. Reports of being
blocked ("Blocked: t-4 needs the API key") are not chatter either: they count in the agent's own
`blocked` family, and `blocked_threshold` of them make a signal tagged `blocked`, which the
discovery engine escalates to the captain instead of looking for work.

All state lives in Redis and every decision depends only on the messages (their ids, senders,
texts and timestamps), never on the wall clock or the process: kill the detector, start another
one on the same Redis, and the same signals come out with the same ids.

Drive it from a consumer handler:

    detector = Detector(redis, settings)
    async def handle(delivery: Delivery) -> None:
        for signal in await detector.observe(delivery.message):
            await bus.publish(signal)

Publishing is at-least-once: if the process dies after the script ran but before the signal was
published, the redelivered message returns the same signal (same id) again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import anyio
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from redis.asyncio import Redis

from swarm.connection import doing
from swarm.discovery.text import BLOCKED_FAMILY, Classifier, Verdict, normalize
from swarm.keys import CAPTAIN, Keys
from swarm.lua import Scripts
from swarm.protocol import AGENT_PATTERN, Chat, Message, Signal, SignalBody, Status
from swarm.settings import Settings

SWARM_SCOPE = "_swarm"
"""The `agent` of a swarm-wide signal (a reserved agent name): many agents, one family."""

SAMPLE_CHARS = 200
"""Characters of the triggering text kept as a signal's sample."""

_CLS = {"idle": "i", "other": "o", "progress": "p", "blocked": "b"}
_FIELDS = ("", "|c", "|l", "|o", "|e")
"""Per-signal fields of the signals hash: fixed-fields JSON, count, last seen, open, evidence."""


class RepetitionSettings(BaseSettings):
    """The knobs of repetition detection, from `SWARM_REPETITION_*` environment variables."""

    model_config = SettingsConfigDict(env_prefix="SWARM_REPETITION_", frozen=True, extra="ignore")

    window_s: float = Field(600.0, gt=0, description="Sliding window: repeats older than this are forgotten.")
    agent_threshold: int = Field(3, ge=2, description="Messages of one family from one agent that make a signal.")
    swarm_threshold: int = Field(12, ge=0, description="Messages of one family swarm-wide that make a signal; 0 = off.")
    simhash_distance: int = Field(
        6, ge=0, le=64, description="Texts whose 64-bit SimHashes differ in at most this many bits are one family."
    )
    min_overlap: float = Field(
        0.7, gt=0, le=1, description="Texts sharing this fraction of the smaller one's features are one family."
    )
    min_shared: int = Field(2, ge=1, description="Features two texts must share for `min_overlap` to apply.")
    max_residual: int = Field(2, ge=0, description="Content words beyond an idle phrase that still leave a text idle.")
    repeats_are_chatter: bool = Field(
        True, description="A message an agent repeats (any wording, near-duplicates too) with no progress in between "
        "is chatter from its first repeat on: it counts in the agent's `idle` family, with the idle paraphrases."
    )
    blocked_threshold: int = Field(
        2, ge=1, description="Reports of being blocked from one agent that make a `blocked` signal (escalated)."
    )
    max_evidence: int = Field(256, ge=1, le=256, description="Message ids a signal keeps as evidence.")
    max_signals: int = Field(1_000, ge=1, description="Signals kept for `swarm signals`; the oldest go first.")
    batch: int = Field(500, ge=1, description="Messages per script call in `observe_many`.")
    sender: str = Field("discovery", pattern=AGENT_PATTERN, description="Sender name of signal messages.")


@dataclass(frozen=True, slots=True)
class Repetition:
    """A signal as the detector keeps it: the message, its scope, and whether it is still open."""

    signal: Signal
    scope: Literal["agent", "swarm"]
    open: bool


class Detector:
    """Counts repeated chatter in Redis and coalesces it into signals (see the module docstring)."""

    def __init__(
        self, redis: Redis, settings: Settings, repetition: RepetitionSettings | None = None,
        classifier: Classifier | None = None,
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.repetition = repetition or RepetitionSettings()
        self.classifier = classifier or Classifier(max_residual=self.repetition.max_residual)
        self.keys = Keys(settings.name)
        self._scripts = Scripts(redis)
        self._window_ms = int(self.repetition.window_s * 1000)

    def verdict(self, msg: Message) -> Verdict | None:
        """What the classifier makes of `msg`; None for kinds other than status and chat.

        Lifecycle statuses ("online, ready for work", "offline") get a verdict but are never counted.
        """
        if isinstance(msg, Status):
            if msg.body.task_id and msg.body.state in ("working", "done"):
                # A status that names the task it is working on or finished is progress by
                # declaration, however alike the titles read ("done t-6: Fix ...", "done t-7: Fix ...").
                return Verdict("progress", "", 0, normalize(msg.body.text))
            return self.classifier.classify(msg.body.text, msg.body.state)
        if isinstance(msg, Chat):
            return self.classifier.classify(msg.body.text)
        return None

    async def observe(self, msg: Message) -> list[Signal]:
        """Count one message; returns the signals it fired (usually none; at most agent + swarm)."""
        return await self.observe_many((msg,))

    async def observe_many(self, msgs: Iterable[Message]) -> list[Signal]:
        """Count messages in order, in few round trips; returns the signals they fired, in order.

        Past one batch, the next batch is classified in a worker thread while Redis runs the
        script on the current one, so the two costs overlap instead of adding up.
        """
        items, size = list(msgs), self.repetition.batch
        batches = [items[i : i + size] for i in range(0, len(items), size)]
        if len(batches) <= 1:
            return await self._run(self._classified(batches[0])) if batches else []
        fired: list[Signal] = []
        current = self._classified(batches[0])
        for following in [*batches[1:], None]:
            upcoming: list[list[tuple[Message, Verdict]]] = []
            async with anyio.create_task_group() as tg:
                if following is not None:
                    tg.start_soon(self._classify_in_thread, following, upcoming)
                if current:
                    fired += await self._run(current)
            current = upcoming[0] if upcoming else []
        return fired

    def _classified(self, msgs: Sequence[Message]) -> list[tuple[Message, Verdict]]:
        """The messages the detector counts (status and chat), with their verdicts."""
        return [(m, v) for m in msgs if (v := self.verdict(m)) is not None and v.kind != "lifecycle"]

    async def _classify_in_thread(self, msgs: Sequence[Message], into: list[list[tuple[Message, Verdict]]]) -> None:
        into.append(await anyio.to_thread.run_sync(self._classified, msgs))

    async def signals(self, *, open_only: bool = False, limit: int = 100) -> list[Repetition]:
        """Kept signals, most recently active first; `open_only` keeps those still collecting repeats.

        A signal is open until its family has been quiet for a whole window (by the newest message
        timestamp seen, not the wall clock) or, for an agent, until that agent reports progress.
        """
        keys = self.keys
        with doing("listing repetition signals"):
            raw_ids = cast(list[bytes], await self.redis.zrevrange(keys.repetition_index, 0, -1))
            ids = [i.decode() for i in raw_ids]
            if not ids:
                return []
            fields = [f"{sid}{suffix}" for sid in ids for suffix in _FIELDS]
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hmget(keys.repetition_signals, fields)
                pipe.hget(keys.repetition_swarm, "t")
                values, clock = await pipe.execute()
        horizon = int(clock or 0) - self._window_ms
        out: list[Repetition] = []
        for n, sid in enumerate(ids):
            row = values[n * len(_FIELDS) : (n + 1) * len(_FIELDS)]
            if row[0] is None:  # evicted between the two reads
                continue
            rep = self._repetition(sid, row, horizon)
            if rep.open or not open_only:
                out.append(rep)
                if len(out) == limit:
                    break
        return out

    async def _run(self, chunk: Sequence[tuple[Message, Verdict]]) -> list[Signal]:
        keys, rep = self.keys, self.repetition
        script_keys = [
            keys.repetition_seen, keys.repetition_fires, keys.repetition_signals, keys.repetition_index,
            keys.repetition_swarm, keys.repetition_swarm_window,
        ]
        slot: dict[str, int] = {}
        args: list[str | int] = [
            self._window_ms, rep.agent_threshold, rep.swarm_threshold, rep.simhash_distance, rep.min_shared,
            repr(rep.min_overlap), rep.max_evidence, rep.max_signals, SWARM_SCOPE, rep.blocked_threshold,
            int(rep.repeats_are_chatter),
        ]
        for msg, verdict in chunk:
            index = slot.get(msg.sender)
            if index is None:
                index = slot[msg.sender] = len(script_keys) + 1  # Lua indexes KEYS from 1
                script_keys += (
                    keys.repetition_agent(msg.sender), keys.repetition_window(msg.sender),
                    keys.repetition_families(msg.sender),
                )
            fp = f"{verdict.fingerprint:016x}" if verdict.kind == "other" else ""
            args += (
                index, msg.sender, _CLS[verdict.kind], fp, verdict.signature, msg.id, msg.ts,
                _text(msg)[:SAMPLE_CHARS],
            )
        with doing("counting repetitions"):
            reply: list[Any] = await self._scripts["repetition_observe"](keys=script_keys, args=args)
        step = len(_FIELDS) + 2  # message position, signal id, then the fields
        return [
            self._repetition(reply[i + 1].decode(), reply[i + 2 : i + step], None).signal
            for i in range(0, len(reply), step)
        ]

    def _repetition(self, sid: str, row: Sequence[Any], horizon: int | None) -> Repetition:
        """A Repetition from the stored fields of signal `sid` (in `_FIELDS` order)."""
        fixed, count, last_seen, is_open, evidence = row
        rec = json.loads(fixed)
        scope: Literal["agent", "swarm"] = "swarm" if rec["scope"] == "swarm" else "agent"
        body = SignalBody(
            agent=rec["agent"], fingerprint=rec["fingerprint"], count=int(count), first_seen=rec["first_seen"],
            last_seen=int(last_seen), sample=rec["sample"], evidence=_netstrings(evidence or b""),
        )
        what = "blocked" if body.fingerprint == BLOCKED_FAMILY else "repetition"
        signal = Signal(
            id=sid, sender=self.repetition.sender, to=CAPTAIN, ts=rec["fired_at"],
            correlation_id=rec["fired_by"], tags=(what, f"scope:{scope}"), body=body,
        )
        still_open = int(is_open) == 1 and (horizon is None or int(last_seen) > horizon)
        return Repetition(signal, scope, still_open)


def _netstrings(raw: bytes) -> tuple[str, ...]:
    """Split `<byte length>:<id>` items (how the script stores evidence: any id is safe in it)."""
    out: list[str] = []
    at = 0
    while at < len(raw):
        colon = raw.index(b":", at)
        end = colon + 1 + int(raw[at:colon])
        out.append(raw[colon + 1 : end].decode())
        at = end
    return tuple(out)


def _text(msg: Message) -> str:
    return msg.body.text if isinstance(msg, Status | Chat) else ""

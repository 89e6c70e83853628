"""Repetition detection: text normalization and fingerprints, the labeled trace, kill and restart."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import pytest
from redis.asyncio import Redis

from swarm.bus import Bus
from swarm.discovery.repetition import SWARM_SCOPE, Detector, Repetition, RepetitionSettings
from swarm.discovery.text import Classifier, distance, features, fingerprint, normalize, overlap, signature, simhash
from swarm.protocol import ChatBody, HeartbeatBody, Message, Signal, Status, StatusBody, decode, message
from swarm.settings import Settings
from tests.fixtures import heldout
from tests.helpers import eventually

ROOT = Path(__file__).resolve().parent.parent
TRACE = Path(__file__).with_name("fixtures") / "trace.jsonl"
T0 = 1_717_000_000_000


def load_trace() -> tuple[list[Message], set[str]]:
    """The trace's messages in order, and the ids labeled repetitive."""
    msgs: list[Message] = []
    repetitive: set[str] = set()
    for line in TRACE.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        msg = decode(json.dumps(row["message"]))
        msgs.append(msg)
        if row["rep"]:
            repetitive.add(msg.id)
    return msgs, repetitive


def status(agent: str, text: str, at_s: float, n: int, state: Any = None) -> Message:
    return message(StatusBody(text=text, state=state), sender=agent, id=f"{agent}-{n}", ts=T0 + int(at_s * 1000))


def flagged(reps: Sequence[Repetition]) -> set[str]:
    """Message ids the detector counted into agent signals."""
    return {i for r in reps if r.scope == "agent" for i in r.signal.body.evidence}


def snapshot(reps: Sequence[Repetition]) -> list[tuple[Any, ...]]:
    return sorted((r.signal.id, r.scope, r.open, r.signal.ts, r.signal.body) for r in reps)


# --- normalize and fingerprint ----------------------------------------------------------------


def test_normalize_replaces_volatile_parts_with_placeholders() -> None:
    assert normalize("  Standing   BY!!  ") == "standing by"
    assert normalize("retry 3 of 10, took 1.5s") == "retry <num> of <num> took <num> s"
    assert normalize("see https://example.com/a?b=1 or www.x.org") == "see <url> or <url>"
    assert normalize("mail ops@example.com") == "mail <email>"
    assert normalize("id 550e8400-e29b-41d4-a716-446655440000") == "id <uuid>"
    assert normalize("task 01HZX3K4M5N6P7Q8R9S0T1V2W3 done") == "task <ulid> done"
    assert normalize("at commit a1b2c3d4e5f6") == "at commit <hex>"
    assert normalize("since 2024-06-01T10:15:00Z and 10:42:07") == "since <ts> and <ts>"
    assert normalize("edit swarm/bus.py, /var/log/x and ./run.sh") == "edit <path> <path> and <path>"
    assert normalize("C:\\Users\\me\\x.txt") == "<path>"
    assert normalize("ping @captain 🫡👍 :)") == "ping <mention> <emoji> <emoji>"
    assert normalize("coverage 87.5 %") == "coverage <pct>"
    assert normalize("I'm idle; it's quiet") == "im idle its quiet"
    assert normalize("<num> is not a placeholder") == "num is not a placeholder"
    assert normalize("ｓｔａｎｄｉｎｇ ｂｙ") == "standing by"


def test_fingerprint_is_stable_and_sees_near_duplicates() -> None:
    # blake2b, not Python's salted hash(): the same text has the same fingerprint in every process.
    assert f"{fingerprint('standing by'):016x}" == "b9a550c95aeb6add"
    assert fingerprint("") == 0
    text = "Still investigating the flaky timeout in tests/test_bus.py (run 3)"
    a = fingerprint(text)
    assert a == fingerprint("still investigating the flaky timeout in swarm/lua/claim.lua, run #7")
    assert distance(a, a) == 0
    assert distance(a, fingerprint("reviewing the lease module refactor proposal")) > 20


def sig(text: str) -> str:
    return signature(features(normalize(text)))


def test_overlap_catches_short_paraphrases_simhash_misses() -> None:
    base = "working on task 01HZX3K4M5N6P7Q8R9S0T1V2W3"
    longer = "still working on task 01J0000000000000000000000A (no ETA)"
    assert features(normalize(base)) == ["working", "task", "<ulid>", "working task", "task <ulid>"]
    assert distance(fingerprint(base), fingerprint(longer)) > 6  # SimHash: too far apart
    assert overlap(sig(base), sig(longer)) == (5, 1.0)  # every feature of the shorter one is shared
    assert overlap(sig(base), sig("reviewing the lease module refactor proposal")) == (0, 0.0)
    shared, share = overlap(sig(base), sig("claimed task 01HZX3K4M5N6P7Q8R9S0T1V2W3"))
    assert (shared, share) == (3, 0.6)
    assert share < RepetitionSettings().min_overlap
    assert overlap("", sig(base)) == (0, 0.0)


def test_simhash_matches_the_textbook_bit_vote() -> None:
    rng = random.Random(7)
    for n in (1, 2, 3, 10, 11, 64, 199, 200):
        feats = [f"w{rng.randrange(10**6)}" for _ in range(n)]
        votes = [0] * 64
        for f in feats:
            h = int.from_bytes(hashlib.blake2b(f.encode(), digest_size=8).digest(), "little")
            for i in range(64):
                votes[i] += 1 if h >> i & 1 else -1
        assert simhash(feats) == sum(1 << i for i in range(64) if votes[i] > 0)


@pytest.mark.parametrize(
    "text",
    ["standing by", "awaiting orders", "idle, no tasks", "ack, ready for next assignment",
     "Awaiting further instructions.", "nothing to do right now", "still here", "status unchanged", "queue empty",
     "roger that 👍", "any tasks for me?",
     "nothing committed yet, standing by", "let me know if you need anything", "waiting..."],
)
def test_idle_paraphrases_are_one_family(text: str) -> None:
    verdict = Classifier().classify(text)
    assert (verdict.kind, verdict.family) == ("idle", "idle")


@pytest.mark.parametrize(
    "text",
    ["committed fix for X", "tests pass on Y", "opened PR", "merged PR #42; ready for next assignment",
     "fixed idle connection leak in swarm/bus.py", "no tasks failed: 214 tests pass", "finished task 12, idle now",
     "CI green on main after a1b2c3d", "claimed task 01HZX3K4M5N6P7Q8R9S0T1V2W3"],
)
def test_progress_is_never_idle(text: str) -> None:
    assert Classifier().classify(text).kind == "progress"


@pytest.mark.parametrize(
    "text",
    ["waiting for PR 12 to be merged", "will push the fix soon", "did you merge PR 3?",
     "standing by for review of the lease module refactor", "the idle timeout setting should be configurable"],
)
def test_intentions_questions_and_substance_are_other(text: str) -> None:
    verdict = Classifier().classify(text)
    assert verdict.kind == "other"
    assert verdict.family == f"s:{verdict.fingerprint:016x}"


def test_declared_idle_state_counts_as_idle_unless_progress() -> None:
    c = Classifier()
    assert c.classify("checking the logs", "idle").kind == "idle"
    assert c.classify("merged PR 9", "idle").kind == "progress"


# --- the detector on the real server ------------------------------------------------------------


async def test_labeled_trace_precision_and_recall(redis: Redis, settings: Settings) -> None:
    msgs, truth = load_trace()
    assert len(msgs) >= 300
    assert len({m.sender for m in msgs}) >= 5
    detector = Detector(redis, settings)
    fired = [s for m in msgs for s in await detector.observe(m)]
    reps = await detector.signals(limit=10_000)
    found = flagged(reps)
    hits = len(found & truth)
    precision, recall = hits / len(found), hits / len(truth)
    assert precision >= 0.95, sorted(found - truth)
    assert recall >= 0.95, sorted(truth - found)
    # coalescing: one announcement per signal, however long the flood
    assert sorted(s.id for s in fired) == sorted(r.signal.id for r in reps)
    assert sum(r.signal.body.count for r in reps if r.scope == "agent") >= len(truth) * 0.95
    assert len(fired) < len(truth) / 2
    assert any(r.scope == "swarm" for r in reps)


async def test_restart_mid_trace_gives_the_same_signals(redis: Redis, settings: Settings) -> None:
    msgs, _ = load_trace()
    reference = Detector(redis, settings.model_copy(update={"name": "reference"}))
    ref_fired = await reference.observe_many(msgs)

    half = len(msgs) // 2
    first = Detector(redis, settings)
    fired = [s for m in msgs[:half] for s in await first.observe(m)]
    del first
    second = Detector(redis, settings)  # a new process would start from Redis alone, like this one
    # a redelivery of what the dead one handled changes nothing but repeats its announcements
    replayed = await second.observe_many(msgs[half - 40 : half])
    fired += await second.observe_many(msgs[half:])

    assert snapshot(await second.signals(limit=10_000)) == snapshot(await reference.signals(limit=10_000))
    assert [s.id for s in fired] == [s.id for s in ref_fired]
    assert {s.id for s in replayed} <= {s.id for s in fired}


async def test_kill_9_mid_trace_then_restart_gives_the_same_signals(
    redis: Redis, settings: Settings, bus: Bus
) -> None:
    msgs, _ = load_trace()
    await bus.publish_many(m.model_copy(update={"to": "@all"}) for m in msgs)
    reference = Detector(redis, settings.model_copy(update={"name": "reference"}))
    await reference.observe_many(msgs)

    proc = spawn(settings, "d1")
    try:
        await eventually(lambda: _handled_at_least(redis, bus, len(msgs) // 3))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not await _handled_at_least(redis, bus, len(msgs))  # killed mid-trace
    proc = spawn(settings, "d1")
    try:
        await eventually(lambda: _handled_at_least(redis, bus, len(msgs)))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    detector = Detector(redis, settings)
    reps = await detector.signals(limit=10_000)
    assert snapshot(reps) == snapshot(await reference.signals(limit=10_000))
    published = cast(list[tuple[bytes, dict[bytes, bytes]]], await redis.xrange(bus.keys.captain))
    assert {decode(fields[b"m"]).id for _, fields in published} == {r.signal.id for r in reps}


async def test_a_flood_is_one_signal_whose_count_grows(redis: Redis, settings: Settings) -> None:
    detector = Detector(redis, settings, RepetitionSettings(swarm_threshold=0))
    texts = ["standing by", "awaiting orders", "idle, no tasks", "ack, ready for next assignment"]
    fired = [s for n in range(40) for s in await detector.observe(status("a1", texts[n % 4], n * 5, n))]
    assert len(fired) == 1
    body = fired[0].body
    assert (body.agent, body.fingerprint, body.count, body.evidence) == ("a1", "idle", 3, ("a1-0", "a1-1", "a1-2"))
    assert (body.first_seen, body.last_seen, body.sample) == (T0, T0 + 10_000, "idle, no tasks")
    assert (fired[0].to, fired[0].sender, fired[0].ts) == ("@captain", "discovery", T0 + 10_000)
    [rep] = await detector.signals()
    assert rep.open
    assert (rep.signal.id, rep.signal.body.count, rep.signal.body.last_seen) == (fired[0].id, 40, T0 + 195_000)
    assert len(rep.signal.body.evidence) == 40


async def test_progress_and_quiet_windows_end_a_repetition(redis: Redis, settings: Settings) -> None:
    detector = Detector(redis, settings, RepetitionSettings(window_s=60, swarm_threshold=0))

    async def observe(text: str, at: float, n: int) -> list[Signal]:
        return await detector.observe(status("a1", text, at, n))

    assert await observe("standing by", 0, 1) == []
    assert await observe("standing by", 10, 2) == []
    assert await observe("pushed the fix for the lease race", 20, 3) == []  # progress: start over
    assert await observe("standing by", 30, 4) == []
    assert await observe("standing by", 40, 5) == []
    [first] = await observe("standing by", 50, 6)
    assert first.body.evidence == ("a1-4", "a1-5", "a1-6")
    assert await observe("standing by", 100, 7) == []  # within a window of the last one: same signal
    assert await observe("standing by", 200, 8) == []  # quiet for a window: the signal is closed
    assert [r.open for r in await detector.signals()] == [False]
    assert await observe("awaiting orders", 201, 9) == []
    [second] = await observe("idle", 202, 10)
    assert second.id != first.id
    assert second.body.evidence == ("a1-8", "a1-9", "a1-10")
    assert [(r.signal.id, r.open) for r in await detector.signals()] == [(second.id, True), (first.id, False)]
    assert [r.signal.id for r in await detector.signals(open_only=True)] == [second.id]
    assert (await observe("merged PR 7", 203, 11)) == []
    assert await detector.signals(open_only=True) == []


async def test_sparse_idle_and_look_alike_chatter(redis: Redis, settings: Settings) -> None:
    detector = Detector(redis, settings, RepetitionSettings(window_s=60))
    for n in range(5):  # one "standing by" every two minutes is not a repetition
        assert await detector.observe(status("a1", "standing by", n * 120, n)) == []
    stuck = [
        "still investigating the flaky timeout in tests/test_bus.py (run 3)",
        "Still investigating the flaky timeout in swarm/bus.py, run #4",
        "still investigating flaky timeout in tests/test_bus.py again",
    ]
    fired = [s for n, text in enumerate(stuck) for s in await detector.observe(status("a2", text, 600 + n, n))]
    assert [(s.body.agent, s.body.count, s.body.evidence) for s in fired] == [("a2", 3, ("a2-0", "a2-1", "a2-2"))]
    # repeated look-alikes are chatter: counted in the agent's idle family, with its idle paraphrases
    assert fired[0].body.fingerprint == "idle"
    separate = Detector(redis, settings.model_copy(update={"name": "separate"}),
                        RepetitionSettings(window_s=60, repeats_are_chatter=False))
    fired = [s for n, text in enumerate(stuck) for s in await separate.observe(status("a2", text, 600 + n, n))]
    assert [(s.body.fingerprint, s.body.count) for s in fired] == [(f"s:{fingerprint(stuck[0]):016x}", 3)]


async def test_swarm_wide_repetition(redis: Redis, settings: Settings) -> None:
    detector = Detector(redis, settings, RepetitionSettings(swarm_threshold=5))
    fired = []
    for n in range(5):  # five agents say it once each: no agent repeats, the swarm does
        chat = message(ChatBody(text="awaiting orders"), sender=f"a{n}", to="@captain", id=f"m{n}", ts=T0 + n)
        fired += await detector.observe(chat)
    assert await detector.observe(message(HeartbeatBody(instance="i"), sender="a0")) == []
    [sig] = fired
    assert (sig.body.agent, sig.body.count, sig.tags) == (SWARM_SCOPE, 5, ("repetition", "scope:swarm"))
    assert sig.body.evidence == ("m0", "m1", "m2", "m3", "m4")


async def test_late_messages_and_replays_change_nothing(redis: Redis, settings: Settings) -> None:
    detector = Detector(redis, settings, RepetitionSettings(window_s=60, swarm_threshold=0))
    msgs = [status("a1", "idle", n, n) for n in range(3)]
    [sig] = await detector.observe_many(msgs)
    assert await detector.observe_many(msgs) == [sig]  # the firing message re-announces, same id
    [rep] = await detector.signals()
    assert rep.signal.body.count == 3
    await detector.observe(status("a1", "idle", 1000, 9))
    assert await detector.observe(status("a1", "idle", 500, 10)) == []  # older than a window: ignored
    assert await redis.zscore(detector.keys.repetition_window("a1"), "idle|a1-10") is None


async def test_evidence_is_capped_any_id_is_safe_and_old_signals_go(redis: Redis, settings: Settings) -> None:
    detector = Detector(redis, settings, RepetitionSettings(swarm_threshold=0, max_evidence=4, max_signals=2))
    odd = ["a:b|c", "ü 1", "12:3", "x", "y", "z"]
    flood = [message(StatusBody(text="standing by"), sender="a1", id=i, ts=T0 + n) for n, i in enumerate(odd)]
    [sig] = await detector.observe_many(flood)
    assert sig.body.evidence == ("a:b|c", "ü 1", "12:3")
    [rep] = await detector.signals()
    assert (rep.signal.body.count, rep.signal.body.evidence) == (6, ("a:b|c", "ü 1", "12:3", "x"))
    for n, agent in enumerate(["b1", "b2"]):
        await detector.observe_many(status(agent, "idle", 10 + n, k) for k in range(3))
    assert [r.signal.body.agent for r in await detector.signals()] == ["b2", "b1"]  # a1's, the oldest, is gone


async def test_one_message_can_fire_for_its_agent_and_the_swarm(redis: Redis, settings: Settings) -> None:
    detector = Detector(redis, settings, RepetitionSettings(swarm_threshold=3))
    fired = await detector.observe_many(status("a1", "standing by", n, n) for n in range(3))
    assert [(s.body.agent, s.tags[1]) for s in fired] == [("a1", "scope:agent"), (SWARM_SCOPE, "scope:swarm")]
    assert fired[0].id != fired[1].id


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWARM_REPETITION_AGENT_THRESHOLD", "5")
    monkeypatch.setenv("SWARM_REPETITION_WINDOW_S", "30")
    rep = RepetitionSettings()
    assert (rep.agent_threshold, rep.window_s, rep.swarm_threshold) == (5, 30.0, 12)


async def test_other_kinds_are_not_counted(redis: Redis, settings: Settings) -> None:
    detector = Detector(redis, settings)
    beat = message(HeartbeatBody(instance="i"), sender="a1")
    assert detector.verdict(beat) is None
    assert await detector.observe(beat) == []
    assert await redis.zcard(detector.keys.repetition_seen) == 0
    assert isinstance(status("a1", "x", 0, 0), Status)


# --- helpers for the subprocess test ------------------------------------------------------------


def spawn(settings: Settings, name: str) -> subprocess.Popen[bytes]:
    assert settings.redis_url is not None
    env = {**os.environ, "SWARM_REDIS_URL": settings.redis_url, "SWARM_NAME": settings.name,
           "SWARM_BLOCK_MS": "50", "SWARM_TEST_DELAY_MS": "3"}
    env = {k: v for k, v in env.items() if not k.startswith("SWARM_REPETITION_")}
    settings.home.mkdir(parents=True, exist_ok=True)
    with (settings.home / f"{name}.log").open("ab") as errors:
        return subprocess.Popen(
            [sys.executable, "tests/procs/repetition_proc.py", name],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=errors,
        )


async def _handled_at_least(redis: Redis, bus: Bus, count: int) -> bool:
    """The detector's group has read and acked at least `count` entries of the broadcast stream."""
    groups = await redis.xinfo_groups(bus.keys.bus)
    return any(int(g["entries-read"] or 0) - int(g["pending"]) >= count for g in groups)


async def test_a_status_naming_its_task_is_progress_however_alike_the_titles(redis: Redis, settings: Settings) -> None:
    detector = Detector(redis, settings)
    msgs = [message(StatusBody(text=f"done t-{n}: Fix 1 security finding in swarm/server.py", state="done",
                               task_id=f"t-{n}"), sender="a1") for n in range(10)]
    assert await detector.observe_many(msgs) == []
    assert {detector.verdict(m).kind for m in msgs} == {"progress"}  # type: ignore[union-attr]


# --- lifecycle, blocked, and chatter without a lexicon (issues 13 and 18) ---------------------------


@pytest.mark.parametrize(
    ("text", "state"),
    [("online, ready for work", "idle"), ("offline", "done"), ("offline", None), ("Online", None), ("ready", None),
     ("shutting down", None), ("Shutting down now", "working"), ("back online", None),
     ("standing by", "done"), ("agent stopped", None)],
)
def test_lifecycle_statuses_are_neither_chatter_nor_progress(text: str, state: Any) -> None:
    verdict = Classifier().classify(text, state)
    assert (verdict.kind, verdict.family) == ("lifecycle", "")


@pytest.mark.parametrize(
    ("text", "state"),
    [("Blocked: t-4 needs the staging API key", None), ("I'm blocked on review of PR 12", None),
     ("still blocked by the migration", "idle"), ("waiting on the DBA", "blocked")],
)
def test_blocked_reports_are_their_own_family(text: str, state: Any) -> None:
    verdict = Classifier().classify(text, state)
    assert (verdict.kind, verdict.family) == ("blocked", "blocked")


def test_possessives_read_as_the_word_the_lexicon_knows() -> None:
    assert normalize("Waiting for captain's orders…") == "waiting for captain orders"
    assert normalize("it's the agent-3's queue; what's next?") == "its the agent <num> queue whats next"
    assert Classifier().classify("Waiting for captain's orders…").kind == "idle"


async def test_stopping_and_starting_agents_is_not_chatter(redis: Redis, settings: Settings) -> None:
    # One stop of a 12-agent swarm once made a swarm-wide signal of 12 "offline" (and 111 tasks).
    detector = Detector(redis, settings)
    msgs = [status(f"a{n}", "offline", n, n, "done") for n in range(12)]
    # an agent restarted over and over says "online, ready for work" (state idle) each time
    msgs += [status("a0", text, 20 + k, 20 + k, state)
             for k in range(4) for text, state in (("online, ready for work", "idle"), ("offline", "done"))]
    assert await detector.observe_many(msgs) == []
    assert await redis.zcard(detector.keys.repetition_seen) == 0  # not even counted


async def test_repeated_blocked_reports_make_one_blocked_signal_apart_from_chatter(
    redis: Redis, settings: Settings
) -> None:
    detector = Detector(redis, settings, RepetitionSettings(swarm_threshold=2))
    texts = ["Blocked: t-4 needs the staging API key", "standing by", "Blocked: t-4 needs the staging API key",
             "standing by", "Blocked: t-4 needs the staging API key"]
    fired = await detector.observe_many(status("a1", text, n, n) for n, text in enumerate(texts))
    # two idle lines from one agent are no agent signal (threshold 3), and blocked reports do not make them three;
    # swarm-wide, only the idle lines count
    assert [(s.body.agent, s.body.fingerprint, s.body.count, s.body.evidence, s.tags) for s in fired] == [
        ("a1", "blocked", 2, ("a1-0", "a1-2"), ("blocked", "scope:agent")),
        (SWARM_SCOPE, "idle", 2, ("a1-1", "a1-3"), ("repetition", "scope:swarm")),
    ]
    assert fired[0].body.sample == "Blocked: t-4 needs the staging API key"
    reps = {r.signal.body.fingerprint: r.signal.body.count for r in await detector.signals() if r.scope == "agent"}
    assert reps == {"blocked": 3}


async def test_a_message_repeated_without_progress_is_chatter_whatever_its_wording(
    redis: Redis, settings: Settings
) -> None:
    detector = Detector(redis, settings, RepetitionSettings(swarm_threshold=0))
    # Outside the idle lexicon: each is `other` on its own.
    inbox, capacity = "Inbox checked at 14:02:11: no new messages", "available, capacity 3/4 free"
    assert {Classifier().classify(t).kind for t in (inbox, capacity)} == {"other"}
    said = [inbox, capacity, inbox.replace("14:02:11", "14:07:40"), capacity.replace("3/4", "4/4")]
    fired = await detector.observe_many(status("a1", text, n * 30, n) for n, text in enumerate(said))
    # Each repeated once: both are chatter now, one signal for all four (before: none until each said it 3 times).
    assert [(s.body.fingerprint, s.body.count, s.body.evidence) for s in fired] == [
        ("idle", 4, ("a1-0", "a1-1", "a1-2", "a1-3"))]
    # Progress in between: no repeat.
    fresh = Detector(redis, settings.model_copy(update={"name": "fresh"}), RepetitionSettings(swarm_threshold=0))
    said = [inbox, "merged PR 12", inbox, "pushed the lease fix", inbox, "tests pass on main"]
    assert await fresh.observe_many(status("a2", text, n * 30, n) for n, text in enumerate(said)) == []
    # Progress is never counted, however often it repeats.
    said = ["merged PR 12"] * 6
    assert await fresh.observe_many(status("a3", text, n * 30, 10 + n) for n, text in enumerate(said)) == []


async def test_held_out_phrase_list_precision_and_recall(redis: Redis, settings: Settings) -> None:
    # Phrases written after the detector's lexicon, never used to tune it (tests/fixtures/heldout_phrases.txt).
    trace = heldout.build()
    assert len(trace.messages) >= 600
    detector = Detector(redis, settings)
    fired = await detector.observe_many(trace.messages)
    reps = await detector.signals(limit=10_000)
    found = flagged(reps)
    hits = len(found & trace.repetitive)
    precision, recall = hits / len(found), hits / len(trace.repetitive)
    # Measured when the list was written (1,110 messages, 497 repetitive): precision 1.000, recall 0.924;
    # the detector before this change: 0.986 and 0.724. Most misses are a burst's one-off line outside the
    # lexicon (it never repeats) and "All my tasks are done, I'm open for more", which reads as progress.
    assert precision >= 0.98, sorted(found - trace.repetitive)
    assert recall >= 0.90, sorted(trace.repetitive - found)
    progress = {m.id for m in trace.messages if detector.verdict(m).kind == "progress"}  # type: ignore[union-attr]
    assert not found & progress
    assert len(fired) < len(trace.repetitive) / 3

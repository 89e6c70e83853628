"""Task-board benchmark (not a test): the no-op task lifecycle with a real captain and real agents.

Run: `.venv/bin/python scripts/bench_board.py` (at most about 2.5 minutes; `--help` lists the options). It starts a
throwaway embedded Valkey in a temporary directory and stops it at the end, unless SWARM_REDIS_URL points
at a server to use instead (the benchmark only touches keys of the swarm `benchboard`, and deletes them).
Every figure involves real processes: `python -m swarm captain run`, and agents started as
`python -m swarm agent run --name N --can noop --handler scripts/bench_procs/handler.py:handle
--concurrency K --grace 0 [--no-claim]`. Every process this script starts is stopped on the way out,
even when a phase fails.

For each configuration (mode x agent processes x concurrency K):
- mode `assign`: agents run with `--no-claim`, so every task goes create -> captain assigns -> the
  agent's inbox -> start -> done; mode `claim`: the default, agents also claim ready work themselves
  (the captain runs too, and both race for each task).
1. Lifecycle throughput: N no-op tasks are created in bulk (64 creates in flight) while the agents
   run; tasks/s = N / (last `done` event - first `created` event), both timestamps from the board-event
   stream (server clock, 1 ms resolution). Includes everything: the creates, the captain's ticks or
   the agents' claims, start, the handler, done, and the status messages agents publish per task.
   "assign p50/p99" = `created` -> `assigned`/`claimed` event per task: with N tasks created at once
   this is mostly time spent queued behind other tasks, not the captain's reaction time.
2. Idle pickup: one task into the idle swarm, `time.time_ns()` taken just before `Board.create` is
   called, compared with `time.time_ns()` read first thing in the handler (same host, same clock);
   median of 20 (target <= 5 ms), one at a time, each after the previous one is done.
3. Agent RSS (VmRSS from /proc/<pid>/status) of each agent process when idle: just after it started,
   and again after its runs.
Then SIGKILL recovery, with SWARM_LEASE_S=2 in every process (the captain is restarted with it): two
agents (K=1), one `hold` task; when its handler has started, that agent gets SIGKILL; the figure is the
time from the kill to the handler starting on the other agent (target <= lease TTL + 1 s). Each trial
also prints how much lease was left at the kill, when the board reclaimed it, the task's state at the
end, and every transition after the kill with the owner it went to (the killed agent or the survivor).
Machine load matters on small boxes: the load average is printed at the start and the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import anyio
from redis.asyncio import Redis

from swarm.board import Board, TaskSpec
from swarm.connection import open_redis
from swarm.errors import SwarmError
from swarm.keys import Keys
from swarm.registry import Registry
from swarm.server import EmbeddedServer
from swarm.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_procs.handler import stamps_key  # scripts/ is not a package: found through sys.path

SWARM_NAME = "benchboard"
HANDLER = Path(__file__).resolve().parent / "bench_procs" / "handler.py"
CREATE_IN_FLIGHT = 64
READY_TIMEOUT_S = 20.0


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def rss_mb(pid: int) -> float:
    """Resident set size of process `pid` in MiB, from /proc (NaN when it cannot be read)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return math.nan


class Procs:
    """The child processes this benchmark started; `close()` stops every one that still runs."""

    def __init__(self, logs: Path, env: dict[str, str]) -> None:
        self.logs = logs
        self.env = env
        self.running: dict[int, tuple[str, subprocess.Popen[bytes]]] = {}

    def start(self, label: str, argv: list[str], extra: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start `argv` with its output in `<logs>/<label>.log`, in its own session."""
        with (self.logs / f"{label}.log").open("ab") as log:
            proc = subprocess.Popen(argv, env={**self.env, **(extra or {})}, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.running[proc.pid] = (label, proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
        """SIGTERM (the graceful path), then SIGKILL after `timeout` seconds."""
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.running.pop(proc.pid, None)

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL now (the crash the recovery drill is about)."""
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        self.running.pop(proc.pid, None)

    def check(self, proc: subprocess.Popen[bytes]) -> None:
        """Raise, with the end of its log, if `proc` has exited."""
        if proc.poll() is not None:
            label = self.running.get(proc.pid, ("?", proc))[0]
            raise RuntimeError(f"{label} (pid {proc.pid}) exited with code {proc.returncode}:\n{self.tail(label)}")

    def tail(self, label: str, lines: int = 15) -> str:
        """The last lines of a process's log."""
        path = self.logs / f"{label}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join("    " + line for line in text.splitlines()[-lines:])

    def close(self) -> None:
        """Stop everything still running: SIGTERM to all, then SIGKILL whatever has not exited in 5 s."""
        procs = [proc for _, proc in self.running.values() if proc.poll() is None]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        deadline = time.monotonic() + 5
        for proc in procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.running.clear()


def agent_argv(name: str, k: int | str, claim: bool) -> list[str]:
    """The exact command line of one benchmark agent."""
    return [sys.executable, "-m", "swarm", "agent", "run", "--name", name, "--can", "noop",
            "--handler", f"{HANDLER}:handle", "--concurrency", str(k), "--grace", "0",
            *([] if claim else ["--no-claim"])]


CAPTAIN_ARGV = [sys.executable, "-m", "swarm", "captain", "run"]


@dataclass
class Bench:
    """What every phase needs: the client, the board, the keys, the processes."""

    redis: Redis
    settings: Settings
    procs: Procs
    deadline: float
    keys: Keys = field(init=False)
    board: Board = field(init=False)
    registry: Registry = field(init=False)

    def __post_init__(self) -> None:
        self.keys = Keys(self.settings.name)
        self.board = Board(self.redis, self.settings)
        self.registry = Registry(self.redis, self.settings)

    @property
    def left(self) -> float:
        """Seconds left in the run's time budget."""
        return self.deadline - time.monotonic()

    async def start_captain(self, label: str, extra: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start a captain process and wait until it holds the leader lease."""
        proc = self.procs.start(label, CAPTAIN_ARGV, extra)
        limit = time.monotonic() + READY_TIMEOUT_S
        while await self.redis.get(self.keys.leader) is None:
            self.procs.check(proc)
            if time.monotonic() > limit:
                raise RuntimeError(f"the captain did not take the leader lease in {READY_TIMEOUT_S:g} s")
            await anyio.sleep(0.02)
        return proc

    async def start_agents(self, names: list[str], k: int, claim: bool,
                           extra: dict[str, str] | None = None) -> list[subprocess.Popen[bytes]]:
        """Start one agent process per name and wait until each has registered and its inbox group exists."""
        procs = [self.procs.start(name, agent_argv(name, k, claim), extra) for name in names]
        limit = time.monotonic() + READY_TIMEOUT_S
        for name, proc in zip(names, procs, strict=True):
            while not await self._agent_ready(name, proc.pid):
                self.procs.check(proc)
                if time.monotonic() > limit:
                    raise RuntimeError(f"agent {name} was not ready in {READY_TIMEOUT_S:g} s:\n"
                                       f"{self.procs.tail(name)}")
                await anyio.sleep(0.02)
        await anyio.sleep(0.3)  # the consumer reaches its blocking XREADGROUP (and the claimer its XREAD)
        return procs

    async def _agent_ready(self, name: str, pid: int) -> bool:
        card = await self.registry.card(name)
        if card is None or card.pid != pid:
            return False
        try:
            groups = await self.redis.xinfo_groups(self.keys.inbox(name))
        except Exception:  # the stream does not exist yet
            return False
        return any(g["name"] in (name, name.encode()) for g in groups)

    async def stop_agents(self, names: list[str], procs: list[subprocess.Popen[bytes]]) -> None:
        """SIGTERM the agents (grace 0) and forget their cards, so the captain's roster stays small."""
        for proc in procs:
            self.procs.stop(proc)
        for name in names:
            await self.registry.forget(name)

    async def last_event(self) -> str:
        """Id of the newest board event ('0-0' when there is none)."""
        rows = await self.redis.xrevrange(self.keys.events, count=1)
        return cast(bytes, rows[0][0]).decode() if rows else "0-0"

    async def events_since(self, start: str, ids: set[str]) -> dict[str, dict[str, int]]:
        """For each of `ids`: the server time (ms) of its first event of each kind after entry `start`."""
        out: dict[str, dict[str, int]] = {}
        cursor = "(" + start
        while True:
            rows = cast(list[tuple[bytes, dict[bytes, bytes]]],
                        await self.redis.xrange(self.keys.events, min=cursor, count=5000))
            for _, fields in rows:
                msg = json.loads(fields[b"m"])
                body = msg.get("body", {})
                if msg.get("kind") == "task_event" and body.get("task_id") in ids:
                    out.setdefault(body["task_id"], {}).setdefault(body["event"], int(msg["ts"]))
            if len(rows) < 5000:
                return out
            cursor = "(" + rows[-1][0].decode()

    async def create_many(self, count: int, title: str) -> list[str]:
        """Create `count` tasks of kind noop, CREATE_IN_FLIGHT at a time; their ids."""
        ids: list[str] = []

        async def one(i: int) -> None:
            task, _ = await self.board.create(TaskSpec(kind="noop", title=f"{title} {i}"))
            ids.append(task.id)

        for start in range(0, count, CREATE_IN_FLIGHT):
            async with anyio.create_task_group() as tg:
                for i in range(start, min(count, start + CREATE_IN_FLIGHT)):
                    tg.start_soon(one, i)
        return ids

    async def cancel_unfinished(self, ids: list[str]) -> int:
        """Cancel those of `ids` not terminal yet (after a timed-out run); how many were cancelled."""
        cancelled = 0
        for task_id in ids:
            with contextlib.suppress(SwarmError):
                await self.board.cancel(task_id, "benchmark run timed out")
                cancelled += 1
        return cancelled

    async def wait_stamp(self, task_id: str, within_s: float, *, not_pid: int = 0) -> tuple[int, int] | None:
        """The next stamp (ns, pid) of `task_id` from a pid other than `not_pid`; None after `within_s`."""
        key = stamps_key(self.settings.name)
        limit = time.monotonic() + within_s
        while (left := limit - time.monotonic()) > 0:
            got = await self.redis.blpop([key], timeout=max(0.01, min(left, 1.0)))
            if got is None:
                continue
            tid, ns, pid = cast(bytes, got[1]).decode().split()
            if tid == task_id and int(pid) != not_pid:
                return int(ns), int(pid)
        return None


# --- the phases ------------------------------------------------------------------------------------

@dataclass
class Row:
    """One configuration's figures."""

    mode: str
    agents: int
    k: int
    tasks: int = 0
    done: int = 0
    rate: float = math.nan
    create_s: float = math.nan
    assign_p50: float = math.nan
    assign_p99: float = math.nan
    pickup: list[float] = field(default_factory=list)
    pickup_missed: int = 0
    idle_assign: list[int] = field(default_factory=list)
    rss_fresh: list[float] = field(default_factory=list)
    rss_after: list[float] = field(default_factory=list)
    note: str = ""


async def lifecycle(b: Bench, row: Row, count: int, within_s: float) -> None:
    """Create `count` no-op tasks in bulk and wait for all to be done (or `within_s` seconds)."""
    start = await b.last_event()
    done_before = int(await b.redis.zcard(b.keys.state("done")))
    began = time.perf_counter()
    ids = await b.create_many(count, "noop")
    row.create_s = time.perf_counter() - began
    while int(await b.redis.zcard(b.keys.state("done"))) - done_before < count:
        if time.perf_counter() - began > within_s:
            row.note = f"timed out after {within_s:g} s (--run-timeout); the rest were cancelled"
            await b.cancel_unfinished(ids)
            break
        await anyio.sleep(0.005)
    events = await b.events_since(start, set(ids))
    created = [e["created"] for e in events.values() if "created" in e]
    finished = [e["done"] for e in events.values() if "done" in e]
    row.tasks, row.done = count, len(finished)
    if finished:
        row.rate = len(finished) / max(1e-3, (max(finished) - min(created)) / 1000)
    waits = assign_waits(events)
    row.assign_p50, row.assign_p99 = percentile(waits, 50), percentile(waits, 99)


def assign_waits(events: dict[str, dict[str, int]]) -> list[int]:
    """Per task: ms from its `created` event to its first `assigned` or `claimed` event."""
    waits: list[int] = []
    for e in events.values():
        handed = [e[k] for k in ("assigned", "claimed") if k in e]
        if "created" in e and handed:
            waits.append(min(handed) - e["created"])
    return waits


async def idle_pickup(b: Bench, row: Row, count: int) -> None:
    """`count` single tasks into the idle swarm: create call -> handler start, in ms."""
    await b.redis.delete(stamps_key(b.settings.name))
    start = await b.last_event()
    ids: set[str] = set()
    for i in range(count):
        await anyio.sleep(0.05)  # everyone back to blocking reads
        sent = time.time_ns()
        task, _ = await b.board.create(TaskSpec(kind="noop", title=f"stamp {i}"))
        ids.add(task.id)
        stamp = await b.wait_stamp(task.id, 3.0)
        if stamp is None:
            row.pickup_missed += 1
            await b.cancel_unfinished([task.id])
            continue
        row.pickup.append((stamp[0] - sent) / 1e6)
        for _ in range(1000):  # at most 2 s: the next sample starts from an idle swarm
            if (await b.board.get(task.id)).state == "done":
                break
            await anyio.sleep(0.002)
    row.idle_assign = assign_waits(await b.events_since(start, ids))


async def configuration(b: Bench, run: int, mode: str, agents: int, k: int, args: argparse.Namespace) -> Row:
    """Start the agents of one configuration, measure, stop them."""
    row = Row(mode, agents, k)
    names = [f"r{run}-{mode}-b{i + 1}" for i in range(agents)]
    procs = await b.start_agents(names, k, claim=mode == "claim")
    try:
        row.rss_fresh = [rss_mb(p.pid) for p in procs]
        await lifecycle(b, row, args.tasks, args.run_timeout)
        await idle_pickup(b, row, args.pickups)
        await anyio.sleep(0.2)
        row.rss_after = [rss_mb(p.pid) for p in procs]
    finally:
        await b.stop_agents(names, procs)
    return row


@dataclass
class Trial:
    """One SIGKILL recovery drill."""

    mode: str
    recovered_ms: float = math.nan
    lease_left_ms: float = math.nan
    expired_ms: float = math.nan
    trail: list[str] = field(default_factory=list)
    final_state: str = ""
    note: str = ""


async def recovery(b: Bench, mode: str, run: int, lease_s: float) -> Trial:
    """Kill -9 the agent running a task; time until the task's handler runs on the other agent."""
    trial = Trial(mode)
    names = [f"k{run}-{mode}-a", f"k{run}-{mode}-b"]
    procs = await b.start_agents(names, 1, claim=mode == "claim", extra={"SWARM_LEASE_S": str(lease_s)})
    by_pid = {p.pid: (n, p) for n, p in zip(names, procs, strict=True)}
    await b.redis.delete(stamps_key(b.settings.name))
    task, _ = await b.board.create(TaskSpec(kind="noop", title="hold", body="60"))
    try:
        first = await b.wait_stamp(task.id, 5.0)
        if first is None:
            trial.note = "the hold task never started"
            return trial
        victim_name, victim = by_pid[first[1]]
        await anyio.sleep(0.25)  # mid-task: it has heartbeated its lease at least once
        killed = time.time_ns()
        b.procs.kill(victim)
        held = await b.board.get(task.id)
        trial.lease_left_ms = held.lease_until - killed / 1e6
        give_up = time.monotonic() + 4 * lease_s + 3
        second = None
        while second is None and time.monotonic() < give_up:
            second = await b.wait_stamp(task.id, 0.2, not_pid=victim.pid)
            if second is None and (await b.board.get(task.id)).terminal:
                break
        if second is None:
            trial.note = "never ran on the survivor"
        else:
            trial.recovered_ms = (second[0] - killed) / 1e6
        for event in await b.board.history(task.id):
            if event.ts * 1_000_000 < killed - 1_000_000:
                continue
            if event.body.event in ("expired", "failed") and math.isnan(trial.expired_ms):
                trial.expired_ms = event.ts - killed / 1e6
            owner = event.body.owner
            who = "" if not owner else "(killed)" if owner == victim_name else "(survivor)"
            trial.trail.append(event.body.event + who)
        trial.final_state = (await b.board.get(task.id)).state
        return trial
    finally:
        await b.cancel_unfinished([task.id])
        await b.stop_agents(names, [p for p in procs if p.poll() is None])


# --- the report --------------------------------------------------------------------------------------

def fmt(value: float, spec: str = ".1f") -> str:
    """A figure, or '-' for none."""
    return "-" if math.isnan(value) else format(value, spec)


def print_rows(rows: list[Row]) -> None:
    """The lifecycle / pickup / RSS table."""
    head = (f"{'mode':<7}{'agents':>6}{'K':>4}{'tasks':>7}{'done':>7}{'tasks/s':>9}{'create s':>9}"
            f"{'assign p50':>11}{'p99 ms':>8}{'pickup p50':>11}{'p90':>7}{'max ms':>8}{'idle assign':>12}"
            f"{'RSS MiB idle':>14}{'after':>7}")
    print(head)
    for r in rows:
        rss = "/".join(fmt(v, ".0f") for v in r.rss_fresh)
        after = "/".join(fmt(v, ".0f") for v in r.rss_after)
        p50 = statistics.median(r.pickup) if r.pickup else math.nan
        print(f"{r.mode:<7}{r.agents:>6}{r.k:>4}{r.tasks:>7}{r.done:>7}{fmt(r.rate, ',.0f'):>9}"
              f"{fmt(r.create_s, '.2f'):>9}{fmt(r.assign_p50, '.0f'):>11}{fmt(r.assign_p99, '.0f'):>8}"
              f"{fmt(p50, '.2f'):>11}{fmt(percentile(r.pickup, 90), '.2f'):>7}"
              f"{fmt(max(r.pickup) if r.pickup else math.nan, '.2f'):>8}"
              f"{fmt(percentile(r.idle_assign, 50), '.0f') + '/' + fmt(percentile(r.idle_assign, 100), '.0f'):>12}"
              f"{rss:>14}{after:>7}"
              + (f"   ({r.pickup_missed} pickups missed)" if r.pickup_missed else "")
              + (f"   {r.note}" if r.note else ""))


def print_trials(trials: list[Trial], lease_s: float) -> None:
    """The SIGKILL recovery table."""
    target = (lease_s + 1) * 1000
    print(f"{'mode':<7}{'kill->running':>14}{'':<5}{'lease left':>11}{'kill->expired':>14}  {'state':<8} "
          "events after the kill")
    for t in trials:
        verdict = "FAIL" if math.isnan(t.recovered_ms) or t.recovered_ms > target else "PASS"
        print(f"{t.mode:<7}{fmt(t.recovered_ms, '.0f'):>14} {verdict:<4}{fmt(t.lease_left_ms, '.0f'):>11}"
              f"{fmt(t.expired_ms, '.0f'):>14}  {t.final_state:<8} {' '.join(t.trail)}"
              + (f"  ({t.note})" if t.note else ""))


async def main(args: argparse.Namespace, url: str, home: Path, procs: Procs) -> None:
    """Run every phase against `url` and print the figures."""
    settings = Settings(redis_url=url, name=SWARM_NAME, home=home)
    bench_deadline = time.monotonic() + args.budget
    print(f"server: {url}  python {sys.version.split()[0]}  cpus: {os.cpu_count()}  load average at start: "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(f"captain: {shlex.join(CAPTAIN_ARGV)}")
    print(f"agents:  {shlex.join(agent_argv('NAME', 'K', claim=False))}  (--no-claim in "
          "mode assign only)")
    async with open_redis(settings) as redis:
        await wipe(redis, settings)
        b = Bench(redis, settings, procs, bench_deadline)
        rows: list[Row] = []
        skipped: list[str] = []
        captain = await b.start_captain("captain")
        run = 0
        kill_reserve = args.kill_trials * len(args.modes) * (2 * args.lease + 4)  # typical drill length
        for mode in args.modes:
            for agents in args.agents:
                for k in args.concurrency:
                    run += 1
                    if b.left < args.run_timeout + 8 + kill_reserve:
                        skipped.append(f"{mode}/{agents}/{k}")
                        continue
                    b.procs.check(captain)
                    rows.append(await configuration(b, run, mode, agents, k, args))
                    spent = args.budget - b.left
                    print(f"  done: mode {mode}, {agents} agent(s), K={k} ({spent:.0f} s)", flush=True)
        b.procs.stop(captain)
        trials: list[Trial] = []
        if args.kill_trials:
            await b.start_captain("captain-lease", {"SWARM_LEASE_S": str(args.lease)})
            for mode in args.modes:
                for i in range(args.kill_trials):
                    if b.left < 4 * args.lease + 8:
                        skipped.append(f"kill {mode} #{i + 1}")
                        continue
                    trials.append(await recovery(b, mode, i, args.lease))
        print(f"\n[1+2] no-op lifecycle, {args.tasks:,} tasks per run created in bulk ({CREATE_IN_FLIGHT} in flight); "
              f"idle pickup: median of {args.pickups}")
        print_rows(rows)
        print("  tasks/s: first `created` -> last `done` event (server clock). assign p50/p99: created -> "
              "assigned|claimed per task, ms,\n  queue wait included. pickup: create call -> handler start, "
              "ms (target p50 <= 5).\n  idle assign: created -> assigned|claimed "
              "event of the pickup tasks, p50/max ms (1 ms clock). RSS: per agent, idle fresh / after its runs.")
        if trials:
            print(f"\n[3] SIGKILL recovery: lease TTL {args.lease:g} s (SWARM_LEASE_S, every process), "
                  f"target kill -> running elsewhere <= {args.lease + 1:g} s; times in ms after the kill")
            print_trials(trials, args.lease)
        print(f"\nload average at the end: {' '.join(f'{v:.1f}' for v in os.getloadavg())} (other work on this "
              "machine competes for the same cores)")
        if skipped:
            print(f"\nskipped (time budget of {args.budget:g} s): {', '.join(skipped)}")
        await wipe(redis, settings)


async def wipe(redis: Redis, settings: Settings) -> None:
    """Delete every key of the benchmark's swarm (so a shared server is left as it was)."""
    batch: list[bytes] = []
    async for name in redis.scan_iter(match=Keys(settings.name).prefix.replace("{", "\\{").replace("}", "\\}") + "*",
                                      count=1000):
        batch.append(name)
        if len(batch) >= 1000:
            await redis.delete(*batch)
            batch.clear()
    if batch:
        await redis.delete(*batch)


def int_list(text: str) -> list[int]:
    """`1,8` -> [1, 8]."""
    return [int(v) for v in text.split(",") if v.strip()]


def cli() -> None:
    """Parse options, start a throwaway server unless SWARM_REDIS_URL is set, run, stop everything."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=2_000, help="no-op tasks per lifecycle run")
    parser.add_argument("--agents", type=int_list, default=[1, 2], help="agent process counts, e.g. 1,2")
    parser.add_argument("--concurrency", type=int_list, default=[1, 8], help="agent concurrency K values, e.g. 1,8")
    parser.add_argument("--modes", type=lambda s: s.split(","), default=["assign", "claim"],
                        help="assign (agents --no-claim) and/or claim (the default agent)")
    parser.add_argument("--pickups", type=int, default=20, help="idle pickup samples per configuration")
    parser.add_argument("--kill-trials", type=int, default=2, help="SIGKILL recovery trials per mode (0: skip)")
    parser.add_argument("--lease", type=float, default=2.0, help="SWARM_LEASE_S for the recovery drill")
    parser.add_argument("--run-timeout", type=float, default=10.0, help="longest one lifecycle run may take, s")
    parser.add_argument("--budget", type=float, default=170.0, help="phases that would start past this are skipped, s")
    args = parser.parse_args()
    for mode in args.modes:
        if mode not in ("assign", "claim"):
            parser.error(f"--modes: {mode!r} is neither assign nor claim")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="swarm-bench-board-") as tmp:
        home = Path(tmp)
        logs = home / "logs"
        logs.mkdir()
        url = os.environ.get("SWARM_REDIS_URL")
        server = None if url else EmbeddedServer(home)
        procs: Procs | None = None
        try:
            if server is not None:
                url = server.ensure().url
            assert url is not None
            env = {**os.environ, "SWARM_REDIS_URL": url, "SWARM_NAME": SWARM_NAME, "SWARM_HOME": str(home),
                   "SWARM_LOG_LEVEL": "warning"}
            procs = Procs(logs, env)
            anyio.run(main, args, url, home, procs)
        except BaseException:
            if procs is not None:
                for label in sorted({p.name.removesuffix(".log") for p in logs.glob("*.log")}):
                    tail = procs.tail(label, 5)
                    if tail.strip():
                        print(f"--- {label} log (tail) ---\n{tail}", file=sys.stderr)
            raise
        finally:
            if procs is not None:
                procs.close()
            if server is not None:
                server.stop()
    print(f"\ntotal {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    cli()

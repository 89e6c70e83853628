"""Peer benchmark (not a test): swarm against SAQ, taskiq (taskiq-redis stream broker), arq, Dramatiq, Celery
and RQ, in one run, on one server, with the same no-op job.

Run: `.venv/bin/python scripts/bench_peers.py` (about 35 minutes on 2 cores; `--quick` for a ~4 minute
smaller run; `--help` lists the options; `--write` puts the tables into BENCHMARKS.md, which a full run
does by default). Each peer is installed from scripts/peers/requirements-peers.txt into its own
virtualenv, `.bench-venv/<peer>/` (gitignored; reinstalled only when its lines change), so peers never
become swarm dependencies; a peer that will not install or run is reported with its error.
One embedded Valkey (swarm's own server binary, AOF on as swarm runs it) on a free port in a temporary
directory serves everyone; it is flushed between phases and stopped at the end. Every worker is its own
process (in its own session: the kill drill and the clean-up signal the whole process group); all are
killed on the way out, even when a phase fails.

The job (scripts/peers/jobs.py) is the same everywhere: `noop` does one round trip to say it ran (INCR
a counter, SET its start time), so the drain's end is seen the same way for every system.
Per system, `--runs` times (medians reported):
1. enqueue: N noop jobs one at a time (each call awaited), into a stopped system; then 1 worker process
   drains them: jobs/s = N / (last job's start - first job's start). Then idle pickup with that worker:
   one `stamp` job at a time into the idle system, ms from just before the enqueue call to the job's
   first clock reading (same host clock), `--pickups` samples after one warm-up.
2. the same N again with the library's bulk method (see the table; where it has none, an asyncio client
   keeps 64 enqueues in flight and a blocking one enqueues one by one again), drained by 2 worker processes.
3. kill -9 drill, with each library's default recovery settings and with its documented tuning: 2 worker
   processes running one job at a time, `--drill-jobs` jobs of `--drill-seconds` each; when the first
   job has run 0.2 s its worker's process group gets SIGKILL. Reported: kill -> that job starting on
   the other worker (ms), jobs that never completed (lost, by `--drill-cap` s after the kill) and jobs
   that completed twice (duplicated). A drill that did not recover is not repeated (its delay is a timer).
Raw ceiling, same server, same run: `redis-benchmark` XADD (1 client; 50 clients; 50 clients pipelined
16 deep) and a bare redis-py XADD loop (one at a time; pipelined 100 per round trip).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))
import jobs  # scripts/ and scripts/peers are not packages: found through sys.path
from bench_board import Procs, fmt
from ceiling import bare_loop, redis_benchmark
from contenders import PEER_ORDER, ROOT, Peer, Swarm, System, Worker, install, peer_requirements
from cpu import Meter
from report import Run, drill_cell, machine, render, write

from swarm.board import Board
from swarm.connection import open_redis, text
from swarm.server import EmbeddedServer
from swarm.settings import Settings

SWARM_NAME = "benchpeers"


class Groups(Procs):
    """Procs where every child leads its own process group: stop, kill and close reach the whole group
    (Dramatiq and taskiq fork their worker processes under a supervisor)."""

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL the process group now."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        self.running.pop(proc.pid, None)

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 0.0) -> None:
        """Benchmark workers hold nothing worth a graceful stop: SIGKILL (the server is flushed next)."""
        self.kill(proc)

    def close(self) -> None:
        """SIGKILL every group still running."""
        for _, proc in list(self.running.values()):
            self.kill(proc)


@dataclass
class Drill:
    """One kill -9 drill."""

    recovered_ms: float = math.nan
    lost: int = 0
    duplicated: int = 0
    capped: bool = False
    note: str = ""


@dataclass
class Result:
    """Everything measured for one system."""

    system: System
    enqueue: list[float] = field(default_factory=list)
    bulk: list[float] = field(default_factory=list)
    drain1: list[float] = field(default_factory=list)
    drain2: list[float] = field(default_factory=list)
    cpu1: list[tuple[float, float]] = field(default_factory=list)
    """Per drain with 1 worker process: (every process of the system, the server) CPU µs per job."""
    cpu2: list[tuple[float, float]] = field(default_factory=list)
    pickup: list[float] = field(default_factory=list)
    missed: int = 0
    drills: dict[str, list[Drill]] = field(default_factory=lambda: {"default": [], "tuned": []})
    errors: list[str] = field(default_factory=list)


@dataclass
class Ctx:
    """What every phase needs."""

    redis: Redis
    procs: Groups
    args: argparse.Namespace
    server_pid: int = 0
    began: float = field(default_factory=time.monotonic)

    def log(self, text: str) -> None:
        """A progress line with the time since the start."""
        print(f"  [{time.monotonic() - self.began:5.0f} s] {text}", flush=True)


async def start(ctx: Ctx, system: System, workers: list[Worker]) -> list[subprocess.Popen[bytes]]:
    """Start processes (each in its own session)."""
    return [ctx.procs.start(w.label, w.argv, w.env) for w in workers]


async def start_helpers(ctx: Ctx, system: System, tuned: bool) -> list[subprocess.Popen[bytes]]:
    """Start the system's helper processes and wait until they are ready."""
    helpers = await start(ctx, system, system.helpers(tuned))
    limit = time.monotonic() + 20
    while not await system.helpers_ready():
        for proc in helpers:
            ctx.procs.check(proc)
        if time.monotonic() > limit:
            raise RuntimeError(f"{system.name}: helpers not ready in 20 s")
        await anyio.sleep(0.02)
    return helpers


def stop_all(ctx: Ctx) -> None:
    """Kill every process of the phase."""
    ctx.procs.close()


async def drain(ctx: Ctx, procs: list[subprocess.Popen[bytes]], count: int,
                cpu: list[tuple[float, float]] | None = None) -> float:
    """Wait until `count` noop jobs ran; jobs/s between the first and the last job's start. With `cpu`,
    also append the CPU µs per job of every process of the system and of the server (scripts/peers/cpu.py)."""
    limit = time.monotonic() + ctx.args.drain_timeout
    meter = Meter(set(ctx.procs.running), ctx.server_pid)
    done = 0
    polls = 0
    while done < count:
        if polls % 5 == 0:
            meter.sample()
        polls += 1
        done = int(await ctx.redis.get(jobs.DONE) or 0)
        for proc in procs:
            ctx.procs.check(proc)
        if time.monotonic() > limit:
            raise RuntimeError(f"drain timed out after {ctx.args.drain_timeout:g} s with {done}/{count} jobs run")
        await anyio.sleep(0.01)
    meter.sample()
    first, last = int(await ctx.redis.get(jobs.FIRST) or 0), int(await ctx.redis.get(jobs.LAST) or 0)
    if cpu is not None and count > 1:
        workers_s, server_s = meter.between(first, last)
        cpu.append((workers_s / (count - 1) * 1e6, server_s / (count - 1) * 1e6))
    return count / max(1e-9, (last - first) / 1e9)


async def throughput(ctx: Ctx, res: Result, run: int) -> None:
    """Phases 1 and 2 of one run."""
    system, n = res.system, ctx.args.jobs
    await ctx.redis.flushall()
    try:
        await start_helpers(ctx, system, tuned=False)
        res.enqueue.append(n / await system.enqueue(n, bulk=False))
        workers = await start(ctx, system, system.workers(1, False, None, f"r{run}"))
        res.drain1.append(await drain(ctx, workers, n, res.cpu1))
        samples, missed, _ = await system.pickup(ctx.args.pickups)
        res.pickup += samples
        res.missed += missed
    finally:
        stop_all(ctx)
    await ctx.redis.flushall()
    try:
        await start_helpers(ctx, system, tuned=False)
        seconds = await system.enqueue(n, bulk=system.bulk is not None)
        (res.bulk if system.bulk else res.enqueue).append(n / seconds)
        workers = await start(ctx, system, system.workers(2, False, None, f"r{run}b"))
        res.drain2.append(await drain(ctx, workers, n, res.cpu2))
    finally:
        stop_all(ctx)


class Stamps:
    """The drill's view of the stamp list: read forward with LRANGE (never popped), each stamp with the
    process group of the pid that wrote it (looked up while that process lives; a pid gone by then was
    in the killed group)."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.rows: list[tuple[str, int, int]] = []  # (job, ns, process group or 0 when gone)
        self._groups: dict[int, int] = {}

    async def poll(self) -> list[tuple[str, int, int]]:
        """The stamps written since the last poll."""
        raw = await self.redis.lrange(jobs.STAMPS, len(self.rows), -1)
        new = []
        for row in raw:
            job, ns, pid = text(row).split()
            if int(pid) not in self._groups:
                try:
                    self._groups[int(pid)] = os.getpgid(int(pid))
                except ProcessLookupError:
                    self._groups[int(pid)] = 0
            new.append((job, int(ns), self._groups[int(pid)]))
        self.rows += new
        return new


async def warm_up(system: System, groups: set[int]) -> bool:
    """Run stamp jobs until each worker process group has run one (True), or give up after 4 rounds."""
    seen: set[int] = set()
    for _ in range(4):
        _, _, pids = await system.pickup(4)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                seen.add(os.getpgid(pid))
        if groups <= seen:
            return True
    return False


async def drill(ctx: Ctx, system: System, tuned: bool, run: int) -> Drill:
    """Phase 3: SIGKILL a worker mid-job; recovery time, lost and duplicated jobs."""
    out = Drill()
    count = ctx.args.drill_jobs
    await ctx.redis.flushall()
    try:
        await start_helpers(ctx, system, tuned)
        workers = await start(ctx, system, system.workers(2, tuned, 1, f"k{run}{'t' if tuned else 'd'}"))
        if not await warm_up(system, {p.pid for p in workers}):
            out.note = "warm-up saw one worker only"
        await ctx.redis.delete(jobs.STAMPS)
        stamps = Stamps(ctx.redis)
        await system.enqueue_work(count, ctx.args.drill_seconds, tuned)
        victim = 0
        limit = time.monotonic() + 20
        while not victim and time.monotonic() < limit:
            victim = next((g for job, _, g in await stamps.poll() if job.startswith("w") and g), 0)
            await anyio.sleep(0.005)
        if not victim:
            out.note = "no work job started in 20 s"
            return out
        await anyio.sleep(0.2)
        killed = time.time_ns()
        ctx.procs.kill(next(p for p in workers if p.pid == victim))
        finished = await ctx.redis.hgetall(jobs.FINISHED)
        await stamps.poll()
        pending = {job for job, _, g in stamps.rows if g in (victim, 0)} - {text(k) for k in finished}
        restarts: dict[str, int] = {}
        deadline = time.monotonic() + ctx.args.drill_cap
        while time.monotonic() < deadline:
            for job, ns, group in await stamps.poll():
                if job in pending and group not in (victim, 0):
                    restarts.setdefault(job, ns)
            if int(await ctx.redis.hlen(jobs.FINISHED)) >= count and pending <= restarts.keys():
                await anyio.sleep(1.0)  # a late duplicate would show up here
                break
            await anyio.sleep(0.01)
        else:
            out.capped = True
        if pending and pending <= restarts.keys():
            out.recovered_ms = (max(restarts[j] for j in pending) - killed) / 1e6
        elif not pending:
            out.note = "the killed worker had no job in flight"
        counts = [int(v) for v in (await ctx.redis.hgetall(jobs.FINISHED)).values()]
        out.lost = count - len(counts)
        out.duplicated = sum(c - 1 for c in counts if c > 1)
        return out
    finally:
        stop_all(ctx)


async def drills(ctx: Ctx, res: Result) -> None:
    """Phase 3 for both settings; a drill that did not recover is not repeated."""
    for setting in ("default", "tuned"):
        for run in range(ctx.args.drill_runs):
            one = await drill(ctx, res.system, setting == "tuned", run)
            res.drills[setting].append(one)
            if math.isnan(one.recovered_ms):
                break


# --- the run -------------------------------------------------------------------------------------------

async def systems(board: Board, env: dict[str, str], only: set[str] | None) -> list[Result]:
    """swarm's two modes, then every peer: installed and described, or an error to report."""
    from importlib.metadata import version  # noqa: PLC0415 - only here

    versions = {"swarm": version("swarm"), "redis": version("redis"), "hiredis": version("hiredis")}
    out = [Result(Swarm(mode, board, env, versions)) for mode in ("claim", "captain")
           if only is None or f"swarm-{mode}" in only or "swarm" in only]
    reqs = peer_requirements()
    for name in PEER_ORDER:
        if only is not None and name not in only:
            continue
        peer = Peer(name, env)
        res = Result(peer)
        error = await anyio.to_thread.run_sync(install, name, reqs.get(name, []))
        if not error:
            try:
                await peer.describe()
            except Exception as exc:  # a peer that will not run is reported, never dropped
                error = str(exc)
        if error:
            res.errors.append(error)
            print(f"  {name}: {error}", flush=True)
        out.append(res)
    return out


async def main(args: argparse.Namespace, url: str, port: int, home: Path, procs: Groups, server_pid: int) -> str:
    """Every phase for every system; the markdown section."""
    settings = Settings(redis_url=url, name=SWARM_NAME, home=home)
    env = {**os.environ, "SWARM_REDIS_URL": url, "SWARM_NAME": SWARM_NAME, "SWARM_HOME": str(home),
           "SWARM_LOG_LEVEL": "warning", "BENCH_REDIS_URL": url}
    procs.env = env
    run = Run(command=shlex.join(["python", "scripts/bench_peers.py", *sys.argv[1:]]), machine=machine(),
                     server="", jobs=args.jobs, runs=args.runs, pickups=args.pickups,
                     drill=f"2 worker processes, 1 job at a time each, {args.drill_jobs} jobs of "
                           f"{args.drill_seconds:g} s, up to {args.drill_runs} runs, cap {args.drill_cap:g} s "
                           "after the kill")
    run.load.append(" ".join(f"{v:.1f}" for v in os.getloadavg()))
    print(f"command: {run.command}\nmachine: {run.machine}", flush=True)
    async with open_redis(settings) as redis:
        info = await redis.info("server")
        flavour = f"valkey {info['valkey_version']}" if "valkey_version" in info else f"redis {info['redis_version']}"
        run.server = f"{flavour} (swarm's embedded server, appendonly yes), 127.0.0.1:{port}"
        ctx = Ctx(redis, procs, args, server_pid)
        results = await systems(Board(redis, settings), env, set(args.only.split(",")) if args.only else None)
        await redis.flushall()
        ctx.log("raw ceiling")
        run.ceiling = {f"redis-benchmark XADD, {k}": v for k, v in redis_benchmark(port, args.runs).items()}
        if not run.ceiling:
            run.ceiling_note = "redis-benchmark was not found (Debian: `apt-get install redis-tools`); skipped."
        run.ceiling.update({f"redis-py XADD loop, {k}": v for k, v in bare_loop(url, args.jobs, args.runs).items()})
        for res in results:
            if res.errors:
                continue
            try:
                for i in range(args.runs):
                    await throughput(ctx, res, i)
                    ctx.log(f"{res.system.name}: run {i + 1} drain 1/2 procs {fmt(res.drain1[-1], ',.0f')}"
                            f"/{fmt(res.drain2[-1], ',.0f')} jobs/s")
                await drills(ctx, res)
                ctx.log(f"{res.system.name}: drills " + ", ".join(
                    f"{k} {drill_cell(v, args.drill_cap)}" for k, v in res.drills.items()))
            except Exception as exc:  # one system failing must not take the others' figures with it
                res.errors.append(f"{type(exc).__name__}: {exc}".replace("\n", " ")[:600])
                ctx.log(f"{res.system.name}: FAILED {res.errors[-1]}")
                stop_all(ctx)
        await redis.flushall()
    run.load.append(" ".join(f"{v:.1f}" for v in os.getloadavg()))
    run.seconds = time.monotonic() - ctx.began
    return render(run, results, args.drill_cap)


def cli() -> None:
    """Parse options, start the server, run, stop everything."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2,000 jobs, 1 run, 5 pickups, 1 drill per setting")
    parser.add_argument("--jobs", type=int, help="jobs per enqueue/drain run (default 20,000)")
    parser.add_argument("--runs", type=int, help="runs per system (default 3)")
    parser.add_argument("--pickups", type=int, help="idle pickup samples per run (default 20)")
    parser.add_argument("--drill-runs", type=int, help="kill -9 drills per setting (default 3)")
    parser.add_argument("--drill-jobs", type=int, default=6, help="jobs per drill")
    parser.add_argument("--drill-seconds", type=float, default=0.5, help="how long each drill job runs")
    parser.add_argument("--drill-cap", type=float, default=33.0,
                        help="seconds after the kill a drill waits (swarm's default lease is 30 s)")
    parser.add_argument("--drain-timeout", type=float, default=120.0, help="longest one drain may take, s")
    parser.add_argument("--only", help="comma-separated systems: swarm, swarm-claim, swarm-captain, " +
                        ", ".join(PEER_ORDER))
    parser.add_argument("--write", action="store_true", help="write the tables into BENCHMARKS.md "
                        "(default for a full run)")
    args = parser.parse_args()
    quick = {"jobs": 2_000, "runs": 1, "pickups": 5, "drill_runs": 1}
    full = {"jobs": 20_000, "runs": 3, "pickups": 20, "drill_runs": 3}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    with tempfile.TemporaryDirectory(prefix="swarm-bench-peers-") as tmp:
        home = Path(tmp)
        (home / "logs").mkdir()
        server = EmbeddedServer(home)
        procs = Groups(home / "logs", dict(os.environ))
        try:
            state = server.ensure()
            section = anyio.run(main, args, state.url, state.port, home, procs, state.pid)
        finally:
            procs.close()
            server.stop()
    print("\n" + section)
    if args.write or not (args.quick or args.only):
        write(section, ROOT / "BENCHMARKS.md")
        print("written to BENCHMARKS.md")


if __name__ == "__main__":
    cli()

"""Where a swarm drain spends its CPU (not a test): the measurement behind BENCHMARKS.md's profile.

Run: `.venv/bin/python scripts/profile_drain.py [--tasks 20000] [--concurrency 50] [--prefetch 100]
[--agents 2] [--captain] [--py-spy raw|speedscope]`. It starts a throwaway embedded Valkey, queues the tasks
(the no-op job of scripts/peers/jobs.py: one INCR + SET round trip of its own), starts the agents as
`python -m swarm agent run` processes, and reports, between the first and the last job's start:
jobs/s, Valkey's CPU per task (`INFO cpu`), the agents' CPU per task (`/proc/<pid>/stat`), and Redis
commands per task with the costliest ones (`INFO commandstats`, server time). With `--py-spy` each
agent runs under `py-spy record` (install it into the virtualenv first: `pip install py-spy`), and
the profiles land next to the current directory as `agent-<n>.<format>`. With `--captain` the agents
take no work themselves (`--no-claim`; the captain hands them up to concurrency + prefetch each) and a
`swarm captain run` process assigns every task (its CPU is reported on its own line, and under
`--py-spy` it is profiled as `captain.<format>`).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

PEERS = Path(__file__).resolve().parent / "peers"
sys.path.insert(0, str(PEERS))

import jobs  # noqa: E402  (scripts/peers, put on the path above)

from swarm.board import Board, TaskSpec  # noqa: E402
from swarm.connection import open_redis  # noqa: E402
from swarm.server import EmbeddedServer  # noqa: E402
from swarm.settings import Settings  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def agent_pid(proc: subprocess.Popen[bytes], spied: bool) -> int:
    """The agent's own pid (under py-spy, the child it started)."""
    if not spied:
        return proc.pid
    for _ in range(100):
        kids = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True, check=False)
        if kids.stdout.split():
            return int(kids.stdout.split()[0])
        time.sleep(0.05)
    raise RuntimeError("py-spy did not start the agent")


def start_agents(args: argparse.Namespace, env: dict[str, str]) -> list[subprocess.Popen[bytes]]:
    """`swarm agent run` processes, then with `--captain` a `swarm captain run` (each under py-spy with
    `--py-spy`)."""
    runs: list[tuple[str, list[str]]] = []
    for i in range(args.agents):
        runs.append((f"agent-{i + 1}", [
            "agent", "run", "--name", f"agent-{i + 1}", "--can", "noop", "--handler",
            f"{PEERS / 'swarm_job.py'}:handle", "--concurrency", str(args.concurrency),
            "--prefetch", str(args.prefetch), "--grace", "0",
            *(["--no-claim"] if args.captain else [])]))
    if args.captain:
        runs.append(("captain", ["captain", "run"]))
    procs = []
    for name, command in runs:
        argv = [sys.executable, "-m", "swarm", *command]
        if args.py_spy:
            argv = [str(Path(sys.executable).parent / "py-spy"), "record", "-r", "200", "-f", args.py_spy,
                    "-o", f"{name}.{args.py_spy}", "--", *argv]
        procs.append(subprocess.Popen(argv, env=env))
    return procs


async def until(check: Callable[[], Awaitable[bool]], what: str, limit_s: float = 300.0) -> None:
    """Poll `check` until it is true; RuntimeError after `limit_s`."""
    deadline = time.monotonic() + limit_s
    while not await check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up after {limit_s:g} s waiting for {what}")
        await anyio.sleep(0.001)


async def main(args: argparse.Namespace, url: str, home: Path) -> None:
    settings = Settings(redis_url=url, name="profile", home=home)
    env = {**os.environ, "SWARM_REDIS_URL": url, "SWARM_NAME": "profile", "SWARM_HOME": str(home),
           "SWARM_LOG_LEVEL": "warning", "BENCH_REDIS_URL": url, "PYTHONPATH": str(PEERS)}
    async with open_redis(settings) as redis:
        board = Board(redis, settings)
        for start in range(0, args.tasks, 64):
            async with anyio.create_task_group() as tg:
                for _ in range(min(64, args.tasks - start)):
                    tg.start_soon(board.create, TaskSpec(kind="noop", title="noop", body="0"))
        await redis.config_resetstat()
        procs = start_agents(args, env)

        async def started() -> bool:
            return bool(await redis.get(jobs.FIRST))

        async def drained() -> bool:
            return int(await redis.get(jobs.DONE) or 0) >= args.tasks

        try:
            await until(started, "the first job")
            pids = [agent_pid(p, bool(args.py_spy)) for p in procs]
            agents0 = [cpu_s(pid) for pid in pids]
            server0: dict[str, Any] = await redis.info("cpu")
            await until(drained, f"{args.tasks} jobs")
            agents1 = [cpu_s(pid) for pid in pids]
            server1: dict[str, Any] = await redis.info("cpu")
            first, last = int(await redis.get(jobs.FIRST) or 0), int(await redis.get(jobs.LAST) or 0)
            stats: dict[str, Any] = await redis.info("commandstats")
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGINT)
            for proc in procs:
                proc.wait(30)
    n = args.tasks
    server_s = sum(server1[k] - server0[k] for k in ("used_cpu_user", "used_cpu_sys"))
    print(f"{n / ((last - first) / 1e9):,.0f} jobs/s (first to last job's start)")
    spent = [b - a for a, b in zip(agents0, agents1, strict=True)]
    captain = spent.pop() if args.captain else None
    print(f"Valkey CPU {server_s / n * 1e6:.0f} µs/task; agents' CPU {sum(spent):.2f} s = "
          f"{sum(spent) / n * 1e6:.0f} µs/task" + ("" if captain is None else
                                                   f"; captain's CPU {captain / n * 1e6:.0f} µs/task"))
    print(f"Redis commands per task {sum(v['calls'] for v in stats.values()) / n:.1f} (the job's own 2 included); "
          "costliest, server time per task:")
    for name, row in sorted(stats.items(), key=lambda kv: -kv[1]["usec"])[:8]:
        print(f"  {name.removeprefix('cmdstat_'):12s} {row['calls'] / n:6.2f} calls  {row['usec'] / n:7.1f} µs")


def cli() -> None:
    """Parse options, start the server, measure, stop."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--agents", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--prefetch", type=int, default=100)
    parser.add_argument("--captain", action="store_true",
                        help="a `swarm captain run` assigns every task (agents --no-claim)")
    parser.add_argument("--py-spy", choices=("raw", "speedscope", "flamegraph"), default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="swarm-profile-") as tmp:
        server = EmbeddedServer(Path(tmp))
        state = server.ensure()
        try:
            anyio.run(main, args, state.url, Path(tmp))
        finally:
            server.stop()


if __name__ == "__main__":
    cli()

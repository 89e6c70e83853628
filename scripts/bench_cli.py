"""Shell-verb benchmark (not a test): how long `swarm task next|progress|show|done|fail` and `swarm inbox`
take from a shell, each a fresh process, against `python -c "import redis"` measured in the same run.

Run: `.venv/bin/python scripts/bench_cli.py` (about a minute; `--help` lists the options). It starts a
throwaway embedded Valkey in a temporary directory and stops it at the end, unless SWARM_REDIS_URL
points at a server to use instead (the benchmark only touches keys of the swarm `benchcli`, and deletes
them). Each round runs the baseline and every verb once, in turn, so that load from elsewhere on the
machine falls on all of them alike; it prints each one's median wall time over the rounds, its median
CPU time (user + system of the process), and both as a ratio to the baseline's. The target (DESIGN.md):
every verb ≤ 1.5 x the baseline's wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import anyio

from swarm.board import Board, TaskSpec
from swarm.connection import open_redis
from swarm.protocol import ChatBody, message
from swarm.server import EmbeddedServer
from swarm.settings import Settings

SWARM_NAME = "benchcli"
AGENT = "bench-1"
TARGET = 1.5


def swarm_command() -> list[str]:
    """The installed `swarm` console script next to this interpreter, else `python -m swarm`."""
    script = Path(sys.executable).with_name("swarm")
    return [str(script)] if script.exists() else [sys.executable, "-m", "swarm"]


class Timer:
    """Runs commands and keeps each label's wall and CPU seconds."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.wall: dict[str, list[float]] = {}
        self.cpu: dict[str, list[float]] = {}

    def run(self, label: str, argv: Sequence[str], *, ok: Sequence[int] = (0,)) -> str:
        """Run `argv` once, timed under `label`; its stdout."""
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = subprocess.run(argv, env=self.env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode not in ok:
            raise SystemExit(f"{label}: exit {done.returncode}\n{done.stderr.strip()}")
        self.wall.setdefault(label, []).append(wall)
        self.cpu.setdefault(label, []).append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        return done.stdout


def one_round(timer: Timer, swarm: list[str], baseline: list[str]) -> None:
    """The baseline and every verb once: claim, progress, show, done; claim, fail; read the inbox."""
    owner = ["--agent", AGENT]
    timer.run("baseline", baseline)
    task = json.loads(timer.run("task next", [*swarm, "task", "next", *owner, "--can", "bench", "--json"]))
    tid, token = task["id"], str(task["token"])
    timer.run("baseline", baseline)
    timer.run("task progress", [*swarm, "task", "progress", tid, "--token", token, *owner, "--text", "halfway",
                                "--json"])
    timer.run("task show", [*swarm, "task", "show", tid, "--json"])
    timer.run("baseline", baseline)
    timer.run("task done", [*swarm, "task", "done", tid, "--token", token, *owner, "--result", "ok", "--json"])
    task = json.loads(timer.run("task next", [*swarm, "task", "next", *owner, "--can", "bench", "--json"]))
    timer.run("baseline", baseline)
    timer.run("task fail", [*swarm, "task", "fail", task["id"], "--token", str(task["token"]), *owner,
                            "--reason", "benchmark", "--no-retry", "--json"])
    timer.run("inbox", [*swarm, "inbox", *owner, "--json"])


async def prepare(settings: Settings, tasks: int) -> None:
    """A clean swarm with `tasks` ready tasks and some mail for the agent."""
    async with open_redis(settings) as redis:
        await clean(settings)
        board = Board(redis, settings, speak=False)
        for n in range(tasks):
            await board.create(TaskSpec(kind="bench", title=f"bench task {n}"))
        from swarm.bus import Bus  # noqa: PLC0415

        bus = Bus(redis, settings)
        for n in range(3):
            await bus.publish(message(ChatBody(text=f"note {n}"), sender="bench", to=AGENT))


async def clean(settings: Settings) -> None:
    """Delete every key of the benchmark's swarm."""
    async with open_redis(settings) as redis:
        batch: list[bytes] = []
        async for key in redis.scan_iter(match=f"swarm:{{{SWARM_NAME}}}:*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                await redis.delete(*batch)
                batch.clear()
        if batch:
            await redis.delete(*batch)


def report(timer: Timer, rounds: int) -> bool:
    """Print the table; True when every verb meets the target."""
    base_wall = statistics.median(timer.wall["baseline"])
    base_cpu = statistics.median(timer.cpu["baseline"])
    print(f"{rounds} rounds; medians; baseline = python -c 'import redis'\n")
    print(f"{'command':<16}{'wall ms':>9}{'× base':>8}{'cpu ms':>9}{'× base':>8}")
    met = True
    for label in timer.wall:
        wall, cpu = statistics.median(timer.wall[label]), statistics.median(timer.cpu[label])
        if label != "baseline":
            met = met and wall <= TARGET * base_wall
        print(f"{label:<16}{wall * 1000:>9.1f}{wall / base_wall:>8.2f}{cpu * 1000:>9.1f}{cpu / base_cpu:>8.2f}")
    print(f"\ntarget: every verb ≤ {TARGET} × the baseline's wall time: {'met' if met else 'NOT met'}")
    return met


def main() -> None:
    """Parse options, start a throwaway server unless SWARM_REDIS_URL is set, run the rounds, report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15, help="rounds (each runs every verb once)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="swarm-bench-cli-") as tmp:
        home = Path(tmp)
        url = os.environ.get("SWARM_REDIS_URL")
        server = None if url else EmbeddedServer(home)
        try:
            if server is not None:
                url = server.ensure().url
            assert url is not None
            settings = Settings(redis_url=url, name=SWARM_NAME, home=home)
            anyio.run(prepare, settings, 2 * args.rounds + 2)
            env = {**os.environ, "SWARM_REDIS_URL": url, "SWARM_NAME": SWARM_NAME, "SWARM_HOME": str(home),
                   "SWARM_LOG_LEVEL": "warning"}
            timer = Timer(env)
            swarm, baseline = swarm_command(), [sys.executable, "-c", "import redis"]
            timer.run("warm-up", [*swarm, "task", "show", "t-1", "--json"])  # caches warm, scripts loaded
            del timer.wall["warm-up"], timer.cpu["warm-up"]
            for _ in range(args.rounds):
                one_round(timer, swarm, baseline)
            report(timer, args.rounds)
            anyio.run(clean, settings)
        finally:
            if server is not None:
                server.stop()


if __name__ == "__main__":
    main()

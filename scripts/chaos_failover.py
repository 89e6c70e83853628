"""Chaos drill: the master that holds a swarm's slot is killed (SIGKILL) during a 2,000-task drain;
its replica is promoted and the swarm goes on by itself.

Each run starts a fresh local cluster (3 masters + 3 replicas, node timeout 1 s: scripts/cluster),
creates `--tasks` tasks, drains them with `--workers` claiming workers (claim, run, complete; Redis
errors retried with an agent's backoff; expired leases reaped every 0.25 s, lease 5 s), and kills
the swarm's master once `--kill-at` of them are acknowledged. Modes:

    async   replication as Redis does it: a completion the master acknowledged may not have
            reached the replica when it died ("acks lost"); the task comes back when its lease
            runs out and is run and completed again ("completed twice")
    wait    the URL option ?wait_replicas=1&wait_ms=T: every transition is followed by WAIT 1 T,
            so an acknowledged completion is on the replica that will be promoted

The drain rate before the kill is the price of waiting.

    .venv/bin/python scripts/chaos_failover.py                 # 3 runs per mode
    .venv/bin/python scripts/chaos_failover.py --runs 1 --modes wait --wait-ms 500
"""

from __future__ import annotations

import argparse
import os
import signal
import tempfile
import time
from pathlib import Path

import anyio
import structlog
from chaos_common import Drain, Outcome, table  # (scripts/ is on the path: this file runs from it)

from swarm.cluster import SwarmCluster, home_slot
from swarm.connection import open_redis
from swarm.localcluster import LocalCluster
from swarm.settings import Settings


async def one_run(root: Path, mode: str, args: argparse.Namespace) -> Outcome:
    local = LocalCluster(root)
    state = local.up()
    try:
        url = state.url + (f"?wait_replicas=1&wait_ms={args.wait_ms}" if mode == "wait" else "")
        settings = Settings(redis_url=url, name="drill", home=root / ".swarm", lease_s=5.0, presence=False)
        async with open_redis(settings) as redis:
            assert isinstance(redis, SwarmCluster)
            drain = Drain(redis, settings, workers=args.workers)
            ids = await drain.fill(args.tasks)
            owner = redis.nodes_manager.get_node_from_slot(home_slot("drill"))
            pid = state.pids[state.ports.index(int(owner.port))]
            killed_at: float | None = None
            short_before = 0
            started = time.monotonic()
            rate = None
            drain.milestone = int(args.kill_at * args.tasks)
            async with anyio.create_task_group() as tg:
                tg.start_soon(drain.run, args.tasks)
                await drain.reached.wait()
                rate = len(drain.ledger.ack_times) / (time.monotonic() - started)
                os.kill(pid, signal.SIGKILL)
                killed_at = time.monotonic()
                short_before = redis.replication.unreplicated
                with anyio.move_on_after(args.deadline):
                    await drain.finished.wait()
                tg.cancel_scope.cancel()
            outcome = await drain.outcome(ids, killed_at)
            outcome.rate = rate
            print(f"  {mode}: killed master {owner.name} (pid {pid}) after {args.kill_at:.0%}; lost {outcome.lost}, "
                  f"acks lost {outcome.acks_lost}, completed twice {outcome.completed_twice}, ran twice "
                  f"{outcome.ran_twice}, recovery {outcome.recovery_s or float('nan'):.2f} s, {rate:.0f} tasks/s "
                  f"before; transitions not confirmed by a replica: {short_before} before the kill, "
                  f"{redis.replication.unreplicated - short_before} after", flush=True)
            return outcome
    finally:
        local.down()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--kill-at", type=float, default=0.4, help="fraction of tasks acknowledged before the kill")
    parser.add_argument("--modes", default="async,wait")
    parser.add_argument("--wait-ms", type=int, default=500, help="WAIT timeout in wait mode")
    parser.add_argument("--deadline", type=float, default=60.0, help="seconds after the kill to finish the drain")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # errors only: the drill is noisy
    rows: list[tuple[str, list[Outcome]]] = []
    with tempfile.TemporaryDirectory(prefix="swarm-chaos-failover-") as tmp:
        for mode in args.modes.split(","):
            outcomes = []
            for run in range(args.runs):
                folder = Path(tmp) / f"{mode}-{run}"
                folder.mkdir()
                outcomes.append(await one_run(folder, mode, args))
            rows.append((mode if mode == "async" else f"wait 1 {args.wait_ms}ms", outcomes))
    print()
    print(table(f"master of the swarm's slot SIGKILLed during a {args.tasks}-task drain at {args.kill_at:.0%} "
                f"({args.workers} workers, lease 5 s, node timeout 1 s)", rows, rate=True))


if __name__ == "__main__":
    anyio.run(main)

"""Chaos drill: the standalone server (append-only file on, as the embedded server runs it) is
restarted during a 2,000-task drain; no acknowledged transition may be lost. Recovery: from the
old process's exit to the first completion acknowledged of a task claimed after it.

Each run starts the server binary swarm uses (`--appendonly yes`, `appendfsync everysec`, no RDB),
creates `--tasks` tasks, drains them with `--workers` claiming workers (see chaos_common.py), and at
`--restart-at` of the drain stops the server and starts it again on the same port and folder:

    term   SIGTERM: the server finishes its append-only file and exits (a planned restart)
    kill   SIGKILL: the process dies at once; what it acknowledged was already written to the
           file (the kernel has it: a process crash loses nothing; a power cut could lose the
           last second, which `appendfsync always` closes at a cost this drill does not measure)

    .venv/bin/python scripts/chaos_restart.py                # 3 runs per mode
    .venv/bin/python scripts/chaos_restart.py --runs 1 --modes kill
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import anyio
import structlog
from chaos_common import Drain, Outcome, table  # (scripts/ is on the path: this file runs from it)

from swarm.connection import open_redis
from swarm.server import _answers, _free_port, find_binary
from swarm.settings import Settings


def start(binary: str, port: int, folder: Path) -> subprocess.Popen[bytes]:
    """The server on `port`, its data (the append-only file) in `folder`; back once it answers."""
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder), "--appendonly", "yes",
         "--appendfsync", "everysec", "--save", "", "--logfile", str(folder / "valkey.log")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not _answers(port):
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(f"server on port {port} did not start; see {folder / 'valkey.log'}")
        time.sleep(0.01)
    return proc


async def one_run(folder: Path, mode: str, args: argparse.Namespace) -> Outcome:
    binary, port = find_binary(), _free_port()
    server = start(binary, port, folder)
    try:
        settings = Settings(redis_url=f"redis://127.0.0.1:{port}", name="drill", home=folder / ".swarm",
                            lease_s=5.0, presence=False)
        async with open_redis(settings) as redis:
            drain = Drain(redis, settings, workers=args.workers)
            ids = await drain.fill(args.tasks)
            drain.milestone = int(args.restart_at * args.tasks)
            async with anyio.create_task_group() as tg:
                tg.start_soon(drain.run, args.tasks)
                await drain.reached.wait()
                server.send_signal(signal.SIGTERM if mode == "term" else signal.SIGKILL)
                await anyio.to_thread.run_sync(server.wait)
                stopped_at = time.monotonic()  # gone: what is acknowledged from now on, the new one did
                server = await anyio.to_thread.run_sync(start, binary, port, folder)
                up = time.monotonic() - stopped_at
                with anyio.move_on_after(args.deadline):
                    await drain.finished.wait()
                tg.cancel_scope.cancel()
            outcome = await drain.outcome(ids, stopped_at)
            print(f"  {mode}: restarted after {args.restart_at:.0%} (server back in {up:.2f} s); lost {outcome.lost}, "
                  f"acks lost {outcome.acks_lost}, completed twice {outcome.completed_twice}, ran twice "
                  f"{outcome.ran_twice}, recovery {outcome.recovery_s or float('nan'):.2f} s", flush=True)
            return outcome
    finally:
        server.kill()
        server.wait()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--restart-at", type=float, default=0.4, help="fraction of tasks acknowledged before")
    parser.add_argument("--modes", default="term,kill")
    parser.add_argument("--deadline", type=float, default=60.0, help="seconds after the restart to finish")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    rows: list[tuple[str, list[Outcome]]] = []
    with tempfile.TemporaryDirectory(prefix="swarm-chaos-restart-") as tmp:
        for mode in args.modes.split(","):
            outcomes = []
            for run in range(args.runs):
                folder = Path(tmp) / f"{mode}-{run}"
                folder.mkdir()
                outcomes.append(await one_run(folder, mode, args))
            rows.append(({"term": "SIGTERM + restart", "kill": "SIGKILL + restart"}.get(mode, mode), outcomes))
    print()
    print(table(f"standalone server (AOF, appendfsync everysec) restarted during a {args.tasks}-task drain at "
                f"{args.restart_at:.0%} ({args.workers} workers, lease 5 s)", rows))


if __name__ == "__main__":
    anyio.run(main)

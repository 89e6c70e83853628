"""Kill -9 drill on default settings: does work happen once, by its owner, and come back in seconds?

Two agents (`swarm agent run`, default lease 30 s, default heartbeat) run a `cmd:` handler that
appends `start <task> <pid>` to a marks file, works for `--work` seconds, then appends `end <task>`.
Each round creates one task, waits until an agent runs it, kills that agent with SIGKILL at a
random moment of the work, and restarts it under the same name. At the end it prints:

    recovery   kill -> the task running under the other agent: median and max (s)
    lost       tasks not done at the end
    accepted twice   tasks with more than one `done` event in their history
    effects twice    tasks whose handler wrote `end` more than once
    orphans    handler processes alive 1 s after their agent was killed

Then the SIGSTOP drill: the agent running a task is paused past the lease (`--stop-lease`, 3 s
by default, so the drill takes seconds, not minutes; the mechanism is the same at 30 s) and resumed:
its handler must be stopped when it resumes, before it writes its end mark, and the task done
once, by the other agent.

    .venv/bin/python scripts/drill_kill9.py                  # 50 kills, 3 pauses
    .venv/bin/python scripts/drill_kill9.py --rounds 5 --pauses 1

Not a test (it takes minutes): the suite proves the parts (tests/test_presence.py,
tests/test_handler_lifetime.py); this shows the whole on a real machine.
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from functools import partial
from pathlib import Path

import anyio
from redis.asyncio import Redis

from swarm.board import Board, TaskSpec
from swarm.connection import client
from swarm.server import EmbeddedServer
from swarm.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


class Agents:
    """The drill's two agent processes, restartable under the same names."""

    def __init__(self, url: str, name: str, home: Path, handler: str, env: dict[str, str]) -> None:
        self.env = {**os.environ, "SWARM_REDIS_URL": url, "SWARM_NAME": name, "SWARM_HOME": str(home), **env}
        self.handler = handler
        self.home = home
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str) -> None:
        with (self.home / f"{name}.log").open("ab") as log:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "swarm", "agent", "run", "--name", name, "--can", "drill",
                 "--handler", self.handler], cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=log)

    def pid(self, name: str) -> int:
        return self.procs[name].pid

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def marks(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def alive(pid: int, needle: str) -> bool:
    """Is `pid` still a process whose command line holds `needle` (not a reused pid)?"""
    try:
        return needle in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


async def wait_for(check, within: float, every: float = 0.01):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await anyio.sleep(every)
    return None


async def running_owner(board: Board, task_id: str) -> str | None:
    """The task's owner while it runs, else None."""
    t = await board.get(task_id)
    return t.owner if t.state == "running" else None


async def is_done(board: Board, task_id: str) -> bool:
    return (await board.get(task_id)).state == "done"


async def kill_rounds(board: Board, agents: Agents, rounds: int, work: float, mark_file: Path,
                      ) -> tuple[list[float], list[str], int]:
    recoveries: list[float] = []
    ids: list[str] = []
    orphans = 0
    for n in range(rounds):
        task, _ = await board.create(TaskSpec(kind="drill", title=f"round {n}"))
        ids.append(task.id)

        owner = await wait_for(partial(running_owner, board, task.id), 30)
        if owner is None:
            print(f"round {n}: {task.id} never ran; see the agents' logs in {agents.home}")
            continue
        await anyio.sleep(random.uniform(0.1, work * 0.6))  # somewhere in the middle of the work
        handler_pids = [int(m[2]) for m in marks(mark_file) if m[0] == "start" and m[1] == task.id]
        killed = time.monotonic()
        agents.kill(owner)

        async def elsewhere(task_id: str = task.id, dead: str = owner) -> bool:
            t = await board.get(task_id)
            return t.state == "running" and t.owner not in (None, dead)

        if await wait_for(elsewhere, 60):
            recoveries.append(time.monotonic() - killed)
        await anyio.sleep(max(0.0, 1.0 - (time.monotonic() - killed)))
        orphans += sum(alive(pid, str(mark_file)) for pid in handler_pids)
        agents.start(owner)  # back under the same name, as a supervisor would

        await wait_for(partial(is_done, board, task.id), 60)
        print(f"round {n + 1}/{rounds}: {task.id} killed {owner}, recovered in "
              f"{recoveries[-1] if recoveries else float('nan'):.2f} s", flush=True)
    return recoveries, ids, orphans


async def pause_rounds(board: Board, agents: Agents, pauses: int, lease: float, mark_file: Path,
                       ) -> tuple[list[str], list[str]]:
    ids: list[str] = []
    notes: list[str] = []
    for n in range(pauses):
        task, _ = await board.create(TaskSpec(kind="drill", title=f"pause {n}"))
        ids.append(task.id)

        owner = await wait_for(partial(running_owner, board, task.id), 30)
        if owner is None:
            notes.append(f"{task.id} never ran")
            continue
        pid = agents.pid(owner)
        os.kill(pid, signal.SIGSTOP)
        await anyio.sleep(lease * 1.5)  # past the lease: the other agent takes the task meanwhile
        os.kill(pid, signal.SIGCONT)

        await wait_for(partial(is_done, board, task.id), 60)
        await anyio.sleep(1.0)
        print(f"pause {n + 1}/{pauses}: {task.id} paused {owner} for {lease * 1.5:.1f} s", flush=True)
    return ids, notes


async def drill(url: str, args: argparse.Namespace, home: Path) -> None:
    settings = Settings(redis_url=url, name="drill", home=home)
    redis: Redis = client(url, settings)
    await redis.delete(*[k async for k in redis.scan_iter("swarm:{drill}:*")] or ["-"])
    board = Board(redis, settings)
    mark_file = home / "marks"
    body = (f"echo start $SWARM_TASK_ID $$ >> {mark_file}; sleep {{sleep}}; "
            f"echo end $SWARM_TASK_ID >> {mark_file}")

    print(f"== kill -9: {args.rounds} rounds, 2 agents, default settings (lease {settings.lease_s:g} s)")
    agents = Agents(url, "drill", home, "cmd:sh -c " + shlex.quote(body.format(sleep=args.work)), {})
    for name in ("a1", "a2"):
        agents.start(name)
    try:
        recoveries, kill_ids, orphans = await kill_rounds(board, agents, args.rounds, args.work, mark_file)
    finally:
        agents.stop_all()

    print(f"== SIGSTOP past the lease: {args.pauses} pauses (lease {args.stop_lease:g} s)")
    paused = Agents(url, "drill", home, "cmd:sh -c " + shlex.quote(body.format(sleep=args.stop_lease * 3)),
                    {"SWARM_LEASE_S": str(args.stop_lease)})
    for name in ("p1", "p2"):
        paused.start(name)
    try:
        pause_ids, notes = await pause_rounds(board, paused, args.pauses, args.stop_lease, mark_file)
    finally:
        paused.stop_all()

    all_marks = marks(mark_file)
    ends = Counter(m[1] for m in all_marks if m[0] == "end")
    starts = Counter(m[1] for m in all_marks if m[0] == "start")

    async def summary(ids: list[str]) -> tuple[int, int, int]:
        lost = twice = 0
        for task_id in ids:
            task = await board.get(task_id)
            lost += task.state != "done"
            twice += sum(e.body.event == "done" for e in await board.history(task_id)) > 1
        return lost, twice, sum(ends[i] > 1 for i in ids)

    lost, accepted_twice, effects_twice = await summary(kill_ids)
    print()
    print("| drill | runs | recovery median | recovery max | lost | completed twice (board) | "
          "effects twice | handlers left alive |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    med = f"{statistics.median(recoveries):.2f} s" if recoveries else "n/a"
    top = f"{max(recoveries):.2f} s" if recoveries else "n/a"
    print(f"| kill -9, default settings | {len(kill_ids)} | {med} | {top} | {lost} | {accepted_twice} | "
          f"{effects_twice} | {orphans} |")
    p_lost, p_twice, p_effects = await summary(pause_ids)
    stopped = sum(starts[i] >= 2 and ends[i] == 1 for i in pause_ids)
    print(f"| SIGSTOP past a {args.stop_lease:g} s lease | {len(pause_ids)} | - | - | {p_lost} | {p_twice} | "
          f"{p_effects} | paused handlers stopped before their end mark: {stopped}/{len(pause_ids)} |")
    for note in notes:
        print(f"note: {note}")
    await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=50, help="kill -9 rounds (default 50)")
    parser.add_argument("--pauses", type=int, default=3, help="SIGSTOP rounds (default 3)")
    parser.add_argument("--work", type=float, default=3.0, help="seconds each task's command works (default 3)")
    parser.add_argument("--stop-lease", type=float, default=3.0, help="lease in the SIGSTOP drill (default 3 s)")
    parser.add_argument("--url", help="a server to use instead of a fresh embedded one")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="swarm-drill-") as tmp:
        home = Path(tmp)
        server = None if args.url else EmbeddedServer(home / "server")
        url = args.url or server.ensure().url  # type: ignore[union-attr]
        try:
            anyio.run(drill, url, args, home)
        finally:
            if server is not None:
                server.stop()


if __name__ == "__main__":
    main()

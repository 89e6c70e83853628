"""The systems scripts/bench_peers.py measures, behind one interface: swarm (in this process, with real
agent and captain processes) and each peer (its enqueue side run by drive.py in the peer's virtualenv,
its workers started with the command the peer module gives).

This module runs in swarm's virtualenv; nothing here imports a peer library.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import anyio
import jobs  # scripts/peers is on sys.path: bench_peers.py puts it there

from swarm.board import Board, TaskSpec
from swarm.connection import text

PEERS_DIR = Path(__file__).resolve().parent
ROOT = PEERS_DIR.parent.parent
VENVS = ROOT / ".bench-venv"
REQUIREMENTS = PEERS_DIR / "requirements-peers.txt"
PEER_ORDER = ("saq", "taskiq", "arq", "dramatiq", "celery", "rq")
IN_FLIGHT = 64
SWARM_K = jobs.ASYNC_CONCURRENCY
SWARM_PREFETCH = 2 * SWARM_K  # claimed ahead of free workers (Celery's default prefetch is 4 x concurrency)
SWARM_LEASE_TUNED_S = 2.0


@dataclass
class Worker:
    """One worker process to start: a label for its log, its argv and its extra environment."""

    label: str
    argv: list[str]
    env: dict[str, str]


@dataclass
class System:
    """What every contender offers the phases. Subclasses fill in the work."""

    name: str
    versions: dict[str, str] = field(default_factory=dict)
    settings: str = ""
    recovery: dict[str, str] = field(default_factory=dict)
    bulk: str | None = None
    error: str = ""

    async def enqueue(self, count: int, bulk: bool) -> float:
        """Enqueue `count` noop jobs; seconds taken."""
        raise NotImplementedError

    async def pickup(self, count: int) -> tuple[list[float], int, list[int]]:
        """Idle pickup samples in ms, how many were missed, and the pids that ran the jobs."""
        raise NotImplementedError

    async def enqueue_work(self, count: int, seconds: float, tuned: bool) -> None:
        """The recovery drill's `work:w<i>` jobs (`tuned`: with the peer's per-job recovery options)."""
        raise NotImplementedError

    def workers(self, count: int, tuned: bool, concurrency: int | None, run: str) -> list[Worker]:
        """`count` worker processes."""
        raise NotImplementedError

    def helpers(self, tuned: bool) -> list[Worker]:
        """Processes besides the workers (swarm's captain)."""
        return []

    async def helpers_ready(self) -> bool:
        """True once the helpers are ready to work."""
        return True


# --- peers -----------------------------------------------------------------------------------------

def peer_requirements() -> dict[str, list[str]]:
    """requirements-peers.txt grouped by its `# peer: NAME` tags."""
    out: dict[str, list[str]] = {}
    for line in REQUIREMENTS.read_text().splitlines():
        req, _, tag = line.partition("# peer:")
        if req.strip() and tag.strip():
            out.setdefault(tag.strip(), []).append(req.strip())
    return out


def install(peer: str, reqs: list[str]) -> str:
    """Make `.bench-venv/<peer>` hold exactly `reqs` (skipped when a stamp says it already does);
    '' on success, else the error text."""
    venv = VENVS / peer
    stamp = venv / ".bench-requirements"
    wanted = hashlib.sha256("\n".join(reqs).encode()).hexdigest()
    if stamp.exists() and stamp.read_text() == wanted and (venv / "bin" / "python").exists():
        return ""
    steps = [[sys.executable, "-m", "venv", "--clear", str(venv)],
             [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *reqs]]
    for argv in steps:
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=600)
        if done.returncode != 0:
            lines = [ln for ln in (done.stderr + done.stdout).splitlines() if ln.strip() and "WARNING" not in ln]
            return f"`{' '.join(argv[-len(reqs):]) if 'pip' in argv else 'venv'}` failed: " + " / ".join(lines[-4:])
    stamp.write_text(wanted)
    return ""


class Peer(System):
    """A peer library, driven through `drive.py` in its own virtualenv."""

    def __init__(self, name: str, env: dict[str, str]) -> None:
        super().__init__(name)
        self.python = str(VENVS / name / "bin" / "python")
        self.env = {**env, "PYTHONPATH": str(PEERS_DIR)}
        self.worker_argv: list[str] = []

    async def drive(self, *args: str, extra: dict[str, str] | None = None, limit_s: float = 600) -> dict[str, Any]:
        """Run `drive.py <peer> args...` and return its JSON line; RuntimeError with its output if it fails."""
        argv = [self.python, str(PEERS_DIR / "drive.py"), self.name, *args]
        with anyio.fail_after(limit_s):
            done = await anyio.run_process(argv, env={**self.env, **(extra or {})}, check=False)
        out = done.stdout.decode(errors="replace")
        for line in reversed(out.splitlines()):
            if line.startswith("BENCH-JSON "):
                return cast(dict[str, Any], json.loads(line.removeprefix("BENCH-JSON ")))
        tail = (out + done.stderr.decode(errors="replace")).strip().splitlines()[-6:]
        raise RuntimeError(f"drive.py {' '.join(args)} exited {done.returncode}: " + " / ".join(tail))

    async def describe(self) -> None:
        """Versions, worker command and settings, from the peer's module."""
        info = await self.drive("describe", limit_s=120)
        self.versions, self.worker_argv = info["versions"], info["worker"]
        self.settings, self.recovery, self.bulk = info["throughput"], info["recovery"], info["bulk"]

    async def enqueue(self, count: int, bulk: bool) -> float:
        return float((await self.drive("bulk" if bulk else "enqueue", str(count)))["seconds"])

    async def pickup(self, count: int) -> tuple[list[float], int, list[int]]:
        got = await self.drive("pickup", str(count))
        return [float(v) for v in got["ms"]], int(got["missed"]), [int(p) for p in got["pids"]]

    async def enqueue_work(self, count: int, seconds: float, tuned: bool) -> None:
        await self.drive("work", str(count), str(seconds), extra={"BENCH_TUNED": "1" if tuned else "0"})

    def workers(self, count: int, tuned: bool, concurrency: int | None, run: str) -> list[Worker]:
        extra = {**self.env, "BENCH_TUNED": "1" if tuned else "0", "BENCH_CONCURRENCY": str(concurrency or "")}
        argv = self.argv_for(extra)
        return [Worker(f"{self.name}-{run}-w{i + 1}", argv, extra) for i in range(count)]

    def argv_for(self, extra: dict[str, str]) -> list[str]:
        """The worker command under these settings (the peer module computes it at import)."""
        done = subprocess.run([self.python, str(PEERS_DIR / "drive.py"), self.name, "describe"],
                              env=extra, capture_output=True, text=True, check=False, timeout=120)
        for line in reversed(done.stdout.splitlines()):
            if line.startswith("BENCH-JSON "):
                return cast(list[str], json.loads(line.removeprefix("BENCH-JSON "))["worker"])
        raise RuntimeError(f"{self.name}: describe failed: {done.stderr.strip()[-300:]}")


# --- swarm -----------------------------------------------------------------------------------------

class Swarm(System):
    """swarm itself: tasks created with `Board.create` here, run by `swarm agent run` processes that
    claim work (mode `claim`, no captain) or get it from a `swarm captain run` process (mode `captain`,
    agents `--no-claim`)."""

    def __init__(self, mode: str, board: Board, env: dict[str, str], versions: dict[str, str]) -> None:
        super().__init__(f"swarm ({'agents claim, no captain' if mode == 'claim' else 'captain assigns'})",
                         versions=versions)
        self.mode = mode
        self.board = board
        self.env = {**env, "PYTHONPATH": str(PEERS_DIR)}
        self.settings = (f"`swarm agent run --concurrency {SWARM_K} --prefetch {SWARM_PREFETCH}` per process "
                         "(on uvloop, the default)" if mode == "claim" else
                         f"`swarm agent run --concurrency {SWARM_K} --prefetch {SWARM_PREFETCH} --no-claim` per "
                         "process (on uvloop, the default), plus `swarm captain run`")
        self.recovery = {"default": "lease 30 s (SWARM_LEASE_S)", "tuned": f"lease {SWARM_LEASE_TUNED_S:g} s"}
        self.bulk = "Board.create_many, one script call per 500 tasks"

    async def create(self, tag: str, seconds: float = 0.0) -> None:
        """One task."""
        await self.board.create(TaskSpec(kind="noop", title=tag, body=str(seconds)))

    async def enqueue(self, count: int, bulk: bool) -> float:
        began = time.perf_counter()
        if not bulk:
            for _ in range(count):
                await self.create("noop")
            return time.perf_counter() - began
        await self.board.create_many([TaskSpec(kind="noop", title="noop", body="0.0") for _ in range(count)])
        return time.perf_counter() - began

    async def pickup(self, count: int) -> tuple[list[float], int, list[int]]:
        samples: list[float] = []
        pids: list[int] = []
        missed = 0
        redis = self.board.redis
        for i in range(count + 1):
            await anyio.sleep(0.05)
            sent = time.time_ns()
            await self.create(f"stamp:p{i}")
            got = None
            limit = time.monotonic() + 5
            while got is None and time.monotonic() < limit:
                reply = await redis.blpop([jobs.STAMPS], timeout=1)
                if reply is not None and text(reply[1]).split()[0] == f"p{i}":
                    _, ns, pid = text(reply[1]).split()
                    got = int(ns)
                    pids.append(int(pid))
            if got is None:
                missed += 1
            elif i > 0:
                samples.append((got - sent) / 1e6)
        return samples, missed, pids

    async def enqueue_work(self, count: int, seconds: float, tuned: bool) -> None:
        for i in range(count):
            await self.create(f"work:w{i}", seconds)

    def _env(self, tuned: bool) -> dict[str, str]:
        return {**self.env, **({"SWARM_LEASE_S": str(SWARM_LEASE_TUNED_S)} if tuned else {})}

    def workers(self, count: int, tuned: bool, concurrency: int | None, run: str) -> list[Worker]:
        out = []
        for i in range(count):
            name = f"{self.mode}-{run}-a{i + 1}"
            argv = [sys.executable, "-m", "swarm", "agent", "run", "--name", name, "--can", "noop", "--handler",
                    f"{PEERS_DIR / 'swarm_job.py'}:handle", "--concurrency", str(concurrency or SWARM_K),
                    # The drill runs one job at a time per worker, holding none ahead (as the peers do there).
                    "--prefetch", str(0 if concurrency else SWARM_PREFETCH),
                    "--grace", "0", *(["--no-claim"] if self.mode == "captain" else [])]
            out.append(Worker(name, argv, self._env(tuned)))
        return out

    def helpers(self, tuned: bool) -> list[Worker]:
        if self.mode != "captain":
            return []
        return [Worker("captain", [sys.executable, "-m", "swarm", "captain", "run"], self._env(tuned))]

    async def helpers_ready(self) -> bool:
        return self.mode != "captain" or await self.board.redis.get(self.board.keys.leader) is not None

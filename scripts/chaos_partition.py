"""Chaos drill: one agent cut off from the server for 40 s by a network partition, then healed.

Needs root and `ip` (iproute2): the drill makes a network namespace and a veth pair (10.231.0.1 on
this side, 10.231.0.2 inside; traffic stays on this machine), starts the server listening on
127.0.0.1 and 10.231.0.1, and two `swarm agent run` processes with a `cmd:` handler that writes
start and end marks: a1 inside the namespace, a2 outside. Each run:

1. a task is created; a1 claims it and starts its handler (it works `--work` seconds);
2. the link goes down (`ip link set ... down`: packets vanish, no connection is reset, as in a real
   partition); a1's handler finishes during the cut and a1 cannot report it;
3. the lease (`--lease`, 30 s by default as shipped) runs out: a2 takes the task over and runs it;
4. after `--cut` seconds the link comes back: a1's late completion must be refused (its token is
   stale), and a1 must rejoin by itself (heartbeat and take new work) with no restart.

    lost              tasks not done at the end
    completed twice   tasks with more than one `done` in their history
    ran twice         tasks whose handler wrote its end mark twice (the cut-off agent's work is
                      done again elsewhere: what at-least-once costs when an agent is cut off)
    recovery          cut -> the task running on a2
    late refused      a1 logged its completion as refused after the heal
    rejoined          heal -> a1 starts one of the tasks created at the heal

    sudo .venv/bin/python scripts/chaos_partition.py                  # 1 run, default lease 30 s
    sudo .venv/bin/python scripts/chaos_partition.py --runs 2 --lease 10 --cut 20
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
from chaos_common import until  # (scripts/ is on the path: this file runs from it)

from swarm.board import Board, TaskSpec
from swarm.connection import open_redis
from swarm.server import _answers, _free_port, find_binary
from swarm.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
HOST_IP, AGENT_IP = "10.231.0.1", "10.231.0.2"


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


class Partition:
    """A namespace joined to this one by a veth pair; `cut` and `heal` take the link down and up."""

    def __init__(self) -> None:
        tag = os.getpid() % 100_000
        self.ns, self.host_end, self.ns_end = f"swarm-drill-{tag}", f"sdh{tag}", f"sdn{tag}"

    def __enter__(self) -> Partition:
        ip("netns", "add", self.ns)
        ip("link", "add", self.host_end, "type", "veth", "peer", "name", self.ns_end)
        ip("link", "set", self.ns_end, "netns", self.ns)
        ip("addr", "add", f"{HOST_IP}/24", "dev", self.host_end)
        ip("link", "set", self.host_end, "up")
        ip("netns", "exec", self.ns, "ip", "addr", "add", f"{AGENT_IP}/24", "dev", self.ns_end)
        ip("netns", "exec", self.ns, "ip", "link", "set", self.ns_end, "up")
        ip("netns", "exec", self.ns, "ip", "link", "set", "lo", "up")
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["ip", "netns", "del", self.ns], check=False, capture_output=True)  # its veth end goes too
        subprocess.run(["ip", "link", "del", self.host_end], check=False, capture_output=True)

    def cut(self) -> None:
        ip("link", "set", self.host_end, "down")

    def heal(self) -> None:
        ip("link", "set", self.host_end, "up")


def marks(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def agent(name: str, url: str, home: Path, handler: str, lease: float, prefix: list[str]) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SWARM_REDIS_URL": url, "SWARM_NAME": "drill", "SWARM_HOME": str(home),
           "SWARM_LEASE_S": str(lease), "SWARM_LOG_LEVEL": "info"}
    with (home / f"{name}.log").open("ab") as log:
        return subprocess.Popen([*prefix, sys.executable, "-m", "swarm", "agent", "run", "--name", name, "--can",
                                 "drill", "--handler", handler], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=log)


def serve(home: Path) -> tuple[subprocess.Popen[bytes], int]:
    """The server, listening on 127.0.0.1 and on this side of the veth pair; back once it answers."""
    home.mkdir(parents=True)
    port = _free_port()
    server = subprocess.Popen([find_binary(), "--port", str(port), "--bind", "127.0.0.1", HOST_IP, "--protected-mode",
                               "no", "--save", "", "--appendonly", "no", "--logfile", str(home / "valkey.log")],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not _answers(port):
        time.sleep(0.01)
    return server, port


async def one_run(net: Partition, home: Path, args: argparse.Namespace) -> dict[str, object]:
    server, port = await anyio.to_thread.run_sync(serve, home)
    mark_file = home / "marks"
    body = (f"echo start $SWARM_TASK_ID $PPID >> {mark_file}; sleep {args.work}; "
            f"echo end $SWARM_TASK_ID $PPID >> {mark_file}")
    handler = "cmd:sh -c " + shlex.quote(body)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        settings = Settings(redis_url=f"redis://127.0.0.1:{port}", name="drill", home=home, lease_s=args.lease)
        async with open_redis(settings) as redis:
            board = Board(redis, settings)
            task, _ = await board.create(TaskSpec(kind="drill", title="cut off mid-task"))
            a1 = agent("a1", f"redis://{HOST_IP}:{port}", home, handler, args.lease, ["ip", "netns", "exec", net.ns])
            procs.append(a1)

            async def running_on(name: str) -> bool:
                t = await board.get(task.id)
                return t.state == "running" and t.owner == name

            assert await until(lambda: running_on("a1"), 30), f"a1 never ran {task.id}; see {home}/a1.log"
            await anyio.sleep(0.5)
            a2 = agent("a2", f"redis://127.0.0.1:{port}", home, handler, args.lease, [])
            procs.append(a2)
            net.cut()
            cut_at = time.monotonic()
            recovered = await until(lambda: running_on("a2"), args.cut)
            recovery = time.monotonic() - cut_at if recovered else None
            await anyio.sleep(max(0.0, args.cut - (time.monotonic() - cut_at)))
            net.heal()
            healed = time.monotonic()
            later = [(await board.create(TaskSpec(kind="drill", title=f"after the heal {n}")))[0].id for n in range(4)]

            async def a1_took_one() -> bool:
                return any(m[0] == "start" and m[1] in later and m[2] == str(a1.pid) for m in marks(mark_file))

            rejoined = await until(a1_took_one, 60, 0.1)
            rejoin = time.monotonic() - healed if rejoined else None

            async def all_done() -> bool:
                return (await board.counts())["done"] == 1 + len(later)

            await until(all_done, 3 * args.work + 30, 0.2)
            tasks = await board.tasks()
            twice = 0
            for t in tasks:
                twice += [e.body.event for e in await board.history(t.id)].count("done") > 1
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        server.terminate()
        server.wait()
    ends = [m[1] for m in marks(mark_file) if m[0] == "end"]
    a1_log = (home / "a1.log").read_text(errors="replace")
    return {
        "lost": sum(1 for t in tasks if t.state != "done"),
        "twice": twice,
        "ran_twice": sum(1 for i in set(ends) if ends.count(i) > 1),
        "recovery": recovery,
        "late_refused": "completion refused" in a1_log and task.id in a1_log,
        "rejoin": rejoin,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--lease", type=float, default=30.0, help="task lease, s (the shipped default: 30)")
    parser.add_argument("--cut", type=float, default=40.0, help="how long the link is down, s")
    parser.add_argument("--work", type=float, default=10.0, help="how long the handler works, s")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("chaos_partition.py makes a network namespace: run it as root")
    results = []
    with tempfile.TemporaryDirectory(prefix="swarm-chaos-partition-") as tmp:
        for run in range(args.runs):
            with Partition() as net:
                result = await one_run(net, Path(tmp) / f"run-{run}", args)
            print(f"  run {run}: {result}", flush=True)
            results.append(result)
    print()
    print(f"one agent cut off for {args.cut:g} s (network namespace, link down) with a task running; lease "
          f"{args.lease:g} s, handler works {args.work:g} s")
    print()
    print("| runs | lost | completed twice | ran twice | recovery s | late completion refused | rejoined after s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    recoveries = " / ".join(f"{r['recovery']:.1f}" if r["recovery"] is not None else "never" for r in results)
    rejoins = " / ".join(f"{r['rejoin']:.1f}" if r["rejoin"] is not None else "never" for r in results)
    lost, twice = sum(int(str(r["lost"])) for r in results), sum(int(str(r["twice"])) for r in results)
    print(f"| {len(results)} | {lost} | {twice} | {sum(int(str(r['ran_twice'])) for r in results)} | {recoveries} "
          f"| {sum(bool(r['late_refused']) for r in results)}/{len(results)} | {rejoins} |")


if __name__ == "__main__":
    anyio.run(main)

"""A throwaway cluster on this machine for tests, the chaos drills and trying swarm on a cluster
(`scripts/cluster up|down|status`): masters and replicas started from the server binary the embedded
server uses, on free loopback ports, without persistence, torn down by `down`."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import redis.exceptions as rex
from redis import Redis as SyncRedis

from swarm.errors import ServerError
from swarm.server import START_TIMEOUT_S, _answers, _read_pid, _tail, find_binary, process_alive


@dataclass(frozen=True, slots=True)
class ClusterState:
    """What `cluster.json` records about a running local cluster."""

    ports: tuple[int, ...]
    pids: tuple[int, ...]
    binary: str

    @property
    def url(self) -> str:
        """A redis:// URL of one node; the client finds the others."""
        return f"redis://127.0.0.1:{self.ports[0]}"


class LocalCluster:
    """A throwaway cluster on this machine under `root`: `masters` masters with `replicas` replicas
    each, started from the same server binary as the embedded server, on free loopback ports (each
    node also takes its port + 10000 for the cluster bus), without persistence. A master that stops
    answering for `node_timeout_ms` is failed over to its replica."""

    def __init__(self, root: Path, *, masters: int = 3, replicas: int = 1, node_timeout_ms: int = 1000) -> None:
        self.root = root.resolve()
        self.masters = masters
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self._state_file = self.root / "cluster.json"

    def status(self) -> ClusterState | None:
        """The running cluster, or None when it is not recorded or a node has stopped."""
        try:
            data = json.loads(self._state_file.read_text())
            state = ClusterState(tuple(data["ports"]), tuple(data["pids"]), str(data["binary"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return state if all(process_alive(pid) for pid in state.pids) else None

    def up(self) -> ClusterState:
        """The running cluster, or a new one once every node agrees the cluster is ok and every
        replica is in sync with its master (so a failover can happen at once)."""
        state = self.status()
        if state is not None:
            return state
        self.down()  # what a half-started or half-dead earlier cluster left
        binary = find_binary()
        cli = str(Path(binary).with_name("valkey-cli"))
        if not os.access(cli, os.X_OK):
            cli = shutil.which("valkey-cli") or shutil.which("redis-cli") or cli
        count = self.masters * (1 + self.replicas)
        ports = _free_cluster_ports(count)
        pids: list[int] = []
        try:
            for port in ports:
                pids.append(self.start_node(binary, port))
        finally:  # recorded even when one failed to start, so `down` stops the others
            self._state_file.write_text(json.dumps({"ports": ports, "pids": pids, "binary": binary}))
        state = ClusterState(ports, tuple(pids), binary)
        created = subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            stdin=subprocess.DEVNULL, capture_output=True, check=False, timeout=60,
        )
        try:
            if created.returncode != 0:
                raise ServerError(f"{cli} --cluster create failed: {created.stdout.decode()[-400:]}"
                                  f"{created.stderr.decode()[-400:]}")
            self.wait_ok(ports, count)
        except BaseException:
            self.down()  # no node outlives a cluster that never came up
            raise
        return state

    def start_node(self, binary: str, port: int) -> int:
        """Start (or restart, with the node's saved cluster config) the node on `port`: its pid."""
        folder = self.root / str(port)
        folder.mkdir(parents=True, exist_ok=True)
        pidfile = folder / "valkey.pid"
        pidfile.unlink(missing_ok=True)
        subprocess.run(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder), "--cluster-enabled", "yes",
             "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", str(self.node_timeout_ms),
             # A replica fails over however long it was cut off: the drills want a failover every time.
             "--cluster-replica-validity-factor", "0", "--repl-ping-replica-period", "1",
             "--appendonly", "no", "--save", "",
             "--protected-mode", "yes", "--daemonize", "yes", "--pidfile", str(pidfile),
             "--logfile", str(folder / "valkey.log")],
            stdin=subprocess.DEVNULL, capture_output=True, check=True, timeout=START_TIMEOUT_S,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            pid = _read_pid(pidfile)
            if pid and _answers(port):
                return pid
            time.sleep(0.02)
        raise ServerError(f"cluster node on port {port} did not start; its log ends: {_tail(folder / 'valkey.log')}")

    def wait_ok(self, ports: Sequence[int], count: int, timeout: float = 30.0) -> None:
        """Wait until every node in `ports` says the cluster is ok and knows `count` nodes, and
        every replica's link to its master is up."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            last = ""
            for port in ports:
                info = _info(port, "CLUSTER INFO") + _info(port, "INFO replication")
                # Every node must also list every replica to clients (CLUSTER SLOTS), which it does once
                # the replica has had data (a write, or the master's ping: each second, see start_node).
                replicas = _replicas_listed(port)
                if ("cluster_state:ok" not in info or f"cluster_known_nodes:{count}" not in info
                        or replicas != count - self.masters
                        or ("role:slave" in info and "master_link_status:up" not in info)):
                    last = f"node {port}: " + " ".join(line for line in info.splitlines()
                                                       if line.startswith(("cluster_state", "cluster_known",
                                                                           "role", "master_link")))
                    break
            if not last:
                return
            time.sleep(0.1)
        raise ServerError(f"local cluster under {self.root} not ready within {timeout:.0f}s: {last}")

    def down(self, timeout: float = 10.0) -> bool:
        """Stop every node (SIGTERM, then SIGKILL) and forget the cluster; False if none was recorded."""
        try:
            pids = [int(p) for p in json.loads(self._state_file.read_text())["pids"]]
        except (OSError, ValueError, KeyError, TypeError):
            return False
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while any(process_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.02)
        for pid in pids:
            if process_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self._state_file.unlink(missing_ok=True)
        for folder in self.root.iterdir():
            if folder.is_dir() and folder.name.isdigit():
                shutil.rmtree(folder, ignore_errors=True)
        return True


def _info(port: int, command: str) -> str:
    """The text reply of `command` on the node at `port` ("" when it does not answer)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(" ".join(command.split()).encode() + b"\r\n")
            reply = sock.makefile("rb")
            head = reply.readline()
            return reply.read(int(head[1:])).decode() if head.startswith(b"$") else ""
    except (OSError, ValueError):
        return ""


def _replicas_listed(port: int) -> int:
    """How many replicas the node at `port` lists in CLUSTER SLOTS (-1 when it does not answer)."""
    try:
        with SyncRedis(port=port, socket_timeout=1) as node:
            return sum(len(entry) - 3 for entry in node.execute_command("CLUSTER SLOTS"))
    except rex.RedisError:
        return -1


def _free_cluster_ports(count: int) -> tuple[int, ...]:
    """`count` ports whose cluster-bus ports (+10000) are free too."""
    chosen: list[int] = []
    while len(chosen) < count:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port + 10000 > 65535:
            # The kernel's ephemeral range is high; pick from a low range then, checking both ports.
            port = secrets.randbelow(20000) + 20000
        if port in chosen or not all(_bindable(p) for p in (port, port + 10000)):
            continue
        chosen.append(port)
    return tuple(chosen)


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True

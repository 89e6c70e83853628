"""A local Valkey cluster for trying swarm on a cluster, the cluster tests and the chaos drills:
3 masters and 3 replicas (`--masters`, `--replicas`) from the server binary swarm already uses, on
free loopback ports, in a temporary folder, no persistence.

    scripts/cluster up        # prints the URL: export SWARM_REDIS_URL=redis://127.0.0.1:PORT
    scripts/cluster status    # every node: port, pid, role, slots
    scripts/cluster down      # stops every node, removes the folder

`--dir D` keeps the cluster elsewhere (default: $TMPDIR/swarm-cluster-<uid>); `up` on a running
cluster only prints its URL. `scripts/cluster` runs this file with the repository's .venv (made if
needed, as scripts/test does).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from swarm.errors import SwarmError
from swarm.localcluster import LocalCluster, _info


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / f"swarm-cluster-{os.getuid()}")
    parser.add_argument("--masters", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=1, help="replicas per master")
    parser.add_argument("--node-timeout-ms", type=int, default=1000, help="how long until a silent master fails over")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    local = LocalCluster(args.dir, masters=args.masters, replicas=args.replicas, node_timeout_ms=args.node_timeout_ms)
    try:
        if args.action == "up":
            state = local.up()
            print(state.url)
            print(f"# {len(state.ports)} nodes under {args.dir}; use it with: export SWARM_REDIS_URL={state.url}",
                  file=sys.stderr)
        elif args.action == "down":
            stopped = local.down()
            shutil.rmtree(args.dir, ignore_errors=True)
            print("stopped" if stopped else f"no cluster under {args.dir}")
        else:
            state = local.status()
            if state is None:
                print(f"no cluster runs under {args.dir} (scripts/cluster up starts one)")
                return 1
            print(state.url)
            for port, pid in zip(state.ports, state.pids, strict=True):
                nodes = _info(port, "CLUSTER NODES")
                me = next((line.split() for line in nodes.splitlines() if "myself" in line), [])
                role = "master" if me and "master" in me[2] else "replica"
                slots = " ".join(me[8:]) if role == "master" else f"of {me[3][:8]}" if me else "?"
                print(f"  127.0.0.1:{port}  pid {pid:<7}  {(me[0][:8] if me else '?')}  {role:<8}  {slots}")
    except SwarmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

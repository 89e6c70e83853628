"""The raw ceiling scripts/bench_peers.py reports next to the systems: what the same server does for bare
XADDs, from `redis-benchmark` (Debian's redis-tools) and from a bare redis-py loop, in the same run."""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import time

import redis as sync_redis

PAYLOAD = '{"v":1,"kind":"job","id":"01JBENCH00000000000000000","body":{"task":"noop","args":[],"kwargs":{}}}' * 2
"""About the size of one small job message."""


def redis_benchmark(port: int, runs: int) -> dict[str, float]:
    """redis-benchmark XADD requests/s (median of `runs`), or {} when the tool is missing."""
    tool = "/usr/bin/redis-benchmark" if os.path.exists("/usr/bin/redis-benchmark") else "redis-benchmark"
    out: dict[str, float] = {}
    for label, extra, n in (("1 client", ["-c", "1"], 20_000), ("50 clients", ["-c", "50"], 100_000),
                            ("50 clients, pipeline 16", ["-c", "50", "-P", "16"], 400_000)):
        rates = []
        for _ in range(runs):
            try:
                done = subprocess.run([tool, "-h", "127.0.0.1", "-p", str(port), "-n", str(n), *extra, "-q",
                                       "XADD", "bench:rb", "MAXLEN", "~", "100000", "*", "m", PAYLOAD],
                                      capture_output=True, text=True, timeout=120, check=False)
            except FileNotFoundError:
                return {}
            found = re.findall(r"([\d.]+) requests per second", done.stdout)
            if found:
                rates.append(float(found[-1]))
        if rates:
            out[label] = statistics.median(rates)
    return out


def bare_loop(url: str, count: int, runs: int) -> dict[str, float]:
    """A bare redis-py XADD loop: one at a time, and pipelined 100 per round trip (median msgs/s)."""
    client = sync_redis.Redis.from_url(url)
    out: dict[str, list[float]] = {"one at a time": [], "pipelined 100": []}
    try:
        for _ in range(runs):
            began = time.perf_counter()
            for _ in range(count):
                client.xadd("bench:bare", {"m": PAYLOAD}, maxlen=100_000, approximate=True)
            out["one at a time"].append(count / (time.perf_counter() - began))
            began = time.perf_counter()
            for chunk in range(0, count, 100):
                pipe = client.pipeline(transaction=False)
                for _ in range(min(100, count - chunk)):
                    pipe.xadd("bench:bare", {"m": PAYLOAD}, maxlen=100_000, approximate=True)
                pipe.execute()
            out["pipelined 100"].append(count / (time.perf_counter() - began))
        client.delete("bench:bare", "bench:rb")
    finally:
        client.close()
    return {k: statistics.median(v) for k, v in out.items()}

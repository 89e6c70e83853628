"""Bus benchmark (not a test): batched publish throughput against bare redis-py, and end-to-end latency.

Run: `.venv/bin/python scripts/bench_bus.py` (about 20 s; `--help` lists the options). It starts a
throwaway embedded Valkey in a temporary directory and stops it at the end, unless SWARM_REDIS_URL
points at a server to use instead (the benchmark only touches keys of the swarm `bench`, and deletes them).

1. Throughput. The same N messages go out two ways, in alternating order, several times:
   - bare: a redis-py pipeline (transaction=False) of `XADD <stream> MAXLEN ~ <n> * m <json>`, one
     `execute()` per chunk, over bytes encoded beforehand (no message building or encoding timed);
   - swarm: `Bus.publish_many` of the pre-built Message objects, so swarm's time *includes* encoding
     (pydantic serialisation and the size check) and its one EVALSHA of `publish.lua` per chunk, with
     the sender check and the per-sender token buckets (at a rate no run reaches, so none is refused).
   The ratio is swarm msgs/s ÷ bare msgs/s of the medians (DESIGN.md target: >= 0.75).
2. Latency. A `Consumer.run` reads the broadcast stream while, in the same process, a publisher calls
   `Bus.publish` at a steady rate (default 1,000 msg/s). Each message carries its send time
   (`time.perf_counter_ns()` taken just before it is built and published) in its body; the handler
   subtracts it from its own `perf_counter_ns()`, so the figure covers building and encoding the
   message, XADD, the blocked XREADGROUP waking, decoding and dispatch (the ack comes after). The
   first 0.5 s of each run is warm-up and not counted. Reported: p50 and p99 (targets <= 1 ms, <= 5 ms).
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
from redis.asyncio import Redis

from swarm.bus import PUBLISH_CHUNK, Bus, Delivery
from swarm.connection import open_redis
from swarm.keys import FIELD
from swarm.protocol import Message, StatusBody, encode, message
from swarm.server import EmbeddedServer
from swarm.settings import Settings

SWARM_NAME = "bench"
TEXT = "agent-{i} standing by: no task assigned, waiting for work on the audit queue"


def build_messages(count: int) -> list[Message]:
    """The benchmark payload: status chatter to `@all`, ~250 bytes of JSON each."""
    return [
        message(StatusBody(text=TEXT.format(i=i % 50), state="idle"), sender=f"agent-{i % 50}",
                tags=("bench", "idle"))
        for i in range(count)
    ]


async def timed(step: Callable[[], Awaitable[object]]) -> tuple[float, float]:
    """Wall seconds and this process's CPU seconds that `step` took."""
    gc.collect()  # so neither side pays for the other's garbage
    wall, cpu = time.perf_counter(), time.process_time()
    await step()
    return time.perf_counter() - wall, time.process_time() - cpu


async def throughput(url: str, settings: Settings, count: int, reps: int) -> tuple[float, float]:
    """Median msgs/s of (bare pipelined XADD, swarm publish_many) over `reps` alternating runs."""
    msgs = build_messages(count)
    payloads = [encode(m, settings.max_message_bytes) for m in msgs]
    bare_rates: list[float] = []
    swarm_rates: list[float] = []
    cpu: dict[str, list[float]] = {"bare": [], "swarm": []}
    bare_client = Redis.from_url(url)
    try:
        async with open_redis(settings) as swarm_client:
            bus = Bus(swarm_client, settings)
            stream = bus.keys.stream_for(msgs[0].to)
            maxlen = settings.stream_maxlen

            async def bare() -> None:
                for start in range(0, count, PUBLISH_CHUNK):
                    async with bare_client.pipeline(transaction=False) as pipe:
                        for payload in payloads[start:start + PUBLISH_CHUNK]:
                            pipe.xadd(stream, {FIELD: payload}, maxlen=maxlen, approximate=True)
                        await pipe.execute()

            async def swarm() -> None:
                await bus.publish_many(msgs)

            await bare()  # warm both connections and load the script before timing
            await swarm()
            for rep in range(reps):
                order = [(bare, bare_rates), (swarm, swarm_rates)]
                for step, rates in order if rep % 2 == 0 else order[::-1]:
                    await swarm_client.delete(stream)
                    wall, used = await timed(step)
                    rates.append(count / wall)
                    cpu[step.__name__].append(used / count * 1e6)
                    written = await swarm_client.xlen(stream)
                    if written != count:  # both sides must have done the whole job for the rates to mean anything
                        raise SystemExit(f"{step.__name__} wrote {written} entries, expected {count}")
            await swarm_client.delete(stream)
            print(f"  bare  runs (msgs/s): {', '.join(f'{r:,.0f}' for r in bare_rates)}")
            print(f"  swarm runs (msgs/s): {', '.join(f'{r:,.0f}' for r in swarm_rates)}")
            print(f"  client CPU per message (median): bare {statistics.median(cpu['bare']):.1f} us, "
                  f"swarm {statistics.median(cpu['swarm']):.1f} us (swarm's includes encoding)")
    finally:
        await bare_client.aclose()
    return statistics.median(bare_rates), statistics.median(swarm_rates)


async def latency(settings: Settings, rate: int, seconds: float, warmup: float) -> list[float]:
    """Publish -> handler latencies in ms for messages sent after `warmup` seconds."""
    samples: list[float] = []
    total = int(rate * (seconds + warmup))
    skip = int(rate * warmup)
    received = 0
    done = anyio.Event()

    async def handler(delivery: Delivery) -> None:
        nonlocal received
        now = time.perf_counter_ns()
        body = delivery.message.body
        assert isinstance(body, StatusBody)
        seq, _, sent = body.text.partition(" ")
        if int(seq) >= skip:
            samples.append((now - int(sent)) / 1e6)
        received += 1
        if received == total:
            done.set()

    async with open_redis(settings) as redis:
        bus = Bus(redis, settings)
        await redis.delete(bus.keys.bus)
        consumer = bus.consumer("bench", "c1", [bus.keys.bus])
        await consumer.setup()
        async with anyio.create_task_group() as tg:
            tg.start_soon(consumer.run, handler)
            await anyio.sleep(0.2)  # let the consumer block in XREADGROUP
            interval = 1.0 / rate
            start = time.perf_counter()
            for i in range(total):
                delay = start + i * interval - time.perf_counter()
                if delay > 0:
                    await anyio.sleep(delay)
                sent = time.perf_counter_ns()
                await bus.publish(message(StatusBody(text=f"{i} {sent}"), sender="bench"))
            elapsed = time.perf_counter() - start
            with anyio.move_on_after(5):
                await done.wait()
            tg.cancel_scope.cancel()
        await redis.delete(bus.keys.bus)
    achieved = total / elapsed
    print(f"  sent {total:,} in {elapsed:.2f} s ({achieved:,.0f} msg/s), handled {received:,}")
    return samples


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


async def main(args: argparse.Namespace, url: str, home: Path) -> None:
    """Run both benchmarks against `url` and print the figures."""
    # A publish rate no run reaches: the token buckets are kept (their cost is measured) and never refuse.
    settings = Settings(redis_url=url, name=SWARM_NAME, home=home, publish_rate=1e9, publish_burst=10**9)
    print(f"server: {url}  python {sys.version.split()[0]}  chunk={PUBLISH_CHUNK}")
    print(f"\n[1] publish throughput: {args.messages:,} messages x {args.reps} runs, one stream")
    print("  bare  = redis-py pipelined XADD of pre-encoded bytes (encode NOT timed)")
    print("  swarm = Bus.publish_many of pre-built Message objects (encode INCLUDED), one EVALSHA per chunk")
    bare, swarm = await throughput(url, settings, args.messages, args.reps)
    ratio = swarm / bare
    print(f"  median bare : {bare:,.0f} msgs/s")
    print(f"  median swarm: {swarm:,.0f} msgs/s")
    print(f"  ratio swarm/bare = {ratio:.2f}  (target >= 0.75: {'PASS' if ratio >= 0.75 else 'FAIL'})")
    print("  (a ratio above 1 is expected: the bare loop is bound by redis-py packing 1,000 commands and")
    print("   parsing 1,000 replies per chunk in Python; swarm sends one EVALSHA and the XADDs run in Lua)")

    print(f"\n[2] publish -> handler latency at {args.rate:,} msg/s, {args.seconds:g} s x {args.lat_reps} runs "
          "(Bus.publish, Consumer.run in the same process)")
    p50s: list[float] = []
    p99s: list[float] = []
    for _ in range(args.lat_reps):
        samples = await latency(settings, args.rate, args.seconds, warmup=0.5)
        if not samples:
            raise SystemExit("the consumer handled no message after the warm-up; is the server overloaded?")
        p50s.append(percentile(samples, 50))
        p99s.append(percentile(samples, 99))
        print(f"  p50 {p50s[-1]:.3f} ms  p99 {p99s[-1]:.3f} ms  max {max(samples):.3f} ms  (n={len(samples):,})")
    p50, p99 = statistics.median(p50s), statistics.median(p99s)
    print(f"  median p50 = {p50:.3f} ms (target <= 1 ms: {'PASS' if p50 <= 1 else 'FAIL'})")
    print(f"  median p99 = {p99:.3f} ms (target <= 5 ms: {'PASS' if p99 <= 5 else 'FAIL'})")


def cli() -> None:
    """Parse options, start a throwaway server unless SWARM_REDIS_URL is set, run, stop the server."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20_000, help="messages per throughput run")
    parser.add_argument("--reps", type=int, default=7, help="throughput runs per side")
    parser.add_argument("--rate", type=int, default=1_000, help="latency publish rate, msg/s")
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per latency run")
    parser.add_argument("--lat-reps", type=int, default=3, help="latency runs")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="swarm-bench-") as tmp:
        home = Path(tmp)
        url = os.environ.get("SWARM_REDIS_URL")
        server = None if url else EmbeddedServer(home)
        try:
            if server is not None:
                url = server.ensure().url
            assert url is not None
            anyio.run(main, args, url, home)
        finally:
            if server is not None:
                server.stop()
    print(f"\ntotal {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    cli()

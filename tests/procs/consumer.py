"""A consumer process that takes entries and then hangs, so a test can SIGKILL it mid-work.

It reads through consumer group `--group` as consumer `--name` until it holds `--take` entries, acks
the first `--ack` of them, prints `acked <message id>` / `held <message id>` for each, then `ready`,
and sleeps until killed. The held entries stay pending under its name: a dead peer's work.
"""

from __future__ import annotations

import argparse
import sys

import anyio

from swarm.bus import Bus, Delivery
from swarm.connection import open_redis
from swarm.logs import configure
from swarm.settings import Settings


async def main(args: argparse.Namespace) -> None:
    """Take, ack some, report, hang."""
    configure("warning")  # logs to stderr: stdout carries only the report the test parses
    settings = Settings(redis_url=args.url, name=args.swarm, block_ms=100)
    async with open_redis(settings) as redis:
        bus = Bus(redis, settings)
        consumer = bus.consumer(args.group, args.name, [bus.keys.stream(args.stream)], start="0")
        await consumer.setup()
        taken: list[Delivery] = []
        while len(taken) < args.take:
            taken += await consumer.read()
        await consumer.ack(taken[: args.ack])
        for i, delivery in enumerate(taken):
            print(f"{'acked' if i < args.ack else 'held'} {delivery.message.id}")
        print("ready", flush=True)
        await anyio.sleep_forever()


def parse(argv: list[str]) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", required=True)
    parser.add_argument("--swarm", required=True)
    parser.add_argument("--stream", required=True, help="short stream name, e.g. inbox:worker")
    parser.add_argument("--group", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--take", type=int, required=True)
    parser.add_argument("--ack", type=int, default=0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    anyio.run(main, parse(sys.argv[1:]))

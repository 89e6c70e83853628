"""A publisher process: sends `--count` chat messages from `--sender` to `--to`, numbered 0..n-1 in
their text, half one by one and half in one batch, then prints `done <count>`."""

from __future__ import annotations

import argparse
import sys

import anyio

from swarm.bus import Bus
from swarm.connection import open_redis
from swarm.logs import configure
from swarm.protocol import ChatBody, message
from swarm.settings import Settings


async def main(args: argparse.Namespace) -> None:
    """Publish, then report."""
    configure("warning")
    settings = Settings(redis_url=args.url, name=args.swarm)
    async with open_redis(settings) as redis:
        bus = Bus(redis, settings)
        msgs = [message(ChatBody(text=str(i)), sender=args.sender, to=args.to) for i in range(args.count)]
        half = args.count // 2
        for msg in msgs[:half]:
            await bus.publish(msg)
        await bus.publish_many(msgs[half:])
    print(f"done {args.count}", flush=True)


def parse(argv: list[str]) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", required=True)
    parser.add_argument("--swarm", required=True)
    parser.add_argument("--sender", required=True)
    parser.add_argument("--to", default="@all")
    parser.add_argument("--count", type=int, required=True)
    return parser.parse_args(argv)


if __name__ == "__main__":
    anyio.run(main, parse(sys.argv[1:]))

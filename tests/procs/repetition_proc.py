"""A repetition detector in its own process, for the kill -9 test: `python tests/procs/repetition_proc.py NAME`.

Reads settings from the environment (SWARM_REDIS_URL, SWARM_NAME, ...), consumes the broadcast
stream in group `discovery` as consumer NAME, counts every message with a `Detector` and publishes
the signals it fires, until killed. SWARM_TEST_DELAY_MS slows each message down so a test can kill
the process mid-trace.
"""

from __future__ import annotations

import os
import sys

import anyio

from swarm.bus import Bus, Delivery
from swarm.connection import open_redis
from swarm.discovery.repetition import Detector, RepetitionSettings
from swarm.settings import Settings


async def main(name: str) -> None:
    """Consume and detect until killed."""
    settings = Settings()
    delay = float(os.environ.get("SWARM_TEST_DELAY_MS", "0")) / 1000
    async with open_redis(settings) as redis:
        bus = Bus(redis, settings)
        detector = Detector(redis, settings, RepetitionSettings())

        async def handle(delivery: Delivery) -> None:
            for signal in await detector.observe(delivery.message):
                await bus.publish(signal)
            await anyio.sleep(delay)

        await bus.consumer("discovery", name, [bus.keys.bus], start="0").run(handle)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1])

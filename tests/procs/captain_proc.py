"""A captain in its own process, for the failover test: `python tests/procs/captain_proc.py`.

Reads its settings from the environment (SWARM_REDIS_URL, SWARM_NAME, SWARM_LEADER_LEASE_S, ...),
runs a Captain until killed, and prints `leading <epoch> <instance>` on stdout (flushed) each time
it takes the leader lease, so the test knows which process to kill.
"""

from __future__ import annotations

import anyio

from swarm.captain import Captain
from swarm.connection import open_redis
from swarm.logs import configure
from swarm.settings import Settings


async def main() -> None:
    """Run one captain; report each time it starts leading."""
    settings = Settings()
    configure(settings.log_level, json=True)
    async with open_redis(settings) as redis:
        captain = Captain(redis, settings)
        async with anyio.create_task_group() as tg:
            await tg.start(captain.run)
            was_leading = False
            while True:
                if captain.leading and not was_leading:
                    print(f"leading {captain.epoch} {captain.instance}", flush=True)
                was_leading = captain.leading
                await anyio.sleep(0.01)


if __name__ == "__main__":
    anyio.run(main)

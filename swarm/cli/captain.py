"""`swarm captain run|status`: the long-running assigner, and who leads right now."""

from __future__ import annotations

import re
import signal
from dataclasses import asdict
from typing import Annotated

import anyio
import typer

from swarm.bus import Bus
from swarm.captain import Captain, Leader
from swarm.cli.common import AsJson, app, out, print_json, run_with_bus, safe
from swarm.cli.stats import MetricsPort, exporting, metrics_for
from swarm.connection import doing
from swarm.errors import ConfigError
from swarm.protocol import AGENT_PATTERN, new_id

captain = app("The captain: assigns ready tasks to live agents, reaps expired leases.")


async def leader(bus: Bus) -> Leader:
    """Who holds the leader lease."""
    with doing("reading the captain's leader lease"):
        async with bus.redis.pipeline(transaction=False) as pipe:
            pipe.get(bus.keys.leader)
            pipe.pttl(bus.keys.leader)
            pipe.get(bus.keys.epoch)
            value, ttl, last = await pipe.execute()
    return Leader.from_lease(value, ttl, last)


@captain.command()
def status(as_json: AsJson = False) -> None:
    """Say which captain leads, with its epoch (exit code 1 when none does)."""
    lead = run_with_bus(leader)
    if as_json:
        print_json({"leading": lead.leading, **asdict(lead)})
    elif lead.instance is not None:
        out.print(f"captain {safe(lead.instance)} leads: epoch {lead.epoch}, "
                  f"lease {(lead.lease_ms or 0) / 1000:.1f}s left")
    else:
        out.print(f"no captain leads (last epoch {lead.last_epoch}); `swarm captain run` starts one")
    if not lead.leading:
        raise typer.Exit(1)


@captain.command()
def run(
    name: Annotated[str, typer.Option(help="Who this captain is (the roster's captain card name).")] = "captain",
    metrics_port: MetricsPort = None,
) -> None:
    """Run a captain until Ctrl-C or SIGTERM: it leads, or stands by while another one does."""
    if not re.match(AGENT_PATTERN, name):
        raise ConfigError(f"--name {name!r} must be 1-64 letters, digits, '_', '.' or '-'")

    async def go(bus: Bus) -> Captain:
        metrics = metrics_for(metrics_port, bus, name, "captain")
        chief = Captain(bus.redis, bus.settings, instance=f"{name}.{new_id()}", metrics=metrics)
        # Signals are received as events, so the captain's own cleanup (handing the leader lease
        # over at once, not after it expires) runs inside the event loop instead of being cut off.
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with exporting(bus, metrics, metrics_port, chief.readiness), anyio.create_task_group() as tg:
                await tg.start(chief.run)
                out.print(f"captain {chief.instance} running; it leads unless another captain does. "
                          "Ctrl-C stops it.")
                async for _ in signals:
                    tg.cancel_scope.cancel()
                    break
        return chief

    chief = run_with_bus(go)
    out.print(f"captain {chief.instance} stopped after {chief.assigned} assignment(s); leader lease released")

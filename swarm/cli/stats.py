"""`swarm stats` and `swarm health`: a swarm's figures in the terminal, and a verdict a container
health check can use; plus `--metrics-port`, which the long-running commands share."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, nullcontext
from dataclasses import asdict
from typing import Annotated, Any

import anyio
import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from swarm.bus import Bus
from swarm.cli.common import AsJson, err, out, print_json, run_with_bus, safe, settings
from swarm.connection import client, doing, safe_url
from swarm.errors import SwarmError
from swarm.health import Census, Check, Limits, Snapshot, checks
from swarm.metrics import Exporter, Metrics, Readiness, Role
from swarm.server import EmbeddedServer

MetricsPort = Annotated[int | None, typer.Option(
    "--metrics-port", min=0, max=65535,
    help="Serve Prometheus /metrics, /healthz and /readyz on this port (0: any free port, printed); off by default.",
)]
MARK = {"ok": "[green]ok[/green]  ", "warn": "[yellow]warn[/yellow]", "fail": "[red]FAIL[/red]"}


# --- --metrics-port, for `agent run`, `captain run` and `discovery run` ---------------------------

def metrics_for(port: int | None, bus: Bus, process: str, role: Role) -> Metrics | None:
    """A Metrics when `--metrics-port` was given (None: no metrics at all). The captain and the
    discovery engine also export the board-wide figures."""
    return None if port is None else Metrics(bus.settings, process, role=role, board=role != "agent")


@asynccontextmanager
async def exporting(bus: Bus, metrics: Metrics | None, port: int | None, ready: Readiness) -> AsyncIterator[None]:
    """Serve the metrics endpoint while the block runs (nothing when metrics are off)."""
    if metrics is None or port is None:
        yield
        return
    exporter = Exporter(metrics, bus.redis, bus.settings, ready=ready)
    async with anyio.create_task_group() as tg:
        bound = await tg.start(exporter.serve, port)
        err.print(f"metrics on http://0.0.0.0:{bound}/metrics (also /healthz and /readyz)")
        try:
            yield
        finally:
            tg.cancel_scope.cancel()


# --- swarm stats ---------------------------------------------------------------------------------

def stats(
    as_json: AsJson = False,
    watch: Annotated[bool, typer.Option("--watch", help="Refresh until Ctrl-C, with rates per second.")] = False,
    interval: Annotated[float, typer.Option(min=0.2, help="Seconds between refreshes with --watch.")] = 2.0,
) -> None:
    """The swarm's figures: tasks by state and kind, agents, leader, streams, lag, dead letters, signals."""

    async def go(bus: Bus) -> None:
        census = Census(bus.redis, bus.settings)
        if not watch:
            snap = await census.take(lifecycle=True)
            if as_json:
                print_json(snap.as_dict())
            else:
                out.print(render(snap))
            return
        before: tuple[float, Snapshot] | None = None
        live = None if as_json else Live(console=out, auto_refresh=False)
        with live or nullcontext():
            while True:
                snap = await census.take(lifecycle=True)
                now = time.monotonic()
                rates = _rates(before, now, snap)
                if live is None:
                    print_json({**snap.as_dict(), "rates": rates})  # one JSON document per line
                else:
                    live.update(render(snap, rates), refresh=True)
                before = (now, snap)
                await anyio.sleep(interval)

    run_with_bus(go)


def _rates(before: tuple[float, Snapshot] | None, now: float, snap: Snapshot) -> dict[str, float]:
    """Entries per second added to each stream since the previous snapshot."""
    if before is None:
        return {}
    then, old = before
    added = {s.stream: s.added for s in old.streams}
    span = max(now - then, 1e-6)
    return {s.stream: round((s.added - added[s.stream]) / span, 1) for s in snap.streams if s.stream in added}


def render(snap: Snapshot, rates: dict[str, float] | None = None) -> Group:
    """The human form of a snapshot: one small table per subject."""
    lead = snap.leader
    head = Text.from_markup(
        f"[bold]swarm {safe(snap.swarm)}[/bold]  captain: "
        + (f"{safe(lead.instance)} (epoch {lead.epoch})" if lead.instance else "[red]none leads[/red]")
        + f"  agents: {snap.agents['alive']} alive, {snap.agents['stale']} stale, {snap.agents['gone']} gone"
        + f"  dead letters: {snap.dead_letters}"
        + (f"  [red]past their lease: {snap.expired_leases}[/red]" if snap.expired_leases else "")
    )
    board = Table("state", "tasks", "live, by kind", box=None, header_style="bold")
    for state, n in snap.tasks.items():
        kinds = ", ".join(f"{safe(k)} {c}" for k, c in sorted(snap.live_by_kind.get(state, {}).items()))
        board.add_row(state, str(n), kinds)
    streams = Table("stream", "length", "added", "per s", "group", "lag", "pending", box=None, header_style="bold")
    groups: dict[str, list[Any]] = {}
    for g in snap.groups:
        groups.setdefault(g.stream, []).append(g)
    for s in snap.streams:
        rate = "" if not rates or s.stream not in rates else f"{rates[s.stream]:g}"
        rows = groups.get(s.stream) or [None]
        for n, g in enumerate(rows):
            first = n == 0
            streams.add_row(
                safe(s.stream) if first else "", str(s.length) if first else "", str(s.added) if first else "",
                rate if first else "", safe(g.group) if g else "-",
                ("?" if g.lag is None else str(g.lag)) if g else "", str(g.pending) if g else "",
            )
    parts: list[Any] = [head, board, streams]
    if snap.spend:
        line = f"spent: ${snap.spend.get('swarm', 0):.2f}"
        if "budget:swarm" in snap.spend:
            line += f" of a ${snap.spend['budget:swarm']:.2f} budget"
        line += f", {int(snap.spend.get('tokens:swarm', 0)):,} tokens"
        agents = sorted(k.removeprefix("agent:") for k in snap.spend if k.startswith("agent:"))
        if agents:
            line += "; " + ", ".join(f"{safe(a)} ${snap.spend['agent:' + a]:.2f}" + (
                f"/${snap.spend['budget:agent:' + a]:.2f}" if "budget:agent:" + a in snap.spend else "")
                for a in agents)
        parts.append(Text(line))
    sig = snap.signals
    parts.append(Text(f"signals: {sig['agent']['open']} open / {sig['agent']['open'] + sig['agent']['closed']} kept "
                      f"per agent, {sig['swarm']['open']} open swarm-wide; "
                      f"{sig['agent']['coalesced']} messages coalesced"))
    life = snap.lifecycle
    if life.get("n"):
        parts.append(Text(f"created -> done, last {life['n']:g} tasks: p50 {life['p50']:.3f}s, "
                          f"p95 {life['p95']:.3f}s, max {life['max']:.3f}s"))
    return Group(*parts)


# --- swarm health --------------------------------------------------------------------------------

def health(
    as_json: AsJson = False,
    min_agents: Annotated[int, typer.Option(min=0, help="Live agents the swarm needs (0: agents optional).")] = 1,
    max_lag: Annotated[int, typer.Option(min=0, help="Entries a consumer group may be behind.")] = 10_000,
    max_dead_letters: Annotated[int | None, typer.Option(
        min=0, help="Dead letters tolerated (default: any number only warns).")] = None,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds to wait for Redis.")] = 3.0,
) -> None:
    """Check the whole swarm (server, captain leader, live agents, lag, dead letters); exit 1 when unhealthy.

    Fit for a container health check: it never starts the embedded server, it only asks whether one runs.
    """
    limits = Limits(min_agents=min_agents, max_lag=max_lag, max_dead_letters=max_dead_letters)
    results = anyio.run(_health, limits, timeout)
    healthy = all(c.status != "fail" for c in results)
    if as_json:
        print_json({"healthy": healthy, "checks": [asdict(c) for c in results]})
    else:
        for c in results:
            out.print(f"{MARK[c.status]}  {c.name:<13} {safe(c.detail)}")
    if not healthy:
        reasons = "; ".join(f"{c.name}: {c.detail}" for c in results if c.status == "fail")
        err.print(f"unhealthy: {safe(reasons)}")
        raise typer.Exit(1)


async def _health(limits: Limits, wait_s: float) -> list[Check]:
    s = settings()
    url = s.redis_url
    if url is None:
        state = await anyio.to_thread.run_sync(EmbeddedServer(s.home).status)
        if state is None:
            return [Check("server", "fail", f"no embedded server runs under {s.home.resolve()}; "
                                            "`swarm server start` starts one (or set SWARM_REDIS_URL)")]
        url = state.url
    redis = client(url, s.model_copy(update={"connect_retries": 0}))
    try:
        with anyio.fail_after(wait_s):
            try:
                with doing(f"checking {safe_url(url)}"):
                    info = await redis.info("server")
            except SwarmError as exc:
                return [Check("server", "fail", str(exc))]
            version = info.get("valkey_version") or info.get("redis_version", "?")
            found = [Check("server", "ok", f"{info.get('server_name', 'redis')} {version} at {safe_url(url)}")]
            try:
                snap = await Census(redis, s).take()
            except SwarmError as exc:
                return [*found, Check("census", "fail", str(exc))]
            return found + checks(snap, limits)
    except TimeoutError:
        return [Check("server", "fail", f"Redis at {safe_url(url)} did not answer within {wait_s:g}s")]
    finally:
        await redis.aclose()


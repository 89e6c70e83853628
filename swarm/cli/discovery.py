"""`swarm discover`, `swarm discovery run`, `swarm signals`: work discovery from a terminal."""

from __future__ import annotations

import signal as signals_
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import anyio
import typer
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from swarm.bus import Bus
from swarm.cli.common import AsJson, app, err, out, print_json, run_with_bus, safe
from swarm.cli.stats import MetricsPort, exporting, metrics_for
from swarm.discovery.engine import Discovery, Outcome
from swarm.discovery.limits import DiscoveryLimits, with_overrides
from swarm.discovery.repetition import Detector
from swarm.discovery.sources import FORMER_NAMES, load_sources
from swarm.errors import ConfigError

discovery_app = app("The work-discovery engine: repeated chatter becomes claimable tasks.")
KINDS = ("consolidation", "audit", "docs", "todo")
"""A source's name is the kind of task it makes; FORMER_NAMES (`audits`) still work."""
PathOpt = Annotated[Path, typer.Option("--path", help="The workspace to scan (default: the current directory).")]


def _workspace(path: Path) -> Path:
    if not path.is_dir():
        raise ConfigError(f"--path {path} is not a directory; point it at the code to scan")
    return path.resolve()


def discover(
    path: PathOpt = Path(),
    kind: Annotated[list[str] | None, typer.Option(help="Only this kind: consolidation, audit, docs, todo (repeat).")]
    = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be created; change nothing.")] = False,
    limit: Annotated[list[str] | None, typer.Option(
        "--limit", metavar="NAME=VALUE",
        help="Set a discovery limit for this run, e.g. max_file_lines=600 (repeat; SWARM_DISCOVERY_<NAME> sets "
             "it for good).")] = None,
    as_json: AsJson = False,
) -> None:
    """Run the work sources over a workspace now and put what they find on the board."""
    root = _workspace(path)
    names: list[str] | None = None
    if kind:
        unknown = [k for k in kind if k not in KINDS and k not in FORMER_NAMES]
        if unknown:
            raise ConfigError(f"unknown --kind {unknown[0]!r}; use consolidation, audit, docs or todo")
        names = sorted({FORMER_NAMES.get(k, k) for k in kind})
    limits = with_overrides(DiscoveryLimits(), limit or ())
    sources = load_sources(names, limits)

    async def go(bus: Bus) -> Outcome:
        engine = Discovery(bus.redis, bus.settings, root, sources=sources, limits=limits)
        if as_json:
            return await engine.discover(dry_run=dry_run)
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                      console=err, transient=True) as bar:
            job = bar.add_task("scanning", total=len(sources))

            def progress(name: str, done: int, total: int) -> None:
                bar.update(job, completed=done, description=f"scanning: {name}")

            return await engine.discover(dry_run=dry_run, progress=progress)

    outcome = run_with_bus(go)
    if as_json:
        print_json({
            "dry_run": dry_run, "created": outcome.created, "existing": outcome.existing,
            "obsolete": outcome.obsolete, "refreshed": outcome.refreshed,
            "drafts": [{"kind": d.kind, "title": d.title, "key": d.key, "priority": d.priority,
                        "files": list(d.files), "findings": len(d.findings)} for d in outcome.drafts],
        })
        return
    per_kind = Counter(d.kind for d in outcome.drafts)
    table = Table("kind", "task" if not dry_run else "would create", "findings", "title", box=None)
    rows = outcome.placed if not dry_run else [(d, "-", False) for d in outcome.drafts]
    for d, task_id, new in rows:
        mark = "[green]new[/green] " if new else ""
        table.add_row(d.kind, f"{mark}{task_id}", str(len(d.findings)), safe(d.title))
    out.print(table)
    summary = ", ".join(f"{n} {k}" for k, n in sorted(per_kind.items())) or "nothing"
    verb = "would create" if dry_run else f"created {len(outcome.created)} new, {len(outcome.existing)} existing"
    out.print(f"found {summary} in {root}; {verb}; {len(outcome.refreshed)} refreshed, "
              f"{len(outcome.obsolete)} obsolete closed")


@discovery_app.command("run")
def discovery_run(path: PathOpt = Path(), metrics_port: MetricsPort = None) -> None:
    """Run the engine until SIGINT/SIGTERM: count chatter, coalesce it into signals, find work."""
    root = _workspace(path)

    async def go(bus: Bus) -> Discovery:
        metrics = metrics_for(metrics_port, bus, "discovery", "discovery")
        engine = Discovery(bus.redis, bus.settings, root, metrics=metrics)
        with anyio.open_signal_receiver(signals_.SIGINT, signals_.SIGTERM) as received:
            async with exporting(bus, metrics, metrics_port, engine.readiness), anyio.create_task_group() as tg:
                await tg.start(engine.run)
                err.print(f"discovery running on {root} with sources {', '.join(s.name for s in engine.sources)}")
                async for _ in received:
                    tg.cancel_scope.cancel()
                    break
        return engine

    engine = run_with_bus(go)
    err.print(f"discovery stopped: {engine.seen} messages, {engine.signals} signals, "
              f"{len(engine.outcome.created)} tasks created")


def signals(
    as_json: AsJson = False,
    open_only: Annotated[bool, typer.Option("--open", help="Only signals still collecting repeats.")] = False,
) -> None:
    """Current repetition signals: who keeps saying what, how often."""

    async def go(bus: Bus) -> list[dict[str, object]]:
        reps = await Detector(bus.redis, bus.settings).signals(open_only=open_only)
        return [{"id": r.signal.id, "agent": r.signal.body.agent, "scope": r.scope, "open": r.open,
                 "count": r.signal.body.count, "sample": r.signal.body.sample,
                 "first_seen": r.signal.body.first_seen, "last_seen": r.signal.body.last_seen,
                 "evidence": list(r.signal.body.evidence)} for r in reps]

    rows = run_with_bus(go)
    if as_json:
        print_json(rows)
        return
    if not rows:
        out.print("no repetition signals")
        return
    table = Table("agent", "count", "open", "last seen", "sample", box=None)
    for r in rows:
        seen = datetime.fromtimestamp(int(str(r["last_seen"])) / 1000, tz=UTC).strftime("%H:%M:%S")
        table.add_row(safe(str(r["agent"])), str(r["count"]), "yes" if r["open"] else "no", seen,
                      safe(str(r["sample"])))
    out.print(table)

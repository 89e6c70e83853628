"""The tables scripts/bench_peers.py prints and writes into BENCHMARKS.md (markdown, between markers)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from contenders import SWARM_LEASE_TUNED_S, System


class DrillLike(Protocol):
    """One kill -9 drill's outcome (bench_peers.Drill)."""

    recovered_ms: float
    lost: int
    duplicated: int
    capped: bool
    note: str


class ResultLike(Protocol):
    """One system's figures (bench_peers.Result)."""

    system: System
    enqueue: list[float]
    bulk: list[float]
    drain1: list[float]
    drain2: list[float]
    pickup: list[float]
    missed: int
    drills: dict[str, list[Any]]
    errors: list[str]


@dataclass
class Run:
    """The run as a whole: how it was started, where, and the raw ceiling."""

    command: str
    machine: str
    server: str
    jobs: int
    runs: int
    pickups: int
    drill: str
    load: list[str] = field(default_factory=list)
    ceiling: dict[str, float] = field(default_factory=dict)
    ceiling_note: str = ""
    seconds: float = 0.0


def med(values: Sequence[float]) -> float:
    """Median, NaN for none."""
    return statistics.median(values) if values else math.nan


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile, NaN for none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def num(value: float, spec: str = ",.0f") -> str:
    """A figure, or '—' for none."""
    return "—" if math.isnan(value) else format(value, spec)


def versions(found: dict[str, str]) -> str:
    """`saq 0.26.4 (redis 8.1.0, hiredis 3.5.0)`: the system's own distributions first, its client after."""
    items = [f"{k} {v}" for k, v in found.items()]
    own = [i for i in items if not i.startswith(("redis ", "hiredis "))]
    client = [i for i in items if i.startswith(("redis ", "hiredis "))]
    return ", ".join(own) + (f" ({', '.join(client)})" if client else "")


def drill_cell(drills: Sequence[DrillLike], cap: float) -> str:
    """`recovery ms / lost / duplicated` over the drills (median recovery, totals of lost and duplicated)."""
    if not drills:
        return "—"
    times = [d.recovered_ms for d in drills if not math.isnan(d.recovered_ms)]
    rec = f"{med(times):,.0f} ms" if len(times) == len(drills) else f"not within {cap:g} s"
    lost, dup = sum(d.lost for d in drills), sum(d.duplicated for d in drills)
    notes = "; ".join(sorted({d.note.strip("; ") for d in drills if d.note}))
    return f"{rec} / {lost} / {dup}" + (f" ({len(drills)} runs)" if len(drills) > 1 else "") + (
        f" — {notes}" if notes else "")


def render(run: Run, results: Sequence[ResultLike], cap: float) -> str:
    """The whole generated section."""
    out = [f"Command: `{run.command}` — total {run.seconds / 60:.1f} min.", "",
           f"Machine: {run.machine}. Server: {run.server}. Load average at start / end: "
           f"{' / '.join(run.load)} (other work on this machine competes for the same cores).", "",
           "Versions: " + "; ".join(versions(r.system.versions) for r in results
                                    if r.system.versions and "captain assigns" not in r.system.name) + ".", ""]
    out += ["### Raw ceiling (same server, same run)", "", "| what | ops/s |", "| --- | ---: |"]
    out += [f"| {k} | {v:,.0f} |" for k, v in run.ceiling.items()]
    if run.ceiling_note:
        out += ["", run.ceiling_note]
    out += ["", f"### Throughput and idle pickup ({run.jobs:,} no-op jobs, median of {run.runs} run(s))", "",
            "| system | enqueue one at a time, jobs/s | enqueue bulk, jobs/s | drain, 1 worker process, jobs/s "
            "| drain, 2 worker processes, jobs/s | idle pickup p50 / p90, ms |",
            "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        if r.errors and not r.drain1:
            out.append(f"| {r.system.name} | failed: {r.errors[0]} | | | | |")
            continue
        pickup = f"{num(med(r.pickup), '.2f')} / {num(pct(r.pickup, 90), '.2f')}" + (
            f" ({r.missed} missed)" if r.missed else "")
        out.append(f"| {r.system.name} | {num(med(r.enqueue))} | {num(med(r.bulk))} | {num(med(r.drain1))} "
                   f"| {num(med(r.drain2))} | {pickup} |")
    out += ["", f"### kill -9 recovery ({run.drill})", "",
            "Each cell: kill → the job running elsewhere (median) / jobs lost / jobs completed twice.", "",
            "| system | default settings | result | documented tuning | result |", "| --- | --- | --- | --- | --- |"]
    for r in results:
        rec = r.system.recovery
        out.append(f"| {r.system.name} | {rec.get('default', '')} | {drill_cell(r.drills['default'], cap)} "
                   f"| {rec.get('tuned', '')} | {drill_cell(r.drills['tuned'], cap)} |")
    out += ["", "### Settings", "", "| system | worker settings | bulk enqueue |", "| --- | --- | --- |"]
    out += [f"| {r.system.name} | {r.system.settings} | {r.system.bulk or 'none: one at a time again'} |"
            for r in results]
    failed = [r for r in results if r.errors]
    if failed:
        out += ["", "### Errors", ""] + [f"- {r.system.name}: {'; '.join(r.errors)}" for r in failed]
    out += ["", "### Targets (DESIGN.md)", "", *verdicts(results, cap)]
    return "\n".join(out) + "\n"


def verdicts(results: Sequence[ResultLike], cap: float) -> list[str]:
    """Swarm against the targets."""
    swarm = [r for r in results if r.system.name.startswith("swarm")]
    peers = [r for r in results if not r.system.name.startswith("swarm") and r.drain2]
    lines = []
    if swarm and peers:
        best = max(swarm, key=lambda r: med(r.drain2))
        top = max(peers, key=lambda r: med(r.drain2))
        ratio = med(best.drain2) / med(top.drain2)
        lines.append(f"- Task lifecycle, 2 worker processes ≥ 2 × the fastest peer: {best.system.name} "
                     f"{num(med(best.drain2))} jobs/s vs {top.system.name} {num(med(top.drain2))} jobs/s = "
                     f"{ratio:.2f} × — {'PASS' if ratio >= 2 else 'FAIL'}.")
    for r in swarm:
        p50 = med(r.pickup)
        lines.append(f"- Idle pickup p50 ≤ 5 ms, {r.system.name}: {num(p50, '.2f')} ms — "
                     f"{'PASS' if p50 <= 5 else 'FAIL'}.")
        tuned = r.drills["tuned"]
        limit = (SWARM_LEASE_TUNED_S + 1) * 1000
        ok = bool(tuned) and all(not math.isnan(d.recovered_ms) and d.recovered_ms <= limit and not d.lost
                                 and not d.duplicated for d in tuned)
        lines.append(f"- kill -9 recovery ≤ lease + 1 s = {limit:,.0f} ms, zero lost, zero duplicated, "
                     f"{r.system.name}: {drill_cell(tuned, cap)} — {'PASS' if ok else 'FAIL'}.")
    return lines

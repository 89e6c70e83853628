"""Discovery quality benchmark (not a test): do the sources agree with ruff and pylint on real code?

Run: `.venv/bin/python scripts/bench_discovery_quality.py` (a few minutes the first time: it downloads
three sdists and pylint; `--help` lists the options). Nothing it downloads is committed: sdists, their
sources and a virtualenv holding pylint (a benchmark-only dependency, never one of swarm's) live in
`--cache` (default `~/.cache/swarm-bench`).

For each library (three real ones, each over 10,000 lines of Python; the package folder is scanned):
- consolidation against pylint's `duplicate-code` (R0801; ignore comments, docstrings, imports and
  signatures, `--min-similarity-lines` = our `clone_min_lines`): how many of pylint's groups ours
  find (a pylint group is found when one of our groups covers two of its copies), how many of
  pylint's groups are literal-heavy (data, argument lists: ours compare those verbatim, so they
  count only when copied exactly), whether any of our groups has copies that overlap, and a sample
  of our groups with the labels written below (`LABELS`, judged by reading each group);
- docs against ruff's D100-D104, security against ruff's S rules, complexity against C901, TODO
  comments against ruff's FIX001-FIX003: precision and recall of our (rule, file, line) findings;
  the rules each side has and the other does not are left out and named.
Then the held-out phrase list (tests/fixtures/heldout_phrases.txt): the repetition detector's
precision and recall on the trace built from it, through a throwaway Valkey (or SWARM_REDIS_URL).
Last, the scan rate: lines per second of all four sources over each library.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.fixtures.heldout, the phrase list's trace

from swarm.connection import open_redis  # noqa: E402
from swarm.discovery.findings import Finding  # noqa: E402
from swarm.discovery.limits import DiscoveryLimits  # noqa: E402
from swarm.discovery.repetition import Detector  # noqa: E402
from swarm.discovery.sources import load_sources  # noqa: E402
from swarm.discovery.sources.audits import find_ruff  # noqa: E402
from swarm.discovery.sources.consolidation import ConsolidationSource, literal_heavy  # noqa: E402
from swarm.discovery.workspace import Workspace  # noqa: E402
from swarm.server import EmbeddedServer  # noqa: E402
from swarm.settings import Settings  # noqa: E402
from tests.fixtures import heldout  # noqa: E402


@dataclass(frozen=True)
class Library:
    """A real library: its sdist on PyPI and the package folder inside it that is scanned."""

    name: str
    version: str
    package: str

    @property
    def folder(self) -> str:
        """The sdist's top folder."""
        return f"{self.name}-{self.version}"


LIBRARIES = (
    Library("rich", "13.9.4", "rich"),  # 26,607 lines: tables, palettes, spinners, overloads
    Library("redis", "5.0.8", "redis"),  # 30,209 lines: sync and asyncio clients written twice
    Library("werkzeug", "3.0.4", "src/werkzeug"),  # 20,638 lines
)
PYLINT = "pylint>=3.3,<4"

LABELS: dict[str, str] = {
    "rich _loop.py:18": "clone: loop_last and loop_first_last open alike (iterator, first value, StopIteration)",
    "rich bar.py:86": "clone: __rich_measure__ of Bar and ProgressBar, the same code",
    "rich color.py:491": "clone: the WINDOWS and STANDARD branches of get_ansi_codes are one code",
    "rich console.py:1720": "clone: the same buffer-extend loop in two methods",
    "rich jupyter.py:29": "clone: include/exclude filtering written twice",
    "rich progress.py:639": "clone: two columns render their text the same way",
    "rich progress.py:1466": "clone: the same finished-time bookkeeping in update and advance",
    "rich segment.py:431": "clone: align_top, align_bottom and align_middle share their body",
    "rich style.py:626": "clone: copy and clear_meta_and_links copy the same attributes",
    "rich text.py:890": "clone: the same span-trimming comprehension in two methods",
    "redis _parsers/base.py:105": "clone: disconnect/connect handling of the Python and hiredis parsers",
    "redis _parsers/resp2.py:33": "clone: the RESP2 and RESP3 parsers handle errors the same way",
    "redis asyncio/client.py:443": "clone: lock, pubsub and monitor written for the sync and asyncio clients",
    "redis asyncio/client.py:1274": "clone: Pipeline.multi in both clients",
    "redis asyncio/cluster.py:1114": "clone: get_node in both cluster clients",
    "redis asyncio/connection.py:628": "clone: pack_commands in both connections",
    "redis asyncio/sentinel.py:215": "clone: Sentinel.execute_command in both",
    "redis commands/bf/info.py:16": "clone: get/__getitem__ repeated in every Info class",
    "redis commands/core.py:4466": "clone: LIMIT/WITHSCORES handling of the zrange family, 3 copies",
    "redis commands/search/__init__.py:65": "clone: batch flushing in two add methods",
    "werkzeug datastructures/auth.py:75": "clone: __eq__ of Authorization and WWWAuthenticate",
    "werkzeug datastructures/auth.py:88": "clone: from_header of Authorization and WWWAuthenticate",
    "werkzeug datastructures/file_storage.py:78": "clone: the mimetype properties of FileStorage and Request",
    "werkzeug datastructures/structures.py:216": "clone: getlist of MultiDict and OrderedMultiDict",
    "werkzeug datastructures/structures.py:632": "clone: popitem and popitemlist",
    "werkzeug routing/matcher.py:92": "clone: the same method/websocket check twice in the matcher",
    "werkzeug sansio/multipart.py:152": "clone: the same boundary transition in two parser states",
    "werkzeug sansio/response.py:538": "clone: three header setters with one body (range, CSP, CSP report-only)",
    "werkzeug sansio/response.py:637": "clone: the CSP and CSP-report-only properties",
    "werkzeug urls.py:92": "clone: netloc building in two URL functions",
}
"""Labels of the sampled groups, by `<library> <first copy>`: `clone: why` or `noise: why`, written by
reading each group's code (`--show` prints it). The sample is the same on every run: 30 groups, as
many from each library, spread by position. Labelled on the consolidation source of this change;
after a change to the source, groups that are not labelled yet are printed as `unlabelled`."""

Copy = tuple[str, int, int]  # path, first line, last line (1-based, inclusive)


# --- the libraries and pylint, in the cache ------------------------------------------------------


def fetch(cache: Path, library: Library) -> Path:
    """The library's package folder, downloaded (pip, sdist only) and unpacked on first use."""
    source = cache / "src" / library.folder
    if not source.is_dir():
        sdists = cache / "sdists"
        sdists.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
             f"{library.name}=={library.version}", "-d", str(sdists)], check=True,
        )
        [archive] = sdists.glob(f"{library.name}-{library.version}.tar.gz")
        with tarfile.open(archive) as tar:
            tar.extractall(cache / "src", filter="data")
    return source / library.package


def tools(cache: Path) -> Path:
    """A virtualenv in the cache with pylint in it (made on first use): its bin folder."""
    venv = cache / "tools"
    pylint = venv / "bin" / "pylint"
    if not pylint.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", PYLINT], check=True)
    return venv / "bin"


_PYLINT_COPY = re.compile(r"^==([\w.]+):\[(\d+):(\d+)\]$", re.MULTILINE)


def pylint_groups(bin_dir: Path, package: Path, min_lines: int) -> list[list[Copy]]:
    """pylint's duplicate-code groups in `package`, each as its copies."""
    run = subprocess.run(
        [str(bin_dir / "pylint"), "--disable=all", "--enable=duplicate-code", f"--min-similarity-lines={min_lines}",
         "--ignore-comments=y", "--ignore-docstrings=y", "--ignore-imports=y", "--ignore-signatures=y",
         "--ignore-patterns=^\\.#,.*\\.pyi$", "--output-format=json", "--jobs=1", package.name],
        cwd=package.parent, capture_output=True, text=True, check=False,
    )
    groups = []
    for result in json.loads(run.stdout or "[]"):
        found = _PYLINT_COPY.finditer(result["message"])
        groups.append([(_module_path(package, m[1]), int(m[2]) + 1, int(m[3])) for m in found])
    return groups


def _module_path(package: Path, module: str) -> str:
    parts = module.split(".")[1:]
    as_file = "/".join(parts) + ".py" if parts else ""
    if as_file and (package / as_file).is_file():
        return as_file
    return "/".join([*parts, "__init__.py"])


# --- consolidation against pylint ----------------------------------------------------------------


@dataclass
class Group:
    """One of our clone groups: its copies, and whether its block is literal-heavy."""

    copies: list[Copy]
    digest: str


def our_groups(package: Path, limits: DiscoveryLimits) -> tuple[list[Group], Workspace]:
    """Our consolidation groups in `package` (one workspace, as a scan would)."""
    workspace = Workspace(package, limits)
    findings = ConsolidationSource(limits).scan(workspace)
    by_digest: dict[str, list[Copy]] = {}
    for f in findings:
        by_digest.setdefault(f.symbol, []).append((f.path, f.line, f.end_line or f.line))
    return [Group(sorted(c), d) for d, c in by_digest.items()], workspace


def _overlaps(a: Copy, b: Copy) -> bool:
    return a[0] == b[0] and a[1] <= b[2] and b[1] <= a[2]


def found_by(pylint_group: Sequence[Copy], groups: Iterable[Group]) -> Group | None:
    """Our group that covers two copies of a pylint group, if any."""
    for group in groups:
        hit = [any(_overlaps(p, c) for c in group.copies) for p in pylint_group]
        if sum(hit) >= 2:
            return group
    return None


def overlapping(group: Group) -> bool:
    """Whether two copies of one group overlap."""
    return any(_overlaps(a, b) for i, a in enumerate(group.copies) for b in group.copies[i + 1 :])


def pylint_literal_heavy(workspace: Workspace, copies: Sequence[Copy]) -> bool:
    """Whether a pylint group's block is data (literal-heavy lines), judged on its first copy."""
    path, first, last = copies[0]
    file = next(f for f in workspace.files if f.path == path)
    return literal_heavy(file.lexed.code, first, last)


def sample(groups: Sequence[tuple[str, Group]], size: int) -> list[tuple[str, Group]]:
    """`size` groups, as many from each library, spread over its groups by position: the same on every run."""
    by_library = [sorted((g for g in groups if g[0] == lib.name), key=lambda g: g[1].copies[0]) for lib in LIBRARIES]
    shares = [0] * len(by_library)
    while sum(shares) < min(size, len(groups)):  # round robin: a library with few groups leaves its share to others
        for n, ordered in enumerate(by_library):
            if shares[n] < len(ordered) and sum(shares) < size:
                shares[n] += 1
    out: list[tuple[str, Group]] = []
    for ordered, share in zip(by_library, shares, strict=True):
        step = len(ordered) / share if share else 0
        out += [ordered[int(i * step)] for i in range(share)]
    return out


def _library(name: str) -> Library:
    return next(lib for lib in LIBRARIES if lib.name == name)


def consolidation(
    cache: Path, bin_dir: Path, size: int, limits: DiscoveryLimits | None = None, *, show: bool = False
) -> None:
    """Print consolidation's agreement with pylint, per library, and the labelled sample."""
    limits = limits or DiscoveryLimits()
    print(f"\n== consolidation vs pylint duplicate-code (min {limits.clone_min_lines} lines) ==")
    print(f"{'library':<8} {'pylint':>6} {'found':>6} {'data':>5} {'found/code':>10} {'ours':>5} "
          f"{'overlap':>7} {'ours in pylint':>14}")
    everything: list[tuple[str, Group]] = []
    totals = [0, 0, 0, 0]  # pylint's groups, found, code, code found
    for library in LIBRARIES:
        package = fetch(cache, library)
        theirs = pylint_groups(bin_dir, package, limits.clone_min_lines)
        ours, workspace = our_groups(package, limits)
        found = [g for g in theirs if found_by(g, ours)]
        data = [g for g in theirs if pylint_literal_heavy(workspace, g)]
        code = [g for g in theirs if g not in data]
        code_found = [g for g in code if found_by(g, ours)]
        shared = [g for g in ours if any(found_by(t, [g]) for t in theirs)]
        totals = [a + b for a, b in zip(totals, (len(theirs), len(found), len(code), len(code_found)), strict=True)]
        print(f"{library.name:<8} {len(theirs):>6} {len(found):>6} {len(data):>5} "
              f"{len(code_found):>4}/{len(code):<5} {len(ours):>5} {sum(map(overlapping, ours)):>7} "
              f"{len(shared):>14}")
        for pylint_group in theirs:
            if not found_by(pylint_group, ours):
                why = "data or text in a string" if pylint_group in data else "MISSED"
                print(f"    not found ({why}): " + ", ".join(f"{p}:{a}-{b}" for p, a, b in pylint_group))
        everything += [(library.name, g) for g in ours]
    print(f"all      {totals[0]:>6} {totals[1]:>6} {totals[0] - totals[2]:>5} {totals[3]:>4}/{totals[2]:<5} "
          f"found: {totals[1] / max(1, totals[0]):.0%} of pylint's groups, {totals[3] / max(1, totals[2]):.0%} of "
          "those that are code")
    labelled = sample(everything, size)
    print(f"\nsample of our groups ({len(labelled)}), with labels:")
    noise = unlabelled = 0
    for name, group in labelled:
        key = f"{name} {group.copies[0][0]}:{group.copies[0][1]}"
        label = LABELS.get(key, "unlabelled")
        noise += label.startswith("noise")
        unlabelled += label == "unlabelled"
        where = ", ".join(f"{p}:{a}-{b}" for p, a, b in group.copies)
        print(f"  {key:<40} {label}\n      {where}")
        if show:
            for copy in group.copies[:2]:
                path, first, last = copy
                text = (cache / "src" / _library(name).folder / _library(name).package / path).read_text(
                    encoding="utf-8", errors="replace").splitlines()[first - 1 : min(last, first + 14)]
                print("\n".join(f"        | {line}" for line in text) + "\n        +---")
    judged = len(labelled) - unlabelled
    share = f"{noise / judged:.0%}" if judged else "n/a"
    print(f"noise in the sample: {noise} of {judged} labelled ({share}); {unlabelled} unlabelled")


# --- docs, security, complexity, todo against ruff ---------------------------------------------------

_RUFF_RULES = {
    "docs": ("D100,D101,D102,D103,D104", re.compile(r"^D10[0-4]$")),
    "security": ("S", re.compile(r"^S\d+$")),
    "complexity": ("C901", re.compile(r"^C901$")),
    "todo": ("FIX001,FIX002,FIX003", re.compile(r"^(?:FIX00[123]|TODO|FIXME|XXX)$")),
}
_FIX = {"FIX001": "FIXME", "FIX002": "TODO", "FIX003": "XXX"}


def ruff_findings(package: Path, select: str) -> set[tuple[str, str, int]]:
    """ruff's (rule, path, line) for `select` over the package (with the rules the audit leaves out,
    `ruff_ignore`, left out: S101, `assert`)."""
    ruff = find_ruff()
    if ruff is None:
        raise SystemExit("ruff is not installed: pip install ruff")
    limits = DiscoveryLimits()
    run = subprocess.run([ruff, "check", "--isolated", "--no-cache", "--exit-zero", "--output-format", "json",
                          "--select", select, "--ignore", ",".join(limits.ruff_ignore),
                          "--config", f"lint.mccabe.max-complexity = {limits.max_complexity}", "."],
                         cwd=package, capture_output=True, text=True, check=True)
    return {(_FIX.get(r["code"], r["code"]), str(Path(r["filename"]).relative_to(package)), r["location"]["row"])
            for r in json.loads(run.stdout)}


def ruff_agreement(cache: Path) -> None:
    """Print precision and recall of docs, security, complexity and todo findings against ruff's."""
    print("\n== docs, security, complexity, todo vs ruff: our (rule, file, line) against ruff's ==")
    print(f"{'library':<8} {'kind':<11} {'ours':>5} {'ruff':>5} {'shared':>6} {'precision':>9} {'recall':>7}  left out")
    sources = {s.name: s for s in load_sources(["audit", "docs", "todo"])}
    for library in LIBRARIES:
        package = fetch(cache, library)
        workspace = Workspace(package)
        found: list[Finding] = []
        for source in sources.values():
            found += source.scan(workspace)
        for kind, (select, ours_rule) in _RUFF_RULES.items():
            ours = {(f.rule, f.path, f.line) for f in found if ours_rule.match(f.rule)}
            theirs = ruff_findings(package, select)
            ignored = ", ".join(DiscoveryLimits().ruff_ignore)
            left_out = f"{ignored} (the audit's ruff_ignore)" if kind == "security" else ""
            if kind == "docs":
                # ruff asks empty modules for D104/D100; this source does not (nothing to document)
                empty = {p for _, p, _ in theirs if not (package / p).read_text(encoding="utf-8").strip()}
                theirs = {t for t in theirs if t[1] not in empty}
                left_out = f"{len(empty)} empty modules (ruff reports them)"
            shared = ours & theirs
            precision = len(shared) / len(ours) if ours else 1.0
            recall = len(shared) / len(theirs) if theirs else 1.0
            print(f"{library.name:<8} {kind:<11} {len(ours):>5} {len(theirs):>5} {len(shared):>6} {precision:>9.3f} "
                  f"{recall:>7.3f}  {left_out}")
            for rule, path, line in sorted((ours - theirs) | (theirs - ours))[:5]:
                side = "only ours" if (rule, path, line) in ours else "only ruff"
                print(f"      {side}: {rule} {path}:{line}")


# --- the held-out phrase list --------------------------------------------------------------------


async def phrase_list(url: str) -> None:
    """Print the detector's precision and recall on the trace built from the held-out phrase list."""
    trace = heldout.build()
    settings = Settings(redis_url=url, name="bench-quality")
    async with open_redis(settings) as redis:
        for key in await redis.keys(f"{settings.name}*") + await redis.keys("swarm:{bench-quality}*"):
            await redis.delete(key)
        detector = Detector(redis, settings)
        fired = await detector.observe_many(trace.messages)
        reps = await detector.signals(limit=100_000)
        for key in await redis.keys("swarm:{bench-quality}*"):
            await redis.delete(key)
    found = {i for r in reps if r.scope == "agent" for i in r.signal.body.evidence}
    hits = len(found & trace.repetitive)
    lists = heldout.phrases()
    rng = random.Random(1)
    first_sight = {label: sum(detector.classifier.classify(heldout.fill(p, rng)).kind == kind for p in items)
                   for (label, items), kind in zip(lists.items(), ("idle", "progress", "other"), strict=True)}
    print("\n== held-out phrase list (tests/fixtures/heldout_phrases.txt) ==")
    print(f"trace: {len(trace.messages)} messages from {len({m.sender for m in trace.messages})} agents, "
          f"{len(trace.repetitive)} labelled repetitive; {len(fired)} signals")
    print(f"precision {hits / len(found) if found else 1.0:.3f}, recall {hits / len(trace.repetitive):.3f}")
    print("on first sight (one message, no repeat): " + ", ".join(
        f"{first_sight[label]} of {len(items)} {label} read as {kind}"
        for (label, items), kind in zip(lists.items(), ("idle", "progress", "other"), strict=True)))


# --- scan rate -----------------------------------------------------------------------------------


def scan_rate(cache: Path) -> None:
    """Print lines per second of all sources together over each library (best of 3)."""
    print("\n== scan rate: all sources on one workspace, best of 3 ==")
    sources = load_sources()
    for library in LIBRARIES:
        package = fetch(cache, library)
        best, lines = float("inf"), 0
        for _ in range(3):
            started = time.perf_counter()
            workspace = Workspace(package, jobs=1)
            for source in sources:
                source.group(source.scan(workspace))
            best = min(best, time.perf_counter() - started)
            lines = workspace.lines
        print(f"{library.name:<8} {lines:>8,} lines {best:>6.2f} s {lines / best:>10,.0f} lines/s")


def main(argv: list[str] | None = None) -> int:
    """Run every part, or the ones asked for."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "swarm-bench",
                        help="where sdists, their sources and the pylint virtualenv go (never committed)")
    parser.add_argument("--sample", type=int, default=30, help="our groups sampled for the labels")
    parser.add_argument("--show", action="store_true", help="print the code of each sampled group (to label it)")
    parser.add_argument("--only", choices=["consolidation", "ruff", "phrases", "rate"], action="append",
                        help="run only these parts (repeat); default: all")
    args = parser.parse_args(argv)
    parts = set(args.only or ["consolidation", "ruff", "phrases", "rate"])
    args.cache.mkdir(parents=True, exist_ok=True)
    if "consolidation" in parts:
        consolidation(args.cache, tools(args.cache), args.sample, show=args.show)
    if "ruff" in parts:
        ruff_agreement(args.cache)
    if "phrases" in parts:
        url = os.environ.get("SWARM_REDIS_URL")
        if url:
            anyio.run(phrase_list, url)
        else:
            with tempfile.TemporaryDirectory(prefix="swarm-bench-") as tmp:
                server = EmbeddedServer(Path(tmp))
                try:
                    anyio.run(phrase_list, server.ensure().url)
                finally:
                    server.stop()
    if "rate" in parts:
        scan_rate(args.cache)
    return 0


if __name__ == "__main__":
    sys.exit(main())

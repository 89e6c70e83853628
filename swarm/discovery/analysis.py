"""The per-file work every source shares (lexing, parsing, outlining), done once, in parallel if big.

Parsing Python is the dearest part of a scan: `ast.parse` builds, and then frees, millions of
objects while holding the GIL. For a large tree the files are spread over worker processes, which
send back only the compact results (normalized lines, comments, an outline). Small trees, and
platforms where forking is not the norm, are analyzed in-process.
"""

from __future__ import annotations

import ast
import gc
import multiprocessing
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from swarm.discovery.languages import LANGUAGES, PYTHON, Language, Lexed, lex
from swarm.discovery.outline import Outline, outline

PARALLEL_MIN_BYTES = 4_000_000
"""Below this much source (about 100,000 lines) starting worker processes costs more than it saves."""
_BATCH_BYTES = 1_000_000
_LANGUAGES = {lang.name: lang for lang in LANGUAGES}


@dataclass(frozen=True, slots=True)
class Analysis:
    """What the sources need from one file: its lexed form, its outline (Python) and its length."""

    lexed: Lexed
    outline: Outline | None
    line_count: int


def read(path: Path) -> str:
    """A file decoded as UTF-8, undecodable bytes replaced: enough for scanning any source.

    A file that vanished or cannot be read since the walk listed it reads as empty: it has no findings.
    """
    try:
        return path.read_bytes().decode("utf-8", errors="replace")
    except OSError:
        return ""


def analyze(text: str, language: Language) -> Analysis:
    """Lex `text`, and outline it when it is Python."""
    lines = text.count("\n") + (1 if text and not text.endswith("\n") else 0)
    return Analysis(lex(text, language), parse(text) if language is PYTHON else None, lines)


def parse(text: str) -> Outline | None:
    """The outline of Python source, or None when it does not parse.

    The syntax tree is dropped once outlined: kept for every file of a large tree it would cost
    gigabytes and make each garbage collection slower than the parse itself.
    """
    # Fresh AST nodes form no cycles: pausing the cyclic collector while millions of them are built
    # roughly halves the parse time of a large file.
    with _paused_gc(), warnings.catch_warnings():
        # Scanned code is not ours: its invalid escape sequences must not become our warnings.
        warnings.simplefilter("ignore")
        try:
            return outline(ast.parse(text))
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return None


def analyze_many(files: Sequence[tuple[Path, Language]], jobs: int | None = None) -> list[Analysis]:
    """Analyze every file, in worker processes when there is enough source to be worth it."""
    sizes = [_size(path) for path, _ in files]
    workers = min(jobs or _cpus(), 8)
    with _paused_gc():
        if workers > 1 and sum(sizes) >= PARALLEL_MIN_BYTES and _can_fork():
            try:
                return _in_workers(files, sizes, workers)
            except (BrokenProcessPool, OSError):
                pass  # a worker died or none could start: the in-process path still gives the answer
        return [analyze(read(path), language) for path, language in files]


@contextmanager
def _paused_gc() -> Iterator[None]:
    """Results are millions of small acyclic objects (lines, comments, definitions); a cyclic
    collection triggered every few thousand of them would rescan all the earlier ones, again and again."""
    paused = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


def _in_workers(files: Sequence[tuple[Path, Language]], sizes: list[int], workers: int) -> list[Analysis]:
    batches: list[list[tuple[str, str]]] = [[]]
    batch_bytes = 0
    for (path, language), size in zip(files, sizes, strict=True):
        if batch_bytes >= _BATCH_BYTES:
            batches.append([])
            batch_bytes = 0
        batches[-1].append((str(path), language.name))
        batch_bytes += size
    # Fork, not spawn: a spawned worker would first import swarm and its dependencies (about a
    # second); a forked one starts at once. Python 3.12+ warns about forking a threaded process;
    # the workers only read files and run pure functions, so none of the parent's locks matter.
    context = multiprocessing.get_context("fork")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with ProcessPoolExecutor(max_workers=min(workers, len(batches)), mp_context=context) as pool:
            results = list(pool.map(_analyze_batch, batches))
    return [analysis for batch in results for analysis in batch]


def _analyze_batch(batch: list[tuple[str, str]]) -> list[Analysis]:
    with _paused_gc():
        return [analyze(read(Path(path)), _LANGUAGES[name]) for path, name in batch]


def _cpus() -> int:
    """CPUs this process may use (a container's share, not the host's count, where the OS says)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _can_fork() -> bool:
    return sys.platform == "linux" and "fork" in multiprocessing.get_all_start_methods()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0

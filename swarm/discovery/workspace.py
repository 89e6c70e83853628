"""The files one scan looks at: a walk of the tree that honors `.gitignore`, with per-file caches.

A `Workspace` lives for one scan. Each file's analysis (lexed form, Python outline, length, see
`swarm.discovery.analysis`) is computed at most once, whichever source asks first, and shared by the
others. The walk skips what `.gitignore` files in the tree exclude (git's precedence: the deepest
file with a matching pattern decides), dependency, virtualenv, vendored and build folders, files in
languages discovery does not read, and files over `max_file_bytes` (generated or minified).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from pathspec import GitIgnoreSpec

from swarm.discovery.analysis import Analysis, analyze, analyze_many, read
from swarm.discovery.languages import PYTHON, Language, Lexed, language_of
from swarm.discovery.limits import DiscoveryLimits
from swarm.discovery.outline import Outline
from swarm.errors import ConfigError

SKIPPED_DIRS = frozenset(
    {
        "node_modules", "bower_components", "venv", "virtualenv", "site-packages", "vendor", "vendored",
        "third_party", "thirdparty", "third-party", "build", "dist", "__pycache__", "__pypackages__",
        "fixtures", "testdata",
    }
)
"""Directory names never scanned: dependencies, virtualenvs, vendored and generated code, and test
fixtures (sample inputs, often flawed on purpose: not code anyone should be asked to fix).
Directories whose name starts with a dot (.git, .venv, .tox, .mypy_cache...) are skipped too, and so is
any directory holding a `pyvenv.cfg` (a virtualenv, whatever its name)."""

_README = "readme"


@dataclass(eq=False)
class SourceFile:
    """One file of the workspace, in a language discovery reads. Text and derived forms are cached."""

    path: str
    """Relative to the workspace root, `/`-separated: the form every finding uses."""
    absolute: Path
    language: Language

    @cached_property
    def text(self) -> str:
        """The file's text (see `swarm.discovery.analysis.read`)."""
        return read(self.absolute)

    @cached_property
    def analysis(self) -> Analysis:
        """Lexed form, outline and length; `Workspace.analyze` fills this for all files at once."""
        return analyze(self.text, self.language)

    @property
    def line_count(self) -> int:
        """Physical lines, counting a last line without a trailing newline."""
        return self.analysis.line_count

    @property
    def lexed(self) -> Lexed:
        """Normalized code lines and comments (see `swarm.discovery.languages.lex`)."""
        return self.analysis.lexed

    @property
    def outline(self) -> Outline | None:
        """The definitions of a Python module; None for other languages and files that do not parse."""
        return self.analysis.outline


@dataclass
class Workspace:
    """The tree under `root` as discovery sees it; build a new one for each scan."""

    root: Path
    limits: DiscoveryLimits = field(default_factory=DiscoveryLimits)
    jobs: int | None = None
    """Worker processes for `analyze` on a big tree; None = one per CPU, 1 = stay in-process."""

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()
        if not self.root.is_dir():
            raise ConfigError(f"workspace {str(self.root)!r} is not a directory; pass the root of a source tree")

    @cached_property
    def files(self) -> list[SourceFile]:
        """Every source file not ignored, sorted by path so findings come out in a stable order."""
        found: list[SourceFile] = []
        self._walk(self.root, "", [], found)
        found.sort(key=lambda f: f.path)
        return found

    @cached_property
    def python_files(self) -> list[SourceFile]:
        """The Python subset of `files`."""
        return [f for f in self.files if f.language is PYTHON]

    @cached_property
    def has_readme(self) -> bool:
        """True when the root holds a README of any extension or case (README.md, readme.rst...)."""
        return any(p.name.lower().split(".")[0] == _README and p.is_file() for p in self.root.iterdir())

    def analyze(self) -> None:
        """Compute every file's `analysis` now, in parallel for a big tree.

        Sources call this first; the second call does nothing.
        """
        pending = [f for f in self.files if "analysis" not in f.__dict__]
        if pending:
            results = analyze_many([(f.absolute, f.language) for f in pending], self.jobs)
            for file, result in zip(pending, results, strict=True):
                file.__dict__["analysis"] = result  # what cached_property itself would store

    @property
    def lines(self) -> int:
        """Total lines in `files`: the denominator of the lines-per-second benchmark."""
        return sum(f.line_count for f in self.files)

    def _walk(
        self, directory: Path, prefix: str, specs: list[tuple[str, GitIgnoreSpec]], found: list[SourceFile]
    ) -> None:
        ignore_file = directory / ".gitignore"
        if ignore_file.is_file():
            lines = ignore_file.read_text(encoding="utf-8", errors="replace").splitlines()
            specs = [*specs, (prefix, GitIgnoreSpec.from_lines(lines))]
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError:
            return  # unreadable directory: nothing to scan there, and no reason to fail the scan
        for entry in entries:
            relative = prefix + entry.name
            if entry.is_dir(follow_symlinks=False):
                if _skipped_dir(entry) or _ignored(relative + "/", specs):
                    continue
                self._walk(Path(entry.path), relative + "/", specs, found)
            elif entry.is_file(follow_symlinks=False):
                language = language_of(entry.name)
                if language is None or _ignored(relative, specs):
                    continue
                if entry.stat().st_size <= self.limits.max_file_bytes:
                    found.append(SourceFile(relative, Path(entry.path), language))


def _skipped_dir(entry: os.DirEntry[str]) -> bool:
    return (
        entry.name.startswith(".")
        or entry.name in SKIPPED_DIRS
        or entry.name.endswith(".egg-info")
        or os.path.exists(os.path.join(entry.path, "pyvenv.cfg"))
    )


def _ignored(relative: str, specs: list[tuple[str, GitIgnoreSpec]]) -> bool:
    """Git's rule: the deepest `.gitignore` with a matching pattern decides, its last match wins."""
    for base, spec in reversed(specs):
        result = spec.check_file(relative[len(base) :])
        if result.include is not None:
            return result.include
    return False

"""Consolidation: blocks of code duplicated across (or within) files, one task per clone group.

Comparison is on normalized tokens (names become `I`, literals `L`, comments, blank lines and imports
vanish, see `swarm.discovery.languages`), so a copy whose variables were renamed still matches. Blocks
are aligned on lines: each normalized line gets an id, every window of `clone_min_lines` ids is
hashed, and windows seen more than once are extended while the copies keep agreeing. A group must
also reach `clone_min_tokens`. Windows repeated more than `clone_max_copies` times are tables or
generated boilerplate and are not seeds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from swarm.discovery.findings import Finding, Severity, TaskDraft, draft, plural, stable_key
from swarm.discovery.languages import token_count
from swarm.discovery.sources import Source
from swarm.discovery.workspace import SourceFile, Workspace

RULE = "duplicate-block"
_SNIPPET_LINES = 40


@dataclass(frozen=True, slots=True)
class _Copy:
    file: int
    start: int  # index into the file's normalized lines
    end: int  # exclusive


class _Index:
    """Normalized lines of every file as hashes, and where each repeated window of them occurs.

    A line's id is the hash of its normalized text: equal within one process, which is all a scan
    needs, and a 64-bit collision between two different lines is too rare to be worth a lookup table.
    """

    def __init__(self, files: Sequence[SourceFile], window: int, max_copies: int) -> None:
        self.lines: list[list[int]] = []
        hashes: list[list[int]] = []
        for file in files:
            seq = [hash(text) for _, text in file.lexed.code]
            self.lines.append(seq)
            # zip over shifted views builds each window tuple in C; hashing it keys the window.
            hashes.append([hash(w) for w in zip(*(seq[k:] for k in range(window)), strict=False)])
        counts = Counter(h for per_file in hashes for h in per_file)
        repeated = {h for h, n in counts.items() if 2 <= n <= max_copies}
        self.occurrences: dict[int, list[tuple[int, int]]] = {h: [] for h in repeated}
        self.seeds: list[list[tuple[int, int]]] = []
        for f, per_file in enumerate(hashes):
            seeds = [(i, h) for i, h in enumerate(per_file) if h in repeated]
            for i, h in seeds:
                self.occurrences[h].append((f, i))
            self.seeds.append(seeds)


def find_clones(files: Sequence[SourceFile], min_lines: int, min_tokens: int, max_copies: int) -> list[list[_Copy]]:
    """Groups of two or more copies of one normalized block, in file order."""
    index = _Index(files, min_lines, max_copies)
    code = [file.lexed.code for file in files]
    covered = [bytearray(len(seq)) for seq in index.lines]
    token_memo: dict[int, int] = {}
    groups: list[list[_Copy]] = []
    for f, seeds in enumerate(index.seeds):
        seq = index.lines[f]
        for i, h in seeds:
            if covered[f][i]:
                continue
            extents = [
                (_extend(seq, i, index.lines[g], j, same_file=g == f, window=min_lines), g, j)
                for g, j in index.occurrences[h]
                if not (g == f and abs(j - i) < min_lines)
            ]
            extents = [e for e in extents if e[0]]
            if not extents:
                continue
            lengths = sorted((e[0] for e in extents), reverse=True)
            length = _best_length(seq, code[f], i, lengths, min_tokens, token_memo)
            if not length:
                continue
            group = [_Copy(f, i, i + length)] + [_Copy(g, j, j + length) for n, g, j in extents if n >= length]
            for copy in group:
                covered[copy.file][copy.start : copy.end] = b"\x01" * length
            groups.append(group)
    return groups


def _extend(a: list[int], i: int, b: list[int], j: int, *, same_file: bool, window: int) -> int:
    """How many lines from a[i] and b[j] agree (0 when the seed window itself differs: a hash collision)."""
    if a[i : i + window] != b[j : j + window]:
        return 0
    limit = min(len(a) - i, len(b) - j)
    if same_file:
        limit = min(limit, abs(j - i))  # a copy must not overlap the block it copies
    n = window
    while n < limit and a[i + n] == b[j + n]:
        n += 1
    return n


def _best_length(
    seq: list[int], code: list[tuple[int, str]], start: int, lengths: list[int], min_tokens: int, memo: dict[int, int]
) -> int:
    """The block length that covers the most duplicated lines (copies x length) with enough tokens."""
    best, best_score = 0, 0
    for rank, length in enumerate(lengths):
        tokens = 0
        for k in range(start, start + length):
            if seq[k] not in memo:
                memo[seq[k]] = token_count(code[k][1])
            tokens += memo[seq[k]]
        if tokens >= min_tokens and (rank + 2) * length > best_score:
            best, best_score = length, (rank + 2) * length
    return best


class ConsolidationSource(Source):
    """Duplicate code blocks, token-normalized, across every language discovery reads."""

    name = "consolidation"
    kind = "consolidation"

    def scan(self, workspace: Workspace) -> list[Finding]:
        """One finding per copy; the copies of one block share `symbol`, the block's content digest."""
        workspace.analyze()
        limits = self.limits
        files = workspace.files
        groups = find_clones(files, limits.clone_min_lines, limits.clone_min_tokens, limits.clone_max_copies)
        index_lines = [f.lexed.code for f in files]
        findings: list[Finding] = []
        for group in groups:
            first = group[0]
            normalized = "\n".join(text for _, text in index_lines[first.file][first.start : first.end])
            digest = stable_key(normalized)
            spans = [self._span(files, index_lines, c) for c in group]
            ordinal: Counter[str] = Counter()
            for copy, (path, start, end) in zip(group, spans, strict=True):
                ordinal[path] += 1
                others = ", ".join(f"{p}:{s}-{e}" for p, s, e in spans if (p, s) != (path, start))
                findings.append(
                    Finding(
                        source=self.name, rule=RULE, severity=Severity.MEDIUM, path=path, line=start, end_line=end,
                        message=f"{copy.end - copy.start} code lines duplicated at {others}",
                        key=stable_key(self.name, digest, path, str(ordinal[path])), symbol=digest,
                    )
                )
        return findings

    @staticmethod
    def _span(files: Sequence[SourceFile], lines: list[list[tuple[int, str]]], copy: _Copy) -> tuple[str, int, int]:
        code = lines[copy.file]
        return files[copy.file].path, code[copy.start][0], code[copy.end - 1][0]

    def group(self, findings: Sequence[Finding]) -> list[TaskDraft]:
        """One task per clone group, listing every copy."""
        by_digest: dict[str, list[Finding]] = {}
        for f in findings:
            by_digest.setdefault(f.symbol, []).append(f)
        drafts = []
        for digest, copies in by_digest.items():
            first = min(copies, key=lambda f: (f.path, f.line))
            size = (first.end_line or first.line) - first.line + 1
            files = sorted({c.path for c in copies})
            shown = ", ".join(files[:3]) + (", ..." if len(files) > 3 else "")
            drafts.append(
                draft(
                    "consolidation",
                    f"Consolidate a {size}-line block duplicated {len(copies)} times ({shown})",
                    f"The same code, up to renamed names and changed literals, appears in "
                    f"{plural(len(copies), 'place')}. Extract it once (a function, class or shared module) "
                    "and make every copy use it.",
                    copies,
                    digest,
                )
            )
        return drafts

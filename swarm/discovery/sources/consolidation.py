"""Consolidation: blocks of code duplicated across (or within) files, one task per clone group.

Comparison is on normalized tokens (names become `I`, literals `L`, comments, blank lines and imports
vanish, see `swarm.discovery.languages`), so a copy whose variables were renamed still matches. Blocks
are aligned on lines: each normalized line gets an id, every window of `clone_min_lines` ids is
hashed, and windows seen more than once are extended while the copies keep agreeing. A group must
also reach `clone_min_tokens`, unless its copies are written alike (comments and indentation aside):
that is pylint's duplicate-code criterion, which has no token minimum. Windows repeated more than
`clone_max_copies` times are tables or generated boilerplate and are not seeds.

What pylint would not call a clone is not one here either, measured on real libraries by
scripts/bench_discovery_quality.py: in Python, signatures, `@overload` stubs and docstrings are not
compared (`swarm.discovery.languages`), and these are left out: blocks mostly inside literals or
argument lists (tables, constant maps, keyword lists; data lines compare as written, so only a real
copy of them would match at all), a few statements over and over (`__lt__ = ...`, `__le__ = ...`),
runs of alike lines (field lists) unless copied as written, and copies overlapping another copy of
their group.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from swarm.discovery.analysis import read
from swarm.discovery.findings import Finding, Severity, TaskDraft, draft, plural, stable_key
from swarm.discovery.languages import BOUNDARY, DATA, WRITTEN, token_count
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
    return _Search(files, min_lines, min_tokens, max_copies).groups()


class _Search:
    """One pass over every seed window, in file order; a copy found is covered and seeds no other group."""

    def __init__(self, files: Sequence[SourceFile], min_lines: int, min_tokens: int, max_copies: int) -> None:
        self.index = _Index(files, min_lines, max_copies)
        self.code = [file.lexed.code for file in files]
        self.covered = [bytearray(len(seq)) for seq in self.index.lines]
        self.written = _Written(files)
        self.min_lines = min_lines
        self.min_tokens = min_tokens
        self.token_memo: dict[int, int] = {}

    def groups(self) -> list[list[_Copy]]:
        """Every group, in the order of its first copy."""
        found: list[list[_Copy]] = []
        for f, seeds in enumerate(self.index.seeds):
            for i, h in seeds:
                if not self.covered[f][i] and (group := self._group(f, i, h)):
                    for copy in group:
                        self.covered[copy.file][copy.start : copy.end] = b"\x01" * (copy.end - copy.start)
                    found.append(group)
        return found

    def _group(self, f: int, i: int, h: int) -> list[_Copy] | None:
        """The group seeded at line `i` of file `f` (window hash `h`), or None when it is no clone."""
        seq, code = self.index.lines[f], self.code[f]
        extents = [
            (_extend(seq, i, self.index.lines[g], j, same_file=g == f, window=self.min_lines), g, j)
            for g, j in self.index.occurrences[h]
            if not (g == f and abs(j - i) < self.min_lines)
        ]
        extents = [e for e in extents if e[0]]
        if not extents:
            return None
        length = _best_length(seq, code, i, sorted((e[0] for e in extents), reverse=True), self.min_tokens,
                              self.token_memo)
        if not length:
            # Too few tokens for a clone up to renaming; a block copied as written (pylint's
            # duplicate-code, which has no token minimum) still is one.
            extents = [(self.written.run(f, i, g, j, n), g, j) for n, g, j in extents]
            extents = [e for e in extents if e[0] >= self.min_lines]
            if not extents:
                return None
            length = _most_covered(sorted((e[0] for e in extents), reverse=True))
        while length > self.min_lines and code[i + length - 1][1] == BOUNDARY:
            length -= 1  # a copy ends where its code does, not at the next function's signature
        if not self._a_clone(f, i, length):
            return None
        group = _disjoint([_Copy(f, i, i + length)] + [_Copy(g, j, j + length) for n, g, j in extents if n >= length])
        if _runs(seq, i, length):
            # Mostly runs of alike lines (`self.size = response["Size"]`, `self.count = ...`): tables
            # written as code. Two such tables are one clone only when copied as written.
            group = [group[0], *(c for c in group[1:] if self.written.run(f, i, c.file, c.start, length) == length)]
        return group if len(group) >= 2 else None

    def _a_clone(self, f: int, i: int, length: int) -> bool:
        """Whether the block is worth a clone group at all, whatever its copies."""
        block = self.code[f][i : i + length]
        if sum(1 for _, text in block if text != BOUNDARY) < self.min_lines:
            return False  # signatures are not compared, so they do not count towards the size either
        if _periodic(self.index.lines[f], i, length):
            return False  # a few statements over and over: a table written as code
        if _literal_heavy(block):
            # a table, a constant map, an argument list; no seed inside its data lines need be tried
            # again (the code after it may still start one)
            for k, (_, text) in enumerate(block, i):
                if text[0] in _AS_WRITTEN:
                    self.covered[f][k] = 1
            return False
        return True


class _Written:
    """Whether lines are copies letter for letter, comments and indentation aside, as pylint's
    duplicate-code compares them. Each file's lines are read and hashed once, only for the files a
    low-token candidate needs."""

    def __init__(self, files: Sequence[SourceFile]) -> None:
        self.files = files
        self._hashes: dict[int, list[int]] = {}

    def hashes(self, f: int) -> list[int]:
        """One hash per normalized line of file `f`: of the line as written (data lines and
        signatures: of their normalized form, which is all there is to compare)."""
        out = self._hashes.get(f)
        if out is None:
            file = self.files[f]
            text = (file.__dict__.get("text") or read(file.absolute)).split("\n")
            text.append("")  # a last line number past the end reads as empty
            code = file.lexed.code
            out = self._hashes[f] = [
                hash(norm) if norm[0] in _ALIKE_ONCE_NORMALIZED else hash(text[number - 1].strip())
                for number, norm in code
            ]
            if file.lexed.comments:
                at = {number: k for k, (number, norm) in enumerate(code) if norm[0] not in _ALIKE_ONCE_NORMALIZED}
                for comment in file.lexed.comments:
                    k = at.get(comment.line, -1)
                    if k >= 0:
                        out[k] = hash(_code(text, comment.line, comment.text))
        return out

    def run(self, f: int, i: int, g: int, j: int, limit: int) -> int:
        """How many normalized lines from line `i` of file `f` and `j` of file `g` (alike once
        normalized, at most `limit`) are written alike too."""
        a, b = self.hashes(f), self.hashes(g)
        n = 0
        while n < limit and a[i + n] == b[j + n]:
            n += 1
        return n


def _code(text: list[str], number: int, comment: str) -> str:
    """Line `number` as written, stripped, without the comment on it."""
    line = text[number - 1]
    if comment in line:
        line = line[: line.rfind(comment)]
    return line.strip()


def _disjoint(copies: list[_Copy]) -> list[_Copy]:
    """The copies, in order, without any that overlaps one kept before it (a block repeated back to back
    in one file matches itself shifted: those are one block, not two copies)."""
    kept: list[_Copy] = []
    for copy in copies:
        if not any(k.file == copy.file and k.start < copy.end and copy.start < k.end for k in kept):
            kept.append(copy)
    return kept


_BOUNDARY_HASH = hash(BOUNDARY)


def _periodic(seq: list[int], start: int, length: int) -> bool:
    """Whether the block is a few statements over and over (`__lt__ = _ProxyLookup(operator.lt)`,
    `__le__ = ...`; `if not isinstance(width, NoChange):` / `options.width = width`; one-line methods
    `kw["method"] = "GET"` / `return self.open(*args, **kw)`): a table written as statements, which
    matches itself shifted, not a clone. Signatures count for nothing."""
    lines = [h for h in seq[start : start + length] if h != _BOUNDARY_HASH]
    distinct = len(set(lines))
    return (distinct <= 2 and len(lines) >= 4) or 3 * distinct <= len(lines)


def _runs(seq: list[int], start: int, length: int) -> bool:
    """Whether at least half of the block's lines stand in runs of three or more alike lines (once
    normalized): field lists, attribute copies, assignments from a response, one after the other."""
    in_runs, run = 0, 1
    for k in range(start + 1, start + length + 1):
        if k < start + length and seq[k] == seq[k - 1]:
            run += 1
            continue
        if run >= 3:
            in_runs += run
        run = 1
    return 2 * in_runs >= length


def literal_heavy(code: Sequence[tuple[int, str]], first: int, last: int) -> bool:
    """Whether the normalized lines of a file between lines `first` and `last` (inclusive) are mostly
    data (`DATA`: elements of a table or constant map, literals only), or hold no code at all."""
    return _literal_heavy([line for line in code if first <= line[0] <= last])


_AS_WRITTEN = frozenset(DATA + WRITTEN)
_ALIKE_ONCE_NORMALIZED = frozenset(DATA + WRITTEN + BOUNDARY)
"""Lines whose normalized form is all there is to compare: data as written, and signatures (ignored)."""
_PUNCTUATION = "()[]{},:; "


def _literal_heavy(lines: Sequence[tuple[int, str]]) -> bool:
    """At least half of the lines that are not just brackets are inside a literal or an argument list
    (`DATA`, `WRITTEN`), or none is code."""
    data = other = 0
    for _, text in lines:
        if text[0] not in _AS_WRITTEN:
            other += 1
        elif text[0] == WRITTEN or text[1:].strip(_PUNCTUATION):  # `)`, `],`, `}` count for neither
            data += 1
    return data >= other


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


def _most_covered(lengths: list[int]) -> int:
    """Of the copies' lengths (longest first), the one that covers the most lines (copies x length)."""
    return max(lengths, key=lambda length: (sum(1 for n in lengths if n >= length) + 1) * length)


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

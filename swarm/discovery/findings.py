"""What a source reports (`Finding`) and what discovery proposes to the board (`TaskDraft`).

Keys are what make a rescan idempotent: a finding's key is built from its rule, its path and a
symbol or normalized content, never from a line number where that can be avoided, so editing code
above a finding does not turn it into a "new" one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

TaskKind = Literal["consolidation", "audit", "docs", "todo"]

BODY_LIMIT = 8_000
"""Characters of a task body; the wire caps text at 16 KiB and a body must leave room for the rest."""


class Severity(StrEnum):
    """How much a finding matters; it sets the proposed task's priority."""

    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"

    @property
    def priority(self) -> int:
        """The board priority (0-9, higher first) a task made of such findings gets."""
        return {"info": 1, "low": 3, "medium": 5, "high": 7}[self.value]


def stable_key(*parts: str) -> str:
    """A short digest of `parts`: the same inputs give the same key on every machine and run."""
    return hashlib.sha1("\x1f".join(parts).encode(), usedforsecurity=False).hexdigest()[:20]


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing a source noticed at `path:line`.

    `path` is relative to the workspace root with `/` separators; `line` is 1-based (0 means the
    finding is about the whole file, or a file that is missing). `key` is stable across rescans.
    """

    source: str
    rule: str
    severity: Severity
    path: str
    line: int
    message: str
    key: str
    symbol: str = ""
    end_line: int | None = None

    @property
    def location(self) -> str:
        """`path:line`, or `path:start-end` for a range, as editors and CI logs print it."""
        if self.line == 0:
            return self.path
        if self.end_line is not None and self.end_line != self.line:
            return f"{self.path}:{self.line}-{self.end_line}"
        return f"{self.path}:{self.line}"


@dataclass(frozen=True, slots=True)
class TaskDraft:
    """A proposed task: several findings grouped to a sensible size (a module, a clone group...).

    `key` identifies the group: the board creates a task once per key, and a rescan that no longer
    reports the key cancels that task as obsolete. Findings coming or going within the group keep
    its key, so they neither make a new task nor change the existing one.
    """

    kind: TaskKind
    title: str
    body: str
    key: str
    priority: int
    capabilities: tuple[str, ...]
    files: tuple[str, ...]
    findings: tuple[Finding, ...] = field(repr=False)


def draft(kind: TaskKind, title: str, intro: str, findings: Sequence[Finding], *identity: str) -> TaskDraft:
    """Build a task from findings: a markdown body listing each `file:line`, priority from severity.

    `identity` names the group (for example the module path); the task key is derived from it and
    the kind, so the same group found by a later scan maps to the same task.
    """
    ordered = sorted(findings, key=lambda f: (f.path, f.line, f.rule, f.key))
    lines = [intro, ""]
    lines.extend(f"- `{f.location}` {f.rule}: {f.message}" for f in ordered)
    return TaskDraft(
        kind=kind,
        title=title,
        body=clip("\n".join(lines)),
        key=f"{kind}:{stable_key(kind, *identity)}",
        priority=max(f.severity.priority for f in ordered),
        capabilities=(kind,),
        files=tuple(sorted({f.path for f in ordered})),
        findings=tuple(ordered),
    )


def clip(body: str, limit: int = BODY_LIMIT) -> str:
    """Cut a long body at a line boundary and say how much was left out."""
    if len(body) <= limit:
        return body
    kept = body[:limit].rsplit("\n", 1)[0]
    dropped = body[len(kept) :].count("\n")
    return f"{kept}\n\n... {dropped} more lines left out"


def plural(count: int, noun: str) -> str:
    """`1 finding`, `3 findings`."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"

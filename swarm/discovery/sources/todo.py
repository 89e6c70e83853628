"""TODO, FIXME and XXX comments: work someone already wrote down, one task per file.

Only comments count (the shared lexer separates them from strings), and only when the tag opens a
comment line (`# TODO: ...`, `// FIXME(bob) ...`, ` * XXX ...` in a block comment), so prose such as
"see the TODO list" is not a finding.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from functools import cached_property

from swarm.discovery.findings import Finding, Severity, TaskDraft, draft, plural, stable_key
from swarm.discovery.sources import Source
from swarm.discovery.workspace import Workspace

_SEVERITY = {"TODO": Severity.INFO}
_WORDS = re.compile(r"\s+")


class TodoSource(Source):
    """Tagged comments in every language discovery reads."""

    name = "todo"
    kind = "todo"

    @cached_property
    def _tag(self) -> re.Pattern[str]:
        tags = "|".join(re.escape(t) for t in self.limits.todo_tags)
        # The tag opens a line of the comment: only markers, spaces and punctuation before it.
        # An author or ticket in parentheses, TODO(bob), is part of the tag, not of the text.
        return re.compile(rf"^[^\w\n]*\b({tags})\b(?:\([^)\n]*\))?[\s:\-]*([^\n]*)", re.MULTILINE)

    def scan(self, workspace: Workspace) -> list[Finding]:
        """One finding per tagged comment line."""
        workspace.analyze()
        findings: list[Finding] = []
        for file in workspace.files:
            seen: Counter[tuple[str, str]] = Counter()
            for comment in file.lexed.comments:
                for match in self._tag.finditer(comment.text):
                    tag, text = match.group(1), match.group(2).strip().rstrip("*/").strip()
                    line = comment.line + comment.text.count("\n", 0, match.start(1))
                    # Same text twice in one file is told apart by order, not by line number.
                    normalized = _WORDS.sub(" ", text).lower()
                    seen[tag, normalized] += 1
                    findings.append(
                        Finding(
                            source=self.name, rule=tag, severity=_SEVERITY.get(tag, Severity.LOW), path=file.path,
                            line=line, message=text or "(no text)",
                            key=stable_key(self.name, tag, file.path, normalized, str(seen[tag, normalized])),
                        )
                    )
        return findings

    def group(self, findings: Sequence[Finding]) -> list[TaskDraft]:
        """One task per file."""
        by_path: dict[str, list[Finding]] = {}
        for f in findings:
            by_path.setdefault(f.path, []).append(f)
        return [
            draft(
                "todo",
                f"Resolve {plural(len(items), 'tagged comment')} in {path}",
                "These comments mark work left for later. Do the work, or, if it is not worth doing, "
                "delete the comment and say why in the commit.",
                items,
                path,
            )
            for path, items in by_path.items()
        ]

"""Docs: public Python modules, classes and functions without a docstring, and a missing README.

Rule ids are pydocstyle's (as ruff spells them): D100 module, D101 class, D102 method, D103
function, D104 package. "Public" follows the same convention: no leading underscore on the name or
on any module or package on its path, not nested in a function, and listed in `__all__` when the
module declares one. Dunder methods, overloads, overrides and property setters are not asked for a
docstring: the documented definition is elsewhere. One task per module.
"""

from __future__ import annotations

from collections.abc import Sequence

from swarm.discovery.findings import Finding, Severity, TaskDraft, draft, plural, stable_key
from swarm.discovery.outline import Definition
from swarm.discovery.sources import Source
from swarm.discovery.workspace import SourceFile, Workspace

README_RULE = "README"
_PACKAGE_FILES = frozenset({"__init__.py"})
_TEST_DIRS = frozenset({"test", "tests", "testing"})


def is_test_module(path: str) -> bool:
    """Test code by the usual layouts: under tests/, test_*.py, *_test.py, conftest.py."""
    *folders, name = path.split("/")
    return (
        any(folder in _TEST_DIRS for folder in folders)
        or name.startswith("test_")
        or name.endswith("_test.py")
        or name == "conftest.py"
    )


def is_public_module(path: str) -> bool:
    """No part of the dotted module path starts with an underscore (`__init__` aside)."""
    *folders, name = path.split("/")
    stem = name.rsplit(".", 1)[0]
    parts = [*folders, stem] if name not in _PACKAGE_FILES else folders
    return not any(part.startswith("_") for part in parts)


class DocsSource(Source):
    """Undocumented public API in Python, and a repository without a README."""

    name = "docs"
    kind = "docs"

    def scan(self, workspace: Workspace) -> list[Finding]:
        """A finding per undocumented public object; one more when the root has no README."""
        workspace.analyze()
        findings: list[Finding] = []
        if not workspace.has_readme:
            findings.append(
                self._finding(README_RULE, "README.md", 0, "", "the repository has no README at its root")
            )
        for file in workspace.python_files:
            if not is_public_module(file.path) or (self.limits.docs_skip_tests and is_test_module(file.path)):
                continue
            findings.extend(self._module(file))
        return findings

    def _module(self, file: SourceFile) -> list[Finding]:
        shape = file.outline
        if shape is None:
            return []  # does not parse: the audit reports it, the docs can wait
        found: list[Finding] = []
        if not shape.has_docstring and not shape.empty:
            package = file.path.endswith("/__init__.py") or file.path == "__init__.py"
            rule, what = ("D104", "package") if package else ("D100", "module")
            found.append(self._finding(rule, file.path, 1, "", f"public {what} has no docstring"))
        for definition in shape.definitions:
            if definition.public and not definition.has_docstring and not definition.inherits_doc:
                rule, what = _describe(definition)
                found.append(
                    self._finding(
                        rule, file.path, definition.line, definition.qualname,
                        f"public {what} `{definition.qualname}` has no docstring",
                    )
                )
        return found

    def _finding(self, rule: str, path: str, line: int, symbol: str, message: str) -> Finding:
        return Finding(
            source=self.name, rule=rule, severity=Severity.LOW, path=path, line=line, message=message,
            key=stable_key(self.name, rule, path, symbol), symbol=symbol,
        )

    def group(self, findings: Sequence[Finding]) -> list[TaskDraft]:
        """One task per module; the README is a task of its own."""
        by_path: dict[str, list[Finding]] = {}
        for f in findings:
            by_path.setdefault(f.path, []).append(f)
        drafts = []
        for path, items in by_path.items():
            if items[0].rule == README_RULE:
                drafts.append(
                    draft(
                        "docs", "Write a README",
                        "The repository has no README. Write one: what the project is in one sentence, how to "
                        "install and run it, and a short example.",
                        items, README_RULE,
                    )
                )
                continue
            drafts.append(
                draft(
                    "docs",
                    f"Document {plural(len(items), 'public object')} in {path}",
                    "Add a docstring to each: what it is or does, in one line, and what a caller must know.",
                    items,
                    path,
                )
            )
        return drafts


def _describe(definition: Definition) -> tuple[str, str]:
    if definition.kind == "class":
        return "D101", "class"
    if "." in definition.qualname:
        return "D102", "method"
    return "D103", "function"

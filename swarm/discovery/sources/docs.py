"""Docs: public Python modules, classes and functions without a docstring, and a missing README.

Rule ids are pydocstyle's (as ruff spells them): D100 module, D101 class, D102 method, D103
function, D104 package. "Public" is ruff's: a module is private when its file name or a package on
its dotted path starts with one underscore (dunder names such as `__main__.py`, `__version__.py` are
public; a folder without `__init__.py` is not a package, so it is not on the path); a function or
class when its name starts with an underscore; a method when its name does and it is not a dunder
method. Nested in a function is private; so is a name left out of a module's `__all__`.
`__call__` and `__new__` are methods like any other (D102); the other dunder methods (ruff's D105
and D107) are not asked for a docstring, nor are overloads, overrides and property setters: the
documented definition is elsewhere. An empty module (an `__init__.py` that only marks a package)
needs no docstring either (ruff asks for one). `# noqa` comments are honored as ruff honors them (on
the reported line, or `# ruff: noqa` / `# flake8: noqa` for the file). One task per module.
"""

from __future__ import annotations

import re
from collections.abc import Container, Sequence

from swarm.discovery.findings import Finding, Severity, TaskDraft, draft, plural, stable_key
from swarm.discovery.languages import Comment
from swarm.discovery.outline import Definition, Outline
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


def is_public_module(path: str, packages: Container[str] | None = None) -> bool:
    """No part of the dotted module path starts with one underscore (dunder names are public).

    The dotted path is the file's name and the packages it sits in: the folders up from it that hold
    an `__init__.py`, given as `packages` (folder paths); None counts every folder as a package.
    """
    *folders, name = path.split("/")
    parts = [] if name in _PACKAGE_FILES else [name.rsplit(".", 1)[0]]
    for depth in range(len(folders), 0, -1):
        if packages is not None and "/".join(folders[:depth]) not in packages:
            break  # not a package: the dotted path starts below it
        parts.append(folders[depth - 1])
    return not any(_private(part) for part in parts)


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__") and len(name) > 4)


_DOCUMENTED_DUNDERS = frozenset({"__call__", "__new__"})
"""Dunder methods ruff asks a docstring of under D102, as a plain method; the rest are D105 and D107."""


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
        packages = {f.path.rpartition("/")[0] for f in workspace.python_files if f.path.endswith("/__init__.py")}
        for file in workspace.python_files:
            if not is_public_module(file.path, packages) or (
                self.limits.docs_skip_tests and is_test_module(file.path)
            ):
                continue
            findings.extend(self._module(file))
        return findings

    def _module(self, file: SourceFile) -> list[Finding]:
        shape = file.outline
        if shape is None:
            return []  # does not parse: the audit reports it, the docs can wait
        noqa = _Noqa(file.lexed.comments)
        return [f for f in self._missing(file, shape) if not noqa.suppresses(f.rule, f.line)]

    def _missing(self, file: SourceFile, shape: Outline) -> list[Finding]:
        found: list[Finding] = []
        if not shape.has_docstring and not shape.empty:
            package = file.path.endswith("/__init__.py") or file.path == "__init__.py"
            rule, what = ("D104", "package") if package else ("D100", "module")
            found.append(self._finding(rule, file.path, 1, "", f"public {what} has no docstring"))
        for definition in shape.definitions:
            if definition.public and not definition.has_docstring and not definition.inherits_doc and not (
                _dunder_method(definition)
            ):
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


_CODES = r"(?::\s*(?P<codes>[A-Z]+[0-9]+(?:\s*,\s*[A-Z]+[0-9]+)*))?"
_LINE_NOQA = re.compile(r"#\s*noqa" + _CODES, re.IGNORECASE)
_FILE_NOQA = re.compile(r"#\s*(?:flake8|ruff)\s*:\s*noqa" + _CODES, re.IGNORECASE)


class _Noqa:
    """The `# noqa` comments of a file, honored as ruff honors them: `# noqa` or `# noqa: D102` on the
    reported line, `# ruff: noqa` or `# flake8: noqa` (optionally with codes) for the whole file."""

    def __init__(self, comments: Sequence[Comment]) -> None:
        self.lines: dict[int, frozenset[str] | None] = {}
        self.file: frozenset[str] | None = frozenset()  # None: every rule
        for comment in comments:
            if "noqa" not in comment.text.lower():
                continue
            if match := _FILE_NOQA.search(comment.text):
                codes = _codes(match)
                self.file = None if codes is None or self.file is None else self.file | codes
            elif match := _LINE_NOQA.search(comment.text):
                self.lines[comment.line] = _codes(match)

    def suppresses(self, rule: str, line: int) -> bool:
        """Whether a finding of `rule` at `line` is silenced."""
        if self.file is None or rule in self.file:
            return True
        if line not in self.lines:
            return False
        codes = self.lines[line]
        return codes is None or rule in codes


def _codes(match: re.Match[str]) -> frozenset[str] | None:
    codes = match.group("codes")
    return None if codes is None else frozenset(c.strip().upper() for c in codes.split(","))


def _dunder_method(definition: Definition) -> bool:
    """A dunder method whose docstring rule (D105, D107) this source does not check."""
    name = definition.qualname.rpartition(".")[2]
    return name.startswith("__") and name.endswith("__") and name not in _DOCUMENTED_DUNDERS


def _describe(definition: Definition) -> tuple[str, str]:
    if definition.kind == "class":
        return "D101", "class"
    if "." in definition.qualname:
        return "D102", "method"
    return "D103", "function"

"""The outline of a Python module: its functions and classes, found once and shared by the sources.

Only statements are visited (a function cannot be defined inside an expression), which is several
times cheaper than `ast.walk` over every node.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Literal

_DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
_COMPOUND = (ast.If, ast.For, ast.AsyncFor, ast.While, ast.With, ast.AsyncWith, ast.Try, ast.TryStar, ast.Match)
# Decorators after which a missing docstring is expected: the documented definition is elsewhere.
_INHERITS_DOC = frozenset({"overload", "override", "setter", "deleter"})


@dataclass(frozen=True, slots=True)
class Definition:
    """A `def` or `class` statement, with what the docs and size rules need to know about it."""

    kind: Literal["function", "class"]
    qualname: str
    line: int
    end_line: int
    has_docstring: bool
    public: bool
    """Part of the module's public API, as ruff decides it: a name without a leading underscore, or a
    dunder method (`__call__`, `__eq__`), not nested in a function, inside public classes."""
    parameters: int
    """Parameters a caller passes: `self`/`cls` of methods, `*args` and `**kwargs` are not counted."""
    inherits_doc: bool
    """An overload, override or property setter/deleter, documented where its sibling is."""

    @property
    def lines(self) -> int:
        """Length in lines, from the `def`/`class` line to the last line of the body."""
        return self.end_line - self.line + 1


@dataclass(frozen=True, slots=True)
class Outline:
    """A module's docstring status, its `__all__` if it declares one, and every definition in it."""

    has_docstring: bool
    empty: bool
    """No statements at all (an `__init__.py` that only marks a package)."""
    exported: frozenset[str] | None
    definitions: tuple[Definition, ...]


def outline(tree: ast.Module) -> Outline:
    """Collect the definitions of a parsed module, nested ones included, in source order."""
    exported = _exported(tree)
    found: list[Definition] = []
    _visit(tree.body, "", found, public=True, in_class=False, exported=exported)
    return Outline(
        has_docstring=_has_docstring(tree.body), empty=not tree.body, exported=exported, definitions=tuple(found)
    )


def _visit(
    body: list[ast.stmt], prefix: str, found: list[Definition], *, public: bool, in_class: bool,
    exported: frozenset[str] | None,
) -> None:
    for node in body:
        if isinstance(node, _DEFINITIONS):
            is_class = isinstance(node, ast.ClassDef)
            dunder_method = in_class and not is_class and node.name.startswith("__") and node.name.endswith("__")
            visible = public and (not node.name.startswith("_") or dunder_method)
            if exported is not None and not prefix:
                visible = node.name in exported
            found.append(
                Definition(
                    kind="class" if is_class else "function",
                    qualname=prefix + node.name,
                    line=node.lineno,
                    end_line=node.end_lineno or node.lineno,
                    has_docstring=_has_docstring(node.body),
                    public=visible,
                    parameters=0 if isinstance(node, ast.ClassDef) else _parameters(node, method=in_class),
                    inherits_doc=any(_decorator_name(d) in _INHERITS_DOC for d in node.decorator_list),
                )
            )
            # Whatever is defined inside a function is private to it.
            _visit(node.body, f"{prefix}{node.name}.", found, public=visible and is_class, in_class=is_class,
                   exported=exported)
        elif isinstance(node, _COMPOUND):
            for inner in _blocks(node):
                _visit(inner, prefix, found, public=public, in_class=in_class, exported=exported)


def _blocks(node: ast.stmt) -> list[list[ast.stmt]]:
    """The statement lists nested in a compound statement (if/for/while/with/try/match)."""
    if isinstance(node, ast.Try | ast.TryStar):
        return [node.body, *(h.body for h in node.handlers), node.orelse, node.finalbody]
    if isinstance(node, ast.Match):
        return [case.body for case in node.cases]
    if isinstance(node, ast.If | ast.For | ast.AsyncFor | ast.While):
        return [node.body, node.orelse]
    assert isinstance(node, ast.With | ast.AsyncWith)
    return [node.body]


def _has_docstring(body: list[ast.stmt]) -> bool:
    first = body[0] if body else None
    return (
        isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str)
    )


def _parameters(node: ast.FunctionDef | ast.AsyncFunctionDef, *, method: bool) -> int:
    args = node.args
    count = len(args.posonlyargs) + len(args.args) + len(args.kwonlyargs)
    static = any(_decorator_name(d) == "staticmethod" for d in node.decorator_list)
    if method and not static and (args.posonlyargs or args.args):
        count -= 1  # self or cls is supplied by Python, not by the caller
    return count


def _decorator_name(node: ast.expr) -> str:
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.id if isinstance(node, ast.Name) else ""


def _exported(tree: ast.Module) -> frozenset[str] | None:
    """The names in a literal `__all__ = [...]`, or None when the module does not declare one."""
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets) and isinstance(
                node.value, ast.List | ast.Tuple
            ):
                return frozenset(
                    e.value for e in node.value.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)
                )
    return None


def enclosing(definitions: tuple[Definition, ...], line: int) -> str:
    """The qualified name of the innermost definition around `line`, or "" at module level."""
    name = ""
    for definition in definitions:
        # Parents come before their children, so the last match is the innermost one.
        if definition.line <= line <= definition.end_line:
            name = definition.qualname
    return name

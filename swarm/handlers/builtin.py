"""Built-in handlers for discovery's task kinds: consolidation, audit, docs and todo.

Each reads the findings listed in the task body (`- \\`path:line\\` rule: message`, as discovery
writes them), looks at the code in the workspace, and writes a work order to
`<SWARM_HOME>/artifacts/<task-id>.md`: every finding with file:line, the code it is about, and what
to change; for docs, a drafted docstring per object. The handler does not edit the workspace: the
artifact is the proposal a person or an AI coding agent applies.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import anyio

from swarm.agent import Context
from swarm.board import Task
from swarm.errors import SwarmError
from swarm.handlers import BUILTIN_KINDS


class UnknownKind(SwarmError):
    """Raised (failing the task) when the built-in handler is given a kind it does not do."""

FINDING = re.compile(r"^- `(?P<path>[^`]+?)(?::(?P<line>\d+)(?:-(?P<end>\d+))?)?` (?P<rule>[^:]+): (?P<message>.*)$")

ADVICE = {
    "file-too-long": "split the module by responsibility; move each cohesive group of functions to its own module",
    "class-too-long": "extract collaborators: move groups of methods that share state into their own classes",
    "function-too-long": "extract the steps into well-named helper functions; keep one level of abstraction",
    "too-many-parameters": "group related parameters into a dataclass or settings object, or make some keyword-only",
    "C901": "reduce branching: return early, replace condition chains with a lookup table, extract helpers",
    "S101": "replace `assert` used for validation with an explicit check that raises a proper error",
    "S105": "move the secret out of the code into the environment or a secret store",
    "S106": "move the secret out of the code into the environment or a secret store",
    "S108": "use `tempfile` for temporary files instead of a hard-coded /tmp path",
    "S110": "log the exception (or handle it) instead of `try`/`except`/`pass`",
    "S112": "log the exception (or handle it) instead of `try`/`except`/`continue`",
    "S113": "pass a timeout to every HTTP request",
    "S301": "never unpickle untrusted data; use JSON or another safe format",
    "S307": "replace `eval` with `ast.literal_eval` or explicit parsing",
    "S311": "use `secrets` for anything security-sensitive",
    "S324": "use SHA-256 or better (or pass usedforsecurity=False for non-security hashes)",
    "S602": "run the command without a shell: pass an argument list",
    "S603": "check that the command's arguments cannot come from untrusted input",
    "S608": "use query parameters instead of building SQL with string formatting",
    "TODO": "do what the comment asks, or move it to the tracker and delete the comment",
    "FIXME": "fix the defect the comment describes and add a test that would have caught it",
    "XXX": "resolve the concern the comment flags, or explain it in a proper comment",
    "HACK": "replace the workaround with a proper fix, or document why it must stay",
    "duplicate-block": "extract the block into one function in a shared module and call it from every copy",
}
DEFAULT_ADVICE = "fix the finding as its rule describes, then rerun `swarm discover` to confirm it is gone"


@dataclass(frozen=True, slots=True)
class Item:
    """One finding parsed back from a task body."""

    path: str
    line: int
    end: int
    rule: str
    message: str

    @property
    def location(self) -> str:
        """`path:line` or `path:start-end`, as the finding was listed."""
        if not self.line:
            return self.path
        return f"{self.path}:{self.line}" + (f"-{self.end}" if self.end != self.line else "")


def parse(body: str) -> list[Item]:
    """The findings listed in a task body."""
    items = []
    for raw in body.splitlines():
        m = FINDING.match(raw.strip())
        if m:
            line = int(m["line"] or 0)
            items.append(Item(m["path"], line, int(m["end"] or line), m["rule"].strip(), m["message"].strip()))
    return items


async def handle(task: Task, ctx: Context) -> str:
    """Write the work order for `task` to the artifacts folder; return a one-line summary."""
    if task.kind not in BUILTIN_KINDS:  # never pretend: a kind it knows nothing of fails, with the reason
        raise UnknownKind(f"the built-in handler does not do {task.kind!r} tasks (it does "
                          f"{', '.join(BUILTIN_KINDS)}); run an agent with a handler for them (--handler)")
    items = parse(task.body)
    root = ctx.workspace
    writer = {"docs": _docs, "consolidation": _consolidation}.get(task.kind, _findings)
    text = await anyio.to_thread.run_sync(writer, task, items, root)
    out = ctx.artifacts / f"{task.id}.md"
    out.write_text(text, encoding="utf-8")
    return f"{len(items)} finding(s) written up in {out}"


def _header(task: Task, items: list[Item]) -> list[str]:
    return [f"# {task.title}", "", f"Task `{task.id}` ({task.kind}), {len(items)} finding(s).", ""]


def _snippet(root: Path, item: Item, context: int = 2, most: int = 12) -> str:
    try:
        lines = (root / item.path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "(file not readable now)"
    if not item.line:
        return ""
    start = max(1, item.line - context)
    end = min(len(lines), max(item.end, item.line) + context, start + most - 1)
    width = len(str(end))
    return "\n".join(f"{n:>{width}} | {lines[n - 1]}" for n in range(start, end + 1))


def _findings(task: Task, items: list[Item], root: Path) -> str:
    out = _header(task, items)
    for item in items:
        out += [f"## `{item.location}` {item.rule}", "", item.message, "",
                f"**What to change:** {ADVICE.get(item.rule, DEFAULT_ADVICE)}.", ""]
        code = _snippet(root, item)
        if code:
            out += ["```", code, "```", ""]
    return "\n".join(out)


def _consolidation(task: Task, items: list[Item], root: Path) -> str:
    out = _header(task, items)
    out += ["Every copy of the block:", ""]
    out += [f"- `{item.location}`" for item in items]
    if items:
        first = items[0]
        target = Path(first.path).with_name("shared").as_posix()
        out += ["", "The block (first copy):", "", "```", _snippet(root, first, context=0, most=40), "```", "",
                f"**What to change:** {ADVICE['duplicate-block']} (for example `{target}`), "
                f"then replace the {len(items)} copies with calls to it.", ""]
    return "\n".join(out)


def _docs(task: Task, items: list[Item], root: Path) -> str:
    out = _header(task, items)
    trees: dict[str, ast.Module | None] = {}
    for item in items:
        out += [f"## `{item.location}` {item.rule}", "", item.message, ""]
        if item.rule == "README":
            out += ["Drafted page:", "", "```markdown", f"# {root.name}", "",
                    "One sentence on what this project does and for whom.", "", "## Install", "", "## Use", "",
                    "```", ""]
            continue
        if item.path not in trees:
            try:
                trees[item.path] = ast.parse((root / item.path).read_text(encoding="utf-8", errors="replace"))
            except (OSError, SyntaxError):
                trees[item.path] = None
        node = _node_at(trees[item.path], item.line)
        out += ["Drafted docstring:", "", "```python", _draft(node, item), "```", ""]
    return "\n".join(out)


def _node_at(tree: ast.Module | None, line: int) -> ast.AST | None:
    if tree is None:
        return None
    if line <= 1:
        return tree
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and node.lineno == line:
            return node
    return None


def _words(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", " ", name).replace("_", " ").strip().lower()


def _third_person(verb: str) -> str:
    """`get` -> `gets`, `copy` -> `copies`, `fix` -> `fixes`: a summary line reads as a sentence."""
    if verb.endswith(("s", "x", "z", "ch", "sh")):
        return verb + "es"
    if len(verb) > 1 and verb.endswith("y") and verb[-2] not in "aeiou":
        return verb[:-1] + "ies"
    return verb + "s"


def _draft(node: ast.AST | None, item: Item) -> str:
    if isinstance(node, ast.ClassDef):
        return f'"""A {_words(node.name)}: what it holds and when to use it."""'
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        params = [a.arg for a in (*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs)
                  if a.arg not in ("self", "cls")]
        verb, *rest = _words(node.name).split(" ")
        summary = " ".join([_third_person(verb).capitalize(), *rest]) + "."
        lines = ['"""' + summary]
        if params:
            lines += ["", "Args:"] + [f"    {p}: what `{p}` is." for p in params]
        if node.returns is not None and not (isinstance(node.returns, ast.Constant) and node.returns.value is None):
            lines += ["", "Returns:", f"    {ast.unparse(node.returns)}: what it returns."]
        return "\n".join(lines) + '\n"""'
    module = Path(item.path).stem
    return f'"""{module}: what this module provides and how its parts fit together."""'

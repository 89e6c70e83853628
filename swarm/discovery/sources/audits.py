"""Audits: security findings from ruff, and size/compliance limits, one task per file and category.

Security and complexity come from ruff (its flake8-bandit `S` rules and mccabe `C901`, read through
`--output-format json`), a maintained analyzer rather than rules written here. ruff runs in its own
process while the size rules are checked, so its time mostly hides behind ours. It runs with
`--isolated`: findings depend on the limits given here, not on a config file in the scanned tree;
`# noqa` comments are still honored. Without ruff the size rules still run, a warning is logged and
one `ruff-unavailable` finding says that the security rules were skipped.

Size rules: files (every language) over `max_file_lines`; Python functions over `max_function_lines`,
classes over `max_class_lines`, functions taking more than `max_parameters` parameters.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

from swarm.discovery.findings import Finding, Severity, TaskDraft, draft, plural, stable_key
from swarm.discovery.outline import enclosing
from swarm.discovery.sources import Source
from swarm.discovery.workspace import SourceFile, Workspace

log = structlog.get_logger("swarm.discovery")

UNAVAILABLE = "ruff-unavailable"
FAILED = "ruff-failed"
_ARGS_CHARS = 100_000  # file names per ruff run: far below any OS's command-line limit
_TIMEOUT_S = 600
_RULE_CODE = re.compile(r"^[A-Z]+[0-9]+$")
_SECURITY = re.compile(r"^S[0-9]+$")
_HIGH = frozenset({"S102", "S301", "S307", "S323", "S501", "S506", "S602", "S604", "S605", "S608", "S701"})
"""exec, pickle, eval, unverified TLS, unsafe YAML, shell injection, SQL injection, unescaped templates."""


def find_ruff(configured: str | None = None) -> str | None:
    """The ruff binary: the configured one, else the one installed beside this interpreter, else PATH."""
    if configured:
        return configured
    beside = Path(sys.executable).parent / ("ruff.exe" if sys.platform == "win32" else "ruff")
    return str(beside) if beside.is_file() else shutil.which("ruff")


class AuditSource(Source):
    """Security (ruff) and size/compliance findings."""

    name = "audit"
    kind = "audit"

    def scan(self, workspace: Workspace) -> list[Finding]:
        """Size findings for every file, plus ruff's findings for the Python ones."""
        runs = self._start_ruff(workspace, workspace.python_files)  # runs while the files are analyzed here
        try:
            workspace.analyze()
            findings: list[Finding] = []
            for file in workspace.files:
                findings.extend(self._sizes(file))
            findings.extend(self._collect(workspace, runs))
            return findings
        finally:
            for run in runs if isinstance(runs, list) else ():
                if run.poll() is None:  # only after an error: _collect waits for every run
                    run.kill()
                    run.wait()

    # --- size and compliance ----------------------------------------------------------------------

    def _sizes(self, file: SourceFile) -> list[Finding]:
        limits = self.limits
        found = []
        if file.line_count > limits.max_file_lines:
            message = f"{file.line_count} lines (limit {limits.max_file_lines})"
            found.append(self._finding("file-too-long", file.path, 0, "", message))
        shape = file.outline
        for d in shape.definitions if shape else ():
            if d.kind == "class" and d.lines > limits.max_class_lines:
                found.append(
                    self._finding("class-too-long", file.path, d.line, d.qualname,
                                  f"class `{d.qualname}` is {d.lines} lines (limit {limits.max_class_lines})")
                )
            if d.kind == "function" and d.lines > limits.max_function_lines:
                found.append(
                    self._finding("function-too-long", file.path, d.line, d.qualname,
                                  f"function `{d.qualname}` is {d.lines} lines (limit {limits.max_function_lines})")
                )
            if d.kind == "function" and d.parameters > limits.max_parameters:
                found.append(
                    self._finding("too-many-parameters", file.path, d.line, d.qualname,
                                  f"`{d.qualname}` takes {d.parameters} parameters (limit {limits.max_parameters})")
                )
        return found

    def _finding(
        self, rule: str, path: str, line: int, symbol: str, message: str, severity: Severity = Severity.LOW,
        identity: tuple[str, ...] = (),
    ) -> Finding:
        return Finding(
            source=self.name, rule=rule, severity=severity, path=path, line=line, message=message,
            key=stable_key(self.name, rule, path, symbol, *identity), symbol=symbol,
        )

    # --- ruff ---------------------------------------------------------------------------------------

    def _start_ruff(self, workspace: Workspace, files: list[SourceFile]) -> list[subprocess.Popen[bytes]] | str:
        """ruff processes already running over `files` in batches, or why none could be started."""
        if not files:
            return []
        binary = find_ruff(self.limits.ruff_path)
        if binary is None:
            return "ruff is not installed"
        limits = self.limits
        command = [
            binary, "check", "--isolated", "--no-cache", "--exit-zero", "--output-format", "json",
            "--select", ",".join(limits.ruff_select),
            "--config", f"lint.mccabe.max-complexity = {limits.max_complexity}",
        ]
        if limits.ruff_ignore:
            command += ["--ignore", ",".join(limits.ruff_ignore)]
        command.append("--")
        batches: list[list[str]] = [[]]
        size = 0
        for file in files:
            if size > _ARGS_CHARS:
                batches.append([])
                size = 0
            batches[-1].append(file.path)
            size += len(file.path) + 1
        try:
            return [
                subprocess.Popen([*command, *batch], cwd=workspace.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                for batch in batches
            ]
        except OSError as exc:
            return f"ruff at {binary!r} could not be started ({exc})"

    def _collect(self, workspace: Workspace, runs: list[subprocess.Popen[bytes]] | str) -> list[Finding]:
        if isinstance(runs, str):
            return [self._skipped(UNAVAILABLE, runs)]
        results: list[dict[str, Any]] = []
        for run in runs:
            try:
                out, err = run.communicate(timeout=_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                run.kill()
                run.communicate()
                return [self._skipped(FAILED, f"ruff did not finish within {_TIMEOUT_S} s")]
            try:
                results.extend(json.loads(out))
            except ValueError:
                detail = " ".join(err.decode(errors="replace").split())[:300] or "no output"
                return [self._skipped(FAILED, f"ruff exited {run.returncode}: {detail}")]
        files = {str(f.absolute): f for f in workspace.python_files}
        lines: dict[str, list[str]] = {}
        found: list[Finding] = []
        seen: Counter[tuple[str, ...]] = Counter()
        for result in sorted(results, key=lambda r: (r["filename"], r["location"]["row"], str(r["code"]))):
            code, row = result["code"], result["location"]["row"]
            file = files.get(result["filename"])
            if file is None or not isinstance(code, str) or not _RULE_CODE.match(code):
                continue  # `invalid-syntax` and the like: not a finding of the rules asked for
            shape = file.outline
            symbol = enclosing(shape.definitions, row) if shape else ""
            source = lines.setdefault(file.path, file.text.splitlines())
            # Identity is the rule, the place by name and the flagged code itself, not its line number.
            text = " ".join(source[row - 1].split()) if 0 < row <= len(source) else ""
            seen[code, file.path, symbol, text] += 1
            found.append(
                self._finding(
                    code, file.path, row, symbol, _message(result), _severity(code),
                    (text, str(seen[code, file.path, symbol, text])),
                )
            )
        return found

    def _skipped(self, rule: str, why: str) -> Finding:
        rules = ", ".join(self.limits.ruff_select)
        log.warning("security rules skipped", reason=why, rules=rules)
        fix = (
            "install ruff (pip install ruff) or set ruff_path"
            if rule == UNAVAILABLE
            else "check the ruff_select and ruff_ignore limits and that ruff runs"
        )
        return self._finding(rule, ".", 0, "", f"{why}; rules {rules} were skipped: {fix}", Severity.MEDIUM)

    # --- tasks --------------------------------------------------------------------------------------

    def group(self, findings: Sequence[Finding]) -> list[TaskDraft]:
        """One task per file for security, one per file for size and complexity."""
        groups: dict[tuple[str, str], list[Finding]] = {}
        for f in findings:
            groups.setdefault((_category(f.rule), f.path), []).append(f)
        drafts = []
        for (category, path), items in groups.items():
            if category == "tooling":
                title, intro = "Make the security audit run: ruff is missing or failed", items[0].message
            elif category == "security":
                title = f"Fix {plural(len(items), 'security finding')} in {path}"
                intro = "ruff's security rules flagged these lines. Fix each, or mark a false positive with " \
                        "`# noqa: <code>` and a comment saying why it is safe."
            else:
                title = f"Reduce size and complexity in {path} ({plural(len(items), 'finding')})"
                intro = "Split what is over the limits into smaller, well-named units; behaviour must not change."
            drafts.append(draft("audit", title, intro, items, category, path))
        return drafts


def _category(rule: str) -> str:
    if rule in (UNAVAILABLE, FAILED):
        return "tooling"
    return "security" if _SECURITY.match(rule) else "size"


def _message(result: dict[str, Any]) -> str:
    name = result.get("name")  # the rule's name: in ruff's JSON since 0.5, absent before
    return f"{result['message']} ({name})" if name else str(result["message"])


def _severity(code: str) -> Severity:
    if code in _HIGH:
        return Severity.HIGH
    return Severity.MEDIUM if _SECURITY.match(code) else Severity.LOW

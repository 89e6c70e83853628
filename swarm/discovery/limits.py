"""The thresholds the work sources apply: clone size, size/compliance limits, analyzer choices.

A plain pydantic model rather than part of `swarm.settings.Settings`, so a source can be built and
tested on its own. No setting, environment variable or CLI option changes it: swarm runs with the
defaults below. Code can pass other limits to `load_sources`, to a `Workspace`, or to `Discovery`,
which hands them to the sources it loads but scans with a default `Workspace` (so its
`max_file_bytes` stays the default).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class DiscoveryLimits(BaseModel):
    """Thresholds for the built-in sources. Defaults follow the issue that introduced them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    clone_min_tokens: int = Field(50, ge=1, description="A duplicate block must have at least this many tokens.")
    clone_min_lines: int = Field(5, ge=2, description="...and at least this many non-blank code lines.")
    clone_max_copies: int = Field(
        20, ge=2, description="Blocks repeated more often are boilerplate (tables, generated code), not clones."
    )
    max_file_lines: int = Field(400, ge=1, description="Files longer than this are reported.")
    max_function_lines: int = Field(30, ge=1, description="Functions longer than this are reported (Python).")
    max_class_lines: int = Field(200, ge=1, description="Classes longer than this are reported (Python).")
    max_parameters: int = Field(
        5, ge=0, description="Functions taking more parameters are reported; self, cls, *args, **kwargs do not count."
    )
    max_complexity: int = Field(10, ge=1, description="McCabe complexity limit passed to ruff's C901.")
    ruff_select: tuple[str, ...] = Field(("S", "C901"), description="ruff rule codes or prefixes the audit runs.")
    ruff_ignore: tuple[str, ...] = Field(
        ("S101",), description="ruff rules left out: `assert` is how tests speak, not a vulnerability."
    )
    ruff_path: str | None = Field(None, description="The ruff binary; unset = next to the interpreter, then PATH.")
    docs_skip_tests: bool = Field(True, description="Test modules (tests/, test_*.py, conftest.py) need no docstrings.")
    max_file_bytes: int = Field(1_000_000, ge=1, description="Bigger files are generated or data; they are skipped.")
    todo_tags: tuple[str, ...] = Field(("TODO", "FIXME", "XXX"), description="Comment tags the todo source reports.")

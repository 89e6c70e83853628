"""The thresholds the work sources apply: clone size, size/compliance limits, analyzer choices.

Settings of their own, read from `SWARM_DISCOVERY_*` environment variables (as the repetition
detector's are from `SWARM_REPETITION_*`): `SWARM_DISCOVERY_MAX_FILE_LINES=600`, and JSON for the
lists, `SWARM_DISCOVERY_RUFF_SELECT='["S", "C901"]'`. `swarm discover --limit max_file_lines=600`
sets one for a run. A source can still be built and tested on its own with explicit values
(`DiscoveryLimits(max_file_lines=600)`); `Discovery` hands its limits to the sources it loads and to
the walk of the tree (`max_file_bytes`).
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from swarm.errors import ConfigError


class DiscoveryLimits(BaseSettings):
    """Thresholds for the built-in sources. Defaults follow the issue that introduced them."""

    model_config = SettingsConfigDict(env_prefix="SWARM_DISCOVERY_", frozen=True, extra="forbid")

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


def with_overrides(limits: DiscoveryLimits, assignments: Iterable[str]) -> DiscoveryLimits:
    """`limits` with `name=value` assignments applied (what `swarm discover --limit` takes).

    Values are parsed as the field's type (a list as JSON or comma-separated). A ConfigError names
    the bad assignment and says how to fix it.
    """
    fields = DiscoveryLimits.model_fields
    update: dict[str, object] = {}
    for assignment in assignments:
        name, sep, value = assignment.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in fields:
            raise ConfigError(
                f"--limit {assignment!r} is not NAME=VALUE with a known NAME; the limits are: {', '.join(fields)}"
            )
        value = value.strip()
        if fields[name].annotation == tuple[str, ...] and not value.startswith("["):
            update[name] = tuple(v.strip() for v in value.split(",") if v.strip())
        else:
            update[name] = value
    try:
        return DiscoveryLimits.model_validate({**limits.model_dump(), **update})
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = str(problem["loc"][0]) if problem["loc"] else "?"
        raise ConfigError(f"--limit {where}={update.get(where)!s}: {problem['msg']}") from None

"""The roster: one TOML card per agent in a folder (`agents/` by default), validated as a whole.

A card:

    name = "agent-1"
    capabilities = ["audit", "docs"]
    concurrency = 2
    handler = "builtin"            # or "cmd:...", "reviewer.py:handle", "pkg.mod:handle"
    roles = ["reviewer"]           # optional: also reads messages to @role:reviewer
    captain = false                # true: this card runs the captain instead of a worker
    enabled = true                 # false: `swarm up` skips it (a recipe to turn on)
    timeout_s = 600                # a `cmd:` handler's time limit per task
    workspace = "shared"           # or "worktree": each task in a git worktree of its own
    verify = "pytest -q"           # optional: must pass in the task's workspace before it is done
    verify_timeout_s = 600         # the verifier is killed past it, and the task fails
    [env]                          # optional: extra environment for the process and its commands
    LOG_LEVEL = "debug"

Every error names the file and the field, so a broken roster is fixed in one pass.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from swarm.errors import ConfigError
from swarm.handlers import BUILTIN_KINDS
from swarm.protocol import AGENT_PATTERN, CAP_PATTERN
from swarm.registry import AgentCard


class RosterCard(BaseModel):
    """One agent as its card file describes it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=AGENT_PATTERN)
    capabilities: tuple[str, ...] = ()
    concurrency: int = Field(1, ge=1, le=256)
    prefetch: int = Field(0, ge=0, le=1024)
    handler: str = "builtin"
    roles: tuple[str, ...] = ()
    captain: bool = False
    grace_s: float = Field(10.0, ge=0)
    enabled: bool = True
    timeout_s: float = Field(600.0, gt=0)
    workspace: Literal["shared", "worktree"] = "shared"
    verify: str = ""
    verify_timeout_s: float = Field(600.0, gt=0)
    budget_usd: float | None = Field(None, ge=0)
    env: dict[str, str] = Field(default_factory=dict)
    path: Path = Field(Path(), exclude=True)

    @field_validator("capabilities")
    @classmethod
    def _caps(cls, caps: tuple[str, ...]) -> tuple[str, ...]:
        import re  # noqa: PLC0415

        for cap in caps:
            if not re.match(CAP_PATTERN, cap):
                raise ValueError(f"capability {cap!r} must be '*' or lowercase letters, digits, '_' or '-'")
        return caps

    @model_validator(mode="after")
    def _capabilities_for_the_handler(self) -> RosterCard:
        # An agent takes only the kinds its handler does: the built-in handler's own, or what the
        # card names for any other handler (it cannot be guessed; `*` is a choice, never a default).
        if self.capabilities or self.captain:
            return self
        if self.handler.strip() == "builtin":
            object.__setattr__(self, "capabilities", BUILTIN_KINDS)
            return self
        raise ValueError(f"capabilities are missing for handler {self.handler!r}: name the task kinds it does, "
                         "e.g. --can audit,docs or capabilities = [\"audit\"] (or '*' for any kind)")

    def agent_card(self) -> AgentCard:
        """The registry card for this agent."""
        return AgentCard(name=self.name, capabilities=self.capabilities, roles=self.roles,
                         concurrency=self.concurrency, budget_usd=self.budget_usd)


def load_card(path: Path) -> RosterCard:
    """Read and validate one card file."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        return RosterCard.model_validate({**data, "path": path})
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in err["loc"]) or "card"
        msg = err["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{path}: field '{where}': {msg}") from None


def load_roster(folder: Path) -> list[RosterCard]:
    """Every `*.toml` card in `folder`, sorted by name, disabled ones included (`swarm up` skips
    them); names unique, at most one captain, and each handler resolvable (so a typo fails here, not
    at the first task, nor on the day a disabled card is turned on)."""
    from swarm.handlers import load_handler  # noqa: PLC0415 - handlers import the agent runtime

    if not folder.is_dir():
        raise ConfigError(f"roster folder {folder} does not exist; pass --agents DIR with one TOML card per agent")
    cards = [load_card(p) for p in sorted(folder.glob("*.toml"))]
    if not cards:
        raise ConfigError(f"roster folder {folder} has no *.toml cards; see agents/README.md for the format")
    seen: dict[str, Path] = {}
    for card in cards:
        if card.name in seen:
            raise ConfigError(f"{card.path}: field 'name': {card.name!r} is also used by {seen[card.name]}")
        seen[card.name] = card.path
        if not card.captain:
            try:
                load_handler(card.handler, folder)
            except ConfigError as exc:
                raise ConfigError(f"{card.path}: field 'handler': {exc}") from None
    captains = [c for c in cards if c.captain]
    if len(captains) > 1:
        raise ConfigError(f"{captains[1].path}: field 'captain': only one card may be the captain "
                          f"({captains[0].path} is already)")
    return sorted(cards, key=lambda c: c.name)

"""Work sources: plugins that scan a workspace for findings and group them into proposed tasks.

A source is a subclass of `Source` registered under the entry-point group `swarm.sources`, for
example in a plugin's pyproject.toml:

    [project.entry-points."swarm.sources"]
    licenses = "my_plugin.licenses:LicenseSource"

`load_sources` finds them; the four built-ins (consolidation, audit, docs, todo) are found even
when the package metadata is not installed (running from a source checkout).

A source's name is the kind of the tasks it makes, so `--kind`, an agent's capabilities and the
source it needs are one word. The audit source was called `audits` (it made `audit` tasks): that
name still loads it (`load_sources(["audits"])`, `swarm discover --kind audits`, an installed entry
point of that name), and its index of found tasks is taken over on its first rescan.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from importlib.metadata import entry_points
from typing import ClassVar

import structlog

from swarm.discovery.findings import Finding, TaskDraft, TaskKind
from swarm.discovery.limits import DiscoveryLimits
from swarm.discovery.workspace import Workspace
from swarm.errors import ConfigError

log = structlog.get_logger("swarm.discovery")

GROUP = "swarm.sources"
"""The entry-point group sources register under."""

BUILTINS = {
    "consolidation": "swarm.discovery.sources.consolidation:ConsolidationSource",
    "audit": "swarm.discovery.sources.audits:AuditSource",
    "docs": "swarm.discovery.sources.docs:DocsSource",
    "todo": "swarm.discovery.sources.todo:TodoSource",
}

FORMER_NAMES = {"audits": "audit"}
"""Names a built-in source had before it was named after its task kind -> its name now."""


def former_names(name: str) -> tuple[str, ...]:
    """The names source `name` had before (whose index of found tasks it takes over)."""
    return tuple(old for old, new in FORMER_NAMES.items() if new == name)


class Source(ABC):
    """One kind of work discovery can find. Subclasses set `name` and implement both methods.

    `scan` must be deterministic: the same tree gives the same findings with the same keys, which is
    what lets a rescan recognise work it already proposed.
    """

    name: ClassVar[str]
    """The entry-point name, also the `source` of every finding it makes and the kind of its tasks."""
    kind: ClassVar[TaskKind]
    """The kind of task its findings become: the same word as `name` (every built-in's is)."""

    def __init__(self, limits: DiscoveryLimits | None = None) -> None:
        self.limits = limits or DiscoveryLimits()

    @abstractmethod
    def scan(self, workspace: Workspace) -> list[Finding]:
        """Every finding in the workspace, in a stable order."""

    @abstractmethod
    def group(self, findings: Sequence[Finding]) -> list[TaskDraft]:
        """Findings of this source grouped into tasks of a sensible size."""

    def drafts(self, workspace: Workspace) -> list[TaskDraft]:
        """`scan` then `group`: the tasks this source proposes for the workspace."""
        return self.group(self.scan(workspace))


def load_sources(names: Iterable[str] | None = None, limits: DiscoveryLimits | None = None) -> list[Source]:
    """Build the sources called `names` (all registered ones when None), each with `limits`.

    A plugin named explicitly that fails to load is an error; when loading every source, a broken
    third-party plugin is logged and left out so it cannot stop discovery.
    """
    registered = {FORMER_NAMES.get(ep.name, ep.name): ep.value for ep in entry_points(group=GROUP)}
    available = {**BUILTINS, **registered}
    wanted = sorted(available) if names is None else list(dict.fromkeys(FORMER_NAMES.get(n, n) for n in names))
    sources: list[Source] = []
    for name in wanted:
        if name not in available:
            raise ConfigError(
                f"unknown work source {name!r}; known sources: {', '.join(sorted(available))} "
                f"(plugins register under the entry-point group {GROUP!r})"
            )
        try:
            sources.append(_load(name, available[name], limits))
        except ConfigError:
            if names is not None or name in BUILTINS:
                raise
            log.warning("work source left out", source=name, target=available[name], exc_info=True)
    return sources


def _load(name: str, target: str, limits: DiscoveryLimits | None) -> Source:
    module_name, _, attribute = target.partition(":")
    try:
        obj = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"work source {name!r} points at {target!r}, which cannot be imported ({exc}); "
            "install the plugin or fix its entry point"
        ) from exc
    if not (isinstance(obj, type) and issubclass(obj, Source)):
        raise ConfigError(
            f"work source {name!r} points at {target!r}, which is not a subclass of "
            "swarm.discovery.sources.Source; register the Source class itself"
        )
    return obj(limits)

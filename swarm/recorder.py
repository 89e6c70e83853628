"""What a swarm process records as it works, and the default that records nothing.

`Recorder` is the interface Bus, Agent, Captain and the discovery engine call; its methods do
nothing, so a process built without metrics pays one method call and no branch. `swarm.metrics.Metrics`
overrides them with Prometheus counters. This module imports nothing heavy: the shell verbs that
never export metrics do not load prometheus-client.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


class Recorder:
    """Records nothing; `swarm.metrics.Metrics` is the one that counts."""

    enabled = False
    """True when the figures are kept (worth an extra Redis read to label them well)."""

    def on_publish(self, kind: str) -> None:
        """One message published."""

    def on_publish_many(self, kinds: Iterable[str]) -> None:
        """A batch published."""

    def on_refused(self, reason: str, count: int) -> None:
        """`count` messages were refused by the publish script: `rate_limited` (their sender was over
        its publish rate) or `forbidden` (this Redis user may not send as their sender)."""

    def on_handled(self, group: str, kinds: Sequence[str], failed: Sequence[str]) -> None:
        """A batch of deliveries handled by a consumer: `kinds` acked, `failed` left pending."""

    def on_dead_letter(self, kind: str) -> None:
        """One entry moved to the dead-letter stream."""

    def on_redis_error(self, where: str) -> None:
        """Redis was unreachable from the loop `where`."""

    def on_reconnect(self, where: str) -> None:
        """The loop `where` reached Redis again after it was unreachable."""

    def on_board_events(self, raws: Iterable[bytes]) -> None:
        """Board-event stream entries the leading captain read."""

    def on_leading(self, leading: bool) -> None:
        """The captain took or lost the leader lease."""

    def on_assigned(self, count: int) -> None:
        """The captain assigned `count` tasks."""

    def on_task_taken(self, kind: str, created_ms: int, taken_ms: int) -> None:
        """An agent got a task (assigned or claimed) at `taken_ms` (Redis clock)."""

    def on_task_finished(self, kind: str, outcome: str, created_ms: int, taken_ms: int, finished_ms: int) -> None:
        """An agent finished a task (`done`, `failed` or `lost`)."""

    def on_observed(self) -> None:
        """The discovery engine counted one broadcast message."""

    def on_signal(self, scope: str) -> None:
        """A repetition signal fired (`agent` or `swarm` scope)."""

    def on_scan(self, source: str, findings: int, seconds: float) -> None:
        """A source scanned the workspace."""

    def on_discovered(self, source: str, created: int, obsolete: int) -> None:
        """Findings of `source` became `created` new tasks and closed `obsolete` ones."""

"""Every error swarm raises. Each class says when it is raised.

Messages say what went wrong, show the offending value, and say how to fix it.
Redis errors are translated into these at one boundary (`swarm.connection`).
"""

from __future__ import annotations


class SwarmError(Exception):
    """Root of every error swarm raises on purpose; the CLI prints it as one line."""


class ConfigError(SwarmError):
    """Raised when a setting, environment variable or CLI option has an unusable value."""


class DecodeError(SwarmError):
    """Raised when bytes on the wire are not a valid message; `reason` is what the dead-letter says."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MessageTooLarge(DecodeError):  # noqa: N818 - reads as the condition it names
    """Raised when a message exceeds the size limit, on encode or on decode."""


class ServerError(SwarmError):
    """Raised when the embedded Valkey cannot be found, started or reached."""


class BackendError(SwarmError):
    """Raised when Redis answers with an error swarm did not expect (a translated redis-py error)."""


class ConnectionLost(BackendError):  # noqa: N818 - reads as the condition it names
    """Raised when Redis is unreachable after the retries with backoff are spent."""

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


class MessageTooLarge(DecodeError):
    """Raised when a message exceeds the size limit, on encode or on decode."""


class ServerError(SwarmError):
    """Raised when the embedded Valkey cannot be found, started or reached."""


class BackendError(SwarmError):
    """Raised when Redis answers with an error swarm did not expect (a translated redis-py error).
    `code` is the error's leading word when Redis gave one (`BUSYGROUP`, `NOGROUP`, `NOPERM`)."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class ConnectionLost(BackendError):
    """Raised when Redis is unreachable after the retries with backoff are spent."""


class AuthError(BackendError):
    """Raised at once, never retried, when Redis refuses the credentials of SWARM_REDIS_URL (a missing or
    wrong password, a disabled user: `code` NOAUTH or WRONGPASS) or refuses a command or key to the
    user the URL names (`code` NOPERM). Trying again with the same URL cannot succeed."""


class TaskNotFound(SwarmError):
    """Raised when a task id names no task on the board."""


class StaleToken(SwarmError):
    """Raised when a fencing token is not the task's current one: the caller lost its lease."""


class IllegalTransition(SwarmError):
    """Raised when a task's state does not allow the requested transition (terminal states allow none)."""


class NotReady(IllegalTransition):
    """Raised when assigning a task that is open but waits on dependencies or a retry backoff."""


class Forbidden(SwarmError):
    """Raised when the server's ACL does not let this Redis user act as the agent it names (a user
    made by `swarm acl add`), or do what only a captain may."""


class RateLimited(SwarmError):
    """Raised by `Bus.publish` and `Bus.publish_many` when senders went over their publish rate
    (SWARM_PUBLISH_RATE messages a second each, bursts of SWARM_PUBLISH_BURST): their refused messages
    were not written, every other one was. `ids` has one item per message given, in order: its entry
    id, or None when it was refused; `refused` is how many each sender had refused; `retry_after_s`
    how long until every one of those senders may publish again."""

    def __init__(self, message: str, *, ids: list[str | None], refused: dict[str, int], retry_after_s: float) -> None:
        super().__init__(message)
        self.ids = ids
        self.refused = refused
        self.retry_after_s = retry_after_s


class OverBudget(SwarmError):
    """Raised when reported usage put a task over its own budget: it has failed, stop working on it."""


class NotLeader(SwarmError):
    """Raised when a captain that lost (or never had) the leader lease tries to assign."""


class CommandFailed(SwarmError):
    """Raised by the command handler (`cmd:` cards) when its command is not found, exits non-zero or
    times out; the agent turns it into a task failure."""


class WorkspaceError(SwarmError):
    """Raised when a task's git worktree cannot be made or its changes cannot be committed (the folder
    is not in a git repository, git is not installed, a git command fails): at start-up it says why
    worktrees cannot be used; during a task, the agent fails the task with it."""


class VerificationFailed(SwarmError):
    """Raised when the verifier (a card's `verify`) exits non-zero or runs past its timeout after the
    handler finished: the task fails with the tail of its output (the retry policy applies)."""


class HandlerFailed(SwarmError):
    """Raised when a handler running in a task's worktree fails after it changed files: the changes
    are committed on the task's branch, and the message names it besides the handler's own error."""


class Unauthorized(SwarmError):
    """Raised by `swarm web` when a request that needs a bearer token has none, or one that is expired,
    malformed or not signed with this board's secret (HTTP 401)."""


class WrongRole(Forbidden):
    """Raised by `swarm web` when a valid token's role or agent may not do what the request asks (HTTP 403)."""

"""The JSON the web API takes and gives: request bodies (unknown fields refused) and replies.

Tasks are the board's own `Task` model; refusals are `{"error": <code>, "message": <text>}`, the
codes of the board scripts (`not_found`, `stale_token`, `illegal`, `not_ready`, `not_leader`,
`invalid`) plus `unauthorized`, `forbidden`, `rate_limited` (a sender over the publish rate) and
`unavailable`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from swarm.board import Task
from swarm.errors import (
    BackendError,
    ConfigError,
    DecodeError,
    Forbidden,
    IllegalTransition,
    NotLeader,
    NotReady,
    RateLimited,
    StaleToken,
    SwarmError,
    TaskNotFound,
    Unauthorized,
)
from swarm.protocol import AGENT_PATTERN, CAP_PATTERN, RECIPIENT_PATTERN

TASK_ID = r"^[\x21-\x7e]{1,128}$"
"""Printable ASCII without spaces: every id the board hands out, and nothing that could mislead a log."""
MAX_HELD = 1_024
_REFUSALS: tuple[tuple[type[SwarmError], int, str], ...] = (  # most specific first
    (Unauthorized, 401, "unauthorized"), (Forbidden, 403, "forbidden"), (TaskNotFound, 404, "not_found"),
    (StaleToken, 409, "stale_token"), (NotReady, 409, "not_ready"), (IllegalTransition, 409, "illegal"),
    (NotLeader, 409, "not_leader"), (RateLimited, 429, "rate_limited"), (ConfigError, 422, "invalid"),
    (DecodeError, 422, "invalid"), (BackendError, 503, "unavailable"),
)


def refusal(error: SwarmError) -> tuple[int, str]:
    """The HTTP status and the error code a swarm error is answered with."""
    return next(((status, code) for kind, status, code in _REFUSALS if isinstance(error, kind)), (500, "error"))


Cap = Annotated[str, Field(pattern=CAP_PATTERN)]
Note = Annotated[str, Field(max_length=16_384)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ErrorReply(BaseModel):
    """A refusal: a code a program acts on, and a message for a human."""

    error: str
    message: str


class AssignIn(_In):
    """Give a task to an agent."""

    agent: str = Field(pattern=AGENT_PATTERN, description="The agent to give it to.")
    force: bool = Field(False, description="Take it from its current owner (reassign).")


class CancelIn(_In):
    """Cancel a task that has not finished."""

    reason: Note = "cancelled"


class RetryIn(_In):
    """Run a failed or cancelled task again."""

    note: Note = ""


class EditIn(_In):
    """What to change in a task that is not running yet; give at least one field."""

    priority: int | None = Field(None, ge=0, le=9, description="0 (lowest) to 9 (most urgent).")
    title: str | None = Field(None, min_length=1, max_length=300)
    body: str | None = Field(None, max_length=32_768)
    caps: list[Cap] | None = Field(None, max_length=64, description="What an agent needs to take it.")


class ClaimIn(_In):
    """Claim the best ready task this agent can do."""

    caps: list[Cap] | None = Field(None, min_length=1, max_length=64, description=(
        "Its capabilities (`*` = any task); left out: those it registered with."))


class TokenIn(_In):
    """An owner's call: the fencing token it was given with the task."""

    token: int = Field(ge=0)


class DoneIn(TokenIn):
    """Finish a task."""

    result: str = Field("", max_length=65_536, description="What came of it.")


class FailIn(TokenIn):
    """Report a failure: retried after a backoff while attempts remain, unless `retry` is false."""

    reason: Annotated[str, Field(min_length=1, max_length=16_384)]
    retry: bool = True


class ProgressIn(TokenIn):
    """Say how the work goes: extends the lease and puts a status message on the bus."""

    text: Annotated[str, Field(min_length=1, max_length=16_384)]


class Held(_In):
    """A task an agent holds, with its token."""

    id: str = Field(pattern=TASK_ID)
    token: int = Field(ge=0)


class HeartbeatIn(_In):
    """An agent's heartbeat: marks it alive (when registered) and renews every lease it holds."""

    instance: str | None = Field(None, min_length=1, max_length=128,
                                 description="The instance `register` returned; leave out if never registered.")
    tasks: list[Held] = Field(default_factory=list, max_length=MAX_HELD)


class RegisterIn(_In):
    """Join the swarm so the captain assigns to this agent (its inbox receives the assignments)."""

    capabilities: list[Cap] = Field(default_factory=list, max_length=64, description="Empty: any kind.")
    roles: list[Annotated[str, Field(pattern=AGENT_PATTERN)]] = Field(default_factory=list, max_length=64)
    concurrency: int = Field(1, ge=1, le=1024)
    version: str = Field("", max_length=64)


class SendIn(_In):
    """A message on the bus, from the token's agent (or `captain`)."""

    to: str = Field(pattern=RECIPIENT_PATTERN, description="An agent, @captain, @all or @role:NAME.")
    text: Note = Field(min_length=1)
    kind: Literal["chat", "status"] = "chat"
    urgent: bool = False


class TaskReply(BaseModel):
    """One task, as it is after the call; `now` is the server's clock (ms)."""

    task: Task
    now: int


class CreateReply(TaskReply):
    """The task created, or the one its dedup key already named (`created` false)."""

    created: bool


class ClaimReply(BaseModel):
    """The claimed task (running, with its token), or null when nothing ready fits."""

    task: Task | None
    now: int


class Renewed(BaseModel):
    """One lease of a heartbeat: renewed, or refused with the board's code and message."""

    id: str
    ok: bool
    error: str | None = None
    message: str | None = None


class HeartbeatReply(BaseModel):
    """Per held task, whether its lease was renewed."""

    results: list[Renewed]
    now: int


class RegisterReply(BaseModel):
    """The instance id to heartbeat with, and the tasks an earlier instance held that went back."""

    name: str
    instance: str
    moved: list[str]


class InboxReply(BaseModel):
    """The agent's unread mail, oldest first (each message handed out once), each with a `text` line."""

    messages: list[dict[str, Any]]


class SentReply(BaseModel):
    """The message id and its stream entry."""

    id: str
    entry: str


class Event(BaseModel):
    """One transition in a task's history."""

    id: str
    ts: int
    event: str
    state: str
    owner: str | None
    token: int
    detail: str


class TaskDetail(BaseModel):
    """A task and its whole history, oldest first."""

    task: Task
    history: list[Event]
    now: int


class BoardPage(BaseModel):
    """A page of the tasks table, newest first, with the counts per state."""

    tasks: list[Task]
    total: int
    offset: int
    limit: int
    counts: dict[str, int]
    now: int


class Me(BaseModel):
    """Who the request's token speaks for (all null when reading without a token, `--open-read`)."""

    role: str | None
    name: str | None
    expires: int | None

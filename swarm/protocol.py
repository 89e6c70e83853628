"""The wire protocol: one versioned envelope per message kind, encode/decode, no I/O.

A message on the wire is a JSON object `{"v": 1, "id": ..., "kind": ..., "sender": ..., "to": ...,
"ts": ..., "body": {...}, ...}`. Decoding happens once, at the edge; past `decode` code trusts
typed objects. `protocols/PROTOCOL.md` is the language-neutral description of the same contract.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from ulid import ULID

from swarm.errors import DecodeError, MessageTooLarge

VERSION = 1
DEFAULT_MAX_BYTES = 64 * 1024

# Every name pattern lives here, the innermost layer; settings, board, roster and the CLI import them.
_NAME = r"[A-Za-z0-9_.-]{1,64}"
_KIND = r"[a-z][a-z0-9_-]{0,31}"
AGENT_PATTERN = f"^{_NAME}$"
"""An agent name; the swarm name (`SWARM_NAME`) follows it too."""
RECIPIENT_PATTERN = f"^(@all|@captain|@role:{_NAME}|{_NAME})$"
TAG_PATTERN = r"^[A-Za-z0-9_.:/=-]{1,64}$"
KIND_PATTERN = f"^{_KIND}$"
"""A task kind; command names follow it too."""
CAP_PATTERN = rf"^(\*|{_KIND})$"
"""A capability: a kind, or `*` for any task."""

AgentName = Annotated[str, Field(pattern=AGENT_PATTERN)]
Recipient = Annotated[str, Field(pattern=RECIPIENT_PATTERN)]
Text = Annotated[str, Field(max_length=16_384)]
Id = Annotated[str, Field(min_length=1, max_length=128)]
# Finite: JSON has no inf/NaN, so a value that would not survive encoding is refused on the way in.
Scalar: TypeAlias = str | int | Annotated[float, Field(allow_inf_nan=False)] | bool | None


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=False)


# --- bodies -------------------------------------------------------------------------------------


class StatusBody(_Model):
    """What an agent says it is doing: free text, the chatter discovery listens to."""

    text: Text
    state: Literal["idle", "working", "blocked", "done", "error"] | None = None
    task_id: Id | None = None


class HeartbeatBody(_Model):
    """Liveness of one agent instance, with its load against its capacity."""

    instance: Id
    load: int = Field(0, ge=0)
    capacity: int = Field(1, ge=1)


class ChatBody(_Model):
    """Free text between agents or to the captain."""

    text: Text


class AssignedTask(_Model):
    """One more task of an assignment (`AssignmentBody.more`): the same fields as the first."""

    task_id: Id
    token: int = Field(ge=1)
    task_kind: Annotated[str, Field(min_length=1, max_length=64)]
    title: Text = ""


class AssignmentBody(_Model):
    """Tasks given to an agent: the first in `task_id`, `token`, `task_kind` and `title`, any others of
    the same hand-out in `more`; `token` is the fencing token the owner must present. `state` says
    whether the agent accepts them with `own start` (`assigned`, or left out: a `swarm task assign`)
    or runs them at once (`running`: the captain's rounds hand tasks out started)."""

    task_id: Id
    token: int = Field(ge=1)
    task_kind: Annotated[str, Field(min_length=1, max_length=64)]
    title: Text = ""
    instance: Id | None = Field(None, description="The agent instance it is for; a restarted agent ignores others.")
    state: Literal["assigned", "running"] | None = Field(
        None, description="`running`: handed out started, run it with no `own start`; else `own start` it first.")
    more: tuple[AssignedTask, ...] | None = Field(
        None, max_length=4096, description="Further tasks of the same hand-out, in the same state.")
    tasks: tuple[dict[Annotated[str, Field(max_length=64)], str], ...] | None = Field(
        None, max_length=4096, description="The tasks themselves, first then `more`, as the board holds them "
        "(every value a string, as a claim returns them) but without their empty fields: the agent runs them "
        "without reading them. Left out when they do not fit in the message.")

    def refs(self) -> list[tuple[str, int]]:
        """Every task of the assignment: (task id, token), the first one first."""
        return [(self.task_id, self.token), *((m.task_id, m.token) for m in self.more or ())]


class TaskEventBody(_Model):
    """One transition on the task board, as the audit log records it."""

    task_id: Id
    event: Annotated[str, Field(min_length=1, max_length=32)]
    state: Annotated[str, Field(min_length=1, max_length=32)]
    owner: AgentName | None = None
    token: int = Field(0, ge=0)
    detail: Text = ""


class SignalBody(_Model):
    """Coalesced repetition: one signal stands for `count` near-identical status messages."""

    agent: AgentName
    fingerprint: Annotated[str, Field(min_length=1, max_length=64)]
    count: int = Field(ge=1)
    first_seen: int = Field(ge=0)
    last_seen: int = Field(ge=0)
    sample: Text = ""
    evidence: tuple[Id, ...] = Field((), max_length=256)


class CommandBody(_Model):
    """An instruction to an agent or the captain (`stop`, `drain`, `ping`, ...)."""

    name: Annotated[str, Field(pattern=KIND_PATTERN)]
    args: dict[Annotated[str, Field(max_length=64)], Scalar] = Field(default_factory=dict)


Body: TypeAlias = (
    StatusBody | HeartbeatBody | ChatBody | AssignmentBody | TaskEventBody | SignalBody | CommandBody
)


# --- envelopes ----------------------------------------------------------------------------------


def new_id() -> str:
    """A new message id: a ULID, so ids sort by creation time."""
    return str(ULID())


def now_ms() -> int:
    """Wall-clock milliseconds since the epoch, the unit of every timestamp on the wire."""
    return time.time_ns() // 1_000_000


class _Envelope(_Model):
    v: Literal[1] = 1
    id: Id = Field(default_factory=new_id)
    sender: AgentName
    to: Recipient = "@all"
    ts: int = Field(default_factory=now_ms, ge=0)
    priority: Literal["normal", "urgent"] = "normal"
    correlation_id: Id | None = None
    reply_to: Recipient | None = None
    tags: tuple[Annotated[str, Field(pattern=TAG_PATTERN)], ...] = Field((), max_length=32)
    ttl: float | None = Field(
        None, gt=0, allow_inf_nan=False, description="Seconds after `ts` when the message is stale."
    )

    def expired(self, at_ms: int | None = None) -> bool:
        """True when the message carries a ttl and it has run out."""
        if self.ttl is None:
            return False
        return (now_ms() if at_ms is None else at_ms) > self.ts + self.ttl * 1000


class Status(_Envelope):
    """A status message (`kind: status`)."""

    kind: Literal["status"] = "status"
    body: StatusBody


class Heartbeat(_Envelope):
    """A heartbeat message (`kind: heartbeat`)."""

    kind: Literal["heartbeat"] = "heartbeat"
    body: HeartbeatBody


class Chat(_Envelope):
    """A chat message (`kind: chat`)."""

    kind: Literal["chat"] = "chat"
    body: ChatBody


class Assignment(_Envelope):
    """An assignment message (`kind: assignment`)."""

    kind: Literal["assignment"] = "assignment"
    body: AssignmentBody


class TaskEvent(_Envelope):
    """A task-event message (`kind: task_event`)."""

    kind: Literal["task_event"] = "task_event"
    body: TaskEventBody


class Signal(_Envelope):
    """A repetition signal (`kind: signal`)."""

    kind: Literal["signal"] = "signal"
    body: SignalBody


class Command(_Envelope):
    """A command message (`kind: command`)."""

    kind: Literal["command"] = "command"
    body: CommandBody


Message: TypeAlias = Annotated[
    Status | Heartbeat | Chat | Assignment | TaskEvent | Signal | Command,
    Field(discriminator="kind"),
]
KINDS: tuple[str, ...] = ("status", "heartbeat", "chat", "assignment", "task_event", "signal", "command")
_BY_BODY: dict[type[_Model], type[_Envelope]] = {
    StatusBody: Status,
    HeartbeatBody: Heartbeat,
    ChatBody: Chat,
    AssignmentBody: Assignment,
    TaskEventBody: TaskEvent,
    SignalBody: Signal,
    CommandBody: Command,
}
MESSAGE: TypeAdapter[Message] = TypeAdapter(Message)


def message(body: Body, *, sender: str, to: str = "@all", **fields: Any) -> Message:
    """Wrap a body in the envelope of its kind: `message(ChatBody(text="hi"), sender="a", to="b")`."""
    envelope: Any = _BY_BODY[type(body)]
    built: Message = envelope(body=body, sender=sender, to=to, **fields)
    return built


def encode(msg: Message, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """JSON bytes of `msg`; raises MessageTooLarge past `max_bytes`."""
    raw = msg.__pydantic_serializer__.to_json(msg, exclude_none=True)
    if len(raw) > max_bytes:
        raise MessageTooLarge(_too_large(len(raw), max_bytes))
    return raw


def decode(raw: bytes | str, max_bytes: int = DEFAULT_MAX_BYTES) -> Message:
    """Parse and validate one message; raises DecodeError whose `reason` says what is wrong."""
    size = len(raw.encode("utf-8", "surrogatepass")) if isinstance(raw, str) else len(raw)  # bytes, not chars
    if size > max_bytes:
        raise MessageTooLarge(_too_large(size, max_bytes))
    try:
        # strict: the wire is typed JSON, as the schemas say; "3" is not an integer, true is not 1.
        return MESSAGE.validate_json(raw, strict=True)
    except ValidationError as exc:
        raise DecodeError(_reason(exc)) from None


def _too_large(size: int, limit: int) -> str:
    return f"message is {size} bytes, over the {limit}-byte limit; send large payloads by reference"


def _reason(exc: ValidationError) -> str:
    """One stable line from pydantic's errors: the first three, `path: message`."""
    parts: list[str] = []
    for err in exc.errors(include_url=False, include_input=False)[:3]:
        kind = err["type"]
        if kind == "json_invalid":
            return f"invalid JSON: {err['ctx']['error']}" if "ctx" in err else "invalid JSON"
        if kind in ("dict_type", "model_attributes_type") and not err["loc"]:
            return "message must be a JSON object"
        if kind == "union_tag_not_found":
            return "missing field 'kind'"
        if kind == "union_tag_invalid":
            return f"unknown kind {str(err['ctx']['tag'])[:64]!r}; expected one of: {', '.join(KINDS)}"
        loc = ".".join(_path_part(p) for p in err["loc"][1:]) or "message"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def _path_part(part: str | int) -> str:
    """One step of an error path; dict keys come from the sender, so keep them short and on one line."""
    text = str(part)[:64]
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")

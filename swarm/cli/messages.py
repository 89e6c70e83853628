"""`swarm send`, `swarm broadcast`, `swarm tail`, `swarm dlq`: the bus from a terminal."""

from __future__ import annotations

import contextlib
import os
from datetime import UTC, datetime
from typing import Annotated, Literal

import anyio
import typer

from swarm.bus import Bus, Delivery
from swarm.cli.common import app, out, print_json, run_with_bus, safe
from swarm.connection import doing
from swarm.errors import ConfigError, SwarmError
from swarm.protocol import RECIPIENT_PATTERN, ChatBody, Message, StatusBody, message, new_id

dlq = app("Dead letters: messages that did not decode or kept failing.")

Sender = Annotated[str, typer.Option("--from", help="Sender name (default: $SWARM_AGENT or 'cli').")]
Kind = Annotated[Literal["chat", "status"], typer.Option(help="Message kind.")]
Urgent = Annotated[bool, typer.Option("--urgent", help="Mark the message urgent.")]


def _sender(name: str | None) -> str:
    return name or os.environ.get("SWARM_AGENT") or "cli"


def _build(to: str, text: str, sender: str, kind: str, urgent: bool) -> Message:
    import re  # noqa: PLC0415

    if not re.match(RECIPIENT_PATTERN, to):
        raise ConfigError(f"recipient {to!r} is not valid: use an agent name, @all, @captain or @role:NAME")
    body = ChatBody(text=text) if kind == "chat" else StatusBody(text=text)
    return message(body, sender=sender, to=to, priority="urgent" if urgent else "normal")


def send(
    to: Annotated[str, typer.Argument(help="Agent name, @captain, @all or @role:NAME.")],
    text: Annotated[str, typer.Argument(help="The message text.")],
    sender: Sender = "",
    kind: Kind = "chat",
    urgent: Urgent = False,
) -> None:
    """Send one message to an agent, the captain, a role, or everyone."""
    msg = _build(to, text, _sender(sender), kind, urgent)
    entry = run_with_bus(lambda bus: bus.publish(msg))
    out.print(f"sent {msg.id} to {safe(to)} (entry {entry})")


def broadcast(
    text: Annotated[str, typer.Argument(help="The message text.")],
    sender: Sender = "",
    kind: Kind = "chat",
    urgent: Urgent = False,
) -> None:
    """Send one message to every agent (`@all`)."""
    send("@all", text, sender, kind, urgent)


def tail(
    stream: Annotated[
        list[str] | None, typer.Option(help="Stream(s) to follow: bus, captain, inbox:NAME, role:NAME, events.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    count: Annotated[int, typer.Option(min=0, help="Stop after this many messages (0: follow forever).")] = 0,
    from_start: Annotated[bool, typer.Option("--from-start", help="Replay the stream from its beginning.")] = False,
) -> None:
    """Follow messages live. Reads through its own consumer group, so bad entries are dead-lettered."""

    async def go(bus: Bus) -> None:
        streams = [bus.keys.stream(s) for s in (stream or ["bus"])]
        group = f"tail-{new_id()}"
        consumer = bus.consumer(group, "tail", streams, start="0" if from_start else "$")
        await consumer.setup()
        seen = 0
        try:
            while count == 0 or seen < count:
                batch = await consumer.read()
                for d in batch[: count - seen if count else None]:
                    _show(bus, d, as_json)
                    seen += 1
                await consumer.ack(batch)
        finally:
            with anyio.CancelScope(shield=True):  # an ephemeral group must not outlive the tail
                for s in streams:
                    # Best effort: with Redis gone the group goes with it; the error that ended the
                    # tail is the one to report, not this.
                    with contextlib.suppress(SwarmError), doing("removing the tail's group"):
                        await bus.redis.xgroup_destroy(s, group)

    run_with_bus(go)


def _show(bus: Bus, d: Delivery, as_json: bool) -> None:
    msg = d.message
    if as_json:
        print_json({"stream": bus.keys.short(d.stream), "entry": d.entry_id, **msg.model_dump(mode="json")})
        return
    try:
        at = datetime.fromtimestamp(msg.ts / 1000, tz=UTC).strftime("%H:%M:%S.%f")[:-3]
    except (ValueError, OverflowError, OSError):  # a sender's ts past year 9999 must not stop the tail
        at = str(msg.ts)
    text = getattr(msg.body, "text", None) or msg.body.model_dump_json()
    urgent = "[red]![/red] " if msg.priority == "urgent" else ""
    out.print(f"[dim]{at}[/dim] {urgent}[cyan]{safe(msg.sender)}[/cyan] → {safe(msg.to)} "
              f"[magenta]{msg.kind}[/magenta] {safe(text)}")


@dlq.command("list")
def dlq_list(
    as_json: Annotated[bool, typer.Option("--json", help="A JSON array.")] = False,
    count: Annotated[int, typer.Option(min=1, help="How many, newest first.")] = 100,
) -> None:
    """Show dead letters, newest first, with the reason each was dead-lettered."""
    letters = run_with_bus(lambda bus: bus.dead_letters(count))
    if as_json:
        print_json([
            {"id": d.id, "stream": d.stream, "entry": d.entry, "group": d.group, "consumer": d.consumer,
             "reason": d.reason, "at": d.at, "raw": d.raw.decode("utf-8", "backslashreplace")}
            for d in letters
        ])
        return
    if not letters:
        out.print("no dead letters")
        return
    for d in letters:
        raw = d.raw.decode("utf-8", "backslashreplace")
        out.print(f"[dim]{d.id}[/dim] [yellow]{safe(d.reason)}[/yellow] from {safe(d.stream)} "
                  f"({safe(d.group)}): {safe(raw[:120])}")

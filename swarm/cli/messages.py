"""`swarm send`, `swarm broadcast`, `swarm tail`, `swarm dlq`: the bus from a terminal."""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from typing import Annotated, Literal, cast

import typer
from redis.typing import KeyT, StreamIdT

from swarm.bus import RAW_KEPT, Bus, Entry, decode_entry
from swarm.cli.common import app, out, print_json, run_with_bus, safe
from swarm.connection import doing, text
from swarm.errors import ConfigError, DecodeError
from swarm.keys import FIELD_BYTES
from swarm.protocol import RECIPIENT_PATTERN, ChatBody, Message, StatusBody, message

dlq = app("Dead letters: messages that did not decode or kept failing.")

Sender = Annotated[str, typer.Option("--from", help="Sender name (default: $SWARM_AGENT, else the ACL user "
                                                    "$SWARM_USER, else 'cli').")]
Kind = Annotated[Literal["chat", "status"], typer.Option(help="Message kind.")]
Urgent = Annotated[bool, typer.Option("--urgent", help="Mark the message urgent.")]


def _sender(name: str | None) -> str:
    # Under ACL users an agent's user may publish only as its own agent, whose name it bears.
    return name or os.environ.get("SWARM_AGENT") or os.environ.get("SWARM_USER") or "cli"


def _build(to: str, text: str, sender: str, kind: str, urgent: bool) -> Message:
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


ENTRY_ID = re.compile(r"\d+(-\d+)?")


def tail(
    stream: Annotated[
        list[str] | None, typer.Option(help="Stream(s) to follow: bus, captain, inbox:NAME, role:NAME, events.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    count: Annotated[int, typer.Option(min=0, help="Stop after this many entries (0: follow forever).")] = 0,
    from_start: Annotated[bool, typer.Option("--from-start", help="Replay the stream from its beginning.")] = False,
    after: Annotated[str | None, typer.Option(
        "--from", help="Show the entries after this entry id (0: from the beginning), then follow.")] = None,
) -> None:
    """Follow messages live, changing nothing: a plain XREAD from the newest entry (or `--from`), no
    consumer group, so a tail never acks, dead-letters or leaves anything behind. An entry that does not
    decode is shown as such, with the reason a consumer would dead-letter it for."""
    if after is not None and not ENTRY_ID.fullmatch(after):
        raise ConfigError(f"--from {after!r} is not a stream entry id: give one such as 1718000000000-0, "
                          "or 0 for the beginning")
    if after is not None and from_start:
        raise ConfigError("--from and --from-start both say where to start: give one of them")
    start = "0-0" if from_start else after

    async def go(bus: Bus) -> None:
        streams = [bus.keys.stream(s) for s in (stream or ["bus"])]
        cursors: dict[KeyT, StreamIdT] = {s: start or await bus.last_id(s) for s in streams}
        settings = bus.settings
        seen = 0
        while count == 0 or seen < count:
            with doing("following the streams"):
                reply = await bus.redis.xread(cursors, count=settings.read_count, block=settings.block_ms)
            for stream_b, entries in cast(list[tuple[bytes, list[Entry]]], reply or []):
                name = text(stream_b)
                for entry_b, fields in entries:
                    cursors[name] = entry = text(entry_b)
                    if count and seen >= count:
                        break
                    try:
                        msg = decode_entry(fields or {}, settings.max_message_bytes)
                    except DecodeError as exc:
                        _show_undecodable(bus.keys.short(name), entry, exc.reason, fields or {}, as_json)
                        seen += 1
                        continue
                    if msg.expired():  # stale, as every consumer skips it: not news
                        continue
                    _show(bus.keys.short(name), entry, msg, as_json)
                    seen += 1

    run_with_bus(go)


def _show(stream: str, entry: str, msg: Message, as_json: bool) -> None:
    if as_json:
        print_json({"stream": stream, "entry": entry, **msg.model_dump(mode="json")})
        return
    try:
        at = datetime.fromtimestamp(msg.ts / 1000, tz=UTC).strftime("%H:%M:%S.%f")[:-3]
    except (ValueError, OverflowError, OSError):  # a sender's ts past year 9999 must not stop the tail
        at = str(msg.ts)
    text = getattr(msg.body, "text", None) or msg.body.model_dump_json()
    urgent = "[red]![/red] " if msg.priority == "urgent" else ""
    out.print(f"[dim]{at}[/dim] {urgent}[cyan]{safe(msg.sender)}[/cyan] → {safe(msg.to)} "
              f"[magenta]{msg.kind}[/magenta] {safe(text)}")


def _show_undecodable(stream: str, entry: str, reason: str, fields: dict[bytes, bytes], as_json: bool) -> None:
    """An entry a consumer would dead-letter: its reason and (the first `RAW_KEPT` bytes of) what it holds,
    the `m` value or else the whole field list, as a dead letter keeps it."""
    raw = fields[FIELD_BYTES] if list(fields) == [FIELD_BYTES] else json.dumps(
        [x.decode("utf-8", "backslashreplace") for kv in fields.items() for x in kv], separators=(",", ":")
    ).encode()
    shown = raw[:RAW_KEPT].decode("utf-8", "backslashreplace")
    if as_json:
        print_json({"stream": stream, "entry": entry, "undecodable": reason, "size": len(raw), "raw": shown})
        return
    out.print(f"[dim]{entry}[/dim] [red]undecodable[/red] in {safe(stream)}: [yellow]{safe(reason)}[/yellow]: "
              f"{safe(shown[:120])}")


@dlq.command("list")
def dlq_list(
    as_json: Annotated[bool, typer.Option("--json", help="A JSON array.")] = False,
    count: Annotated[int, typer.Option(min=1, help="How many, newest first.")] = 100,
) -> None:
    """Show dead letters, newest first, with the reason each was dead-lettered (and the first 4 KiB of
    each entry: `size` is how many bytes it had, `truncated` whether some were cut)."""
    letters = run_with_bus(lambda bus: bus.dead_letters(count))
    if as_json:
        print_json([
            {"id": d.id, "stream": d.stream, "entry": d.entry, "group": d.group, "consumer": d.consumer,
             "reason": d.reason, "at": d.at, "size": d.size, "truncated": d.truncated,
             "raw": d.raw.decode("utf-8", "backslashreplace")}
            for d in letters
        ])
        return
    if not letters:
        out.print("no dead letters")
        return
    for d in letters:
        raw = d.raw.decode("utf-8", "backslashreplace")
        cut = f" [dim](first {len(d.raw)} of {d.size} bytes kept)[/dim]" if d.truncated else ""
        out.print(f"[dim]{d.id}[/dim] [yellow]{safe(d.reason)}[/yellow] from {safe(d.stream)} "
                  f"({safe(d.group)}): {safe(raw[:120])}{cut}")

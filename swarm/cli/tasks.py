"""`swarm task ...`: create, inspect and steer tasks, and the verbs a shell-driven agent lives on
(`next` to claim, then `heartbeat`, `done`, `fail` or `block` with the token it was given)."""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError

from swarm.board import Board, Task, TaskSpec
from swarm.cli.board import (
    KindOpt,
    StateOpt,
    check_agent,
    check_caps,
    check_duration,
    check_id,
    check_kind,
    check_state,
    check_time,
    seconds_left,
    state_markup,
    state_text,
    task_table,
    with_board,
)
from swarm.cli.common import AsJson, app, csv, err, out, print_json, run_with_bus, safe
from swarm.errors import ConfigError
from swarm.registry import Registry

if TYPE_CHECKING:
    from rich.table import Table

    from swarm.bus import Bus
    from swarm.protocol import TaskEvent

# The shell verbs (next, done, fail, progress, show --json) start a process per call: this module
# imports only what they use; the captain and rich's tables are imported where they are needed.

task = app("Tasks on the board: create, inspect, assign, and work them from a shell.")

NOTHING_READY = 3
"""Exit code of `task next` when no ready task fits: a shell loop sleeps and asks again."""

TaskId = Annotated[str, typer.Argument(help="The task id, e.g. t-42.", show_default=False)]
Token = Annotated[int, typer.Option("--token", help="The fencing token `task next` (or the assignment) gave you.")]
To = Annotated[str, typer.Option("--to", help="The agent to give the task to.", show_default=False)]
Reason = Annotated[str, typer.Option("--reason", help="Why (shown in the task's history).", show_default=False)]
Owner = Annotated[str, typer.Option("--agent", envvar="SWARM_AGENT", show_default=False,
                                    help="Your agent name: the task's owner (default: $SWARM_AGENT).")]


def _owner(agent: str) -> str:
    """The owner's name for an owner transition: the board refuses anyone else, token or not."""
    if not agent:
        raise ConfigError("--agent is missing: name the task's owner, for example --agent agent-1 "
                          "(or set SWARM_AGENT)")
    return check_agent(agent, "--agent")

_OPTIONS = {"kind": "--kind", "title": "--title", "body": "--body", "priority": "--priority", "key": "--key",
            "blocked_by": "--blocked-by", "caps": "--can", "files": "--file", "evidence": "--evidence",
            "max_attempts": "--max-attempts"}
_HINTS = {"title": "give 1-300 characters", "body": "keep it under 32 KiB; put long text in a file and refer to it",
          "priority": "use 0 (lowest) to 9 (most urgent)", "key": "use at most 512 characters",
          "max_attempts": "use 1 to 100"}


def _text_arg(value: str) -> str:
    """`-` means: read the text from stdin (long bodies and results from a pipe)."""
    return sys.stdin.read() if value == "-" else value


def _spec(**fields: Any) -> TaskSpec:
    """Build a TaskSpec; its validation error becomes one line naming the option and the fix."""
    try:
        return TaskSpec(**fields)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        name = str(first["loc"][0]) if first["loc"] else ""
        value = repr(first.get("input"))
        value = value if len(value) <= 40 else value[:37] + "..."
        hint = _HINTS.get(name, "see `swarm task create --help`")
        raise ConfigError(f"{_OPTIONS.get(name, name)} {value} is not valid ({first['msg']}); {hint}") from None


def _stamp(ms: int) -> str:
    try:
        return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    except (ValueError, OverflowError, OSError):
        return str(ms)


def _event(e: TaskEvent) -> dict[str, Any]:
    b = e.body
    return {"id": e.id, "ts": e.ts, "event": b.event, "state": b.state, "owner": b.owner, "token": b.token,
            "detail": b.detail}


def _report(t: Task, as_json: bool, line: str, **extra: Any) -> None:
    """A write command's outcome: the task as JSON, or one human line."""
    if as_json:
        print_json({**t.summary(), **extra})
    else:
        out.print(line)


# --- creating and reading ------------------------------------------------------------------------
@task.command()
def create(
    kind: Annotated[str | None, typer.Option("--kind", help="What sort of work (also the capability it needs).",
                                             show_default=False)] = None,
    title: Annotated[str | None, typer.Option("--title", help="One line saying what to do.", show_default=False)]
    = None,
    body: Annotated[str, typer.Option("--body", help="Details; `-` reads them from stdin.")] = "",
    priority: Annotated[int, typer.Option("--priority", help="0 (lowest) to 9 (most urgent).")] = 5,
    key: Annotated[str, typer.Option("--key", help="Dedup key: creating again with it returns the first task.")] = "",
    blocked_by: Annotated[list[str] | None, typer.Option("--blocked-by", help="Task id(s) that must be done first.")]
    = None,
    can: Annotated[list[str] | None, typer.Option("--can", help="Capabilities needed (default: the kind).")] = None,
    files: Annotated[list[str] | None, typer.Option("--file", help="A file the task touches (repeatable).")] = None,
    evidence: Annotated[list[str] | None, typer.Option("--evidence", help="Id of a message that caused it.")] = None,
    max_attempts: Annotated[int | None, typer.Option("--max-attempts", help="Attempts before it fails.")] = None,
    delay: Annotated[str | None, typer.Option("--in", help="Ready only after this long: 90s, 10m, 2h, 1d.",
                                              show_default=False)] = None,
    at: Annotated[str | None, typer.Option("--at", help="Ready only from this time: 2026-12-01T09:00 (ISO 8601).",
                                           show_default=False)] = None,
    budget_usd: Annotated[float, typer.Option(
        "--budget-usd", min=0, help="The most it may spend (reported usage); past it, it fails. 0: none.")] = 0.0,
    source: Annotated[str | None, typer.Option("--from", help="Create many: a file of JSON lines, one task spec "
                                                "each (`-`: stdin).", show_default=False)] = None,
    as_json: AsJson = False,
) -> None:
    """Create a task (idempotent with --key; delayed with --in or --at), or many with --from."""
    if source is not None:
        if kind is not None or title is not None:
            raise ConfigError("--from creates the tasks its lines describe: leave out --kind and --title")
        _create_many(source, as_json)
        return
    if kind is None or title is None:
        raise ConfigError(f"--{'kind' if kind is None else 'title'} is missing: a task needs --kind and --title "
                          "(or --from FILE for many)")
    if delay is not None and at is not None:
        raise ConfigError("--in and --at do not combine: give one of them")
    not_before = (int(time.time() * 1000 + check_duration(delay, "--in") * 1000) if delay is not None else
                  check_time(at, "--at") if at is not None else 0)
    spec = _spec(kind=check_kind(kind), title=title, body=_text_arg(body), priority=priority, key=key,
                 blocked_by=tuple(check_id(i) for i in csv(blocked_by)), caps=tuple(check_caps(can)),
                 files=tuple(files or ()), evidence=tuple(csv(evidence)), max_attempts=max_attempts,
                 not_before=not_before, budget_usd=budget_usd)
    t, created = with_board(lambda b: b.create(spec))
    if created:
        line = f"created {t.id} ({safe(t.kind)}, priority {t.priority}): {safe(t.title)}"
        if not_before:
            line += f"; ready from {_stamp(not_before)}"
    else:
        line = f"{t.id} already exists with key {safe(t.key)} ({t.state}): {safe(t.title)}"
        if t.state in ("failed", "cancelled"):
            line += f"; `swarm task retry {t.id}` runs it again"
    _report(t, as_json, line, new=created)


def _create_many(source: str, as_json: bool) -> None:
    """Create the tasks of a file of JSON lines (TaskSpec's fields: kind, title, body, priority, key,
    blocked_by, caps, files, max_attempts, not_before), in batches of 500, with a progress bar."""
    from rich.progress import Progress  # noqa: PLC0415 - only this verb draws a progress bar

    specs = _read_specs(source)

    async def go(b: Board) -> list[tuple[str, bool]]:
        done: list[tuple[str, bool]] = []
        with Progress(console=err, transient=True) as progress:
            bar = progress.add_task("creating tasks", total=len(specs))
            for start in range(0, len(specs), 500):
                done += await b.create_many(specs[start:start + 500])
                progress.update(bar, completed=len(done))
        return done

    results = with_board(go)
    new = sum(created for _, created in results)
    if as_json:
        print_json([{"id": task_id, "new": created} for task_id, created in results])
    else:
        out.print(f"created {new} task(s); {len(results) - new} already existed (same key)")


def _read_specs(source: str) -> list[TaskSpec]:
    """Task specs from JSON lines; a bad line is refused with its number before anything is created."""
    try:
        lines = sys.stdin.read().splitlines() if source == "-" else Path(source).read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read {source}: {exc.strerror}; give a file of JSON lines, or - for stdin") from None
    specs: list[TaskSpec] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            fields = json.loads(line)
            if not isinstance(fields, dict):
                raise ValueError("not a JSON object")
            specs.append(TaskSpec.model_validate(fields))
        except (ValueError, ValidationError) as exc:
            reason = exc.errors(include_url=False)[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
            raise ConfigError(f"{source}, line {n}: not a task spec ({reason}); each line is a JSON object "
                              'like {"kind": "docs", "title": "Document swarm.bus"}') from None
    return specs


@task.command("list")
def list_tasks(
    state: StateOpt = None,
    kind: KindOpt = None,
    owner: Annotated[str | None, typer.Option("--owner", help="Only tasks this agent owns (or last owned).",
                                              show_default=False)] = None,
    search: Annotated[str | None, typer.Option("--search", help="Only tasks with this text in the title or body.",
                                               show_default=False)] = None,
    since: Annotated[str | None, typer.Option("--since", help="Only tasks created within this long: 1h, 2d.",
                                              show_default=False)] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, oldest first.")] = 1000,
    page: Annotated[int, typer.Option(min=1, help="Which page of --limit tasks.")] = 1,
    as_json: AsJson = False,
) -> None:
    """List tasks, oldest first, optionally of one state, kind and owner, with some text, recent."""
    who = None if owner is None else check_agent(owner, "--owner")
    after = 0 if since is None else int(time.time() * 1000 - check_duration(since, "--since") * 1000)
    tasks = with_board(lambda b: b.tasks(check_state(state), check_kind(kind), limit, owner=who, search=search,
                                         since=after, offset=(page - 1) * limit))
    if as_json:
        print_json([t.summary() for t in tasks])
    elif tasks:
        out.print(task_table(tasks))
    else:
        out.print("no tasks")


@task.command()
def show(task_id: TaskId, as_json: AsJson = False) -> None:
    """One task with its whole history (every transition, oldest first)."""
    check_id(task_id)

    async def go(b: Board) -> tuple[Task, list[TaskEvent]]:
        history = await b.history(task_id)
        return await b.get(task_id), history

    t, history = with_board(go)
    if as_json:
        print_json({**t.summary(), "history": [_event(e) for e in history]})
        return
    out.print(f"[bold]{safe(t.id)}[/bold] {state_markup(t.state)} {safe(t.kind)}, priority {t.priority}: "
              f"{safe(t.title)}")
    if t.owner:
        lease = "" if t.terminal else f", lease {seconds_left(t.lease_until)} left"
        out.print(f"  owner {safe(t.owner)} (token {t.token}){lease}")
    out.print(f"  attempt {t.attempts} of {t.max_attempts}; needs {safe(','.join(t.caps))}")
    for label, values in (("blocked by", t.blocked_by), ("files", t.files), ("evidence", t.evidence)):
        if values:
            out.print(f"  {label}: {safe(', '.join(values))}")
    for label, value in (("key", t.key), ("result", t.result), ("reason", t.reason), ("body", t.body)):
        if value:
            out.print(f"  {label}: {safe(value)}")
    table = _history_table()
    for name in ("AT (UTC)", "EVENT", "STATE", "OWNER", "TOKEN", "DETAIL"):
        table.add_column(name, overflow="fold", no_wrap=name != "DETAIL")
    for e in history:
        b = e.body
        table.add_row(_stamp(e.ts), safe(b.event), state_text(b.state), safe(b.owner or "-"), str(b.token),
                      safe(b.detail))
    out.print(table)


def _history_table() -> Table:
    from rich.table import Table  # noqa: PLC0415  (not for `--json`)

    return Table(box=None, header_style="bold", pad_edge=False, title="history", title_justify="left")


@task.command()
def why(task_id: TaskId, as_json: AsJson = False) -> None:
    """Why a task is, or is not, assigned, and what would change that."""
    check_id(task_id)
    from swarm.captain import Captain  # noqa: PLC0415  (heavy, and only this verb needs it)

    answer = run_with_bus(lambda bus: Captain(bus.redis, bus.settings).why(task_id))
    if as_json:
        print_json({"id": task_id, "why": answer})
    else:
        out.print(safe(answer))


# --- a human steering the board --------------------------------------------------------------
@task.command()
def assign(
    task_id: TaskId, to: To,
    force: Annotated[bool, typer.Option("--force", help="Assign even to an agent that lacks the task's "
                                                          "capabilities.")] = False,
    as_json: AsJson = False,
) -> None:
    """Give an open, ready task to an agent (its inbox gets the assignment)."""
    check_id(task_id)
    agent = check_agent(to, "--to")

    async def assign_checked(b: Board) -> Task:
        if not force:
            await _check_capable(b, task_id, agent)
        return await b.assign(task_id, agent)

    t = with_board(assign_checked)
    _report(t, as_json, f"assigned {t.id} to {safe(agent)} (token {t.token})")


async def _check_capable(b: Board, task_id: str, agent: str) -> None:
    """Refuse to hand a task to a registered agent that cannot do it (it would fail it, or worse)."""
    task = await b.get(task_id)
    card = await Registry(b.redis, b.settings).card(agent)
    if card is not None and not card.can(task.caps):
        raise ConfigError(f"{agent} cannot do task {task.id}: it needs {','.join(task.caps)}, {agent} can "
                          f"{','.join(card.capabilities)}; give it to an agent that can, or add --force")


@task.command()
def reassign(task_id: TaskId, to: To, as_json: AsJson = False) -> None:
    """Give a task to another agent, taking it from its current owner (whose token stops working)."""
    check_id(task_id)
    agent = check_agent(to, "--to")
    t = with_board(lambda b: b.assign(task_id, agent, force=True))
    _report(t, as_json, f"reassigned {t.id} to {safe(agent)} (token {t.token})")


@task.command()
def retry(
    task_id: Annotated[str | None, typer.Argument(help="The task id; or select with --state.", show_default=False)]
    = None,
    state: Annotated[str | None, typer.Option("--state", help="Retry every task in this state (failed or "
                                                               "cancelled).", show_default=False)] = None,
    kind: KindOpt = None,
    as_json: AsJson = False,
) -> None:
    """Run failed or cancelled tasks again: open, attempts from 0, a new token, their history kept."""
    if (task_id is None) == (state is None):
        raise ConfigError("give a task id, or --state failed (or cancelled) to retry every such task")
    if task_id is not None:
        check_id(task_id)
        t = with_board(lambda b: b.retry(task_id, "retried by hand"))
        _report(t, as_json, f"retrying {t.id}: open again, attempt 1 of {t.max_attempts}")
        return
    if state not in ("failed", "cancelled"):
        raise ConfigError(f"--state {state!r} cannot be retried: use failed or cancelled")
    wanted = check_kind(kind)

    async def all_of(b: Board) -> list[Task]:
        return [await b.retry(t.id, "retried by hand") for t in await b.tasks(state, wanted, 100_000)]

    retried = with_board(all_of)
    if as_json:
        print_json([t.summary() for t in retried])
    else:
        out.print(f"retrying {len(retried)} {state} task(s)" + (f" of kind {wanted}" if wanted else ""))


@task.command("edit")
def edit_task(
    task_id: TaskId,
    priority: Annotated[int | None, typer.Option("--priority", min=0, max=9, help="0 (lowest) to 9 (most urgent).",
                                                 show_default=False)] = None,
    title: Annotated[str | None, typer.Option("--title", help="A new title.", show_default=False)] = None,
    body: Annotated[str | None, typer.Option("--body", help="A new body; `-` reads it from stdin.",
                                             show_default=False)] = None,
    can: Annotated[list[str] | None, typer.Option("--can", help="The capabilities it needs.", show_default=False)]
    = None,
    as_json: AsJson = False,
) -> None:
    """Change a task that is not running yet (open, blocked or assigned)."""
    check_id(task_id)
    caps = check_caps(can) if can else None
    text = None if body is None else _text_arg(body)
    t = with_board(lambda b: b.edit(task_id, priority=priority, title=title, body=text, caps=caps))
    _report(t, as_json, f"edited {t.id} (priority {t.priority}): {safe(t.title)}")


@task.command()
def cancel(task_id: TaskId, reason: Reason = "cancelled", as_json: AsJson = False) -> None:
    """Cancel a task that has not finished; its owner's token stops working."""
    check_id(task_id)
    t = with_board(lambda b: b.cancel(task_id, reason))
    _report(t, as_json, f"cancelled {t.id}: {safe(reason)}")


@task.command()
def unblock(
    task_id: TaskId,
    note: Annotated[str, typer.Option("--note", help="What changed (shown in the history).")] = "",
    as_json: AsJson = False,
) -> None:
    """Put a blocked task back to open."""
    check_id(task_id)
    t = with_board(lambda b: b.unblock(task_id, note))
    _report(t, as_json, f"unblocked {t.id}; it is open again")


# --- a shell-driven agent ------------------------------------------------------------------------
@task.command("next")
def next_task(
    agent: Annotated[str, typer.Option("--agent", help="Your agent name.", show_default=False)],
    can: Annotated[list[str] | None, typer.Option("--can", help="Your capabilities, e.g. audit,docs (* = any).",
                                                  show_default=False)] = None,
    as_json: AsJson = False,
) -> None:
    """Claim the best ready task you can do; prints its id and token. Exit code 3: nothing ready."""
    name = check_agent(agent, "--agent")
    caps = check_caps(can)
    if not caps:
        raise ConfigError("--can is missing: name your capabilities, for example --can audit,docs "
                          "(or --can '*' for any task)")
    t = with_board(lambda b: b.claim_next(name, caps))
    if t is None:
        err.print(safe(f"no ready task for {name} (can {','.join(caps)}); try again later"))
        raise typer.Exit(NOTHING_READY)
    if as_json:
        print_json(t.summary())
        return
    out.print(f"claimed {t.id} token {t.token}: {safe(t.title)}")
    out.print(f"  kind {safe(t.kind)}, priority {t.priority}, attempt {t.attempts} of {t.max_attempts}, "
              f"lease {seconds_left(t.lease_until)} (extend: swarm task heartbeat {t.id} --token {t.token} "
              f"--agent {name})")
    if t.body:
        out.print(f"  {safe(t.body)}")
    out.print(f"  finish: swarm task done {t.id} --token {t.token} --agent {name} --result '...'  "
              f"(or fail/block {t.id} --token {t.token} --agent {name} --reason '...')")


@task.command()
def start(task_id: TaskId, token: Token, agent: Owner = "", as_json: AsJson = False) -> None:
    """Start an assigned task (assigned -> running)."""
    check_id(task_id)
    owner = _owner(agent)
    t = with_board(lambda b: b.start(task_id, token, agent=owner))
    _report(t, as_json, f"{t.id} running; lease {seconds_left(t.lease_until)} left")


@task.command()
def heartbeat(task_id: TaskId, token: Token, agent: Owner = "", as_json: AsJson = False) -> None:
    """Extend your lease on a task (do it well within SWARM_LEASE_S)."""
    check_id(task_id)
    owner = _owner(agent)
    t = with_board(lambda b: b.heartbeat(task_id, token, agent=owner))
    _report(t, as_json, f"{t.id} lease extended: {seconds_left(t.lease_until)} left")


@task.command()
def progress(
    task_id: TaskId,
    token: Token,
    text: Annotated[str, typer.Option("--text", help="How it is going, in a line; `-` reads it from stdin.",
                                      show_default=False)],
    agent: Owner = "",
    tokens: Annotated[int, typer.Option("--tokens", min=0, help="Model tokens used since the last report.")] = 0,
    usd: Annotated[float, typer.Option("--usd", min=0, help="Dollars spent since the last report.")] = 0.0,
    as_json: AsJson = False,
) -> None:
    """Say how your task is going: a status message naming it, and a heartbeat (the lease is extended);
    with --tokens/--usd, what it used (held against the task's, your and the swarm's budgets)."""
    check_id(task_id)
    owner = _owner(agent)
    said = _text_arg(text)

    async def go(bus: Bus) -> Task:
        from swarm.progress import report_progress  # noqa: PLC0415

        return await report_progress(Board(bus.redis, bus.settings), bus, task_id, token, said, agent=owner,
                                     tokens=tokens, usd=usd)

    t = run_with_bus(go)
    _report(t, as_json, f"{t.id} progress: {safe(said)} (lease {seconds_left(t.lease_until)} left)")


@task.command()
def done(
    task_id: TaskId,
    token: Token,
    result: Annotated[str, typer.Option("--result", help="What came of it; `-` reads it from stdin.")] = "",
    agent: Owner = "",
    as_json: AsJson = False,
) -> None:
    """Finish your task."""
    check_id(task_id)
    owner = _owner(agent)
    text = _text_arg(result)
    t = with_board(lambda b: b.complete(task_id, token, text, agent=owner))
    _report(t, as_json, f"{t.id} done")


@task.command()
def fail(
    task_id: TaskId,
    token: Token,
    reason: Reason,
    no_retry: Annotated[bool, typer.Option("--no-retry", help="Fail for good, even with attempts left.")] = False,
    agent: Owner = "",
    as_json: AsJson = False,
) -> None:
    """Report that your task failed: it is retried after a backoff while attempts remain."""
    check_id(task_id)
    owner = _owner(agent)
    t = with_board(lambda b: b.fail(task_id, token, reason, agent=owner, retry=not no_retry))
    line = (f"{t.id} failed: {safe(reason)}" if t.state == "failed" else
            f"{t.id} will be retried (attempt {t.attempts} of {t.max_attempts} failed): {safe(reason)}")
    _report(t, as_json, line)


@task.command()
def block(task_id: TaskId, token: Token, reason: Reason, agent: Owner = "", as_json: AsJson = False) -> None:
    """Park your task as blocked (you give it up); `swarm task unblock` reopens it."""
    check_id(task_id)
    owner = _owner(agent)
    t = with_board(lambda b: b.block(task_id, token, reason, agent=owner))
    _report(t, as_json, f"{t.id} blocked: {safe(reason)}; `swarm task unblock {t.id}` reopens it")


@task.command()
def release(task_id: TaskId, token: Token, agent: Owner = "", as_json: AsJson = False) -> None:
    """Give your task back untouched (it is open again at once, the attempt not counted)."""
    check_id(task_id)
    owner = _owner(agent)
    t = with_board(lambda b: b.release(task_id, token, agent=owner))
    _report(t, as_json, f"released {t.id}; it is open again")

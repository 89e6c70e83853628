"""`swarm agent run`, `swarm up`, `swarm down`, `swarm ps`: running agent workers."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import anyio
import typer
from anyio.abc import Process

from swarm.agent import Agent
from swarm.bus import Bus
from swarm.cli.common import AsJson, app, csv, err, out, print_json, run_with_bus, safe, server_url, settings
from swarm.cli.stats import MetricsPort, exporting, metrics_for
from swarm.errors import ConfigError, WorkspaceError
from swarm.handlers import load_handler
from swarm.lifeline import Lifeline
from swarm.roster import RosterCard, load_card, load_roster
from swarm.server import process_alive, process_started
from swarm.verify import Verifier
from swarm.workspace import Worktrees, with_workspace

agent_app = app("Run one agent worker.")
COLORS = ("cyan", "green", "yellow", "magenta", "blue", "bright_cyan", "bright_green", "bright_magenta")


async def until_signalled(stop: anyio.Event) -> None:
    """Set `stop` on SIGTERM or SIGINT: the graceful path (SIGKILL needs none: leases handle it)."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            stop.set()
            return


@agent_app.command("run")
def agent_run(
    name: Annotated[str | None, typer.Option(help="Agent name (unique in the swarm).")] = None,
    can: Annotated[list[str] | None, typer.Option(help="Capabilities, comma-separated: audit,docs ('*': any).")]
    = None,
    concurrency: Annotated[int, typer.Option(min=1, max=256, help="Tasks run at once.")] = 1,
    prefetch: Annotated[int, typer.Option(min=0, max=1024, help=(
        "Tasks claimed (or taken from the captain) ahead of free workers, so a finished worker starts its "
        "next task at once (for many short tasks; they count as running and go back to the board on shutdown)."))]
    = 0,
    handler: Annotated[str, typer.Option(help="builtin | cmd:<command> | file.py:function | module:function.")]
    = "builtin",
    card: Annotated[Path | None, typer.Option(help="A roster card (TOML); replaces the options above.")] = None,
    grace: Annotated[float | None, typer.Option(min=0, help="Seconds running tasks get on SIGTERM.")] = None,
    claim: Annotated[bool, typer.Option(help="Claim ready work when idle (besides taking assignments).")] = True,
    chatter: Annotated[float, typer.Option(min=0, help="Say 'idle' on the bus every N seconds when idle (0: never).")]
    = 0.0,
    workspace: Annotated[Path, typer.Option(help="Folder the handlers work on.")] = Path(),
    worktree: Annotated[bool | None, typer.Option(
        "--worktree/--no-worktree", help="Run each task in a git worktree of its own, of the repository the "
        "workspace is in, on branch swarm/<task> (default: the card's `workspace`).")] = None,
    verify: Annotated[str | None, typer.Option(
        help="A shell command that must pass in the task's workspace before the task is done, e.g. "
        "'pytest -q' (default: the card's `verify`; '' for none).")] = None,
    verify_timeout: Annotated[float | None, typer.Option(
        help="Seconds the verifier may run before it is killed and the task fails (default: the card's "
        "`verify_timeout_s`, 600).")] = None,
    metrics_port: MetricsPort = None,
) -> None:
    """Register and work until SIGTERM/SIGINT; then finish or release running tasks, deregister."""
    if card is not None:
        roster = load_card(card)
        base = card.parent
    elif name:
        if not csv(can) and handler.strip() != "builtin":
            raise ConfigError(f"--can is missing: name the task kinds handler {handler!r} does, for example "
                              "--can audit,docs (or --can '*' for any kind)")
        roster = RosterCard(name=name, capabilities=tuple(csv(can)), concurrency=concurrency, prefetch=prefetch,
                            handler=handler)
        base = Path.cwd()
    else:
        raise ConfigError("give --name NAME (with --can CAPS), or --card FILE")
    if roster.captain:
        raise ConfigError(f"{card}: this card is the captain's; run it with `swarm captain run`")
    roster = _overridden(roster, worktree, verify, verify_timeout)
    folder = workspace.resolve()
    if roster.workspace == "worktree":  # checked now: an agent that cannot make them takes no task
        try:
            anyio.run(Worktrees(folder, Path()).check)
        except WorkspaceError as exc:
            where = "--worktree" if worktree else f"{card}: field 'workspace'"
            raise ConfigError(f"{where}: {exc}") from None
    handle = load_handler(roster.handler, base, timeout_s=roster.timeout_s)
    for key, value in roster.env.items():
        os.environ.setdefault(key, value)

    async def go(bus: Bus) -> None:
        metrics = metrics_for(metrics_port, bus, roster.name, "agent")
        trees = Worktrees(folder, bus.settings.home / "worktrees") if roster.workspace == "worktree" else None
        verifier = Verifier(roster.verify, timeout_s=roster.verify_timeout_s) if roster.verify.strip() else None
        work = with_workspace(handle, worktrees=trees, verifier=verifier)
        agent = Agent(bus.redis, bus.settings, roster.agent_card(), work, workspace=folder,
                      grace_s=roster.grace_s if grace is None else grace, claim=claim,
                      idle_chatter_s=chatter or None, env=roster.env, metrics=metrics, prefetch=roster.prefetch)
        stop = anyio.Event()
        async with exporting(bus, metrics, metrics_port, agent.readiness), anyio.create_task_group() as tg:
            tg.start_soon(until_signalled, stop)
            ahead = f" + prefetch {roster.prefetch}" if roster.prefetch else ""
            err.print(f"{safe(roster.name)} running: can {','.join(roster.capabilities) or '*'}, "
                      f"concurrency {roster.concurrency}{ahead}, handler {safe(roster.handler)}"
                      f"{', a worktree per task' if trees else ''}"
                      f"{f', verified by {safe(roster.verify)}' if verifier else ''}")
            await agent.run(stop)
            tg.cancel_scope.cancel()
        err.print(f"{safe(roster.name)} stopped: {agent.completed} done, {agent.failed} failed")

    run_with_bus(go)


def _overridden(roster: RosterCard, worktree: bool | None, verify: str | None,
                verify_timeout: float | None) -> RosterCard:
    """The card with what the command line says instead (validated as the card's own fields are)."""
    changes: dict[str, Any] = {}
    if worktree is not None:
        changes["workspace"] = "worktree" if worktree else "shared"
    if verify is not None:
        changes["verify"] = verify
    if verify_timeout is not None:
        changes["verify_timeout_s"] = verify_timeout
    if not changes:
        return roster
    return RosterCard.model_validate({**roster.model_dump(), **changes, "path": roster.path})


# --- swarm up / down / ps ----------------------------------------------------------------------

def _state_file() -> Path:
    home = settings().home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    return home / "up.json"


def _process(pid: int) -> dict[str, Any]:
    """How `up.json` records a process: its pid and start time, so that a pid reused by another
    process after ours exited is never taken for ours (see `_ours`)."""
    return {"pid": pid, "started": process_started(pid)}


def _ours(entry: dict[str, Any]) -> bool:
    """True while the process `up.json` recorded still runs: same pid, same start time. (Where start
    times cannot be read, as on macOS, both are None and the pid alone decides.)"""
    pid = int(entry["pid"])
    return process_alive(pid) and process_started(pid) == entry.get("started")


@contextlib.contextmanager
def _only_up(home: Path) -> Iterator[None]:
    """Hold `home/up.lock` while `swarm up` runs: a second `swarm up` for the same home would register
    the same agent names (the first run's agents would stop as replaced) and overwrite `up.json`,
    leaving `swarm ps` and `swarm down` blind to the first run. The kernel drops the lock when the
    process exits, however it exits, so a crashed run never blocks the next."""
    home.mkdir(parents=True, exist_ok=True)
    with (home / "up.lock").open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            state = _read_state()
            who = (f"pid {state['pid']}, started {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(state['since']))}"
                   if state is not None else "it is starting")
            raise ConfigError(
                f"`swarm up` is already running for {home} ({who}); stop it with `swarm down` first, "
                "or run this one with another SWARM_HOME"
            ) from None
        state_file = home / "up.json"
        # Recorded at once (the processes follow), so that a second `swarm up` can name this one.
        _write_state(state_file, {**_process(os.getpid()), "since": time.time(), "children": {}})
        try:
            yield
        finally:
            state_file.unlink(missing_ok=True)


def _argv(card: RosterCard) -> list[str]:
    if card.captain:
        return [sys.executable, "-m", "swarm", "captain", "run", "--name", card.name]
    return [sys.executable, "-m", "swarm", "agent", "run", "--card", str(card.path.resolve())]


def _enabled(cards: list[RosterCard], folder: Path) -> list[RosterCard]:
    """The cards `swarm up` runs: not `enabled = false`, and able to make their worktrees here."""
    skipped = [c.name for c in cards if not c.enabled]
    cards = [c for c in cards if c.enabled]
    if not cards:
        raise ConfigError(f"roster folder {folder} has only disabled cards ({', '.join(skipped)}); "
                          "set enabled = true in the ones to run")
    coders = [c for c in cards if c.workspace == "worktree" and not c.captain]
    if coders:  # (their agents' folder is ours)
        try:
            anyio.run(Worktrees(Path.cwd(), Path()).check)
        except WorkspaceError as exc:
            raise ConfigError(f"{coders[0].path}: field 'workspace': {exc}") from None
    if skipped:
        _say(f"swarm up: not running the disabled cards {', '.join(skipped)} (enabled = false)")
    return cards


def up(
    agents: Annotated[Path, typer.Option(help="Roster folder: one TOML card per agent.")] = Path("agents"),
    discovery: Annotated[bool, typer.Option(help="Also run the work-discovery engine.")] = True,
    web: Annotated[bool, typer.Option(help="Also serve the web board and HTTP API (`swarm web`).")] = False,
    web_port: Annotated[int, typer.Option(min=0, max=65535, help="With --web: its port on 127.0.0.1.")] = 8300,
) -> None:
    """Run the roster: validate every card, start the captain and each agent as its own process.

    Output is prefixed with each process's name. SIGINT/SIGTERM (or `swarm down`) stops them gracefully.
    """
    cards = _enabled(load_roster(agents), agents)
    s = settings()
    home = s.home.resolve()
    with _only_up(home):
        env = {**os.environ, "SWARM_HOME": str(home)}
        # Start the shared server once, here, rather than racing in every child.
        env["SWARM_REDIS_URL"] = server_url(s)
        commands = [(c.name, _argv(c), c.env) for c in cards]
        if discovery:
            commands.append(("discovery", [sys.executable, "-m", "swarm", "discovery", "run"], {}))
        if web:
            commands.append(("web", [sys.executable, "-m", "swarm", "web", "--port", str(web_port)], {}))
        anyio.run(_supervise, commands, env, max((c.grace_s for c in cards), default=10.0))


async def _supervise(commands: list[tuple[str, list[str], dict[str, str]]], env: dict[str, str],
                     grace: float) -> None:
    procs: dict[str, Process] = {}
    stop = anyio.Event()
    # The children run in sessions of their own (a Ctrl-C reaches them only through us, as a
    # graceful SIGTERM); the lifeline kills them if this process dies without stopping them.
    lifeline = Lifeline()
    lifeline.start()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(until_signalled, stop)
            for i, (name, argv, extra) in enumerate(commands):
                proc = await anyio.open_process(argv, env={**env, **extra}, stdin=subprocess.DEVNULL,
                                                stderr=subprocess.STDOUT, start_new_session=True)
                procs[name] = proc
                lifeline.hold(proc.pid)
                tg.start_soon(_pipe, name, COLORS[i % len(COLORS)], proc, stop)
            state = _read_state() or {**_process(os.getpid()), "since": time.time()}  # as `up` recorded it
            _write_state(_state_file(), {**state, "children": {n: _process(p.pid) for n, p in procs.items()}})
            _say(f"[bold]swarm up[/bold]: {len(procs)} processes; Ctrl-C or `swarm down` stops them")
            await stop.wait()
            tg.cancel_scope.cancel()
    finally:
        # Every way out stops the children: a signal, `swarm down`, or an error here (such as
        # the reader of our output, `| tee`, having gone away with the same Ctrl-C).
        with anyio.CancelScope(shield=True):
            await _stop_all(procs, grace)
        lifeline.close()
        _state_file().unlink(missing_ok=True)


async def _stop_all(procs: dict[str, Process], grace: float) -> None:
    _say("[bold]stopping[/bold]: SIGTERM to every process, waiting for graceful exits")
    for proc in procs.values():
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
    with anyio.move_on_after(grace + 5):
        for proc in procs.values():
            await proc.wait()
    for name, proc in procs.items():
        if proc.returncode is None:
            _say(f"{name} did not stop in time; killing it", error=True)
            proc.kill()
            await proc.wait()


def _say(text: str, *, error: bool = False) -> None:
    """Print, unless whoever reads our output is gone: stopping the children matters more."""
    with contextlib.suppress(OSError):
        (err if error else out).print(text)


async def _pipe(name: str, color: str, proc: Process, stop: anyio.Event) -> None:
    assert proc.stdout is not None
    buffer = b""
    async for chunk in proc.stdout:
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            _say(f"[{color}]{name:>10}[/{color}] | {safe(line.decode(errors='replace'))}")
    code = await proc.wait()
    if not stop.is_set():
        _say(f"[{color}]{name:>10}[/{color}] | exited with code {code}", error=True)


def down(timeout: Annotated[float, typer.Option(min=0, help="Seconds to wait for a graceful stop.")] = 30.0) -> None:
    """Stop what `swarm up` started, gracefully (SIGTERM, then wait)."""
    state = _read_state()
    recorded = [] if state is None else [state, *state["children"].values()]
    # Only processes still ours are signalled: a pid whose process exited may belong to another now.
    if not any(_ours(p) for p in recorded):
        _state_file().unlink(missing_ok=True)
        out.print("nothing to stop: no `swarm up` is running here")
        return
    assert state is not None
    # The supervisor stops its children itself; signal them directly only when it is gone.
    targets = [state] if _ours(state) else list(state["children"].values())
    for entry in targets:
        if _ours(entry):
            _signal(int(entry["pid"]), signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(_ours(p) for p in recorded):
        if time.monotonic() > deadline:
            raise ConfigError(f"swarm did not stop within {timeout:g}s; `swarm ps` shows what still runs")
        time.sleep(0.1)
    _state_file().unlink(missing_ok=True)
    out.print("swarm stopped")


def ps(as_json: AsJson = False) -> None:
    """The processes `swarm up` runs here, and whether each is alive."""
    state = _read_state()
    rows = [] if state is None else [
        {"name": name, "pid": int(entry["pid"]), "alive": _ours(entry)} for name, entry in state["children"].items()
    ]
    if as_json:
        print_json(rows)
        return
    if not rows:
        out.print("no `swarm up` running here")
        return
    for row in rows:
        mark = "[green]up[/green]" if row["alive"] else "[red]exited[/red]"
        out.print(f"{row['name']:>10}  pid {row['pid']:<8} {mark}")


def _write_state(path: Path, state: dict[str, Any]) -> None:
    """Replace `up.json` in one step: `swarm ps`, `swarm down` and a second `swarm up` never read half of it."""
    partial = path.with_suffix(".json.new")
    partial.write_text(json.dumps(state))
    partial.replace(path)


def _read_state() -> dict[str, Any] | None:
    """What `up.json` records: the supervisor's pid, start time (`started`, `since`) and children;
    None when there is no such file or it is not one this version wrote."""
    try:
        data: dict[str, Any] = json.loads(_state_file().read_text())
        valid = isinstance(data["pid"], int) and isinstance(data["since"], int | float) and all(
            isinstance(c, dict) and isinstance(c.get("pid"), int) for c in data["children"].values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return data if valid else None


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


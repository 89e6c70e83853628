"""A git worktree per task and a verified "done": real git repositories, real processes, a real server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path

import anyio
import pytest
from redis.asyncio import Redis
from typer.testing import CliRunner

from swarm.agent import Agent, Context, Handler
from swarm.board import Board, Task, TaskSpec
from swarm.cli import app
from swarm.errors import WorkspaceError
from swarm.handlers import load_handler
from swarm.registry import AgentCard
from swarm.roster import load_card
from swarm.settings import Settings
from swarm.verify import Verifier
from swarm.workspace import Worktrees, with_workspace
from tests.helpers import ROOT, eventually, running

FAKE = ROOT / "tests" / "procs" / "fake_coder.py"
NOTES = "# notes\n"
CHECK = """from pathlib import Path


def test_one_note_was_added() -> None:
    lines = Path("NOTES.md").read_text().splitlines()
    assert len(lines) == 2
    assert lines[1].split(":")[0] in ("claude", "codex", "aider")
"""


@pytest.fixture
def fast(settings: Settings) -> Settings:
    return settings.model_copy(update={"lease_s": 2.0, "heartbeat_s": 0.1, "retry_backoff_s": 0.0})


def git(repo: Path, *args: str) -> str:
    """Run git in `repo` (synchronously: test set-up and checks) and return its output."""
    done = subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@example.com", *args],
                          cwd=repo, capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository with one commit: NOTES.md, a test that one note was added to it, a .gitignore."""
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "--quiet", "-b", "main")
    (path / "NOTES.md").write_text(NOTES)
    (path / "test_notes.py").write_text(CHECK)
    (path / ".gitignore").write_text("__pycache__/\n.pytest_cache/\n")
    git(path, "add", "--all")
    git(path, "commit", "--quiet", "-m", "start")
    return path


@pytest.fixture
def coders(tmp_path: Path) -> dict[str, str]:
    """PATH with `claude`, `codex` and `aider` stand-ins (tests/procs/fake_coder.py) and this venv's
    `pytest` first: the environment the recipe cards' commands and verifiers run in."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for program in ("claude", "codex", "aider"):
        script = bin_dir / program
        script.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" {program} "$@"\n')
        script.chmod(0o755)
    return {"PATH": f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}"}


async def _in_state(board: Board, task_id: str, state: str) -> Task | None:
    task = await board.get(task_id)
    return task if task.state == state else None


def recipe_agent(redis: Redis, fast: Settings, name: str, repo: Path, env: dict[str, str]) -> Agent:
    """An agent run from the recipe card agents/NAME.toml, as `swarm agent run --card` runs it."""
    card = load_card(ROOT / "agents" / f"{name}.toml")
    assert (card.enabled, card.workspace, card.verify) == (False, "worktree", "pytest -q")
    handler = with_workspace(load_handler(card.handler, ROOT / "agents", timeout_s=card.timeout_s),
                             worktrees=Worktrees(repo, fast.home / "worktrees"),
                             verifier=Verifier(card.verify, timeout_s=card.verify_timeout_s))
    return Agent(redis, fast, card.agent_card(), handler, workspace=repo, env={**card.env, **env})


def untouched(repo: Path, head: str) -> None:
    """The main checkout is as it was: same HEAD, same NOTES.md, nothing changed, no worktree left."""
    assert git(repo, "rev-parse", "HEAD") == head
    assert (repo / "NOTES.md").read_text() == NOTES
    assert git(repo, "status", "--porcelain") == ""
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1


async def test_two_coding_tasks_edit_the_same_file_in_their_own_worktrees_both_verified(
        redis: Redis, fast: Settings, repo: Path, coders: dict[str, str], tmp_path: Path) -> None:
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    board = Board(redis, fast)
    head = git(repo, "rev-parse", "HEAD")
    tasks = [(await board.create(TaskSpec(kind="code", title=f"Add note {n}")))[0] for n in (1, 2)]
    agent = recipe_agent(redis, fast, "claude", repo, {**coders, "FAKE_BARRIER": str(barrier)})
    assert agent.card.concurrency == 2
    async with running(agent):
        done = [await eventually(partial(_in_state, board, t.id, "done"), within=30) for t in tasks]
    assert git(repo, "branch", "--list", "swarm/*", "--format=%(refname:short)").split() == ["swarm/t-1", "swarm/t-2"]
    for task in done:
        branch = f"swarm/{task.id}"
        commit = git(repo, "rev-parse", branch)
        assert json.loads(task.result) == {
            "verified": "pytest -q: passed", "branch": branch, "commit": commit,
            "result": f"Appended a line to NOTES.md for: Task {task.id} (code): {task.title}"}
        # Each started from HEAD in a checkout of its own: it never saw the other's edit.
        assert git(repo, "show", f"{branch}:NOTES.md") == f"# notes\nclaude: Task {task.id} (code): {task.title}"
        assert git(repo, "log", "--format=%s", f"{head}..{branch}") == f"swarm {task.id}: {task.title}"
        assert git(repo, "rev-parse", f"{branch}^") == head
    untouched(repo, head)
    assert sorted(p.name for p in (fast.home / "worktrees").iterdir()) == [".gitignore"]


@pytest.mark.anyio  # explicit: the conftest's automatic marking comes too late for parametrized tests
@pytest.mark.parametrize("name", ["claude", "codex", "aider"])
async def test_each_recipe_runs_its_cli_in_a_worktree_and_is_verified(
        redis: Redis, fast: Settings, repo: Path, coders: dict[str, str], name: str) -> None:
    board = Board(redis, fast)
    head = git(repo, "rev-parse", "HEAD")
    task, _ = await board.create(TaskSpec(kind="code", title="Add a note", body="Say hello in NOTES.md."))
    async with running(recipe_agent(redis, fast, name, repo, coders)):
        done = await eventually(lambda: _in_state(board, task.id, "done"), within=30)
    result = json.loads(done.result)
    assert result == {"verified": "pytest -q: passed", "branch": "swarm/t-1",
                      "commit": git(repo, "rev-parse", "swarm/t-1"),
                      "result": "Appended a line to NOTES.md for: Task t-1 (code): Add a note"}
    assert git(repo, "show", "--name-only", "--format=%s", "swarm/t-1") == "swarm t-1: Add a note\n\nNOTES.md"
    untouched(repo, head)


async def _writes(task: Task, ctx: Context) -> str:
    (ctx.workspace / "work.txt").write_text(f"work for {task.id}\n")
    return "wrote work.txt"


async def test_a_hanging_verifier_is_killed_and_the_task_fails_keeping_its_changes(
        redis: Redis, fast: Settings, repo: Path) -> None:
    board = Board(redis, fast)
    head = git(repo, "rev-parse", "HEAD")
    task, _ = await board.create(TaskSpec(kind="work", title="hang", max_attempts=2))
    handler = with_workspace(_writes, worktrees=Worktrees(repo, fast.home / "worktrees"),
                             verifier=Verifier("sleep 31.97", timeout_s=0.5))
    agent = Agent(redis, fast, AgentCard(name="a1", capabilities=("work",)), handler, workspace=repo)
    async with running(agent):
        failed = await eventually(lambda: _in_state(board, task.id, "failed"), within=20)
    # The retry got a branch of its own from HEAD; each attempt's work is on its branch.
    first, second = git(repo, "rev-parse", "swarm/t-1"), git(repo, "rev-parse", "swarm/t-1-try2")
    assert failed.reason == (f"VerificationFailed: sleep 31.97 timed out after 0.5s and was killed "
                             f"(changes kept on branch swarm/t-1-try2 at {second[:12]}): (no output)")
    assert [e.body.detail for e in await board.history(task.id) if e.body.detail.startswith("Verif")] == [
        f"VerificationFailed: sleep 31.97 timed out after 0.5s and was killed "
        f"(changes kept on branch swarm/t-1 at {first[:12]}): (no output)", failed.reason]
    for branch in ("swarm/t-1", "swarm/t-1-try2"):
        assert git(repo, "show", f"{branch}:work.txt") == "work for t-1"
        assert git(repo, "rev-parse", f"{branch}^") == head
    found = await anyio.run_process(["pgrep", "-f", "sleep 31.97"], check=False)
    assert found.stdout == b""
    untouched(repo, head)


async def test_a_failing_verifier_fails_the_task_with_the_tail_of_its_output(
        redis: Redis, fast: Settings, tmp_path: Path) -> None:
    board = Board(redis, fast)
    passing, _ = await board.create(TaskSpec(kind="good", title="passes"))
    failing, _ = await board.create(TaskSpec(kind="bad", title="fails", max_attempts=1))

    async def handler(task: Task, ctx: Context) -> str:
        return await _writes(task, ctx)

    folder = tmp_path / "plain"  # no worktree: the verifier runs in the agent's own folder
    folder.mkdir()
    checks = {"good": "test -f work.txt", "bad": "echo checking; echo '1 failed, 2 passed' >&2; exit 1"}
    agents = [Agent(redis, fast, AgentCard(name=f"a-{kind}", capabilities=(kind,)),
                    with_workspace(handler, verifier=Verifier(check)), workspace=folder)
              for kind, check in checks.items()]
    async with running(agents[0]), running(agents[1]):
        done = await eventually(lambda: _in_state(board, passing.id, "done"))
        failed = await eventually(lambda: _in_state(board, failing.id, "failed"))
    assert json.loads(done.result) == {"verified": "test -f work.txt: passed", "result": "wrote work.txt"}
    assert failed.reason == ("VerificationFailed: echo checking; echo '1 failed, 2 passed' >&2; exit 1 exited 1: "
                             "checking\n1 failed, 2 passed")


async def test_a_failing_handler_keeps_its_changes_on_its_branch(redis: Redis, fast: Settings, repo: Path) -> None:
    board = Board(redis, fast)
    head = git(repo, "rev-parse", "HEAD")
    half, _ = await board.create(TaskSpec(kind="work", title="half done", max_attempts=1))
    none, _ = await board.create(TaskSpec(kind="work", title="nothing done", max_attempts=1))

    async def handler(task: Task, ctx: Context) -> str:
        if task.title == "half done":
            (ctx.workspace / "NOTES.md").write_text("# half\n")
        raise ValueError(f"gave up on {task.title}")

    work: Handler = with_workspace(handler, worktrees=Worktrees(repo, fast.home / "worktrees"))
    async with running(Agent(redis, fast, AgentCard(name="a1", capabilities=("work",), concurrency=2), work,
                             workspace=repo)):
        failed = [await eventually(partial(_in_state, board, t.id, "failed")) for t in (half, none)]
    commit = git(repo, "rev-parse", "swarm/t-1")
    assert [t.reason for t in failed] == [
        f"HandlerFailed: ValueError: gave up on half done (changes kept on branch swarm/t-1 at {commit[:12]})",
        "ValueError: gave up on nothing done"]
    assert git(repo, "log", "-1", "--format=%B", "swarm/t-1") == (
        "swarm t-1: half done\n\nTask t-1 (work), by swarm agent a1: the handler failed: ValueError: gave up on "
        "half done")
    assert git(repo, "rev-parse", "swarm/t-2") == head  # nothing changed: no commit, the branch kept
    untouched(repo, head)


async def test_a_stopped_task_keeps_its_changes_and_its_worktree_is_removed(
        redis: Redis, fast: Settings, repo: Path) -> None:
    board = Board(redis, fast)
    head = git(repo, "rev-parse", "HEAD")
    task, _ = await board.create(TaskSpec(kind="work", title="long"))
    started = anyio.Event()

    async def handler(task: Task, ctx: Context) -> str:
        (ctx.workspace / "NOTES.md").write_text("# begun\n")
        started.set()
        await anyio.sleep(60)
        return "never"

    work = with_workspace(handler, worktrees=Worktrees(repo, fast.home / "worktrees"))
    agent = Agent(redis, fast, AgentCard(name="a1", capabilities=("work",)), work, workspace=repo, grace_s=0.1)
    async with running(agent):
        await started.wait()
    assert (await board.get(task.id)).state == "open"  # given back at shutdown
    assert git(repo, "show", "swarm/t-1:NOTES.md") == "# begun"
    assert git(repo, "log", "-1", "--format=%b", "swarm/t-1") == (
        "Task t-1 (work), by swarm agent a1: stopped before it finished (lease lost or agent stopping)")
    untouched(repo, head)


async def test_a_worktree_outside_a_git_repository_fails_the_task_with_the_reason(
        redis: Redis, fast: Settings, tmp_path: Path) -> None:
    board = Board(redis, fast)
    task, _ = await board.create(TaskSpec(kind="work", title="needs git", max_attempts=1))
    plain = tmp_path / "plain"
    plain.mkdir()
    ran: list[str] = []

    async def handler(task: Task, ctx: Context) -> str:
        ran.append(task.id)
        return "ran"

    work = with_workspace(handler, worktrees=Worktrees(plain, fast.home / "worktrees"))
    async with running(Agent(redis, fast, AgentCard(name="a1", capabilities=("work",)), work, workspace=plain)):
        failed = await eventually(lambda: _in_state(board, task.id, "failed"))
    assert failed.reason == (f"WorkspaceError: cannot make a worktree for t-1: {plain} is not in a git repository; "
                             "run the agent in one (--workspace REPO) or without worktrees")
    assert ran == []


async def test_worktrees_say_why_they_cannot_be_made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty"
    git(tmp_path, "init", "--quiet", str(empty))
    cases = {
        tmp_path / "gone": f"{tmp_path}/gone does not exist; give an existing repository with --workspace REPO",
        empty: f"the repository {empty} has no commit yet, and a task's worktree starts from HEAD; "
               "commit something first",
    }
    for folder, expected in cases.items():
        with pytest.raises(WorkspaceError) as info:
            await Worktrees(folder, tmp_path / "trees").check()
        assert str(info.value) == expected
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    with pytest.raises(WorkspaceError) as info:
        await Worktrees(empty, tmp_path / "trees").check()
    assert str(info.value) == "git is not installed (no `git` on PATH); install it, or run the agent without worktrees"


async def test_agent_run_refuses_worktrees_outside_a_git_repository_before_it_takes_work(
        redis: Redis, settings: Settings, tmp_path: Path) -> None:
    board = Board(redis, settings)
    task, _ = await board.create(TaskSpec(kind="work", title="waits"))
    plain = tmp_path / "plain"
    plain.mkdir()
    card = tmp_path / "coder.toml"
    card.write_text('name = "coder"\ncapabilities = ["work"]\nhandler = "cmd:true"\nworkspace = "worktree"\n')
    assert settings.redis_url is not None
    env = {"SWARM_REDIS_URL": settings.redis_url, "SWARM_NAME": settings.name, "SWARM_HOME": str(settings.home)}
    why = f"{plain} is not in a git repository; run the agent in one (--workspace REPO) or without worktrees"
    cases = {
        ("--name", "a1", "--can", "work", "--worktree"): f"error: --worktree: {why}\n",
        ("--card", str(card)): f"error: {card}: field 'workspace': {why}\n",
        ("--name", "a1", "--can", "work", "--verify-timeout", "0"):
            "error: verify_timeout_s: Input should be greater than 0 (got '0.0')\n",
    }
    for args, expected in cases.items():
        argv = ["agent", "run", *args, "--workspace", str(plain)]
        # (in a thread: the command runs its own event loop, as it does in a shell)
        result = await anyio.to_thread.run_sync(partial(CliRunner().invoke, app, argv, env=env))
        assert (result.exit_code, result.stderr) == (1, expected), args
    after = await board.get(task.id)
    assert (after.state, after.attempts, after.owner) == ("open", 0, None)


def test_swarm_up_skips_disabled_cards_and_checks_worktree_cards_first(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    roster = tmp_path / "agents"
    roster.mkdir()
    (roster / "off.toml").write_text('name = "off"\ncapabilities = ["work"]\nhandler = "cmd:true"\nenabled = false\n')
    env = {"SWARM_HOME": str(tmp_path / "home"), "SWARM_REDIS_URL": "redis://127.0.0.1:1"}
    monkeypatch.chdir(tmp_path)  # not in a git repository
    result = CliRunner().invoke(app, ["up", "--agents", str(roster), "--no-discovery"], env=env)
    assert (result.exit_code, result.stderr) == (
        1, f"error: roster folder {roster} has only disabled cards (off); set enabled = true in the ones to run\n")
    coder = roster / "coder.toml"
    coder.write_text('name = "coder"\ncapabilities = ["work"]\nhandler = "cmd:true"\nworkspace = "worktree"\n')
    result = CliRunner().invoke(app, ["up", "--agents", str(roster), "--no-discovery"], env=env)
    assert (result.exit_code, result.stderr) == (
        1, f"error: {coder}: field 'workspace': {tmp_path} is not in a git repository; run the agent in one "
           "(--workspace REPO) or without worktrees\n")
    assert not (tmp_path / "home" / "up.json").exists()  # nothing was started


async def test_swarm_agent_run_with_a_recipe_card_works_in_worktrees_and_verifies(
        redis: Redis, fast: Settings, repo: Path, coders: dict[str, str], tmp_path: Path) -> None:
    # The claude recipe as a user turns it on: a copy with enabled = true, run from the repository.
    card = tmp_path / "claude.toml"
    card.write_text((ROOT / "agents" / "claude.toml").read_text().replace("enabled = false", "enabled = true"))
    board = Board(redis, fast)
    head = git(repo, "rev-parse", "HEAD")
    task, _ = await board.create(TaskSpec(kind="code", title="Add a note"))
    assert fast.redis_url is not None
    env = {**os.environ, **coders, "SWARM_REDIS_URL": fast.redis_url, "SWARM_NAME": fast.name,
           "SWARM_HOME": str(fast.home)}
    log = tmp_path / "agent.log"
    with log.open("wb") as out:
        async with await anyio.open_process([sys.executable, "-m", "swarm", "agent", "run", "--card", str(card)],
                                            cwd=repo, env=env, stdout=out, stderr=subprocess.STDOUT) as proc:
            try:
                done = await eventually(lambda: _in_state(board, task.id, "done"), within=30)
            finally:
                proc.send_signal(signal.SIGTERM)
                with anyio.fail_after(20):
                    await proc.wait()
    assert json.loads(done.result) == {
        "verified": "pytest -q: passed", "branch": "swarm/t-1", "commit": git(repo, "rev-parse", "swarm/t-1"),
        "result": "Appended a line to NOTES.md for: Task t-1 (code): Add a note"}
    assert ("claude running: can code, concurrency 2, handler cmd:sh -c 'claude -p \"$SWARM_TASK_PROMPT\" "
            "--permission-mode acceptEdits --output-format text < /dev/null', a worktree per task, verified by "
            "pytest -q") in " ".join(log.read_text().split())
    untouched(repo, head)

"""A git worktree per task, and a verified "done".

With worktrees (a card's `workspace = "worktree"`, `swarm agent run --worktree`) each task runs in a
checkout of its own, `<SWARM_HOME>/worktrees/<task>` on the new branch `swarm/<task>`, made from the
current HEAD of the repository the agent's folder is in. The handler gets it as `ctx.workspace` (a
`cmd:` handler as its working directory, and `SWARM_WORKTREE`). When the handler is done, whatever it
changed is committed on the branch with a message naming the task (no commit when nothing changed),
the verifier runs, the checkout is removed and the branch is kept: the result names branch and commit.

Nothing is lost on the way: a handler that fails, a verifier that fails and a task that is stopped
(its lease lost, the agent leaving) get their changes committed too, and the reason names the branch.
Two tasks never share a checkout, and a retry never takes over an earlier attempt's: it gets the next
free name, `swarm/<task>-try2`, `-try3`... from HEAD again. Everything goes through the `git` CLI.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import anyio
import structlog

from swarm.agent import Context, Handler, Result
from swarm.board import Task
from swarm.errors import HandlerFailed, VerificationFailed, WorkspaceError
from swarm.verify import Verifier

log = structlog.get_logger("swarm.workspace")

CLEANUP_S = 30.0
"""How long committing and removing a stopped task's worktree may take (it runs shielded)."""
_MAX_TRIES = 100
_GIT_LOCATION = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR", "GIT_PREFIX")
"""Set when the agent runs from a git hook; they would point every command at that repository."""


@dataclass
class Worktree:
    """One task's checkout: `root` on `branch`, made from `base`; `folder` is where the task works
    (the agent's folder's place in it). `commit` is the branch's new head once saved (None: nothing
    changed)."""

    root: Path
    folder: Path
    branch: str
    base: str
    commit: str | None = None
    saved: bool = False

    @property
    def kept(self) -> str:
        """Where the task's changes are, for a reason: ' (changes kept on branch B at C)', or ''."""
        return f" (changes kept on branch {self.branch} at {self.commit[:12]})" if self.commit else ""


class Worktrees:
    """Makes and removes the task worktrees of the repository `folder` is in, under `home`."""

    def __init__(self, folder: Path, home: Path) -> None:
        self.folder = folder.resolve()
        self.home = home.resolve()
        self._lock = anyio.Lock()  # one `git worktree add/remove` at a time per agent

    async def check(self) -> None:
        """Raise WorkspaceError saying why worktrees cannot be made here (at start-up, before any task)."""
        await self._locate()

    @asynccontextmanager
    async def checkout(self, task: Task, agent: str) -> AsyncIterator[Worktree]:
        """A new worktree for `task`, removed on the way out (its branch kept). Changes not saved with
        `save` by then (the task was stopped) are saved first. WorkspaceError when it cannot be made."""
        try:
            top, prefix, base = await self._locate()
            tree = await self._add(task, top, prefix, base)
        except WorkspaceError as exc:
            raise WorkspaceError(f"cannot make a worktree for {task.id}: {exc}") from None
        log.info("worktree made", task=task.id, path=str(tree.root), branch=tree.branch)
        try:
            yield tree
        finally:
            with anyio.CancelScope(shield=True, deadline=anyio.current_time() + CLEANUP_S):
                await self._clean_up(task, agent, top, tree)

    async def save(self, tree: Worktree, task: Task, agent: str, outcome: str) -> str | None:
        """Commit what changed in `tree` (a message naming the task, `outcome` in its body) and return
        the branch's head, or None when it did not move (nothing changed, nothing committed).
        WorkspaceError when that fails: the worktree is then left in place, changes and all."""
        try:
            return await self._commit(tree, task, agent, outcome)
        except WorkspaceError as exc:
            raise WorkspaceError(f"cannot commit the changes of {task.id} on {tree.branch} ({exc}); they are "
                                 f"left in {tree.root}") from None

    async def _commit(self, tree: Worktree, task: Task, agent: str, outcome: str) -> str | None:
        await _git(tree.root, "add", "--all")
        staged = await _git(tree.root, "diff", "--cached", "--quiet", check=False)
        if staged.returncode not in (0, 1):
            raise WorkspaceError(f"git diff failed in {tree.root}: {_tail(staged)}")
        if staged.returncode == 1:
            title = " ".join(task.title.split())
            body = f"Task {task.id} ({task.kind}), by swarm agent {agent}: {outcome}"
            # The verifier is the gate here, not the repository's commit hooks.
            await _git(tree.root, "commit", "--quiet", "--no-verify", "-m", f"swarm {task.id}: {title}", "-m", body,
                       env=await _identity(tree.root, agent))
        head = (await _git(tree.root, "rev-parse", "--verify", f"refs/heads/{tree.branch}")).stdout.decode().strip()
        tree.commit = head if head != tree.base else None
        tree.saved = True
        return tree.commit

    async def _locate(self) -> tuple[Path, str, str]:
        """The repository's top folder, the agent's folder's path in it, and the commit HEAD names."""
        if not await anyio.Path(self.folder).is_dir():
            raise WorkspaceError(f"{self.folder} does not exist; give an existing repository with --workspace REPO")
        found = await _git(self.folder, "rev-parse", "--show-toplevel", "--show-prefix", check=False)
        if found.returncode != 0:
            raise WorkspaceError(f"{self.folder} is not in a git repository; run the agent in one "
                                 "(--workspace REPO) or without worktrees")
        top, prefix = [*found.stdout.decode().splitlines(), "", ""][:2]
        head = await _git(self.folder, "rev-parse", "--verify", "--quiet", "HEAD^{commit}", check=False)
        if head.returncode != 0:
            raise WorkspaceError(f"the repository {top} has no commit yet, and a task's worktree starts "
                                 "from HEAD; commit something first")
        return Path(top), prefix, head.stdout.decode().strip()

    async def _add(self, task: Task, top: Path, prefix: str, base: str) -> Worktree:
        """`git worktree add` on the first free name: `<task>`, then `<task>-try2`... (an earlier
        attempt's branch or folder, even one a crashed agent left, is never reused)."""
        await anyio.Path(self.home).mkdir(parents=True, exist_ok=True)
        ignore = anyio.Path(self.home / ".gitignore")
        if not await ignore.exists():  # the checkouts are nobody's changes, in a repository this home is in
            await ignore.write_text("*\n")
        stem = re.sub(r"[^A-Za-z0-9_-]", "_", task.id)
        async with self._lock:
            for n in range(1, _MAX_TRIES + 1):
                name = stem if n == 1 else f"{stem}-try{n}"
                root, branch = self.home / name, f"swarm/{name}"
                if await anyio.Path(root).exists() or await _branch_exists(top, branch):
                    continue
                made = await _git(top, "worktree", "add", "--quiet", "-b", branch, str(root), base, check=False)
                if made.returncode == 0:
                    return Worktree(root, root / prefix, branch, base)
                if not (await anyio.Path(root).exists() or await _branch_exists(top, branch)):  # taken meanwhile?
                    raise WorkspaceError(f"git worktree add failed: {_tail(made)}")
        raise WorkspaceError(f"branches swarm/{stem} to swarm/{stem}-try{_MAX_TRIES} all exist; "
                             "delete the ones no longer needed")

    async def _clean_up(self, task: Task, agent: str, top: Path, tree: Worktree) -> None:
        """Save what a stopped task changed, then remove the checkout (never its branch). A worktree
        whose changes could not be committed is left where it is: removing it would lose them."""
        if not tree.saved:
            try:
                await self.save(tree, task, agent, "stopped before it finished (lease lost or agent stopping)")
            except WorkspaceError as exc:
                log.warning("cannot commit a stopped task's changes; its worktree is kept", task=task.id,
                            path=str(tree.root), error=str(exc))
                return
        async with self._lock:
            removed = await _git(top, "worktree", "remove", "--force", str(tree.root), check=False)
        if removed.returncode != 0:
            log.warning("cannot remove a worktree", task=task.id, path=str(tree.root), error=_tail(removed))
        else:
            log.info("worktree removed", task=task.id, branch=tree.branch, commit=tree.commit)


def with_workspace(handler: Handler, *, worktrees: Worktrees | None = None,
                   verifier: Verifier | None = None) -> Handler:
    """`handler` run in a worktree per task (with `worktrees`) and checked by `verifier` before it is
    done. The result then says how: `{"verified": "CMD: passed", "branch": B, "commit": C, "result": R}`
    (the keys that apply; R is what the handler returned). Without either, `handler` itself."""
    if worktrees is None and verifier is None:
        return handler

    async def verify(task: Task, ctx: Context, kept: str) -> str:
        assert verifier is not None
        verdict = await verifier.run(task, ctx.workspace, ctx.env, ctx.lifeline)
        if not verdict.passed:
            raise VerificationFailed(f"{verdict.summary}{kept}: {verdict.output}")
        return verdict.summary

    async def run(task: Task, ctx: Context) -> Result:
        if worktrees is None:
            result = await handler(task, ctx)
            return {"verified": await verify(task, ctx, ""), "result": result}
        async with worktrees.checkout(task, ctx.agent) as tree:
            own = replace(ctx, workspace=tree.folder, worktree=tree.root,
                          env={**ctx.env, "SWARM_WORKTREE": str(tree.root), "SWARM_BRANCH": tree.branch})
            try:
                result = await handler(task, own)
            except Exception as exc:
                cause = f"{type(exc).__name__}: {exc}"
                try:
                    saved = await worktrees.save(tree, task, ctx.agent, f"the handler failed: {cause}")
                except WorkspaceError as saving:
                    raise HandlerFailed(f"{cause}; and {saving}") from exc
                if saved is None:
                    raise
                raise HandlerFailed(f"{cause}{tree.kept}") from exc
            await worktrees.save(tree, task, ctx.agent, "the handler finished")
            done: dict[str, Any] = {"branch": tree.branch, "commit": tree.commit, "result": result}
            if verifier is not None:
                done = {"verified": await verify(task, own, tree.kept), **done}
            return done

    return run


async def _git(cwd: Path, *args: str, check: bool = True, env: dict[str, str] | None = None,
               ) -> CompletedProcess[bytes]:
    """Run `git ARGS` in `cwd`; WorkspaceError when git is missing, or (with `check`) when it fails."""
    full_env = {k: v for k, v in os.environ.items() if k not in _GIT_LOCATION}
    full_env.update({"LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0", **(env or {})})
    try:
        done = await anyio.run_process(["git", *args], cwd=cwd, env=full_env, check=False)
    except FileNotFoundError:
        if not await anyio.Path(cwd).is_dir():
            raise WorkspaceError(f"{cwd} does not exist (was it removed?)") from None
        raise WorkspaceError("git is not installed (no `git` on PATH); install it, or run the agent "
                             "without worktrees") from None
    if check and done.returncode != 0:
        raise WorkspaceError(f"git {args[0]} failed in {cwd}: {_tail(done)}")
    return done


async def _branch_exists(top: Path, branch: str) -> bool:
    found = await _git(top, "show-ref", "--verify", "--quiet", f"refs/heads/{branch}", check=False)
    return found.returncode == 0


async def _identity(cwd: Path, agent: str) -> dict[str, str]:
    """The committer when the repository has none configured (a fresh CI machine): the agent."""
    env: dict[str, str] = {}
    for key, fallback in (("name", f"swarm agent {agent}"), ("email", f"{agent}@swarm.invalid")):
        if (await _git(cwd, "config", f"user.{key}", check=False)).returncode != 0:
            env[f"GIT_AUTHOR_{key.upper()}"] = env[f"GIT_COMMITTER_{key.upper()}"] = fallback
    return env


def _tail(done: CompletedProcess[bytes]) -> str:
    text = (done.stderr or done.stdout or b"").decode(errors="replace").strip()
    return text[-1_000:] or f"exit code {done.returncode}"

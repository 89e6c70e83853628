"""A stand-in for the AI coding agents' CLIs that the recipe cards in agents/ run: `claude`, `codex`
and `aider` (the real ones are not installed here). `python fake_coder.py PROGRAM ARGS...`.

It reads its command line as the real program would, refusing what that one would refuse, takes the
prompt, and does what a real one asked to edit would: appends `PROGRAM: <first line of the prompt>`
to NOTES.md in its working directory (nothing, when its permissions would not let it write), prints
a summary and exits 0. Aider commits its own edit unless told --no-auto-commits, as aider does.

It also checks what swarm promises the CLI: it runs in the task's worktree (`SWARM_WORKTREE`), and
its stdin is not a pipe left open. FAKE_BARRIER=DIR with FAKE_BARRIER_COUNT=N: it waits (10 s at
most) until N programs have got there, so a test proves they ran at the same time.
"""

from __future__ import annotations

import argparse
import os
import stat
import subprocess
import sys
import time
from pathlib import Path


def parse(program: str, argv: list[str]) -> tuple[str, bool, bool]:
    """(prompt, may it write files, does it commit) from the command line, as `program` reads it."""
    parser = argparse.ArgumentParser(prog=program)
    if program == "claude":
        parser.add_argument("-p", "--print", action="store_true")
        parser.add_argument("--permission-mode", choices=["default", "acceptEdits", "bypassPermissions", "plan"],
                            default="default")
        parser.add_argument("--output-format", choices=["text", "json", "stream-json"], default="text")
        parser.add_argument("prompt")
        args = parser.parse_args(argv)
        if not args.print:
            sys.exit("claude: this stand-in only knows print mode (-p)")
        return args.prompt, args.permission_mode in ("acceptEdits", "bypassPermissions"), False
    if program == "codex":
        parser.add_argument("command", choices=["exec"])
        parser.add_argument("--sandbox", "-s", choices=["read-only", "workspace-write", "danger-full-access"],
                            default="read-only")
        parser.add_argument("prompt")
        args = parser.parse_args(argv)
        return args.prompt, args.sandbox != "read-only", False
    if program == "aider":
        parser.add_argument("--message", "--msg", "-m", required=True)
        parser.add_argument("--yes-always", action="store_true")
        for flag in ("auto-commits", "gitignore", "stream", "pretty"):
            parser.add_argument(f"--{flag}", action=argparse.BooleanOptionalAction, default=True)
        args = parser.parse_args(argv)
        return args.message, args.yes_always, args.auto_commits
    sys.exit(f"fake_coder: unknown program {program!r}")


def wait_at_barrier() -> None:
    folder = os.environ.get("FAKE_BARRIER")
    if not folder:
        return
    Path(folder, str(os.getpid())).touch()
    deadline = time.monotonic() + 10
    while len(os.listdir(folder)) < int(os.environ.get("FAKE_BARRIER_COUNT", "2")):
        if time.monotonic() > deadline:
            sys.exit("fake_coder: alone at the barrier: the tasks did not run at the same time")
        time.sleep(0.02)


def main() -> None:
    program, argv = sys.argv[1], sys.argv[2:]
    prompt, may_write, commits = parse(program, argv)
    if os.environ.get("SWARM_WORKTREE") != os.getcwd():
        sys.exit(f"{program}: not run in the task's worktree ({os.getcwd()!r}, SWARM_WORKTREE="
                 f"{os.environ.get('SWARM_WORKTREE')!r})")
    if stat.S_ISFIFO(os.fstat(0).st_mode):
        sys.exit(f"{program}: stdin is a pipe: the real one would read it as more input")
    wait_at_barrier()
    first = prompt.splitlines()[0]
    if not may_write:
        print(f"I would append a line to NOTES.md for {first!r}, but I may not edit files.")
        return
    with Path("NOTES.md").open("a") as notes:
        notes.write(f"{program}: {first}\n")
    if commits:
        subprocess.run(["git", "commit", "--quiet", "-am", f"aider: {first}"], check=True)
    print(f"Appended a line to NOTES.md for: {first}")


if __name__ == "__main__":
    main()

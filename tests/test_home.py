"""The swarm's home is found the way git finds `.git`: a command run in any folder of a project
uses the project's `.swarm` (its server, its board), and says so when it starts that server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from swarm.server import EmbeddedServer
from swarm.settings import find_home


def swarm(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`swarm ARGS` run in `cwd`, with neither SWARM_HOME nor SWARM_REDIS_URL set."""
    env = {k: v for k, v in os.environ.items() if k not in ("SWARM_HOME", "SWARM_REDIS_URL")}
    return subprocess.run([sys.executable, "-m", "swarm", *args], cwd=cwd, env={**env, "SWARM_LOG_LEVEL": "warning"},
                          capture_output=True, text=True, timeout=60, check=False)


def test_a_command_in_a_subfolder_uses_the_projects_server_and_says_when_it_starts_it(tmp_path: Path) -> None:
    # `cd sub && swarm board` used to start a second server under sub/.swarm, silently.
    project = tmp_path / "project"
    deep = project / "src" / "pkg"
    deep.mkdir(parents=True)
    (project / ".swarm").mkdir()
    home = (project / ".swarm").resolve()
    try:
        sent = swarm(deep, "send", "agent-1", "hello")
        assert sent.returncode == 0, sent.stderr
        state = EmbeddedServer(home).status()
        assert state is not None
        assert sent.stderr == f"swarm: started the embedded server for {home} on 127.0.0.1:{state.port}\n"
        assert not (deep / ".swarm").exists()
        assert not (project / "src" / ".swarm").exists()

        again = swarm(project / "src", "server", "status")  # another folder of the project: the same server
        assert again.stdout == f"server running: pid {state.pid}, {state.url}, data in {home}\n"
        assert again.stderr == ""  # nothing started, nothing said
    finally:
        EmbeddedServer(home).stop()


def test_without_a_swarm_folder_up_the_tree_the_home_is_here(tmp_path: Path) -> None:
    start = tmp_path / "a" / "b"
    start.mkdir(parents=True)
    if any((p / ".swarm").is_dir() for p in start.resolve().parents):
        pytest.skip("a folder above the test's temporary directory has a .swarm of its own")
    assert find_home(start) == start.resolve() / ".swarm"
    (tmp_path / "a" / ".swarm").mkdir()
    assert find_home(start) == (tmp_path / "a" / ".swarm").resolve()
    (start / ".swarm").mkdir()
    assert find_home(start) == start.resolve() / ".swarm"  # the nearest one wins

"""`swarm --version` and shell completion."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from swarm.cli import app


def swarm(*args: str, **env: str) -> Result:
    """`swarm ARGS` in this process, named `swarm` as the installed script is (completion keys on the name)."""
    return CliRunner().invoke(app, list(args), env=env, prog_name="swarm")


def test_version_prints_the_package_version() -> None:
    installed = subprocess.run([str(Path(sys.executable).with_name("swarm")), "--version"], env=os.environ,
                               capture_output=True, text=True, timeout=30, check=False)
    assert (installed.returncode, installed.stdout, installed.stderr) == (0, f"swarm {version('swarm')}\n", "")


def test_completion_script_and_completions(monkeypatch: pytest.MonkeyPatch) -> None:
    # Name the shell rather than have typer guess it from the processes above this one (shellingham):
    # under a test runner started from no shell, the guess is nothing ("Shell  not supported.").
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")
    script = swarm("--show-completion", "bash")
    assert script.exit_code == 0, script.stderr
    assert "_SWARM_COMPLETE=complete_bash" in script.stdout
    assert "complete -o default -F _swarm_completion swarm" in script.stdout
    # What the installed script asks for when one presses Tab after `swarm ag`, and after `swarm agents --p`:
    commands = swarm(_SWARM_COMPLETE="complete_bash", COMP_WORDS="swarm ag", COMP_CWORD="1")
    assert commands.stdout.split() == ["agents", "agent"]
    options = swarm(_SWARM_COMPLETE="complete_bash", COMP_WORDS="swarm agents --p", COMP_CWORD="2")
    assert options.stdout.split() == ["--prune"]

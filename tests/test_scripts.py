"""scripts/bootstrap (sourced by scripts/demo and scripts/test) in a copy of the repository's scripts,
with stand-in Pythons: it remakes a .venv left broken by an earlier try, refuses an old Python with
the fix, and installs the dev extra only for the tests. (The real install is what CI runs.)"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def checkout(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the scripts and pyproject.toml, and a stand-in Python 3.11+ (this test's own, except
    that `-m venv DIR` makes a venv whose `pip install` is only written to `pip.log`, and whose `swarm`
    says how it was called)."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    for name in ("bootstrap", "demo", "test"):
        shutil.copy2(ROOT / "scripts" / name, repo / "scripts" / name)
    shutil.copy2(ROOT / "pyproject.toml", repo / "pyproject.toml")
    log = tmp_path / "pip.log"
    venv_python = (f'case "$*" in *"pip install"*) echo "$*" >> {log}; exit 0;; esac\n'
                   f'exec {sys.executable} "$@"\n')
    python = script(tmp_path / "bin" / "python3.x", (
        'if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then\n'
        f"  mkdir -p \"$3/bin\"\n  printf '%s' '#!/bin/sh\n{venv_python}' > \"$3/bin/python\"\n"
        "  printf '#!/bin/sh\\necho swarm \"$@\"\\n' > \"$3/bin/swarm\"\n"
        '  chmod +x "$3/bin/python" "$3/bin/swarm"\n  exit 0\nfi\n'
        f'exec {sys.executable} "$@"\n'))
    return repo, python


def run(repo: Path, python: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", *args], cwd=repo, env={**os.environ, "PYTHON": str(python)},
                          capture_output=True, text=True, timeout=60, check=False)


def test_a_venv_left_by_an_unsupported_python_is_made_again(tmp_path: Path) -> None:
    # After a failed install with Python 3.9, the next try (with a good Python) reused the broken .venv.
    repo, python = checkout(tmp_path)
    script(repo / ".venv" / "bin" / "python", "echo 3.9.18\nexit 1\n")  # what 3.9 says to the version check
    version = ".".join(map(str, sys.version_info[:3]))

    demo = run(repo, python, "scripts/demo", "--no-live")
    assert (demo.returncode, demo.stderr) == (0, ""), demo.stdout
    assert demo.stdout == (
        f"== .venv has Python 3.9.18, no usable Python >= 3.11 with pip: making it again with {python} ({version})\n"
        "== installing swarm into .venv\n"
        "swarm demo --no-live\n"
    )
    installs = (tmp_path / "pip.log").read_text().splitlines()
    assert installs[-1] == "-m pip install -q --disable-pip-version-check -e ."  # no dev extra for the demo

    again = run(repo, python, "scripts/demo")
    assert again.stdout == "swarm demo\n"  # installed already: nothing to do

    dev = run(repo, python, "-c", "set -euo pipefail; SWARM_EXTRA=dev; source scripts/bootstrap")
    assert (dev.returncode, dev.stdout) == (0, "== installing swarm[dev] into .venv\n")
    assert (tmp_path / "pip.log").read_text().splitlines()[-1].endswith(" -e .[dev]")
    assert run(repo, python, "scripts/demo").stdout == "swarm demo\n"  # a dev install serves the demo too
    assert "SWARM_EXTRA=dev" in (ROOT / "scripts" / "test").read_text()


def test_an_old_python_is_refused_with_the_fix(tmp_path: Path) -> None:
    repo, _ = checkout(tmp_path)
    old = script(tmp_path / "old" / "python3", "echo 3.9.18\nexit 1\n")
    refused = run(repo, old, "scripts/demo")
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr == (
        f"error: swarm needs Python >= 3.11, and {old} is 3.9.18; install Python 3.11 or newer, then run this "
        "again (or point PYTHON at one: PYTHON=/path/to/python3.12 scripts/demo)\n")
    assert not (repo / ".venv").exists()

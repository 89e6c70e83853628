"""The README's first screen stays true: its example runs, and its two commands exist."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_example_runs_against_a_real_server(redis_url: str, tmp_path: Path) -> None:
    example = re.search(r"```python\n(.*?)```", README, re.S)
    assert example is not None
    assert len(example.group(1).strip().splitlines()) <= 15
    env = {**os.environ, "SWARM_REDIS_URL": redis_url, "SWARM_NAME": f"readme-{os.getpid()}"}
    done = subprocess.run([sys.executable, "-c", example.group(1)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.stderr == ""
    assert re.fullmatch(r"t-\d+ done docstrings drafted\n", done.stdout)


def test_readme_commands_are_the_scripts() -> None:
    for command in ("scripts/demo", "scripts/test"):
        assert f"\n{command} " in README
        assert os.access(ROOT / command, os.X_OK)
    assert "scripts/test" in (ROOT / ".ci" / "run").read_text()

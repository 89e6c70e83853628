"""scripts/attack.py, run as a reader would run it (its own embedded server in ACL mode): every
attack is refused, except the two raw writes Redis ACLs cannot tell from a script's, which the same
run shows refused through the HTTP API."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_attack_is_refused_but_the_two_known_raw_writes() -> None:
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "attack.py")], capture_output=True, text=True,
                         check=False, timeout=120, cwd=ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    rows = [line.split(" | ")[:2] for line in run.stdout.splitlines() if line.startswith("| ") and " | " in line]
    verdicts = {what.strip("| ").strip(): verdict.strip() for what, verdict in rows[2:]}
    assert len(verdicts) == 22
    assert {what for what, verdict in verdicts.items() if verdict != "refused"} == {
        "write a board key directly (an agent with a Redis user)",
        "publish with alice as sender (raw XADD, an agent with a Redis user)",
    }
    assert {verdicts[what] for what in verdicts if what.startswith("web API:")} == {"refused"}

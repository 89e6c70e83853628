"""User mistakes end as one `error:` line on stderr and exit code 1, never a traceback."""

from __future__ import annotations

from typer.testing import CliRunner

from swarm.cli import app


def test_bad_option_values_are_one_line_errors(redis_url: str) -> None:
    runner = CliRunner()
    env = {"SWARM_REDIS_URL": redis_url, "SWARM_NAME": "cli-errors"}
    cases = {
        ("agent", "run", "--name", "bad name"):
            "error: name: String should match pattern '^[A-Za-z0-9_.-]{1,64}$' (got 'bad name')\n",
        ("agent", "run", "--name", "a1", "--can", "Audit"):
            "error: capabilities: capability 'Audit' must be '*' or lowercase letters, digits, '_' or '-' "
            "(got \"('Audit',)\")\n",
        ("agent", "run"): "error: give --name NAME (with --can CAPS), or --card FILE\n",
        ("send", "bob", "x" * 17_000): f"error: text: String should have at most 16384 characters (got {'x' * 60!r})\n",
    }
    for args, expected in cases.items():
        result = runner.invoke(app, list(args), env=env)
        assert (result.exit_code, result.stderr, result.stdout) == (1, expected, ""), args


def test_a_bad_setting_names_the_variable(redis_url: str) -> None:
    result = CliRunner().invoke(app, ["board"], env={"SWARM_REDIS_URL": redis_url, "SWARM_NAME": "a b"})
    assert (result.exit_code, result.stderr) == (
        1, "error: SWARM_NAME: swarm name 'a b' must be 1-64 characters of letters, digits, '_', '.' or '-'\n")

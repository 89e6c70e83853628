"""`swarm server start|stop|status`: the embedded Valkey."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from swarm.cli.common import AsJson, app, out, print_json, safe, settings
from swarm.errors import ConfigError
from swarm.server import EmbeddedServer, ServerState

server = app("The embedded Valkey server under SWARM_HOME (unused when SWARM_REDIS_URL is set).")

Tls = Annotated[bool | None, typer.Option(
    "--tls/--no-tls",
    help="Listen for TLS only, with a CA and certificates made once in SWARM_HOME/tls (needs a server binary "
         "built with TLS, e.g. apt-get install redis-server); remembered by later starts until --no-tls. "
         "Unset: as last chosen.",
)]


def _embedded() -> EmbeddedServer:
    s = settings()
    if s.redis_url:
        raise ConfigError(
            f"SWARM_REDIS_URL is set ({s.redis_url.split('@')[-1]}), so there is no embedded server to "
            "manage; unset it to use the embedded one"
        )
    return EmbeddedServer(s.home)


def _facts(state: ServerState) -> dict[str, Any]:
    facts: dict[str, Any] = {"pid": state.pid, "port": state.port, "url": state.url, "tls": state.tls is not None}
    if state.tls is not None:
        facts |= {"ca": str(state.tls.ca), "client_cert": str(state.tls.client_cert),
                  "client_key": str(state.tls.client_key)}
    return facts


def _running(state: ServerState, where: str = "") -> str:
    """What `start` and `status` say about a running server; with TLS, the files a client needs."""
    line = f"server running{' with TLS' if state.tls else ''}: pid {state.pid}, {state.url}{where}"
    if state.tls is None:
        return line
    return (f"{line}\nswarm commands with this SWARM_HOME trust its CA themselves; other clients: "
            f"export SWARM_TLS_CA={_path(state.tls.ca)}\n"
            f"for mutual TLS: export SWARM_TLS_CERT={_path(state.tls.client_cert)} "
            f"SWARM_TLS_KEY={_path(state.tls.client_key)}")


def _path(path: Path) -> str:
    return safe(str(path))


@server.command()
def start(tls: Tls = None, as_json: AsJson = False) -> None:
    """Start the embedded server (no-op when it already runs; --tls or --no-tls refuse a server running
    the other way)."""
    state = _embedded().ensure(tls=tls)
    if as_json:
        print_json({"running": True, **_facts(state)})
    else:
        out.print(_running(state))


@server.command()
def stop() -> None:
    """Stop the embedded server; its append-only file keeps the data for the next start."""
    out.print("server stopped" if _embedded().stop() else "server was not running")


@server.command()
def status(as_json: AsJson = False) -> None:
    """Say whether the embedded server runs, and whether with TLS (exit code 1 when it does not run)."""
    embedded = _embedded()
    state = embedded.status()
    if as_json:
        print_json({"running": state is not None, "home": str(embedded.home), **(_facts(state) if state else {})})
    elif state:
        out.print(_running(state, f", data in {_path(embedded.home)}"))
    else:
        out.print(f"server not running (data dir {embedded.home}); `swarm server start` starts it")
    if state is None:
        raise typer.Exit(1)

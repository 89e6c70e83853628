"""`swarm server start|stop|status`: the embedded Valkey."""

from __future__ import annotations

import typer

from swarm.cli.common import AsJson, app, out, print_json, settings
from swarm.errors import ConfigError
from swarm.server import EmbeddedServer

server = app("The embedded Valkey server under SWARM_HOME (unused when SWARM_REDIS_URL is set).")


def _embedded() -> EmbeddedServer:
    s = settings()
    if s.redis_url:
        raise ConfigError(
            f"SWARM_REDIS_URL is set ({s.redis_url.split('@')[-1]}), so there is no embedded server to "
            "manage; unset it to use the embedded one"
        )
    return EmbeddedServer(s.home)


@server.command()
def start(as_json: AsJson = False) -> None:
    """Start the embedded server (no-op when it already runs)."""
    state = _embedded().ensure()
    if as_json:
        print_json({"running": True, "pid": state.pid, "port": state.port, "url": state.url})
    else:
        out.print(f"server running: pid {state.pid}, {state.url}")


@server.command()
def stop() -> None:
    """Stop the embedded server; its append-only file keeps the data for the next start."""
    out.print("server stopped" if _embedded().stop() else "server was not running")


@server.command()
def status(as_json: AsJson = False) -> None:
    """Say whether the embedded server runs (exit code 1 when it does not)."""
    embedded = _embedded()
    state = embedded.status()
    if as_json:
        print_json({"running": state is not None, "home": str(embedded.home),
                    **({"pid": state.pid, "port": state.port, "url": state.url} if state else {})})
    elif state:
        out.print(f"server running: pid {state.pid}, {state.url}, data in {embedded.home}")
    else:
        out.print(f"server not running (data dir {embedded.home}); `swarm server start` starts it")
    if state is None:
        raise typer.Exit(1)

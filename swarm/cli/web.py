"""`swarm web`: serve the live board and the HTTP API; `swarm web token`: issue a role token.

The web framework is imported only when the board is served: every other command starts as fast
as it did without it.
"""

from __future__ import annotations

import socket
import sys
from datetime import UTC, datetime
from typing import Annotated

import typer

from swarm.cli.common import AsJson, SwarmGroup, print_json, run_loop, server_url, settings
from swarm.errors import ConfigError

LOOPBACK = "127.0.0.1"

web = typer.Typer(cls=SwarmGroup, invoke_without_command=True, no_args_is_help=False, add_completion=False,
                  help="Serve the live board in a browser and the HTTP API for agents, until Ctrl-C; `swarm web token` "
                       "issues role tokens.")


@web.callback()
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = LOOPBACK,
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port (0: any free port, printed).")] = 8300,
    open_read: Annotated[bool, typer.Option(
        "--open-read", help=f"Let requests from this machine read without a token (binds to {LOOPBACK} only).",
    )] = False,
) -> None:
    """Serve the board (pages, JSON API, live board events, /docs, /healthz) until Ctrl-C."""
    if ctx.invoked_subcommand is not None:
        return
    if open_read and host != LOOPBACK:
        raise ConfigError(f"--open-read lets anyone who can connect read the board, so it binds only to {LOOPBACK}, "
                          f"not {host}: drop --host, or drop --open-read and hand out viewer tokens")
    s = settings()
    # The framework loads here, not at the top: `swarm task next` must not pay for it.
    import uvicorn  # noqa: PLC0415

    from swarm.web.app import create_app  # noqa: PLC0415

    app = create_app(s, open_read=open_read)
    server_url(s)  # start the embedded server here, where starting it is said
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}; choose another --port (0: any free "
                          "port)") from None
    bound = sock.getsockname()[1]
    where = f"[{host}]" if family == socket.AF_INET6 else host
    reading = "reading without a token from this machine" if open_read else "every request needs a token"
    print(f"swarm web: http://{where}:{bound}/ for swarm {s.name} ({reading}; `swarm web token` issues tokens; "
          "the API is described at /docs)", file=sys.stderr, flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                                           timeout_graceful_shutdown=2))
    try:
        run_loop(s, lambda: server.serve(sockets=[sock]))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    finally:
        sock.close()


@web.command()
def token(
    role: Annotated[str, typer.Option("--role", help="captain, agent or viewer.", show_default=False)],
    agent: Annotated[str, typer.Option("--agent", help="With --role agent: the agent it acts as.")] = "",
    ttl: Annotated[str, typer.Option("--ttl", help="How long it is valid: 30m, 12h, 1d, 2w ...")] = "1d",
    as_json: AsJson = False,
) -> None:
    """Issue a role token for this swarm's board (printed on stdout)."""
    s = settings()
    from swarm.web.auth import Tokens, parse_ttl  # noqa: PLC0415  (PyJWT only for this command)

    seconds = parse_ttl(ttl)
    value = Tokens.load(s).issue(role, agent or None, seconds)
    expires = int(datetime.now(UTC).timestamp()) + seconds
    if as_json:
        print_json({"token": value, "role": role, "agent": agent or None, "swarm": s.name, "expires": expires})
        return
    until = datetime.fromtimestamp(expires, tz=UTC).strftime("%Y-%m-%d %H:%M")
    who = f"agent {agent}" if agent else role
    print(f"a token for {who} on swarm {s.name}, valid until {until} UTC; send it as `Authorization: Bearer <token>`, "
          f"or open http://{LOOPBACK}:8300/#token=<token>", file=sys.stderr)
    print(value)

"""The `swarm` command: a typer sub-app per noun, thin (parse, call, print)."""

from __future__ import annotations

from swarm.cli import messages
from swarm.cli.common import app as _app
from swarm.cli.server import server

app = _app("swarm: a coordination bus for fleets of agents over Redis Streams.")
app.command()(messages.send)
app.command()(messages.broadcast)
app.command()(messages.tail)
app.add_typer(messages.dlq, name="dlq")
app.add_typer(server, name="server")


def main() -> None:
    """Console-script entry point."""
    app()

"""The `swarm` command: a typer sub-app per noun, thin (parse, call, print)."""

from __future__ import annotations

from swarm.cli import demo, discovery, messages, stats, workers
from swarm.cli.agents import agents as list_agents
from swarm.cli.board import board as show_board
from swarm.cli.captain import captain as captain_app
from swarm.cli.common import app as _app
from swarm.cli.server import server
from swarm.cli.tasks import task as task_app

app = _app("swarm: a coordination bus for fleets of agents over Redis Streams.")
app.command()(messages.send)
app.command()(messages.broadcast)
app.command()(messages.tail)
app.add_typer(messages.dlq, name="dlq")
app.add_typer(server, name="server")
app.command("board")(show_board)
app.command("agents")(list_agents)
app.add_typer(task_app, name="task")
app.add_typer(captain_app, name="captain")
app.add_typer(workers.agent_app, name="agent")
app.command()(workers.up)
app.command()(workers.down)
app.command()(workers.ps)
app.command()(discovery.discover)
app.command()(discovery.signals)
app.add_typer(discovery.discovery_app, name="discovery")
app.command()(demo.demo)
app.command()(stats.stats)
app.command()(stats.health)


def main() -> None:
    """Console-script entry point."""
    app()

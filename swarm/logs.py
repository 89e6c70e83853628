"""structlog, configured once per process: a console renderer on a TTY, JSON lines otherwise."""

from __future__ import annotations

import logging
import sys
from typing import TextIO, cast

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure(level: str = "info", *, json: bool | None = None, swarm: str | None = None) -> None:
    """Set up structlog for this process; logs go to stderr so stdout stays for command output.
    With `swarm`, every line names the swarm (agents, tasks and messages are bound where known)."""
    if level.lower() not in _LEVELS:
        level = "info"
    as_json = not sys.stderr.isatty() if json is None else json
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer(colors=True)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info if as_json else structlog.dev.set_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level.lower()]),
        logger_factory=structlog.PrintLoggerFactory(file=cast(TextIO, _Stderr())),
        cache_logger_on_first_use=False,
    )
    if swarm is not None:
        structlog.contextvars.bind_contextvars(swarm=swarm)


class _Stderr:
    """Whatever `sys.stderr` is at write time (tests and tools swap it; a stale handle would be closed)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

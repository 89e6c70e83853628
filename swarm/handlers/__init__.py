"""Handlers: `async def handle(task, ctx) -> result`, and how a card names one.

A handler spec is one of:
- `builtin` — the built-in handler for discovery's task kinds (consolidation, audit, docs, todo);
- `cmd:<command template>` — run a command per task (see `swarm.handlers.command`);
- `path/to/file.py:function` — a function in a Python file (relative to the roster folder);
- `package.module:function` — a function in an importable module.
A bad spec is one clear ConfigError at start-up, never a surprise at the first task.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from pathlib import Path

from swarm.agent import Handler
from swarm.errors import ConfigError
from swarm.handlers.command import CommandHandler

EXAMPLE = "agents/reviewer.py:handle"

BUILTIN_KINDS = ("consolidation", "audit", "docs", "todo")
"""The task kinds the built-in handler does: what an agent running it claims when no --can is given."""


def load_handler(spec: str, base: Path | None = None, *, timeout_s: float = 600.0) -> Handler:
    """Resolve a handler spec (see the module doc) to an async callable, or raise ConfigError."""
    spec = spec.strip()
    if spec == "builtin":
        from swarm.handlers.builtin import handle  # noqa: PLC0415 - pulls in discovery only when used

        return handle
    if spec.startswith("cmd:"):
        return CommandHandler(spec.removeprefix("cmd:"), timeout_s=timeout_s)
    target, sep, name = spec.rpartition(":")
    if not sep or not target or not name:
        raise ConfigError(f"handler {spec!r} must be builtin, cmd:<command>, FILE.py:FUNCTION or MODULE:FUNCTION "
                          f"(e.g. {EXAMPLE})")
    if target.endswith(".py"):
        path = (base or Path.cwd()) / target
        if not path.is_file():
            raise ConfigError(f"handler file {path} does not exist; give a path like {EXAMPLE}")
        module_name = f"swarm_handler_{path.stem}_{abs(hash(str(path)))}"
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        assert module_spec is not None
        assert module_spec.loader is not None
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            raise ConfigError(f"handler file {path} failed to load: {type(exc).__name__}: {exc}") from exc
        where = str(path)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise ConfigError(f"cannot import handler module {target!r}: {exc}") from exc
        where = target
    func = getattr(module, name, None)
    if func is None:
        raise ConfigError(f"{where} has no function {name!r}; define `async def {name}(task, ctx)` there")
    if not inspect.iscoroutinefunction(func):
        raise ConfigError(f"{where}:{name} is not an async function; define it as `async def {name}(task, ctx)`")
    handler: Handler = func
    return handler

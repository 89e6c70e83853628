"""What every CLI command shares: settings, the async runner, output, and error handling."""

from __future__ import annotations

import json
import sys
import unicodedata
from collections.abc import Awaitable, Callable, Sequence
from importlib.util import find_spec
from typing import Annotated, Any, TypeVar

import anyio
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from swarm.bus import Bus
from swarm.connection import open_redis
from swarm.errors import ConfigError, SwarmError
from swarm.logs import configure
from swarm.server import EmbeddedServer, ServerState
from swarm.settings import Settings

T = TypeVar("T")

AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]
"""The `--json` flag every read command takes."""

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class SwarmGroup(TyperGroup):
    """Typer group whose user mistakes end as one clear stderr message and exit code 1."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().main(*args, **kwargs)
        except SystemExit as exc:
            if exc.code == 2:  # a usage error, already printed with its fix: exit 1, not click's 2
                sys.exit(1)
            raise
        except SwarmError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(1)
        except ValidationError as exc:  # an option value a model refused (a name, a text too long)
            print(f"error: {_invalid(exc)}", file=sys.stderr)
            sys.exit(1)
        except BaseExceptionGroup as group:  # raised inside a task group: the first swarm error says it
            matched, _ = group.split(SwarmError)
            if matched is None:
                raise
            first: BaseException = matched
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            print(f"error: {first}", file=sys.stderr)
            sys.exit(1)


def _invalid(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in err["loc"]) or exc.title
    return f"{where}: {err['msg'].removeprefix('Value error, ')} (got {str(err.get('input'))[:60]!r})"


def app(help_text: str, *, completion: bool = False) -> typer.Typer:
    """A (sub-)app with swarm's error handling; `completion` adds typer's `--install-completion` and
    `--show-completion` (the root `swarm` app only: a sub-app's would never be offered)."""
    return typer.Typer(cls=SwarmGroup, help=help_text, no_args_is_help=True, add_completion=completion)


def settings() -> Settings:
    """Settings from the environment, with a ConfigError that names the bad variable."""
    try:
        s = Settings()
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        name = "SWARM_" + str(first["loc"][0]).upper() if first["loc"] else "SWARM_*"
        raise ConfigError(f"{name}: {first['msg'].removeprefix('Value error, ')}") from None
    configure(s.log_level, swarm=s.name)
    return s


def run_loop(s: Settings, fn: Callable[[], Awaitable[T]]) -> T:
    """`anyio.run(fn)`, on uvloop when `SWARM_UVLOOP` allows it and it is installed."""
    return anyio.run(fn, backend_options={"use_uvloop": s.uvloop and find_spec("uvloop") is not None})


def server_url(s: Settings) -> str:
    """The Redis URL a command uses: `SWARM_REDIS_URL`, or the embedded server's under `SWARM_HOME`.
    A command that starts the embedded server says so in one stderr line, naming the home and port:
    the home is found from the working directory, so the line shows which project's server it is."""
    if s.redis_url:
        return s.redis_url

    def started(state: ServerState) -> None:
        print(f"swarm: started the embedded server for {s.home.resolve()} on 127.0.0.1:{state.port}"
              f"{' with TLS' if state.tls else ''}", file=sys.stderr, flush=True)

    return EmbeddedServer(s.home).ensure(on_start=started).url


def run_with_bus(fn: Callable[[Bus], Awaitable[T]]) -> T:
    """Connect (embedded server on demand), build the bus, run `fn`, close."""
    s = settings()
    server_url(s)  # start the embedded server here, where starting it is said; open_redis then finds it

    async def go() -> T:
        async with open_redis(s) as redis:
            return await fn(Bus(redis, s))

    try:
        return run_loop(s, go)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def print_json(data: Any) -> None:
    """One JSON document on stdout."""
    sys.stdout.write(json.dumps(data, default=str, ensure_ascii=False) + "\n")
    sys.stdout.flush()


_CONTROL = {c: "\ufffd" for c in range(0x20) if c not in (0x09, 0x0A)}
_CONTROL.update({0x7F: "\ufffd"})
_CONTROL.update(dict.fromkeys(range(128, 160), "�"))


def safe(text: str) -> str:
    """`text` fit for a terminal: control characters (ANSI escapes, bells) and rich markup neutralised."""
    cleaned = text.translate(_CONTROL)
    if any(unicodedata.category(ch) in ("Cf", "Co") for ch in cleaned):  # bidi overrides and friends
        cleaned = "".join("\ufffd" if unicodedata.category(ch) in ("Cf", "Co") else ch for ch in cleaned)
    return escape(cleaned)


def csv(values: Sequence[str] | None) -> list[str]:
    """Options given as `--can a,b --can c` → ['a', 'b', 'c']."""
    return [v.strip() for value in values or () for v in value.split(",") if v.strip()]

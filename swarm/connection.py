"""The one boundary where redis-py meets swarm: connecting, retrying, and translating errors."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

import anyio
import redis.exceptions as rex
import structlog
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from swarm.errors import BackendError, ConnectionLost
from swarm.server import EmbeddedServer
from swarm.settings import Settings

log = structlog.get_logger("swarm.connection")
_T = TypeVar("_T")


def resolve_url(settings: Settings) -> str:
    """`SWARM_REDIS_URL`, or the embedded server's URL (started on demand)."""
    if settings.redis_url:
        return settings.redis_url
    return EmbeddedServer(settings.home).ensure().url


class SwarmRedis(Redis):
    """redis-py's asyncio client, with the one boundary where its errors become swarm errors: every
    command and every pipeline goes through it, so no Redis error reaches swarm's code untranslated."""

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        """Run one command; a redis-py error comes out as a `BackendError` (see `translate`)."""
        try:
            return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        except rex.NoScriptError:
            raise  # redis-py's Script catches it, loads the script and runs it again
        except rex.RedisError as exc:
            raise translate(exc, str(args[0]) if args else "COMMAND") from exc

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        """A pipeline whose `execute` translates errors the same way."""
        return _Pipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)


class _Pipeline(Pipeline):
    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        try:
            return await super().execute(raise_on_error)
        except rex.RedisError as exc:
            raise translate(exc, "PIPELINE") from exc


_doing: ContextVar[str | None] = ContextVar("swarm_redis_doing", default=None)


@contextmanager
def doing(what: str) -> Iterator[None]:
    """Name what the commands inside the block are for, so that an error says it ("Redis
    unreachable while connecting to ..."); without a name, an error names the command."""
    token = _doing.set(what)
    try:
        yield
    finally:
        _doing.reset(token)


def translate(exc: rex.RedisError, command: str) -> BackendError:
    """The swarm error for a redis-py error raised while running `command`."""
    what = _doing.get() or f"running {command.upper()}"
    if isinstance(exc, rex.ConnectionError | rex.TimeoutError):
        return ConnectionLost(
            f"Redis unreachable while {what}: {exc}; check SWARM_REDIS_URL or run `swarm server status`"
        )
    word = str(exc).split(" ", 1)[0]
    return BackendError(f"Redis refused {what}: {exc}", code=word if word.isupper() else "")


def text(value: object) -> str:
    """A Redis reply value (bytes, or anything else) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


class Backoff:
    """The wait between tries of a loop that needs Redis: 0.1 s, doubling up to 5 s; `reset` it
    once a try succeeds."""

    first = 0.1
    cap = 5.0

    def __init__(self) -> None:
        self.delay = self.first

    @property
    def failing(self) -> bool:
        """True after a failed try that no success has followed yet."""
        return self.delay > self.first

    async def wait(self) -> None:
        """Sleep the current delay, then double it."""
        await anyio.sleep(self.delay)
        self.delay = min(self.delay * 2, self.cap)

    def reset(self) -> None:
        """Start again from the first delay."""
        self.delay = self.first


async def retrying(step: Callable[[], Awaitable[_T]], what: str, **context: object) -> _T:
    """`step()`'s result, trying again with `Backoff` while Redis fails (`what` names the step in
    the warning logged each time): for work already done that must still be recorded."""
    backoff = Backoff()
    while True:
        try:
            return await step()
        except BackendError as exc:
            log.warning(f"cannot reach Redis to {what}; retrying", error=str(exc), backoff=backoff.delay, **context)
            await backoff.wait()


def client(url: str, settings: Settings) -> Redis:
    """A client that retries connection loss with jittered exponential backoff and translates every
    error at the boundary (`SwarmRedis`)."""
    return SwarmRedis.from_url(
        url,
        retry=Retry(ExponentialWithJitterBackoff(cap=2.0, base=0.05), settings.connect_retries),
        retry_on_error=[rex.ConnectionError, rex.TimeoutError],
        health_check_interval=30,
        socket_keepalive=True,
    )


@asynccontextmanager
async def open_redis(settings: Settings) -> AsyncIterator[Redis]:
    """Connect (starting the embedded server if no URL is set), check with PING, close on exit."""
    url = await anyio.to_thread.run_sync(resolve_url, settings)
    redis = client(url, settings)
    try:
        with doing(f"connecting to {safe_url(url)}"):
            await redis.ping()
        yield redis
    finally:
        await redis.aclose()


def safe_url(url: str) -> str:
    """The URL without its password, fit for messages and logs."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rpartition('@')[2]}"

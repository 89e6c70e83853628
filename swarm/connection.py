"""The one boundary where redis-py meets swarm: connecting, retrying, and translating errors."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import anyio
import redis.exceptions as rex
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from swarm.errors import BackendError, ConnectionLost
from swarm.server import EmbeddedServer
from swarm.settings import Settings


def resolve_url(settings: Settings) -> str:
    """`SWARM_REDIS_URL`, or the embedded server's URL (started on demand)."""
    if settings.redis_url:
        return settings.redis_url
    return EmbeddedServer(settings.home).ensure().url


def client(url: str, settings: Settings) -> Redis:
    """A redis-py asyncio client that retries connection loss with jittered exponential backoff."""
    return Redis.from_url(
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
        with translated(f"connecting to {_safe(url)}"):
            await redis.ping()
        yield redis
    finally:
        await redis.aclose()


@contextmanager
def translated(doing: str) -> Iterator[None]:
    """Turn redis-py errors raised inside the block into swarm errors that say what was going on."""
    try:
        yield
    except (rex.ConnectionError, rex.TimeoutError) as exc:
        raise ConnectionLost(
            f"Redis unreachable while {doing}: {exc}; check SWARM_REDIS_URL or run `swarm server status`"
        ) from exc
    except rex.RedisError as exc:
        raise BackendError(f"Redis refused {doing}: {exc}") from exc


def _safe(url: str) -> str:
    """The URL without its password, fit for messages and logs."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rpartition('@')[2]}"

"""The one boundary where redis-py meets swarm: connecting, retrying, and translating errors."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar, cast
from urllib.parse import unquote, urlsplit

import anyio
import redis.exceptions as rex
import structlog
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from swarm.cluster import Replication, cluster_client, server_mode, split_options
from swarm.errors import AuthError, BackendError, ConnectionLost
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
    reply = str(exc).rstrip(".")
    if isinstance(exc, rex.AuthenticationError):  # before ConnectionError: redis-py files it as one
        # `_Retry` notes who logged in where; the error itself names neither (and never the password).
        who = next((n for n in getattr(exc, "__notes__", ()) if n.startswith("for ")), f"while {what}")
        code = getattr(exc, "status_code", None) or ("NOAUTH" if "authenticat" in reply.lower() else "WRONGPASS")
        reason = "the server requires a password and none was sent" if code == "NOAUTH" else reply
        return AuthError(f"Redis refused the credentials {who}: {reason}; set the password in SWARM_REDIS_URL "
                         "(redis://user:password@host:port)", code=code)
    if isinstance(exc, rex.NoPermissionError):
        return AuthError(f"Redis refused permission while {what}: {reply}; grant it to that user in the server's "
                         "ACL (ACL SETUSER), or name a user that has it in SWARM_REDIS_URL", code="NOPERM")
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


class _Retry(Retry):
    """redis-py's Retry with jittered exponential backoff, except that refused credentials fail at
    once: redis-py's AuthenticationError is a ConnectionError, so it was retried (for 27 s) and then
    reported as "unreachable", though the same credentials cannot succeed on a later try."""

    def __init__(self, url: str, retries: int) -> None:
        super().__init__(ExponentialWithJitterBackoff(cap=2.0, base=0.05), retries)
        parts = urlsplit(url)
        where = parts.path if parts.scheme == "unix" else f"{parts.hostname}:{parts.port or 6379}"
        self.login = f"for {unquote(parts.username or 'default')} at {where}"
        """How `translate` names who was refused where (the error does not say; the URL's password stays out)."""

    async def call_with_retry(self, do: Callable[[], Awaitable[_T]], fail: Callable[..., Any], *args: Any,
                              **kwargs: Any) -> _T:
        """Run `do`, retrying connection loss; raise an AuthenticationError at the first one."""

        async def fail_fast(error: Exception, *more: Any) -> None:
            await fail(error, *more)  # (disconnects, as for any connection error)
            if isinstance(error, rex.AuthenticationError):
                if self.login not in getattr(error, "__notes__", ()):
                    error.add_note(self.login)
                raise error

        result: _T = await super().call_with_retry(do, fail_fast, *args, **kwargs)
        return result


def client(url: str, settings: Settings, *, cluster: bool = False) -> Redis:
    """A client that retries connection loss with jittered exponential backoff and translates every
    error at the boundary (`SwarmRedis`); with `cluster`, a `SwarmCluster` for the cluster the node at
    `url` belongs to (`open_redis` finds out which). `?wait_replicas=N&wait_ms=T` on the URL makes
    script calls wait for replicas (see `swarm.cluster`)."""
    url, replicas, wait_ms = split_options(url)
    redis: Redis
    if cluster:
        # Typed as Redis: the cluster client has the same command methods, and swarm sends only
        # commands on one slot (one swarm's keys) or commands the cluster client routes itself.
        redis = cast(Redis, cluster_client(url, settings.name, settings.connect_retries, health_check_interval=30,
                                           socket_keepalive=True, **_security(url, settings)))
    else:
        redis = SwarmRedis.from_url(
            url,
            retry=_Retry(url, settings.connect_retries),
            retry_on_error=[rex.ConnectionError, rex.TimeoutError],
            health_check_interval=30,
            socket_keepalive=True,
            **_security(url, settings),
        )
    redis.replication = Replication(replicas, wait_ms)  # type: ignore[attr-defined]
    return redis


def _security(url: str, settings: Settings) -> dict[str, Any]:
    """Credentials (SWARM_USER, SWARM_PASSWORD: the URL's own win) and, for rediss://, the CA and
    client certificate files. Without SWARM_REDIS_URL a rediss:// URL is the embedded server's, started
    with `--tls`: the CA trusted is its own, in SWARM_HOME (a SWARM_TLS_CA meant for another server
    cannot have signed it)."""
    options: dict[str, Any] = {}
    if settings.password is not None:
        options["password"] = settings.password.get_secret_value()
        if settings.user:
            options["username"] = settings.user
    if url.startswith("rediss://"):
        options["ssl_cert_reqs"] = "required"
        ca = settings.tls_ca if settings.redis_url else EmbeddedServer(settings.home).certificates.ca
        if ca is not None:
            options["ssl_ca_certs"] = str(ca)
        if settings.tls_cert is not None:
            options["ssl_certfile"] = str(settings.tls_cert)
            options["ssl_keyfile"] = str(settings.tls_key) if settings.tls_key else None
    return options


@asynccontextmanager
async def open_redis(settings: Settings) -> AsyncIterator[Redis]:
    """Connect (starting the embedded server if no URL is set), ask the server its mode (`HELLO`: a
    node of a cluster gives a cluster client, see `swarm.cluster`), close on exit."""
    url = await anyio.to_thread.run_sync(resolve_url, settings)
    redis = await connect(url, settings)
    try:
        yield redis
    finally:
        await redis.aclose()


async def connect(url: str, settings: Settings) -> Redis:
    """A connected `client` for `url`: a cluster client when the server is a node of a cluster (it
    says so in `HELLO`). The caller closes it (`aclose`)."""
    redis = client(url, settings)
    try:
        with doing(f"connecting to {safe_url(url)}"):
            if await server_mode(redis) == "cluster":
                await redis.aclose()
                redis = client(url, settings, cluster=True)
                await redis.ping()  # learns the slot map; an error here says what is wrong
    except BaseException:
        await redis.aclose()
        raise
    return redis


def safe_url(url: str) -> str:
    """The URL without its password, fit for messages and logs."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rpartition('@')[2]}"

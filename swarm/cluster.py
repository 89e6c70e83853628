"""swarm on a Redis/Valkey Cluster, and transitions that wait for a replica.

**Selection.** `open_redis` asks the server it connects to for its mode (`HELLO`, which every
user may send): a node of a cluster gives a `SwarmCluster`, redis-py's asyncio `RedisCluster`
behind the same error boundary as `SwarmRedis`. So `SWARM_REDIS_URL` names any one node of the
cluster; the client finds the others (`CLUSTER SLOTS`) and follows `MOVED`/`ASK` and failovers.

**One slot per swarm.** Every key of a swarm carries the hash tag `{<swarm>}` and every script call
passes a key of the swarm as KEYS[1], so a script runs on the master that owns the swarm's slot and
stays atomic there. The keyless commands swarm sends (`TIME`, `WAIT`, `INFO`, `PING`) go to that
same master (`home`): the board compares lease expiries stamped by that master's clock with that
clock. `CLIENT LIST`, which presence reads, is answered per node: the client joins the lists of
every master, so an agent counts as connected wherever its connections are. `FLUSHDB` and `SCRIPT
LOAD` run on every master (redis-py's own routing); `SCAN` on the swarm's master only, where all its
keys are, with one server's reply shape.

**Waiting for a replica.** Replication is asynchronous: a master that dies can take its last
acknowledged writes with it. `?wait_replicas=N&wait_ms=T` on the URL makes every script call (each
board transition, each publish) send `WAIT N T` on the same connection right after the script, so
a transition is acknowledged only once N replicas have it, or T ms have passed. When fewer replicas
answer in time (none is left after a failover), the transition stands, a warning is logged and
`unreplicated` counts it, and calls skip waiting for `SHORT_PAUSE_S`: the swarm goes on rather than
stop (or crawl) without a replica. Script calls queued in a caller's pipeline are not waited for.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Generator, Iterable, Sequence
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio
import redis.exceptions as rex
import structlog
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.backoff import ExponentialWithJitterBackoff
from redis.commands.core import AsyncScript
from redis.crc import key_slot
from redis.typing import EncodableT, KeyT

from swarm.errors import BackendError, ConfigError
from swarm.keys import Keys

log = structlog.get_logger("swarm.cluster")

RETRYABLE = (rex.ConnectionError, rex.TimeoutError, rex.ClusterDownError, rex.SlotNotCoveredError,
             rex.MasterDownError, rex.TryAgainError)
"""What a failover looks like from a client: the old master is gone, or the cluster has not agreed
on its successor yet. Retried with backoff; a refused login (`AuthenticationError`) never is."""
WAIT_OPTIONS = ("wait_replicas", "wait_ms")
SETTLE_S = 5.0
"""How long after the cluster's masters changed `client_list` refuses to answer (see there)."""
SHORT_PAUSE_S = 1.0
"""After a WAIT that came back short (a master left without replicas by a failover), script calls
skip waiting this long: such a master costs one `wait_ms` per second, not one per transition."""


def home_slot(swarm: str) -> int:
    """The cluster slot every key of the swarm `swarm` hashes to."""
    return int(key_slot(Keys(swarm).prefix.encode()))


def split_options(url: str) -> tuple[str, int, int]:
    """`url` without swarm's own query options, and those options: (url, wait_replicas, wait_ms)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    ours = {k: v for k, v in query if k in WAIT_OPTIONS}
    if not ours:
        return url, 0, 100
    rest = [(k, v) for k, v in query if k not in WAIT_OPTIONS]
    try:
        replicas, ms = int(ours.get("wait_replicas", 0)), int(ours.get("wait_ms", 100))
    except ValueError:
        raise ConfigError(f"SWARM_REDIS_URL options {ours} must be whole numbers, as in "
                          "?wait_replicas=1&wait_ms=100") from None
    if replicas < 0 or ms < 0:
        raise ConfigError(f"SWARM_REDIS_URL options {ours} must not be negative, as in ?wait_replicas=1&wait_ms=100")
    return urlunsplit(parts._replace(query=urlencode(rest))), replicas, ms


class Replication:
    """What `?wait_replicas=N&wait_ms=T` asked for, carried by the client; counts the shortfalls."""

    def __init__(self, replicas: int = 0, timeout_ms: int = 100) -> None:
        self.replicas = replicas
        self.timeout_ms = timeout_ms
        self.unreplicated = 0
        """Script calls that fewer than `replicas` replicas acknowledged within `timeout_ms`."""
        self.short_until = 0.0
        """Until then (monotonic), calls do not wait: the last wait came back short (see `SHORT_PAUSE_S`)."""

    def script(self, redis: Redis, source: str) -> AsyncScript:
        """`source` registered on `redis`, waiting for replicas after each call when asked to."""
        return ReplicatedScript(redis, source, self) if self.replicas else redis.register_script(source)


class ReplicatedScript(AsyncScript):
    """A script whose every call is followed by `WAIT` on the same connection (one round trip)."""

    def __init__(self, redis: Redis, source: str, replication: Replication) -> None:
        super().__init__(redis, source)
        self.replication = replication

    async def __call__(self, keys: Sequence[KeyT] | None = None, args: Iterable[EncodableT] | None = None,
                       client: Any = None) -> Any:
        """Run the script (loading it on NOSCRIPT), then wait for the replicas."""
        from swarm.connection import translate  # noqa: PLC0415 - connection imports this module

        if isinstance(client, Pipeline | ClusterPipeline):  # queued in a caller's pipeline: no WAIT of its own
            return await super().__call__(keys, args, cast(Any, client))
        redis = client or self.registered_client
        keys, args = list(keys or []), list(args or [])
        want, ms = self.replication.replicas, self.replication.timeout_ms
        if time.monotonic() < self.replication.short_until:
            self.replication.unreplicated += 1
            return await super().__call__(keys, args, redis)
        for _ in range(2):
            pipe = redis.pipeline(transaction=False)
            pipe.evalsha(self.sha, len(keys), *keys, *args)
            pipe.execute_command("WAIT", want, ms)
            result, acked = await pipe.execute(raise_on_error=False)
            if isinstance(result, rex.NoScriptError):  # a fresh master after a failover: load, run again
                self.sha = await redis.script_load(self.script)
                continue
            break
        if isinstance(result, rex.RedisError):
            raise translate(result, "EVALSHA")
        if isinstance(acked, int) and acked < want:
            self.replication.unreplicated += 1
            self.replication.short_until = time.monotonic() + SHORT_PAUSE_S
            log.warning("a transition was not acknowledged by enough replicas in time; it stands, and "
                        f"transitions do not wait for replicas for the next {SHORT_PAUSE_S:.0f} s",
                        wanted=want, acked=acked, wait_ms=ms)
        return result


class SwarmCluster(RedisCluster):
    """redis-py's asyncio cluster client with swarm's error boundary (see `SwarmRedis`), routing
    keyless commands to the master of `home`'s slot and retrying failovers with backoff."""

    def __init__(self, *args: Any, home: str = "default", retries: int = 6, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.home = home
        self.home_slot = home_slot(home)
        self.retries = retries
        self.replication = Replication()
        self._masters: frozenset[str] = frozenset()
        self._masters_changed = -math.inf
        self.sources: dict[str, Any] = {}
        """Script sources by SHA (`register_script`), for pipelines that meet NOSCRIPT."""
        self._options: tuple[tuple[Any, ...], dict[str, Any]] = (args, kwargs)

    def get_default_node(self) -> ClusterNode:
        """The master that owns the swarm's slot, once the slot map is known (redis-py's default
        node until then)."""
        try:
            return self.nodes_manager.get_node_from_slot(self.home_slot)
        except (rex.SlotNotCoveredError, KeyError):
            return super().get_default_node()

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        """Run one command; a failover is retried with jittered backoff (about 3 s in all, on top of
        redis-py's own tries), and an error comes out as a swarm error (see `connection.translate`)."""
        from swarm.connection import translate  # noqa: PLC0415 - connection imports this module

        if len(args) > 1 and isinstance(args[0], str) and isinstance(args[1], str | bytes):
            # ("CLIENT", "KILL", ...) routes as "CLIENT KILL" does (redis-py's own methods send the
            # two words as one name; its routing table knows only that form).
            both = f"{args[0]} {args[1].decode() if isinstance(args[1], bytes) else args[1]}".upper()
            if both in self.command_flags:
                args = (both, *args[2:])
        backoff = ExponentialWithJitterBackoff(cap=2.0, base=0.05)
        for attempt in range(self.retries + 1):
            try:
                return await super().execute_command(*args, **options)
            except rex.NoScriptError:
                raise  # redis-py's Script catches it, loads the script (on every master) and runs it again
            except RETRYABLE as exc:
                if attempt == self.retries or isinstance(exc, rex.AuthenticationError):
                    raise translate(_redis_error(exc), str(args[0]) if args else "COMMAND") from exc
                await anyio.sleep(backoff.compute(attempt + 1))
            except rex.ReadOnlyError as exc:
                # A master that a failover demoted, still in our map (a keyless write such as FLUSHDB
                # gets no MOVED to follow): learn the map again and retry.
                if attempt == self.retries:
                    raise translate(exc, str(args[0]) if args else "COMMAND") from exc
                await self.nodes_manager.initialize()
                await anyio.sleep(backoff.compute(attempt + 1))
            except rex.RedisError as exc:
                raise translate(exc, str(args[0]) if args else "COMMAND") from exc
            except rex.RedisClusterException as exc:
                raise translate(_redis_error(exc), str(args[0]) if args else "COMMAND") from exc
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> ClusterPipeline:
        """A pipeline whose `execute` translates errors the same way (its commands must share a slot
        when `transaction` is true: one swarm's keys do)."""
        if shard_hint:
            raise ConfigError("shard_hint is not supported on a cluster")
        return _ClusterPipeline(self, transaction)  # type: ignore[abstract]  # (redis-py's own class is the same)

    async def client_list(self, _type: str | None = None, client_id: list[EncodableT] | None = None,
                          **kwargs: Any) -> list[dict[str, str]]:
        """The clients of every master, joined: an agent's connections may be on any of them. For
        `SETTLE_S` after the masters changed (a failover), a BackendError (code TRYAGAIN) instead: the
        agents' connections are still moving to the new master, and presence must not take a live
        agent whose connections are on their way for a dead one."""
        masters = frozenset(node.name for node in self.get_primaries())
        if masters != self._masters:
            self._masters_changed = time.monotonic() if self._masters else -math.inf
            self._masters = masters
        since = time.monotonic() - self._masters_changed
        if since < SETTLE_S and "target_nodes" not in kwargs:
            raise BackendError(f"Redis refused listing clients: the cluster's masters changed {since:.1f}s ago "
                               f"(a failover); agents are reconnecting, so this look waits until {SETTLE_S:.0f}s "
                               "have passed", code="TRYAGAIN")
        nodes = kwargs.pop("target_nodes", None) or self.get_primaries()
        replies: dict[str, list[dict[str, str]]] | list[dict[str, str]] = await super().client_list(
            _type, client_id or [], target_nodes=nodes, **kwargs)
        if isinstance(replies, list):  # one node answered
            return replies
        return [client for reply in replies.values() for client in reply]

    async def scan(self, cursor: Any = 0, match: Any = None, count: int | None = None, _type: str | None = None,
                   **kwargs: Any) -> Any:
        """SCAN on the swarm's master only, with one server's reply `(cursor, keys)`: every key of the
        swarm is there (`target_nodes` given: redis-py's own, a cursor per node)."""
        if "target_nodes" in kwargs:
            return await super().scan(cursor, match, count, _type, **kwargs)
        cursors, keys = await super().scan(cursor, match, count, _type, target_nodes=self.get_default_node())
        return int(next(iter(cursors.values()))) if isinstance(cursors, dict) else int(cursors), keys

    async def scan_iter(  # type: ignore[override]  # (redis-py types it as a sync iterator)
        self, match: Any = None, count: int | None = None, _type: str | None = None, **kwargs: Any,
    ) -> AsyncIterator[Any]:
        """Every key `scan` finds, on the swarm's master."""
        cursor = 0
        while True:
            cursor, keys = await self.scan(cursor, match, count, _type, **kwargs)
            for key in keys:
                yield key
            if not cursor:
                return

    def register_script(self, script: Any) -> AsyncScript:  # type: ignore[override]  # (redis-py's is too)
        """`script` as an AsyncScript, its source kept by SHA so that a pipeline can load it on a
        master that lacks it (see `_ClusterPipeline`)."""
        registered = AsyncScript(self, script)
        self.sources[registered.sha] = script
        return registered

    def named(self, name: str) -> SwarmCluster:
        """A client like this one whose every connection is named `name` (see `presence.named`)."""
        args, kwargs = self._options
        twin = SwarmCluster(*args, **{**kwargs, "client_name": name}, home=self.home, retries=self.retries)
        twin.replication = self.replication
        twin.sources = self.sources
        return twin


class _ClusterPipeline(ClusterPipeline):
    """A cluster pipeline that translates errors and takes script calls: redis-py blocks EVALSHA in
    cluster pipelines because it cannot load a script the node lacks; `execute` does, from the
    sources the client registered, and runs again only the calls that found no script."""

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: EncodableT) -> Any:
        """Queue a script call (AsyncScript's `client=pipe` lands here)."""
        return self.execute_command("EVALSHA", sha, numkeys, *keys_and_args)

    def __await__(self) -> Generator[Any, None, _ClusterPipeline]:
        # AsyncScript awaits what `evalsha` returns; redis-py's ClusterPipeline empties its queue
        # when awaited, the standalone Pipeline returns itself: do that.
        return self._itself().__await__()

    async def _itself(self) -> _ClusterPipeline:
        return self

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> list[Any]:
        """Run the queued commands; a swarm error for the first that failed (with `raise_on_error`)."""
        from swarm.connection import translate  # noqa: PLC0415 - connection imports this module

        queued = [(cmd.args, dict(cmd.kwargs)) for cmd in getattr(self._execution_strategy, "_command_queue", [])]
        try:
            results = await super().execute(raise_on_error and not queued, allow_redirections)
            missing = [i for i, result in enumerate(results) if isinstance(result, rex.NoScriptError)]
            client = self.cluster_client
            sources: dict[str, str] = getattr(client, "sources", {})
            if missing and all(str(queued[i][0][1]) in sources for i in missing):
                for sha in {str(queued[i][0][1]) for i in missing}:  # (a master promoted since they were loaded)
                    await client.script_load(sources[sha])
                again = client.pipeline(transaction=False)
                for i in missing:
                    again.execute_command(*queued[i][0], **queued[i][1])
                for i, result in zip(missing, await again.execute(raise_on_error=False), strict=True):
                    results[i] = result
        except (rex.RedisError, rex.RedisClusterException) as exc:
            raise translate(_redis_error(exc), "PIPELINE") from exc
        failed = next((r for r in results if isinstance(r, rex.RedisError | BackendError)), None)
        if raise_on_error and failed is not None:
            raise failed if isinstance(failed, BackendError) else translate(failed, "PIPELINE")
        return results


def _redis_error(exc: Exception) -> rex.RedisError:
    """`exc` as a RedisError (redis-py's cluster errors about slots are not), so `translate` files it."""
    if isinstance(exc, rex.RedisError):
        return exc
    if isinstance(exc, rex.SlotNotCoveredError):
        return rex.ClusterDownError(f"CLUSTERDOWN {exc}")
    return rex.ResponseError(f"CROSSSLOT {exc}" if "same key slot" in str(exc) else str(exc))


def cluster_client(url: str, home: str, retries: int, **kwargs: Any) -> SwarmCluster:
    """A `SwarmCluster` for the cluster that the node at `url` belongs to."""
    return SwarmCluster.from_url(url, home=home, retries=retries, **kwargs)  # type: ignore[return-value]


async def server_mode(redis: Redis) -> str:
    """`cluster`, `standalone` or `sentinel`: what the server says in `HELLO` (any user may send it);
    `standalone` when the server refuses the command (it predates it, or an ACL forbids it)."""
    try:
        reply = await redis.execute_command("HELLO")  # type: ignore[no-untyped-call]
    except BackendError as exc:
        if exc.code in ("ERR", "NOPERM") or "unknown command" in str(exc).lower():
            await redis.ping()
            return "standalone"
        raise
    fields = reply if isinstance(reply, dict) else dict(zip(reply[::2], reply[1::2], strict=True))
    mode = fields.get(b"mode", fields.get("mode", b"standalone"))
    return mode.decode() if isinstance(mode, bytes) else str(mode)

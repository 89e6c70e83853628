"""Lua scripts: one `.lua` file per multi-key change, loaded once per client and run by EVALSHA."""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from swarm.cluster import Replication

INCLUDE = "--!include "


@cache
def source(name: str) -> str:
    """The text of `swarm/lua/<name>.lua` (read once per process), with its `--!include X` lines
    replaced by the text of `X.lua`: Lua scripts on Redis cannot import, so shared helpers are inlined."""
    text = files(__package__).joinpath(f"{name}.lua").read_text(encoding="utf-8")
    lines = [source(line.removeprefix(INCLUDE).strip()) if line.startswith(INCLUDE) else line
             for line in text.splitlines()]
    return "\n".join(lines) + "\n"


class Scripts:
    """The scripts registered on one client; `scripts["publish"]` is an awaitable AsyncScript."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._loaded: dict[str, AsyncScript] = {}

    def __getitem__(self, name: str) -> AsyncScript:
        script = self._loaded.get(name)
        if script is None:
            # register_script computes the SHA once; EVALSHA falls back to SCRIPT LOAD on NOSCRIPT
            # (on a cluster: on every master, so a replica promoted by a failover gets it too).
            # A client asked to wait for replicas (`?wait_replicas=`) sends WAIT after each call.
            replication: Replication | None = getattr(self._redis, "replication", None)
            script = self._loaded[name] = (replication.script(self._redis, source(name)) if replication
                                           else self._redis.register_script(source(name)))
        return script

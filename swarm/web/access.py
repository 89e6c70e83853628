"""Who may do what: the per-process context every route reads, and the token checks.

Every change needs a token. Reading needs one too, unless the board was started with
`--open-read` (which binds it to 127.0.0.1) and the request comes from this machine; a token sent
anyway is checked, so a bad one is refused even there.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Annotated, cast

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from redis.asyncio import Redis

from swarm.board import Board
from swarm.bus import Bus
from swarm.errors import Unauthorized
from swarm.settings import Settings
from swarm.web.auth import ISSUE, Principal, Tokens
from swarm.web.live import Hub
from swarm.web.query import Reader

READ_REFUSED = ("reading this board needs a bearer token (`Authorization: Bearer <token>`); "
                    "`swarm web token --role viewer` issues one")
WRITE_REFUSED = ("every change needs a bearer token (`Authorization: Bearer <token>`); `swarm web token --role "
                     "captain`, or `--role agent --agent NAME`, issues one")


@dataclass(frozen=True, slots=True)
class Context:
    """What the routes of one web process share: settings, the Redis client, and what is built on it."""

    settings: Settings
    redis: Redis
    board: Board
    bus: Bus
    reader: Reader
    hub: Hub
    tokens: Tokens
    open_read: bool


def context(request: Request) -> Context:
    """The process's context (set by the app's lifespan)."""
    return cast(Context, request.app.state.swarm)


Ctx = Annotated[Context, Depends(context)]
_bearer = HTTPBearer(auto_error=False, description="A role token from `swarm web token`.")


async def _token(request: Request, ctx: Ctx,
                 _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Principal | None:
    """The principal of the request's bearer token; None when it sent none."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _sep, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthorized(f"the Authorization header must be `Bearer <token>`; {ISSUE}")
    return ctx.tokens.verify(value.strip())


def _local(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _reader(request: Request, ctx: Ctx, who: Annotated[Principal | None, Depends(_token)]) -> Principal | None:
    if who is None and not (ctx.open_read and _local(request)):
        raise Unauthorized(READ_REFUSED)
    return who


async def _writer(who: Annotated[Principal | None, Depends(_token)]) -> Principal:
    if who is None:
        raise Unauthorized(WRITE_REFUSED)
    return who


Reading = Annotated[Principal | None, Depends(_reader)]
"""Any valid token, or none on an `--open-read` board from this machine."""
Writing = Annotated[Principal, Depends(_writer)]
"""A valid token (its role is checked by the route)."""

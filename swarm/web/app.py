"""The ASGI app behind `swarm web`: pages, the JSON API, the live feed, `/docs` and `/healthz`.

Nothing is loaded from outside this machine: the pages are one HTML shell, one small script and
one stylesheet served from `swarm/web/static/`, and `/docs` is rendered here from the OpenAPI
document (also at `/openapi.json`) rather than by a UI fetched from a CDN.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from importlib.resources import files
from typing import Any

import anyio
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from redis.asyncio import Redis
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from swarm.board import Board
from swarm.bus import Bus
from swarm.connection import doing, open_redis
from swarm.errors import SwarmError
from swarm.settings import Settings
from swarm.web import actions, api, docs
from swarm.web.access import Context, context
from swarm.web.auth import Tokens, WebSettings
from swarm.web.live import Hub
from swarm.web.models import refusal
from swarm.web.query import Reader

log = structlog.get_logger("swarm.web")

PAGES = ("/", "/tasks/{task_id}", "/agents", "/signals", "/dead-letters", "/health")
"""Every page is the same shell; the script renders the view its path names."""
HEADERS = {
    # The pages load nothing but this origin's script and stylesheet, and are framed by no one.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
STATIC = {"board.js": "text/javascript; charset=utf-8", "board.css": "text/css; charset=utf-8"}
HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 422: "invalid"}
DESCRIPTION = """The live task board and an HTTP API for agents without Redis access.

Send `Authorization: Bearer <token>`; `swarm web token --role captain|agent|viewer [--agent NAME]`
issues tokens. Viewers read; captains also steer tasks; an agent token acts only as its agent.
A refusal is `{"error": <code>, "message": <text>}`: 401 no or a bad token, 403 wrong role or agent,
404 unknown task, 409 the board refused (stale token, illegal transition), 422 malformed input."""


def _version() -> str:
    try:
        return version("swarm")
    except PackageNotFoundError:
        return "0"


def create_app(settings: Settings, *, open_read: bool = False, web: WebSettings | None = None,
               redis: Redis | None = None) -> FastAPI:
    """The app for one swarm. It connects on startup (or uses `redis`) and follows board events
    while it runs. `open_read`: reading without a token, for requests from this machine only."""
    web = web or WebSettings()
    tokens = Tokens.load(settings, web)  # a bad secret fails here, before anything listens

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            client = redis if redis is not None else await stack.enter_async_context(open_redis(settings))
            hub = await stack.enter_async_context(Hub(client, settings))
            app.state.swarm = Context(settings, client, Board(client, settings), Bus(client, settings),
                                      Reader(client, settings), hub, tokens, open_read)
            yield

    app = FastAPI(title=f"swarm web ({settings.name})", version=_version(), description=DESCRIPTION,
                  docs_url=None, redoc_url=None, lifespan=lifespan)
    for router in (api.router, actions.captain, actions.agent, actions.messages):
        app.include_router(router)
    app.add_exception_handler(SwarmError, _refused)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(HTTPException, _http)
    app.add_middleware(BodyLimit, limit=web.max_body_bytes)
    _pages(app)
    return app


def _pages(app: FastAPI) -> None:
    static = files("swarm.web") / "static"
    shell = (static / "index.html").read_bytes()
    assets = {name: (static / name).read_bytes() for name in STATIC}

    async def page() -> Response:
        return Response(shell, media_type="text/html; charset=utf-8", headers={**HEADERS, "Cache-Control": "no-cache"})

    for path in PAGES:
        app.add_api_route(path, page, methods=["GET"], include_in_schema=False)

    async def asset(name: str) -> Response:
        if name not in assets:
            raise HTTPException(404, f"no file /static/{name}")
        return Response(assets[name], media_type=STATIC[name], headers={**HEADERS, "Cache-Control": "no-cache"})

    app.add_api_route("/static/{name}", asset, methods=["GET"], include_in_schema=False)

    async def api_docs() -> HTMLResponse:
        return HTMLResponse(docs.render(app.openapi()), headers=HEADERS)

    app.add_api_route("/docs", api_docs, methods=["GET"], include_in_schema=False)

    async def healthz(request: Request) -> JSONResponse:
        """This web process: can it reach Redis, and is it following the board events?"""
        ctx = context(request)
        body: dict[str, Any] = {"status": "ok", "swarm": ctx.settings.name, "redis": "ok",
                                "events": "following" if ctx.hub.running and ctx.hub.error is None else "stopped"}
        try:
            with anyio.fail_after(2), doing("checking Redis"):
                await ctx.redis.ping()
        except (SwarmError, TimeoutError) as exc:
            body["redis"] = str(exc) or "no answer within 2s"
        if ctx.hub.error:
            body["events"] = ctx.hub.error
        healthy = body["redis"] == "ok" and body["events"] == "following"
        return JSONResponse({**body, "status": "ok" if healthy else "fail"}, status_code=200 if healthy else 503)

    app.add_api_route("/healthz", healthz, methods=["GET"], tags=["health"],
                      summary="This web process: Redis reachable, board events followed (200, else 503).")


# --- refusals ------------------------------------------------------------------------------------
async def _refused(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SwarmError)
    status, code = refusal(exc)
    if status >= 500:
        log.warning("request failed", path=request.url.path, error=str(exc))
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": code, "message": str(exc)}, status_code=status, headers=headers)


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"error": "invalid", "message": invalid_message(exc)}, status_code=422)


def invalid_message(exc: RequestValidationError) -> str:
    """One line naming what was wrong with a request: where, what, and the value sent."""
    first: dict[str, Any] = next(iter(exc.errors()), {})
    loc = [str(p) for p in first.get("loc", ())]
    if first.get("type") == "json_invalid":
        at = f" at character {loc[1]}" if len(loc) > 1 else ""
        return f"the request body is not valid JSON ({first.get('ctx', {}).get('error', 'malformed')}{at})"
    if loc == ["body"] and first.get("type") == "missing":
        return "the request needs a JSON body"
    where = (loc[0] + " " + ".".join(loc[1:])).strip() if loc else "request"
    text = f"{where}: {first.get('msg', 'invalid').removeprefix('Value error, ')}"
    value = first.get("input")
    if first.get("type") != "missing" and not isinstance(value, dict | list):
        shown = repr(value)
        text += f" (got {shown if len(shown) <= 60 else shown[:57] + '...'})"
    return text


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    message = exc.detail
    if exc.status_code == 404 and message == "Not Found":
        message = f"no route {request.method} {request.url.path}; the API is described at /docs"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}; see /docs"
    return JSONResponse({"error": HTTP_CODES.get(exc.status_code, "error"), "message": str(message)},
                        status_code=exc.status_code, headers=exc.headers)


class BodyLimit:
    """Refuses a request body over `limit` bytes (422, before or while it is read), so an oversize
    request costs neither memory nor a half-parsed call."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    def _message(self, size: int | None) -> str:
        sent = f"is {size} bytes, " if size is not None else "is "
        return (f"the request body {sent}over the {self.limit}-byte limit (SWARM_WEB_MAX_BODY_BYTES); "
                "send large results by reference")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            response = JSONResponse({"error": "invalid", "message": self._message(int(length))}, status_code=422)
            await response(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise HTTPException(422, self._message(None))
            return message

        await self.app(scope, limited, send)

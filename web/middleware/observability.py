"""Request ids, access log lines and request latency for every HTTP request, and GET /metrics for Prometheus."""

from __future__ import annotations

import hmac
import ipaddress
import logging
import re
import time
import uuid

from fastapi import APIRouter, FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from support_bot.ops import metrics
from support_bot.core.config import Settings
from support_bot.core.errors import NotFound, Unauthorized
from support_bot.core.logs import printable, request_id_var
from web.deps import SettingsDep, TokenDep

access_log = logging.getLogger("support_bot.access")

# An incoming X-Request-ID is kept only when it is short and made of characters that are safe in logs and headers;
# anything else (too long, spaces, newlines, quotes) is replaced by a fresh id.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
_HEADER = b"x-request-id"


def request_id_from(scope: Scope) -> str:
    """The client's X-Request-ID when it is sane, else a new random one."""
    for name, value in scope.get("headers", ()):
        if name == _HEADER:
            candidate = value.decode("latin-1")
            if _REQUEST_ID.fullmatch(candidate):
                return candidate
            break
    return uuid.uuid4().hex


def route_label(scope: Scope) -> str:
    """The route template the request matched ("/api/conversations/{conversation_id}/messages"), never the raw path.

    Requests that no route took (404s, and those a middleware answered first, such as rate-limited ones or CORS
    preflights) are "unmatched", so random paths cannot add label values.
    """
    route = scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    if path:
        return path
    # A Mount (static files) moves its prefix from the path to root_path and keeps the app's own in app_root_path.
    root, base = scope.get("root_path", ""), scope.get("app_root_path")
    if base is not None and root != base and root.startswith(base):
        return f"{root[len(base):]}/{{path}}"
    return "unmatched"


class RequestContextMiddleware:
    """Gives each request an id (X-Request-ID in and out, and on every log line), then logs and times it.

    Latency is measured to the end of the response body, so a streamed answer counts its whole stream (and an event
    stream its whole life, under its own route label); the response itself is passed through untouched, chunk by
    chunk, so server-sent events keep streaming.
    """

    def __init__(self, app: ASGIApp, *, settings: Settings) -> None:
        self.app = app
        self.access_log = settings.log.access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope)
        # Not reset afterwards: each request runs in its own task, whose context ends with it, and the server's own
        # report of an unhandled error (written after this returns) still carries the id.
        request_id_var.set(request_id)
        header = (_HEADER, request_id.encode())
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [h for h in message.get("headers", ()) if h[0].lower() != _HEADER]
                message = {**message, "headers": [*headers, header]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            method = scope["method"]
            route = route_label(scope)
            metrics.observe_request(method=method, route=route, status=status, seconds=seconds)
            if self.access_log:
                self._log(scope, method, route, status, seconds)

    @staticmethod
    def _log(scope: Scope, method: str, route: str, status: int, seconds: float) -> None:
        path = printable(scope["path"])
        duration_ms = round(seconds * 1000, 1)
        client = scope.get("client")
        access_log.log(
            logging.WARNING if status >= 500 else logging.INFO,
            "%s %s %s %.1fms",
            method, path, status, duration_ms,
            extra={
                "method": printable(method, 16), "path": path, "route": route, "status": status,
                "duration_ms": duration_ms, "client": client[0] if client else None,
            },
        )


def client_allowed(host: str | None, networks: list[str]) -> bool:
    """Whether a client address falls in one of `networks` (a non-IP client, such as a test client, never does)."""
    if not host or not networks:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return any(address in ipaddress.ip_network(n) for n in networks)


def token_allowed(token: str | None, settings: Settings) -> bool:
    """Whether `token` is the admin token or the scrape token."""
    if not token:
        return False
    accepted = [settings.admin_token, *([settings.metrics.token] if settings.metrics.token else [])]
    return any(hmac.compare_digest(token.encode(), t.encode()) for t in accepted)


router = APIRouter(tags=["operations"])


@router.get("/metrics", include_in_schema=False)
async def read_metrics(request: Request, settings: SettingsDep, token: TokenDep) -> Response:
    """Prometheus metrics, for allowed networks or the admin / metrics token."""
    if not settings.metrics.enabled:
        raise NotFound("metrics are disabled on this server (SUPPORT_BOT_METRICS__ENABLED)")
    host = request.client.host if request.client else None
    if not client_allowed(host, settings.metrics.networks(settings.env)) and not token_allowed(token, settings):
        raise Unauthorized(
            "metrics need Authorization: Bearer <admin or metrics token>, or a client address in "
            "SUPPORT_BOT_METRICS__ALLOW_FROM"
        )
    # The database gauges run queries: off the event loop.
    body, content_type = await run_in_threadpool(metrics.exposition, request.app.state.metrics_registry)
    return Response(body, media_type=content_type, headers={"Cache-Control": "no-store"})


def install(app: FastAPI, settings: Settings) -> None:
    """Add /metrics and, outermost of all middleware, the request-id / access-log / latency middleware."""
    app.state.metrics_registry = metrics.registry_for(settings)
    app.include_router(router)
    app.add_middleware(RequestContextMiddleware, settings=settings)

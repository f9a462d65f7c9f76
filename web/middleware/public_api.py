"""Guards of the public chat API that the widget calls from other sites: CORS for allowed origins, and rate limits."""

from __future__ import annotations

import json
import logging
from urllib.parse import urlsplit

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from support_bot.core.config import Settings
from support_bot.core.ratelimit import (
    Limit,
    MemoryRateLimiter,
    RateLimited,
    RedisRateLimiter,
    check,
    make_rate_limiter,
)

# The customer-facing API: bearer-token auth, no cookies, so other sites may call it once allowed. The console API
# (/api/console, cookie sessions) and the admin API stay same-origin.
PUBLIC_PREFIXES = ("/api/conversations", "/api/messages", "/api/widget")


log = logging.getLogger(__name__)

# The setting an operator changes to let a site embed the widget; named in the log line and the widget's console error.
ORIGINS_SETTING = "SUPPORT_BOT_WIDGET__ALLOWED_ORIGINS"
# Refused origins are logged once each per process; past this many distinct ones (crafted Origin headers, say) the log
# says so once and stops, so nobody can fill it.
MAX_LOGGED_ORIGINS = 100


def is_public(path: str) -> bool:
    return any(path == prefix or path.startswith(prefix + "/") for prefix in PUBLIC_PREFIXES)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key == name:
            return value.decode("latin-1")
    return None


def refused_origin(scope: Scope, allowed: list[str]) -> str | None:
    """The request's Origin when the allowed sites refuse it; None when allowed, absent or this server's own page."""
    origin = _header(scope, b"origin")
    if origin is None or "*" in allowed:
        return None
    origin = origin.strip().rstrip("/").lower()
    if origin in allowed:
        return None
    # The demo page and console post with an Origin too; a same-origin page needs no CORS, whatever the list says.
    host = (_header(scope, b"host") or "").strip().lower()
    if host and urlsplit(origin).netloc == host:
        return None
    return origin[:200]


class PublicCORS:
    """CORS headers for the public API only, and only for the origins in settings.widget.allowed_origins."""

    def __init__(self, app: ASGIApp, *, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self._cors: dict[tuple[str, ...], CORSMiddleware] = {}
        self._logged: set[str] = set()
        self._logged_all = False

    def cors_for(self, origins: list[str]) -> CORSMiddleware:
        """One CORS middleware per list of allowed origins (the list can change in the console)."""
        key = tuple(origins)
        cors = self._cors.get(key)
        if cors is None:
            cors = CORSMiddleware(
                self.app,
                allow_origins=["*"] if "*" in origins else list(origins),
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
                # The widget reads Retry-After to tell the customer how long to wait.
                expose_headers=["Retry-After"],
                allow_credentials=False,
                max_age=600,
            )
            # Old lists are dropped rather than kept: they are cheap to build and changes are rare.
            self._cors = {key: cors}
            # After a change of the list a site still refused is worth saying again.
            self._logged, self._logged_all = set(), False
        return cors

    def note_refused(self, origin: str) -> None:
        """Log, once per origin, that a site not in the allowed list called the public API (the browser refuses it)."""
        if origin in self._logged or self._logged_all:
            return
        if len(self._logged) >= MAX_LOGGED_ORIGINS:
            self._logged_all = True
            log.warning("widget: %d origins refused; further ones are not logged", MAX_LOGGED_ORIGINS)
            return
        self._logged.add(origin)
        log.warning(
            "widget: refused origin %s: the site is not in %s, so browsers keep the chat from working there; add the "
            "origin to that setting (or the console's Settings > Widget > Allowed sites) to embed the widget",
            origin, ORIGINS_SETTING,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and is_public(scope["path"]):
            settings = await effective_settings(scope, self.settings)
            cors = self.cors_for(settings.widget.allowed_origins)
            origin = refused_origin(scope, settings.widget.allowed_origins)
            if origin is not None:
                self.note_refused(origin)
            await cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)


async def effective_settings(scope: Scope, default: Settings) -> Settings:
    """The settings with the console's changes (support_bot/runtime_settings.py), read off the event loop if due."""
    assistant = getattr(getattr(scope.get("app"), "state", None), "assistant", None)
    runtime = getattr(assistant, "runtime", None)
    if runtime is None:
        return default
    return await run_in_threadpool(runtime.current) if runtime.due() else runtime.current()


def _conversation_id(path: str) -> str | None:
    """The {id} of /api/conversations/{id}/..., cut short so a crafted path cannot make huge keys."""
    parts = path.split("/")
    return parts[3][:64] if len(parts) > 3 and parts[3] else None


def _limit(settings: Settings, name: str, key: str) -> Limit:
    cfg = settings.widget
    return Limit(name, key, getattr(cfg, name), getattr(cfg, f"{name}_window_s"))


def conversation_limit(settings: Settings, conversation_id: str) -> Limit:
    """The per-conversation message limit: counted by the message route once the conversation's token is checked,
    so that nobody but the customer can use it up."""
    return _limit(settings, "messages_per_conversation", f"msg:conv:{conversation_id[:64]}")


def limits_for(settings: Settings, *, method: str, path: str, client_ip: str) -> tuple[list[Limit], str]:
    """The per-client limits a public API request counts against, and what the customer is sending (for the
    message)."""
    general = _limit(settings, "requests_per_ip", f"req:ip:{client_ip}")
    if method == "POST" and path.rstrip("/") == "/api/conversations":
        return [_limit(settings, "conversations_per_ip", f"conv:ip:{client_ip}"), general], "new conversations"
    conversation_id = _conversation_id(path)
    if method == "POST" and conversation_id and path.rstrip("/").endswith("/messages"):
        return [_limit(settings, "messages_per_ip", f"msg:ip:{client_ip}"), general], "messages"
    return [general], "requests"


class RateLimitMiddleware:
    """Counts public API requests per client IP and per conversation; over a limit: 429 with Retry-After."""

    def __init__(
        self, app: ASGIApp, *, settings: Settings, limiter: MemoryRateLimiter | RedisRateLimiter | None = None
    ) -> None:
        self.app = app
        self.settings = settings
        self.limiter = limiter or make_rate_limiter(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or not self.settings.widget.rate_limit_enabled
            or scope["method"] == "OPTIONS"
            or not is_public(scope["path"])
        ):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        limits, what = limits_for(
            self.settings, method=scope["method"], path=scope["path"], client_ip=client[0] if client else "unknown"
        )
        try:
            if isinstance(self.limiter, MemoryRateLimiter):
                check(self.limiter, limits, what=what)
            else:
                await run_in_threadpool(check, self.limiter, limits, what=what)
        except RateLimited as exc:
            await _send_429(send, exc)
            return
        await self.app(scope, receive, send)


def rate_limited_response(exc: RateLimited) -> JSONResponse:
    """The 429 of a refused request: the message, the wait in seconds, and Retry-After."""
    return JSONResponse(
        {"detail": exc.detail, "retry_after_s": exc.retry_after_s},
        status_code=429,
        headers={"Retry-After": str(exc.retry_after_s), "Cache-Control": "no-store"},
    )


async def _send_429(send: Send, exc: RateLimited) -> None:
    body = json.dumps({"detail": exc.detail, "retry_after_s": exc.retry_after_s}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 429,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(exc.retry_after_s).encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def install(app: FastAPI, settings: Settings) -> None:
    """Add the rate limits and, outside them, CORS, so that a 429 reaches the widget's page readable."""
    app.state.rate_limiter = make_rate_limiter(settings)
    app.add_middleware(RateLimitMiddleware, settings=settings, limiter=app.state.rate_limiter)
    app.add_middleware(PublicCORS, settings=settings)

"""App factory: `create_app(settings)` builds the FastAPI app; tests build their own."""

from __future__ import annotations

import hmac
import ipaddress
import logging
import threading
from contextlib import asynccontextmanager
from pathlib import Path

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from support_bot import learning
from support_bot.chat.service import Assistant
from support_bot.core.config import DEV_SECRET, Settings, get_settings
from support_bot.core.db import migrate
from support_bot.core.errors import ConfigurationError, SupportBotError
from support_bot.core.security import is_loopback, uses_default_admin_token
from web.errors import http_status
from web.server import freeze_heap

log = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent
FAVICON = HERE / "static" / "favicon.svg"


def _validation_detail(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
    return "; ".join(parts) or "invalid request"


def _warm_up(app: FastAPI) -> None:
    try:
        app.state.assistant.warm_up()
        app.state.model_status = "ok"
        if getattr(app.state, "freeze_heap_after_warm_up", False):
            freeze_heap()
    except SupportBotError as exc:
        app.state.model_status = exc.detail
    except Exception as exc:  # the reason is shown on /readyz; the server keeps serving pages and history
        log.exception("model failed to load")
        app.state.model_status = f"failed to load: {type(exc).__name__}: {exc}"


class RefuseDefaultTokenFromAfar:
    """A development app still on the published default admin token takes it from this machine only.

    `support-bot serve` gives such a server a random token of its own; this covers an app served any other way.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _default_token_from_afar(scope):
            detail = (
                "the default admin token is accepted only from this machine: use the token `support-bot serve` "
                "printed (also in <data_dir>/admin-token.txt) or set SUPPORT_BOT_ADMIN_TOKEN"
            )
            await JSONResponse({"detail": detail}, status_code=401)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _default_token_from_afar(scope: Scope) -> bool:
    authorization = Headers(scope=scope).get("authorization", "")
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), DEV_SECRET.encode()):
        return False
    host = (scope.get("client") or (None, None))[0]
    try:
        ipaddress.ip_address(host or "")
    except ValueError:
        return False  # no network peer: a Unix socket, or the in-process test client
    return not is_loopback(host)


def create_app(settings: Settings | None = None, *, assistant: Assistant | None = None) -> FastAPI:
    settings = settings or get_settings()
    problem = settings.secret_problem()
    if problem:
        # Settings() refuses these already; a copy made with model_copy(update=...) is checked here.
        raise ConfigurationError(problem)
    # Chats that agents resolve here become suggested FAQ entries: handoff, below learning, only offers the hook.
    learning.subscribe()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        settings.ensure_dirs()
        if settings.migrate_on_start:
            migrate(settings)
        app.state.model_status = "loading"
        if getattr(app.state, "worker_threads", None):
            # Set by serve(): the pool the plain-function routes share (the limiter belongs to this event loop).
            anyio.to_thread.current_default_thread_limiter().total_tokens = app.state.worker_threads
        # Load the model before the first customer needs it; /readyz says "loading" until then.
        threading.Thread(target=_warm_up, args=(app,), name="model-warm-up", daemon=True).start()
        worker = None
        if not settings.redis_url:
            from ingest.worker import get_worker

            worker = get_worker()
            worker.start(settings)
        app.state.events_closing = False  # an app started again after a shutdown streams again
        yield
        # Open event streams end now rather than holding the shutdown until their clients leave.
        events.close_streams(app)
        if worker is not None:
            worker.stop()

    # Bodies are counted as they arrive (413 past the limit), before any route reads them, even for anonymous callers.
    docs = settings.api_docs if settings.api_docs is not None else settings.env != "production"
    app = FastAPI(
        title="support-bot", version="0.1.0", lifespan=lifespan, max_body_size=settings.max_request_bytes,
        docs_url="/docs" if docs else None, redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.state.settings = settings
    app.state.assistant = assistant or Assistant(settings)
    app.state.templates = Jinja2Templates(directory=str(HERE / "templates"))

    @app.exception_handler(SupportBotError)
    async def _domain_error(_request: Request, exc: SupportBotError):
        return JSONResponse({"detail": exc.detail}, status_code=http_status(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError):
        return JSONResponse({"detail": _validation_detail(exc)}, status_code=422)

    async def _database_away(_request: Request, exc: Exception):
        # The database restarting or out of reach: a moment's outage, not the client's doing. The request's work was
        # rolled back, so trying the same request again (a message with its client_message_id) is safe.
        log.warning("database unavailable: %s", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return JSONResponse(
            {"detail": "The service is briefly unavailable. Please try again in a moment."},
            status_code=503, headers={"Retry-After": "1"},
        )

    app.add_exception_handler(OperationalError, _database_away)
    app.add_exception_handler(InterfaceError, _database_away)
    if uses_default_admin_token(settings):
        app.add_middleware(RefuseDefaultTokenFromAfar)

    from web.api import chat, events, health, knowledge, pages

    app.include_router(health.router)
    app.include_router(chat.router)
    app.include_router(knowledge.router, max_body_size=knowledge.max_upload_request_bytes(settings))
    app.include_router(pages.router)
    app.include_router(events.router)
    from web.api import console_auth

    app.include_router(console_auth.router)
    from web.api import console_api

    app.include_router(console_api.router)
    from web.api import console_pages

    app.include_router(console_pages.router)
    from web.api import console_knowledge

    app.include_router(console_knowledge.router)
    from web.api import console_analytics

    app.include_router(console_analytics.router)
    from web.api import console_settings

    app.include_router(console_settings.router)
    from web.api import console_learning

    app.include_router(console_learning.router)
    from web.api import console_adapters

    app.include_router(console_adapters.router)
    from web.middleware import public_api
    from web.api import widget

    app.include_router(widget.router)
    public_api.install(app, settings)
    from web import openapi as api_schema

    api_schema.install(app)
    from web.middleware import observability  # last: its middleware is outermost, so it times and ids every request

    observability.install(app, settings)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    @app.get("/favicon.ico", include_in_schema=False)
    def _favicon():
        # Browsers ask for /favicon.ico on their own (the pages link the SVG too); answer rather than log a 404.
        return FileResponse(FAVICON, media_type="image/svg+xml", headers={"Cache-Control": "public, max-age=86400"})

    return app

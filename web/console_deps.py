"""Console request dependencies: the logged-in user, role checks and CSRF, as Annotated aliases."""

from __future__ import annotations

import hmac
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, HTTPException, Request, Response
from fastapi.responses import HTMLResponse

from support_bot.ops import auth
from support_bot.ops.auth import ConsoleLogin
from support_bot.core.config import Settings
from support_bot.core.errors import Forbidden, Unauthorized
from support_bot.models import User
from web.deps import SessionDep, SettingsDep, TokenDep, get_settings_dep

SESSION_COOKIE = "sb_console"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
CSRF_FAILED = "CSRF token missing or wrong"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOGIN_PATH = "/console/login"
ACCOUNT_PATH = "/console/account"
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")

# (label, path, roles that see it); admin sees everything.
NAV = (
    ("Queue", "/console/queue", {"agent"}),
    ("Knowledge", "/console/knowledge", {"ops"}),
    ("Suggestions", "/console/suggestions", {"ops"}),
    ("Analytics", "/console/analytics", {"ops"}),
    ("Content gaps", "/console/gaps", {"ops"}),
    ("Users", "/console/users", set()),
    ("Settings", "/console/settings", set()),
    ("Audit", "/console/audit", set()),
)


def is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def safe_next(target: str | None, default: str = "/console") -> str:
    """A post-login destination inside the console only, so a crafted link cannot send users elsewhere."""
    if (
        target
        and target.startswith("/console")
        and not target.startswith("//")
        and "\\" not in target
        and not any(ord(c) < 32 for c in target)
    ):
        return target
    return default


def _redirect(location: str) -> HTTPException:
    return HTTPException(status_code=303, detail="see other", headers={"Location": location})


def login_required(request: Request) -> Exception:
    """401 for API calls; a redirect to the login page (coming back here afterwards) for pages."""
    if is_api(request):
        return Unauthorized("log in to the console first")
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return _redirect(f"{LOGIN_PATH}?next={quote(here, safe='/')}")


def optional_login(request: Request, session: SessionDep, settings: SettingsDep) -> ConsoleLogin | None:
    """The console login behind the request's cookie, if any (also kept on request.state.console_login)."""
    token = request.cookies.get(SESSION_COOKIE)
    login = auth.resolve_session(session, settings=settings, token=token)
    if login is None and token:
        # The request is about to fail; keep the removal of a dead session row all the same.
        session.commit()
    request.state.console_login = login
    return login


OptionalLogin = Annotated[ConsoleLogin | None, Depends(optional_login)]


def current_login(request: Request, login: OptionalLogin) -> ConsoleLogin:
    """Any logged-in user, even one who still has to replace a one-time password."""
    if login is None:
        raise login_required(request)
    return login


CurrentLogin = Annotated[ConsoleLogin, Depends(current_login)]


def current_user(request: Request, login: CurrentLogin) -> User:
    """The logged-in user, once any one-time password has been replaced."""
    if login.user.must_change_password:
        if is_api(request):
            raise Forbidden("replace your one-time password first (POST /api/console/password)")
        raise _redirect(ACCOUNT_PATH)
    return login.user


CurrentUser = Annotated[User, Depends(current_user)]


def require_roles(*roles: str):
    """A dependency that lets through users with one of `roles`, and admins; 403 for everyone else."""
    for role in roles:
        auth.check_role(role)
    allowed = frozenset(roles) | {"admin"}
    needed = " or ".join(sorted(allowed))

    def _require_roles(user: CurrentUser) -> User:
        if user.role not in allowed:
            raise Forbidden(f"this needs the {needed} role")
        return user

    return _require_roles


AgentDep = Annotated[User, Depends(require_roles("agent"))]
OpsDep = Annotated[User, Depends(require_roles("ops"))]
AdminUserDep = Annotated[User, Depends(require_roles("admin"))]


async def _provided_csrf(request: Request) -> str | None:
    provided = request.headers.get(CSRF_HEADER)
    if provided is None and request.headers.get("content-type", "").startswith(FORM_TYPES):
        # Starlette caches the parsed form, so the route's own Form(...) fields still see it.
        value = (await request.form()).get(CSRF_FIELD)
        provided = value if isinstance(value, str) else None
    return provided


async def check_csrf(request: Request, login: ConsoleLogin) -> None:
    if request.method in UNSAFE_METHODS and not auth.csrf_matches(login, await _provided_csrf(request)):
        raise Forbidden(CSRF_FAILED)


async def csrf_protect(request: Request, login: OptionalLogin) -> None:
    """On POST/PUT/PATCH/DELETE: the session's CSRF token in X-CSRF-Token or form field csrf_token, else 403."""
    if request.method not in UNSAFE_METHODS:
        return
    if login is None:
        raise login_required(request)
    await check_csrf(request, login)


def refuse_cross_site(request: Request) -> None:
    """Browsers mark requests started by another site; a login must never be one (login CSRF)."""
    if request.headers.get("sec-fetch-site") == "cross-site":
        raise Forbidden("cross-site request refused")


async def ops_or_admin_token(
    request: Request, token: TokenDep, login: OptionalLogin, settings: SettingsDep
) -> User | None:
    """Ops or admin: a console login (CSRF-checked on changes) or, for scripts, the admin bearer token (-> None)."""
    if token is not None:
        if hmac.compare_digest(token.encode(), settings.admin_token.encode()):
            return None
        raise Unauthorized("the admin token is wrong (Authorization: Bearer <SUPPORT_BOT_ADMIN_TOKEN>)")
    if login is None:
        raise Unauthorized(
            "log in to the console as ops or admin, or send Authorization: Bearer <SUPPORT_BOT_ADMIN_TOKEN>"
        )
    user = current_user(request, login)
    if user.role not in ("ops", "admin"):
        raise Forbidden("this needs the admin or ops role")
    await check_csrf(request, login)
    return user


OpsOrAdminTokenDep = Annotated[User | None, Depends(ops_or_admin_token)]


def set_session_cookie(response: Response, *, token: str, settings: Settings) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=settings.console.session_max_age_s,
        path="/",
        httponly=True,
        samesite="lax",
        secure=settings.env == "production",
    )


def clear_session_cookie(response: Response, *, settings: Settings) -> None:
    response.delete_cookie(
        SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=settings.env == "production"
    )


def nav_links(user: User | None) -> list[dict[str, str]]:
    if user is None or user.must_change_password:
        return []
    return [
        {"label": label, "href": href}
        for label, href, roles in NAV
        if user.role == "admin" or user.role in roles
    ]


def no_store(response: Response) -> Response:
    """Console pages hold private data and CSRF tokens: never cached, never framed by another site."""
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    return response


def console_page(
    request: Request, template: str, context: dict[str, Any] | None = None, *, status_code: int = 200
) -> HTMLResponse:
    """Render a console template with the user, CSRF token and role-filtered nav that console/_base.html needs."""
    login: ConsoleLogin | None = getattr(request.state, "console_login", None)
    settings: Settings = get_settings_dep(request)  # the console's own changes (company name) show at once
    user = login.user if login is not None else None
    ctx: dict[str, Any] = {
        "user": user,
        "csrf_token": login.csrf_token if login is not None else "",
        "nav": nav_links(user),
        "company": settings.chat.company_name,
    }
    ctx.update(context or {})
    response = request.app.state.templates.TemplateResponse(request, template, ctx, status_code=status_code)
    return no_store(response)

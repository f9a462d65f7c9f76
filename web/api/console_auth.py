"""Console login, logout, own password, user management and the audit log (pages and JSON API)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from typing import Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Query, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from support_bot.core.errors import InvalidInput, SupportBotError, Unauthorized
from support_bot.core.ratelimit import RateLimited
from support_bot.models import AuditLog, User
from support_bot.ops import audit, auth
from support_bot.ops.login_throttle import (
    DEVICE_COOKIE,
    DEVICE_MAX_AGE_S,
    LoginThrottle,
    device_cookie,
    device_trusted,
)
from web.console_deps import (
    ACCOUNT_PATH,
    SESSION_COOKIE,
    AdminUserDep,
    CurrentLogin,
    OptionalLogin,
    clear_session_cookie,
    console_page,
    csrf_protect,
    no_store,
    refuse_cross_site,
    safe_next,
    set_session_cookie,
)
from web.deps import SessionDep, SettingsDep
from web.errors import http_status
from web.middleware.public_api import rate_limited_response

# Login needs no CSRF token (there is no session yet to hold one); everything else here checks it.
public_router = APIRouter(tags=["console"])
protected_router = APIRouter(tags=["console"], dependencies=[Depends(csrf_protect)])

Role = Literal["agent", "ops", "admin"]
AUDIT_PAGE = 50


def _home(user: User) -> str:
    if user.must_change_password:
        return ACCOUNT_PATH
    return "/console/knowledge" if user.role == "ops" else "/console/queue"


def _redirect(location: str) -> RedirectResponse:
    return no_store(RedirectResponse(location, status_code=303))


def _throttle(request: Request, settings) -> LoginThrottle:
    throttle = getattr(request.app.state, "login_throttle", None)
    if throttle is None:
        throttle = request.app.state.login_throttle = LoginThrottle(request.app.state.settings)
    return throttle


def _login(request: Request, session: Session, settings, username: str, password: str):
    """Check the password and start a brand-new session; (token, login) or None. RateLimited while the client or
    (for a browser that never logged in to it) the account is backing off after failures."""
    refuse_cross_site(request)
    throttle = _throttle(request, settings)
    client = request.client.host if request.client else "unknown"
    trusted = device_trusted(settings, request.cookies.get(DEVICE_COOKIE), username)
    throttle.check(client=client, username=username, trusted=trusted)
    user = auth.authenticate(session, settings=settings, username=username, password=password)
    if user is None:
        throttle.failed(client=client, username=username, trusted=trusted)
        # The failure count is stored even though this request fails.
        session.commit()
        return None
    throttle.succeeded(client=client, username=username)
    # Whatever session the browser brought (another user's, or one an attacker planted) ends here; the new
    # login always gets a fresh token, so a known cookie value can never become a logged-in session.
    auth.end_session(session, token=request.cookies.get(SESSION_COOKIE))
    client = request.client.host if request.client else None
    token, login = auth.start_session(
        session, settings=settings, user=user, ip=client, user_agent=request.headers.get("user-agent")
    )
    session.commit()
    request.state.console_login = login
    return token, login


def _remember_device(response: Response, settings, username: str) -> None:
    """This browser logged in as `username`: the account's back-off will not hold it back (login_throttle.py)."""
    response.set_cookie(
        DEVICE_COOKIE, device_cookie(settings, username), max_age=DEVICE_MAX_AGE_S, path="/", httponly=True,
        samesite="strict", secure=settings.env == "production",
    )


def _json(payload: dict, status_code: int = 200) -> JSONResponse:
    return JSONResponse(payload, status_code=status_code)


def me_payload(login: auth.ConsoleLogin) -> dict:
    return {**auth.user_payload(login.user), "csrf_token": login.csrf_token}


# -- pages: login, logout, account -------------------------------------------------------------------------------


@public_router.get("/console")
def read_console_home(login: OptionalLogin):
    """The console's front door: the login page, or the signed-in user's start page."""
    return _redirect(_home(login.user) if login is not None else "/console/login")


def _login_form(settings, **context) -> dict:
    """The login page's context, with where the first admin's password waits while that file exists."""
    saved = auth.first_admin_password_path(settings)
    # Only the path: the page is public, and the file is for whoever can read the server's disk.
    return {**context, "password_file": str(saved) if saved.is_file() else None}


@public_router.get("/console/login")
def read_login_page(
    request: Request, login: OptionalLogin, settings: SettingsDep, next_url: str = Query("", alias="next")
):
    """The login form."""
    if login is not None:
        home = _home(login.user)
        return _redirect(home if login.user.must_change_password else safe_next(next_url, home))
    return console_page(request, "console/login.html", _login_form(settings, next=safe_next(next_url, "")))


@public_router.post("/console/login")
def login_with_form(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    username: str = Form("", max_length=255),
    password: str = Form("", max_length=auth.MAX_PASSWORD_CHARS),
    next_url: str = Form("", alias="next", max_length=2000),
):
    """Log in from the form; a new session cookie and a redirect, or the form again with a generic error."""
    try:
        result = _login(request, session, settings, username, password)
    except RateLimited as exc:
        request.state.console_login = None
        context = _login_form(settings, error=exc.detail, username=username, next=safe_next(next_url, ""))
        response = console_page(request, "console/login.html", context, status_code=429)
        response.headers["Retry-After"] = str(exc.retry_after_s)
        return response
    if result is None:
        request.state.console_login = None
        context = _login_form(settings, error=auth.LOGIN_FAILED, username=username, next=safe_next(next_url, ""))
        return console_page(request, "console/login.html", context, status_code=401)
    token, login = result
    target = ACCOUNT_PATH if login.user.must_change_password else safe_next(next_url, _home(login.user))
    response = _redirect(target)
    set_session_cookie(response, token=token, settings=settings)
    _remember_device(response, settings, login.user.username)
    return response


@protected_router.post("/console/logout")
def logout_with_form(request: Request, session: SessionDep, settings: SettingsDep, _login: CurrentLogin):
    """End the session and go back to the login page."""
    auth.end_session(session, token=request.cookies.get(SESSION_COOKIE))
    session.commit()
    response = _redirect("/console/login")
    clear_session_cookie(response, settings=settings)
    return response


@protected_router.get("/console/account")
def read_account_page(request: Request, login: CurrentLogin, changed: bool = False):
    """The signed-in user's account: change the password (required after a one-time password)."""
    notice = "Your password is changed." if changed else None
    return console_page(request, "console/account.html", {"notice": notice, "account": login.user})


@protected_router.post("/console/account/password")
def change_password_with_form(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    login: CurrentLogin,
    current_password: str = Form("", max_length=auth.MAX_PASSWORD_CHARS),
    new_password: str = Form("", max_length=auth.MAX_PASSWORD_CHARS),
    confirm_password: str = Form("", max_length=auth.MAX_PASSWORD_CHARS),
):
    """Change the own password from the account page."""
    try:
        if new_password != confirm_password:
            raise InvalidInput("the new password and its confirmation differ")
        auth.change_password(
            session, settings=settings, user=login.user, current_password=current_password,
            new_password=new_password, keep_session=login.row,
        )
        session.commit()
    except SupportBotError as exc:
        session.rollback()
        context = {"error": exc.detail, "account": login.user}
        return console_page(request, "console/account.html", context, status_code=http_status(exc))
    return _redirect(f"{ACCOUNT_PATH}?changed=1")


# -- pages: users and audit (admin) ------------------------------------------------------------------------------


def _users_page(request: Request, session: Session, *, status_code: int = 200, **context):
    users = [auth.user_payload(u) for u in auth.list_users(session)]
    return console_page(
        request, "console/users.html", {"users": users, "roles": auth.ROLES, **context}, status_code=status_code
    )


def _user_action(request: Request, session: Session, action, *, done: str | None = None, **context):
    """Run one audited change; show the outcome on the users page (errors without losing anything stored)."""
    try:
        result = action()
        session.commit()
    except SupportBotError as exc:
        session.rollback()
        return _users_page(request, session, status_code=http_status(exc), error=exc.detail)
    if callable(done):
        return _users_page(request, session, **done(result), **context)
    return _redirect("/console/users" + (f"?done={done}" if done else ""))


USER_NOTICES = {
    "saved": "Changes saved.",
    "disabled": "User disabled; their sessions have ended.",
    "enabled": "User enabled.",
}


@protected_router.get("/console/users")
def read_users_page(request: Request, session: SessionDep, _admin: AdminUserDep, done: str = ""):
    """All console users, with forms to add users and change roles, access and passwords."""
    return _users_page(request, session, notice=USER_NOTICES.get(done))


@protected_router.post("/console/users")
def create_user_with_form(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    admin: AdminUserDep,
    username: str = Form(..., max_length=255),
    display_name: str = Form("", max_length=255),
    role: Role = Form("agent"),
):
    """Add a user with a one-time password, shown once on the page that follows."""

    def action():
        return auth.create_user(
            session, settings=settings, username=username, role=role, display_name=display_name, actor=admin
        )

    def shown(result):
        user, password = result
        return {"one_time": {"username": user.username, "password": password}, "notice": f"User {user.username} added."}

    return _user_action(request, session, action, done=shown)


@protected_router.post("/console/users/{user_id}")
def update_user_with_form(
    request: Request,
    user_id: str,
    session: SessionDep,
    admin: AdminUserDep,
    role: Role = Form(...),
    display_name: str = Form("", max_length=255),
    capacity: int = Form(..., ge=0, le=100),
):
    """Save a user's role, display name and capacity."""

    def action():
        user = auth.get_user(session, user_id)
        auth.set_display_name(session, user=user, display_name=display_name, actor=admin)
        auth.set_capacity(session, user=user, capacity=capacity, actor=admin)
        auth.set_role(session, user=user, role=role, actor=admin)

    return _user_action(request, session, action, done="saved")


@protected_router.post("/console/users/{user_id}/disable")
def disable_user_with_form(request: Request, user_id: str, session: SessionDep, admin: AdminUserDep):
    """Disable a user; their sessions end at once."""

    def action():
        auth.set_active(session, user=auth.get_user(session, user_id), active=False, actor=admin)

    return _user_action(request, session, action, done="disabled")


@protected_router.post("/console/users/{user_id}/enable")
def enable_user_with_form(request: Request, user_id: str, session: SessionDep, admin: AdminUserDep):
    """Enable a disabled user."""

    def action():
        auth.set_active(session, user=auth.get_user(session, user_id), active=True, actor=admin)

    return _user_action(request, session, action, done="enabled")


@protected_router.post("/console/users/{user_id}/reset-password")
def reset_password_with_form(request: Request, user_id: str, session: SessionDep, admin: AdminUserDep):
    """Give a user a new one-time password, shown once on the page that follows."""

    def action():
        user = auth.get_user(session, user_id)
        return user, auth.reset_password(session, user=user, actor=admin)

    def shown(result):
        user, password = result
        notice = f"New one-time password for {user.username}; their sessions have ended."
        return {"one_time": {"username": user.username, "password": password}, "notice": notice}

    return _user_action(request, session, action, done=shown)


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def _day_start(day: date | None) -> datetime | None:
    return datetime.combine(day, time.min, tzinfo=timezone.utc) if day else None


def _audit_row(entry: AuditLog) -> dict:
    row = audit.payload(entry)
    created = _utc(entry.created_at)
    row["when"] = created.strftime("%Y-%m-%d %H:%M:%S UTC") if created else ""
    return row


def _parse_day(value: str, label: str) -> date | None:
    if not value.strip():
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise InvalidInput(f"{label}: use a date like 2026-01-31") from None


@protected_router.get("/console/audit")
def read_audit_page(
    request: Request,
    session: SessionDep,
    _admin: AdminUserDep,
    action: str = Query("", max_length=64),
    actor: str = Query("", max_length=255),
    target: str = Query("", max_length=64),
    since: str = Query("", max_length=32),
    until: str = Query("", max_length=32),
    page: int = Query(1, ge=1, le=100000),
):
    """The audit log, newest first, filtered by action, actor, target and date range."""
    filters = {"action": action, "actor": actor, "target": target, "since": since, "until": until}
    actions = list(session.scalars(select(AuditLog.action).distinct().order_by(AuditLog.action)))
    context = {"filters": filters, "actions": actions, "entries": []}
    try:
        first, last = _parse_day(since, "from"), _parse_day(until, "until")
        actor_id = None
        if actor.strip():
            actor_id = auth.get_user_by_name(session, actor).id
        rows = audit.entries(
            session,
            action=action.strip() or None,
            actor_id=actor_id,
            target_id=target.strip() or None,
            since=_day_start(first),
            # "until" names a whole day, so the range ends at the next midnight.
            until=_day_start(last + timedelta(days=1)) if last else None,
            limit=AUDIT_PAGE + 1,
            offset=(page - 1) * AUDIT_PAGE,
        )
    except SupportBotError as exc:
        return console_page(request, "console/audit.html", {**context, "error": exc.detail}, status_code=http_status(exc))
    kept = {k: v for k, v in filters.items() if v}
    context.update(
        entries=[_audit_row(e) for e in rows[:AUDIT_PAGE]],
        newer_url=f"/console/audit?{urlencode({**kept, 'page': page - 1})}" if page > 1 else None,
        older_url=f"/console/audit?{urlencode({**kept, 'page': page + 1})}" if len(rows) > AUDIT_PAGE else None,
    )
    return console_page(request, "console/audit.html", context)


# -- JSON API ----------------------------------------------------------------------------------------------------


class LoginIn(BaseModel):
    username: str = Field(max_length=255)
    password: str = Field(max_length=auth.MAX_PASSWORD_CHARS)


class PasswordIn(BaseModel):
    current_password: str = Field(max_length=auth.MAX_PASSWORD_CHARS)
    new_password: str = Field(max_length=auth.MAX_PASSWORD_CHARS)


class UserCreateIn(BaseModel):
    username: str = Field(max_length=255)
    role: Role = "agent"
    display_name: str = Field(default="", max_length=255)
    # Omitted: a one-time password is generated and returned once.
    password: str | None = Field(default=None, max_length=auth.MAX_PASSWORD_CHARS)
    must_change_password: bool = True


class UserUpdateIn(BaseModel):
    role: Role | None = None
    active: bool | None = None
    display_name: str | None = Field(default=None, max_length=255)
    capacity: int | None = Field(default=None, ge=0, le=100)


@public_router.post("/api/console/login")
def login_with_json(body: LoginIn, request: Request, session: SessionDep, settings: SettingsDep):
    """Log in; sets the session cookie and returns the user with the CSRF token for later calls."""
    try:
        result = _login(request, session, settings, body.username, body.password)
    except RateLimited as exc:
        return rate_limited_response(exc)
    if result is None:
        raise Unauthorized(auth.LOGIN_FAILED)
    token, login = result
    response = no_store(_json(me_payload(login)))
    set_session_cookie(response, token=token, settings=settings)
    _remember_device(response, settings, login.user.username)
    return response


@protected_router.post("/api/console/logout", status_code=204)
def logout_with_json(request: Request, session: SessionDep, settings: SettingsDep, _login: CurrentLogin):
    """End the session."""
    auth.end_session(session, token=request.cookies.get(SESSION_COOKIE))
    session.commit()
    response = Response(status_code=204)
    clear_session_cookie(response, settings=settings)
    return response


@protected_router.get("/api/console/me")
def read_me(login: CurrentLogin):
    """The signed-in user, with the CSRF token that state-changing calls must send as X-CSRF-Token."""
    return no_store(_json(me_payload(login)))


@protected_router.post("/api/console/password", status_code=204)
def change_password_with_json(body: PasswordIn, session: SessionDep, settings: SettingsDep, login: CurrentLogin):
    """Change the own password; the user's other sessions end."""
    auth.change_password(
        session, settings=settings, user=login.user, current_password=body.current_password,
        new_password=body.new_password, keep_session=login.row,
    )
    session.commit()


@protected_router.get("/api/console/users")
def read_users(session: SessionDep, _admin: AdminUserDep):
    """All console users."""
    return {"users": [auth.user_payload(u) for u in auth.list_users(session)]}


@protected_router.post("/api/console/users", status_code=201)
def create_user(body: UserCreateIn, session: SessionDep, settings: SettingsDep, admin: AdminUserDep):
    """Add a user; "password" in the answer is the generated one-time password (null when one was given)."""
    user, one_time = auth.create_user(
        session, settings=settings, username=body.username, role=body.role, password=body.password,
        display_name=body.display_name, must_change_password=body.must_change_password, actor=admin,
    )
    session.commit()
    return no_store(_json({"user": auth.user_payload(user), "password": one_time}, status_code=201))


@protected_router.patch("/api/console/users/{user_id}")
def update_user(user_id: str, body: UserUpdateIn, session: SessionDep, admin: AdminUserDep):
    """Change a user's role, access, display name or capacity (each change audited)."""
    user = auth.get_user(session, user_id)
    if body.display_name is not None:
        auth.set_display_name(session, user=user, display_name=body.display_name, actor=admin)
    if body.capacity is not None:
        auth.set_capacity(session, user=user, capacity=body.capacity, actor=admin)
    if body.role is not None:
        auth.set_role(session, user=user, role=body.role, actor=admin)
    if body.active is not None:
        auth.set_active(session, user=user, active=body.active, actor=admin)
    session.commit()
    return {"user": auth.user_payload(user)}


@protected_router.post("/api/console/users/{user_id}/reset-password")
def reset_user_password(user_id: str, session: SessionDep, admin: AdminUserDep):
    """A new one-time password for the user (returned once); their sessions end."""
    user = auth.get_user(session, user_id)
    password = auth.reset_password(session, user=user, actor=admin)
    session.commit()
    return no_store(_json({"user": auth.user_payload(user), "password": password}))


@protected_router.get("/api/console/audit")
def read_audit(
    session: SessionDep,
    _admin: AdminUserDep,
    action: str | None = Query(None, max_length=64),
    actor_id: str | None = Query(None, max_length=32),
    target_id: str | None = Query(None, max_length=64),
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
):
    """Audit entries, newest first; times are ISO 8601 (naive ones are read as UTC)."""
    rows = audit.entries(
        session, action=action, actor_id=actor_id, target_id=target_id, since=_utc(since), until=_utc(until),
        limit=limit, offset=offset,
    )
    return {"entries": [audit.payload(e) for e in rows]}


router = APIRouter()
router.include_router(public_router)
router.include_router(protected_router)

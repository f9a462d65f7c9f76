"""Every route, every kind of caller: who gets in, who is refused, and never an unauthorized success.

The table below classifies each (method, path) of the app for each actor. A route the table does not name fails
the first test, so a new route cannot ship without someone deciding who may call it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi.routing import APIRoute, iter_route_contexts
from sqlalchemy import func, select
from starlette.routing import Mount, Route

from support_bot.core.db import session_scope
from support_bot.models import AuditLog, CannedResponse, Conversation, Message, Source, User
from tests.conftest import PASSWORD
from tests.security.conftest import SEED_CSV, World
from web.app import create_app
from web.console_deps import CSRF_FAILED

ACTORS = ("anonymous", "customer_own", "customer_other", "agent", "ops", "admin", "admin_token")
CONSOLE = ("agent", "ops", "admin")
# A redirect to the console's login page: how pages refuse a caller without a console session.
LOGIN = "login"
DENIALS = (401, 403, 404, LOGIN)
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass
class Call:
    """What to send: the concrete path, request kwargs, and the token customer_own holds for it."""

    path: str
    kwargs: dict = field(default_factory=dict)
    own_token: str | None = None


Prepare = Callable[[World, str], Call]


@dataclass
class Row:
    expect: dict[str, int | str]
    prepare: Prepare | None = None
    # The request ends or replaces the caller's console session (login, logout): log in again afterwards.
    ends_session: bool = False


# -- who may call what: one function per access policy ------------------------------------------------------------


def public(status: int, **others: int | str) -> dict[str, int | str]:
    """Anyone; `others` names actors that see something else (a logged-in user redirected home, say)."""
    return {actor: others.get(actor, status) for actor in ACTORS}


def customer(status: int) -> dict[str, int | str]:
    """Only the conversation's own bearer token; everyone else learns nothing (404, as for a missing one)."""
    return {actor: status if actor == "customer_own" else 404 for actor in ACTORS}


def console_api(status: int, *roles: str) -> dict[str, int | str]:
    """Console JSON API for `roles` (admin always): other roles 403, no console session 401."""
    allowed = set(roles) | {"admin"}
    return {actor: status if actor in allowed else 403 if actor in CONSOLE else 401 for actor in ACTORS}


def console_html(status: int | str, *roles: str) -> dict[str, int | str]:
    """Console page for `roles` (admin always): other roles 403, no console session: to the login page."""
    allowed = set(roles) | {"admin"}
    return {actor: status if actor in allowed else 403 if actor in CONSOLE else LOGIN for actor in ACTORS}


def ops_or_token(status: int) -> dict[str, int | str]:
    """Knowledge API: ops/admin console sessions or the admin bearer token; any other bearer token is 401."""
    return {
        actor: status if actor in ("ops", "admin", "admin_token") else 403 if actor == "agent" else 401
        for actor in ACTORS
    }


def token_only(status: int) -> dict[str, int | str]:
    """Scripts with the admin token; a console session or a customer token is no credential (/metrics)."""
    return {actor: status if actor == "admin_token" else 401 for actor in ACTORS}


ANY_ROLE = CONSOLE


# -- how to fill each route's parameters ---------------------------------------------------------------------------


def conv_a(suffix: str, **kwargs) -> Prepare:
    """Customer A's conversation; customer_own holds its token."""
    return lambda w, actor: Call(f"/api/conversations/{w.conv_a[0]}{suffix}", kwargs, own_token=w.conv_a[1])


def fresh_conv(status: str, suffix: str, **kwargs) -> Prepare:
    """A new conversation in `status` owned by the customer_own actor, so each call starts from the same state."""

    def prepare(w: World, actor: str) -> Call:
        conv_id, token = w.conversation(status)
        return Call(f"/api/conversations/{conv_id}{suffix}", kwargs, own_token=token)

    return prepare


def console_conv(make: Callable[[World, str], str], suffix: str = "", **kwargs) -> Prepare:
    return lambda w, actor: Call(f"/api/console/conversations/{make(w, actor)}{suffix}", kwargs)


def user_path(template: str, **kwargs) -> Prepare:
    return lambda w, actor: Call(template.format(user_id=w.users["victim"]), kwargs)


def login_form() -> Prepare:
    return lambda w, actor: Call("/console/login", {"data": {"username": "loginprobe", "password": PASSWORD}})


def unique_form(path: str, field_name: str, **fixed) -> Prepare:
    return lambda w, actor: Call(path, {"data": {field_name: w.unique("new"), **fixed}})


def unique_json(path: str, field_name: str, **fixed) -> Prepare:
    return lambda w, actor: Call(path, {"json": {field_name: w.unique("api"), **fixed}})


BAD_PASSWORD_FORM = {"current_password": "nope", "new_password": "whatever-123", "confirm_password": "whatever-123"}


TABLE: dict[tuple[str, str], Row] = {
    # -- public: probes, pages, widget --------------------------------------------------------------------------
    ("GET", "/healthz"): Row(public(200)),
    ("GET", "/readyz"): Row(public(200)),
    ("GET", "/"): Row(public(200)),
    ("GET", "/widget.js"): Row(public(200)),
    ("GET", "/favicon.ico"): Row(public(200)),
    ("GET", "/api/widget/config"): Row(public(200)),
    # The schema names routes, never data; the console's own checks guard what the routes do.
    ("GET", "/openapi.json"): Row(public(200)),
    ("GET", "/docs"): Row(public(200)),
    ("GET", "/docs/oauth2-redirect"): Row(public(200)),
    ("GET", "/redoc"): Row(public(200)),
    # -- the customer's chat API --------------------------------------------------------------------------------
    ("POST", "/api/conversations"): Row(public(201), lambda w, a: Call("/api/conversations", {"json": {}})),
    ("POST", "/api/conversations/{conversation_id}/messages"): Row(
        customer(200), conv_a("/messages", json={"text": "How long does shipping take?"})
    ),
    ("GET", "/api/conversations/{conversation_id}/messages"): Row(customer(200), conv_a("/messages")),
    ("POST", "/api/messages/{message_id}/feedback"): Row(
        customer(204),
        lambda w, a: Call(f"/api/messages/{w.bot_message_a}/feedback", {"json": {"rating": "up"}}, w.conv_a[1]),
    ),
    ("POST", "/api/conversations/{conversation_id}/handoff"): Row(customer(200), fresh_conv("bot", "/handoff", json={})),
    ("GET", "/api/conversations/{conversation_id}/status"): Row(customer(200), conv_a("/status")),
    ("POST", "/api/conversations/{conversation_id}/offline"): Row(
        customer(200), fresh_conv("bot", "/offline", json={"message": "Call me back", "email": "a@example.com"})
    ),
    ("POST", "/api/conversations/{conversation_id}/rating"): Row(
        customer(204), fresh_conv("resolved", "/rating", json={"rating": 5})
    ),
    ("POST", "/api/conversations/{conversation_id}/typing"): Row(customer(204), conv_a("/typing", json={})),
    ("GET", "/api/conversations/{conversation_id}/events"): Row(
        customer(200), conv_a("/events", params={"timeout": 0})
    ),
    # -- console login and account ------------------------------------------------------------------------------
    ("GET", "/console"): Row(public(303)),  # to the login page, or a logged-in user's start page
    ("GET", "/console/login"): Row(public(200, agent=303, ops=303, admin=303)),
    ("POST", "/console/login"): Row(public(303), login_form(), ends_session=True),
    ("POST", "/api/console/login"): Row(
        public(200),
        lambda w, a: Call("/api/console/login", {"json": {"username": "loginprobe", "password": PASSWORD}}),
        ends_session=True,
    ),
    ("POST", "/console/logout"): Row(console_html(303, *ANY_ROLE), ends_session=True),
    ("POST", "/api/console/logout"): Row(console_api(204, *ANY_ROLE), ends_session=True),
    ("GET", "/api/console/me"): Row(console_api(200, *ANY_ROLE)),
    # A wrong current password: 422 shows the role and CSRF checks let the caller through, and changes nothing.
    ("POST", "/api/console/password"): Row(
        console_api(422, *ANY_ROLE),
        lambda w, a: Call("/api/console/password", {"json": {"current_password": "nope", "new_password": "x" * 12}}),
    ),
    ("GET", "/console/account"): Row(console_html(200, *ANY_ROLE)),
    ("POST", "/console/account/password"): Row(
        console_html(422, *ANY_ROLE), lambda w, a: Call("/console/account/password", {"data": BAD_PASSWORD_FORM})
    ),
    # -- user admin and audit (admin only) ----------------------------------------------------------------------
    ("GET", "/console/users"): Row(console_html(200)),
    ("POST", "/console/users"): Row(console_html(200), unique_form("/console/users", "username", role="agent")),
    ("POST", "/console/users/{user_id}"): Row(
        console_html(303), user_path("/console/users/{user_id}", data={"role": "agent", "capacity": "3"})
    ),
    ("POST", "/console/users/{user_id}/disable"): Row(console_html(303), user_path("/console/users/{user_id}/disable")),
    ("POST", "/console/users/{user_id}/enable"): Row(console_html(303), user_path("/console/users/{user_id}/enable")),
    ("POST", "/console/users/{user_id}/reset-password"): Row(
        console_html(200), user_path("/console/users/{user_id}/reset-password")
    ),
    ("GET", "/console/audit"): Row(console_html(200)),
    ("GET", "/api/console/users"): Row(console_api(200)),
    ("POST", "/api/console/users"): Row(console_api(201), unique_json("/api/console/users", "username", role="ops")),
    ("PATCH", "/api/console/users/{user_id}"): Row(
        console_api(200), user_path("/api/console/users/{user_id}", json={"capacity": 4})
    ),
    ("POST", "/api/console/users/{user_id}/reset-password"): Row(
        console_api(200), user_path("/api/console/users/{user_id}/reset-password")
    ),
    ("GET", "/api/console/audit"): Row(console_api(200)),
    # -- agents' inbox ------------------------------------------------------------------------------------------
    ("GET", "/console/queue"): Row(console_html(200, "agent")),
    ("GET", "/console/conversations/{conversation_id}"): Row(
        console_html(200, "agent"), lambda w, a: Call(f"/console/conversations/{w.conv_a[0]}")
    ),
    ("GET", "/api/console/events"): Row(
        console_api(200, "agent"), lambda w, a: Call("/api/console/events", {"params": {"timeout": 0}})
    ),
    ("GET", "/api/console/queue"): Row(console_api(200, "agent")),
    ("GET", "/api/console/conversations"): Row(console_api(200, "agent")),
    ("GET", "/api/console/conversations/{conversation_id}"): Row(
        console_api(200, "agent"), console_conv(lambda w, a: w.conv_a[0])
    ),
    ("POST", "/api/console/conversations/{conversation_id}/claim"): Row(
        console_api(200, "agent"), console_conv(lambda w, a: w.conversation("queued")[0], "/claim")
    ),
    ("POST", "/api/console/conversations/{conversation_id}/transfer"): Row(
        console_api(200, "agent"),
        lambda w, a: Call(
            f"/api/console/conversations/{w.held_by(a)}/transfer", {"json": {"agent_id": w.target_online()}}
        ),
    ),
    ("POST", "/api/console/conversations/{conversation_id}/messages"): Row(
        console_api(201, "agent"), console_conv(World.held_by, "/messages", json={"text": "Hello, I am here."})
    ),
    ("POST", "/api/console/conversations/{conversation_id}/notes"): Row(
        console_api(201, "agent"), console_conv(lambda w, a: w.conv_a[0], "/notes", json={"text": "VIP customer"})
    ),
    ("POST", "/api/console/conversations/{conversation_id}/return-to-bot"): Row(
        console_api(200, "agent"), console_conv(lambda w, a: w.conversation("queued")[0], "/return-to-bot")
    ),
    ("POST", "/api/console/conversations/{conversation_id}/resolve"): Row(
        console_api(200, "agent"), console_conv(World.held_by, "/resolve")
    ),
    ("POST", "/api/console/conversations/{conversation_id}/summary"): Row(
        console_api(200, "agent"), console_conv(lambda w, a: w.conv_a[0], "/summary")
    ),
    ("POST", "/api/console/conversations/{conversation_id}/typing"): Row(
        console_api(204, "agent"), console_conv(lambda w, a: w.conv_a[0], "/typing", json={"typing": True})
    ),
    ("GET", "/api/console/canned"): Row(console_api(200, "agent")),
    ("POST", "/api/console/canned"): Row(
        console_api(201, "agent"),
        lambda w, a: Call("/api/console/canned", {"json": {"title": w.unique("Thanks "), "text": "Thank you!"}}),
    ),
    ("DELETE", "/api/console/canned/{canned_id}"): Row(
        console_api(204, "agent"), lambda w, a: Call(f"/api/console/canned/{w.canned()}")
    ),
    ("POST", "/api/console/presence"): Row(
        console_api(200, "agent"), lambda w, a: Call("/api/console/presence", {"json": {"status": "online"}})
    ),
    ("GET", "/api/console/agents"): Row(console_api(200, "agent")),
    # -- knowledge API (ops, admin, scripts with the admin token) ----------------------------------------------
    ("POST", "/api/knowledge/uploads"): Row(
        ops_or_token(202),
        lambda w, a: Call(
            "/api/knowledge/uploads",
            {"files": {"file": ("faq.csv", SEED_CSV, "text/csv")}, "data": {"source": w.unique("upload-")}},
        ),
    ),
    ("GET", "/api/knowledge/jobs"): Row(ops_or_token(200)),
    ("GET", "/api/knowledge/jobs/{job_id}"): Row(
        ops_or_token(200), lambda w, a: Call(f"/api/knowledge/jobs/{w.job_id}")
    ),
    ("GET", "/api/knowledge/sources"): Row(ops_or_token(200)),
    ("GET", "/api/knowledge/sources/{name:path}"): Row(
        ops_or_token(200), lambda w, a: Call("/api/knowledge/sources/seed")
    ),
    ("DELETE", "/api/knowledge/sources/{name:path}"): Row(
        ops_or_token(200), lambda w, a: Call(f"/api/knowledge/sources/{w.source()}")
    ),
    ("POST", "/api/knowledge/reindex"): Row(ops_or_token(200)),
    ("GET", "/api/knowledge/calibration"): Row(ops_or_token(200)),
    ("POST", "/api/knowledge/test"): Row(
        ops_or_token(200), lambda w, a: Call("/api/knowledge/test", {"json": {"question": "Do you ship abroad?"}})
    ),
    # -- console knowledge pages (ops) --------------------------------------------------------------------------
    ("GET", "/console/knowledge"): Row(console_html(200, "ops")),
    ("GET", "/console/knowledge/test"): Row(console_html(200, "ops")),
    ("GET", "/console/knowledge/sources/{name:path}"): Row(
        console_html(200, "ops"), lambda w, a: Call("/console/knowledge/sources/seed")
    ),
    # -- analytics and content gaps (ops) -----------------------------------------------------------------------
    ("GET", "/console/analytics"): Row(console_html(200, "ops")),
    ("GET", "/console/gaps"): Row(console_html(200, "ops")),
    ("GET", "/api/console/analytics"): Row(console_api(200, "ops")),
    ("GET", "/api/console/analytics/gaps"): Row(console_api(200, "ops")),
    ("GET", "/api/console/analytics/{table}.csv"): Row(
        console_api(200, "ops"), lambda w, a: Call("/api/console/analytics/daily.csv")
    ),
    # -- suggested FAQ entries from resolved chats (ops) --------------------------------------------------------
    ("GET", "/console/suggestions"): Row(console_html(200, "ops")),
    ("GET", "/api/console/suggestions"): Row(console_api(200, "ops")),
    ("GET", "/api/console/suggestions/source"): Row(console_api(200, "ops")),
    ("GET", "/api/console/suggestions/{suggestion_id}"): Row(
        console_api(200, "ops"), lambda w, a: Call(f"/api/console/suggestions/{w.suggestion()}")
    ),
    ("PATCH", "/api/console/suggestions/{suggestion_id}"): Row(
        console_api(200, "ops"),
        lambda w, a: Call(f"/api/console/suggestions/{w.suggestion()}", {"json": {"answer": "Patch it, then pump."}}),
    ),
    ("POST", "/api/console/suggestions/{suggestion_id}/approve"): Row(
        console_api(200, "ops"), lambda w, a: Call(f"/api/console/suggestions/{w.suggestion()}/approve", {"json": {}})
    ),
    ("POST", "/api/console/suggestions/{suggestion_id}/reject"): Row(
        console_api(200, "ops"), lambda w, a: Call(f"/api/console/suggestions/{w.suggestion()}/reject", {"json": {}})
    ),
    # -- runtime settings (admin) -------------------------------------------------------------------------------
    ("GET", "/console/knowledge/adaptation"): Row(console_html(200, "ops")),
    ("GET", "/api/console/adapters"): Row(console_api(200, "ops")),
    ("GET", "/api/console/adapters/jobs"): Row(console_api(200, "ops")),
    ("GET", "/api/console/adapters/jobs/{job_id}"): Row(
        console_api(404, "ops"), lambda w, a: Call("/api/console/adapters/jobs/0123456789abcdef")
    ),
    ("GET", "/api/console/adapters/{artifact_id}"): Row(
        console_api(404, "ops"), lambda w, a: Call("/api/console/adapters/embedder-0999")
    ),
    # No artifact and no job is started here: each allowed call is refused for what it asks, after the access check.
    ("POST", "/api/console/adapters/{artifact_id}/activate"): Row(
        console_api(404, "ops"), lambda w, a: Call("/api/console/adapters/embedder-0999/activate")
    ),
    ("POST", "/api/console/adapters/rollback"): Row(console_api(409, "ops")),
    ("POST", "/api/console/adapters/tune"): Row(
        console_api(422, "ops"), lambda w, a: Call("/api/console/adapters/tune", {"json": {"epochs": 0}})
    ),
    ("GET", "/console/settings"): Row(console_html(200)),
    ("POST", "/console/settings"): Row(
        console_html(303), lambda w, a: Call("/console/settings", {"data": {"chat.bot_name": w.unique("Max ")}})
    ),
    ("POST", "/console/settings/{key}/reset"): Row(
        console_html(303), lambda w, a: Call("/console/settings/chat.bot_name/reset")
    ),
    ("GET", "/api/console/settings"): Row(console_api(200)),
    ("PUT", "/api/console/settings"): Row(
        console_api(200), lambda w, a: Call("/api/console/settings", {"json": {"chat.bot_name": w.unique("Max ")}})
    ),
    ("DELETE", "/api/console/settings/{key}"): Row(
        console_api(200), lambda w, a: Call("/api/console/settings/chat.bot_name")
    ),
    # -- operations ---------------------------------------------------------------------------------------------
    # The test client's address is no IP, so no allow_from network admits it: only the token does.
    ("GET", "/metrics"): Row(token_only(200)),
}


# -- running the table ---------------------------------------------------------------------------------------------


def app_routes(app) -> set[tuple[str, str]]:
    """(method, path) of every route the app serves, static files aside; HEAD is GET's shadow and left out."""
    found = set()
    # Included routers are resolved lazily; iter_route_contexts walks them with their prefixes applied.
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if isinstance(route, Mount):
            assert context.path == "/static", f"unexpected mount {context.path}: classify what it serves"
            continue
        assert isinstance(route, (APIRoute, Route)), f"unknown route type {type(route).__name__} at {context.path}"
        for method in route.methods or ():
            if method != "HEAD":
                found.add((method, context.path))
    return found


def outcome(res) -> int | str:
    location = res.headers.get("location", "")
    # login_required always says where to come back to; a plain redirect to the login page (after a logout,
    # or from /console) is that route's normal answer.
    if res.status_code in (302, 303, 307) and location.startswith("/console/login?next="):
        return LOGIN
    return res.status_code


def headers_for(w: World, actor: str, call: Call) -> dict[str, str]:
    """Credentials of `actor`: a console session with its CSRF token, a bearer token, or nothing."""
    if actor in CONSOLE:
        return w.use(actor)
    w.use(None)
    token = {
        "customer_own": call.own_token or w.conv_a[1],
        "customer_other": w.conv_b[1],
        "admin_token": w.settings.admin_token,
    }.get(actor)
    return {"Authorization": f"Bearer {token}"} if token else {}


def send(w: World, method: str, path: str, actor: str, *, csrf: bool = True):
    row = TABLE[method, path]
    call = row.prepare(w, actor) if row.prepare else Call(path)
    headers = headers_for(w, actor, call)
    if not csrf:
        headers.pop("X-CSRF-Token", None)
    res = w.client.request(method, call.path, headers=headers, **call.kwargs)
    if row.ends_session and actor in CONSOLE:
        w.logins.pop(actor, None)
    return res


def test_every_route_is_classified_for_every_actor():
    app = create_app()
    missing = sorted(app_routes(app) - set(TABLE))
    hints = "\n".join(
        f"    ({method!r}, {path!r}): Row(<policy>(<status>), <prepare filling the path>),"
        for method, path in missing
    )
    assert not missing, (
        f"{len(missing)} route(s) are not in the security route table; decide who may call each and add to TABLE "
        f"in tests/security/test_route_table.py (policies: public, customer, console_api, console_html, "
        f"ops_or_token, token_only):\n{hints}"
    )
    stale = sorted(set(TABLE) - app_routes(app))
    assert not stale, f"TABLE names routes the app no longer has; remove them: {stale}"
    for key, row in TABLE.items():
        assert set(row.expect) == set(ACTORS), key
        assert "{" not in key[1] or row.prepare is not None, f"{key}: give the row a prepare that fills its path"


def test_the_route_table_holds_and_no_unauthorized_call_succeeds(world):
    expected, actual, breaches = {}, {}, []
    for (method, path), row in TABLE.items():
        for actor in ACTORS:
            res = send(world, method, path, actor)
            got = outcome(res)
            want = row.expect[actor]
            expected[method, path, actor] = want
            actual[method, path, actor] = got
            if want in DENIALS and got not in DENIALS:
                breaches.append((method, path, actor, got, res.text[:200]))
            assert res.status_code < 500, (method, path, actor, res.text)
    assert breaches == [], f"{len(breaches)} unauthorized successes"
    mismatches = {k: (expected[k], actual[k]) for k in expected if expected[k] != actual[k]}
    assert mismatches == {}, "(method, path, actor): (expected, got)"


def _counts(w: World) -> dict[str, int]:
    with session_scope(w.settings) as session:
        return {
            model.__name__: session.scalar(select(func.count()).select_from(model))
            for model in (User, AuditLog, Message, CannedResponse, Source, Conversation)
        }


def test_every_console_change_without_the_csrf_token_is_refused_and_changes_nothing(world):
    """Role checks pass (the caller holds the role), only the token is missing or wrong: 403, nothing stored."""
    unsafe = [
        (method, path, row)
        for (method, path), row in TABLE.items()
        # Changes behind a console role: refused without a session, let through for some role.
        if method in UNSAFE and row.expect["anonymous"] in DENIALS and any(row.expect[a] not in DENIALS for a in CONSOLE)
    ]
    assert len(unsafe) >= 25
    for method, path, row in unsafe:
        # The least privileged role that may make the change; another user's valid token is the best forgery.
        actor = next(a for a in CONSOLE if row.expect[a] not in DENIALS)
        other = "admin" if actor != "admin" else "ops"
        stolen = world.login(other).csrf
        call = row.prepare(world, actor) if row.prepare else Call(path)
        before = _counts(world)
        for forged in (None, "forged", "", stolen):
            headers = headers_for(world, actor, call)
            if forged is None:
                headers.pop("X-CSRF-Token")
            else:
                headers["X-CSRF-Token"] = forged
            res = world.client.request(method, call.path, headers=headers, **call.kwargs)
            assert res.status_code == 403, (method, path, forged, res.text)
            assert res.json() == {"detail": CSRF_FAILED}, (method, path)
            if "data" in call.kwargs:
                # An HTML form posting another session's token in its field fares no better.
                form = {**call.kwargs["data"], "csrf_token": stolen}
                res = world.client.request(method, call.path, headers={}, **{**call.kwargs, "data": form})
                assert res.status_code == 403, (method, path)
        assert _counts(world) == before, (method, path)
        # The session was not ended by a refused logout either.
        world.use(actor)
        assert world.client.get("/api/console/me").status_code == 200, (method, path)


def test_a_console_session_is_no_credential_for_customer_routes_and_a_customer_token_none_for_the_console(world):
    """Cross-use of credentials: each kind opens only its own doors, even when sent together."""
    conv_id, token = world.conv_a
    world.use("admin")
    res = world.client.get(f"/api/conversations/{conv_id}/messages")
    assert res.status_code == 404
    # The customer's token next to an agent's cookie still reads only the customer's own conversation...
    world.use("agent")
    res = world.client.get(f"/api/conversations/{world.conv_b[0]}/messages", headers={"Authorization": f"Bearer {token}"})
    assert res.status_code == 404
    # ... and a wrong bearer token next to a valid ops session is refused rather than ignored.
    world.use("ops")
    assert world.client.get("/api/knowledge/sources", headers={"Authorization": f"Bearer {token}"}).status_code == 401

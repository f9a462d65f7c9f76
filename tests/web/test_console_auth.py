"""Console auth over HTTP: login, failure counts, sessions, CSRF, role checks on every route, user admin and the audit log."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from http.cookies import SimpleCookie

import pytest
from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import func, select, update

from support_bot.ops import audit, auth
from support_bot.core.config import Settings
from support_bot.core.db import migrate, session_scope
from support_bot.models import ConsoleSession, User
from tests.conftest import PASSWORD, add_user
from tests.web.conftest import BOTH_DATABASES
from tests.web.console_html import ConsolePage
from tests.web.helpers import csrf, login
from web.app import create_app
from web.console_deps import (
    CSRF_FAILED,
    SESSION_COOKIE,
    AdminUserDep,
    AgentDep,
    CurrentUser,
    OpsDep,
    OpsOrAdminTokenDep,
    csrf_protect,
    require_roles,
)

# Every test here logs in, many times; what they check does not depend on the hashing cost.
pytestmark = pytest.mark.usefixtures("fast_hashing")


@pytest.fixture
def web(console_settings):
    with TestClient(create_app(console_settings), follow_redirects=False) as c:
        yield c


# -- helpers -----------------------------------------------------------------------------------------------------


def cookie_of(res) -> SimpleCookie:
    jar = SimpleCookie()
    for header in res.headers.get_list("set-cookie"):
        jar.load(header)
    return jar


def page(res) -> ConsolePage:
    assert res.headers["content-type"].startswith("text/html"), res.headers["content-type"]
    return ConsolePage(res.text)


def count_rows(settings, model) -> int:
    with session_scope(settings) as session:
        return session.scalar(select(func.count()).select_from(model))


def user_row(settings, username: str) -> User:
    with session_scope(settings) as session:
        return session.scalar(select(User).where(User.username == username))


def audit_actions(settings, target_id: str | None = None) -> list[str]:
    with session_scope(settings) as session:
        return [e.action for e in reversed(audit.entries(session, target_id=target_id, limit=1000))]


@pytest.fixture
def team(console_settings) -> dict[str, str]:
    """One user per role (named after it) and a spare agent to act on; usernames to ids."""
    ids = {role: add_user(console_settings, role, role) for role in ("agent", "ops", "admin")}
    ids["victim"] = add_user(console_settings, "victim", "agent")
    return ids


# -- login and logout --------------------------------------------------------------------------------------------


def test_login_page_is_a_plain_form(web):
    res = web.get("/console/login?next=/console/audit")
    assert res.status_code == 200 and res.headers["cache-control"] == "no-store"
    assert res.headers["x-frame-options"] == "DENY"
    html = page(res)
    form = html.form(form_id="login-form")
    assert (form.method, form.action) == ("post", "/console/login")
    assert set(form.fields) == {"username", "password", "next"} and form.fields["next"] == "/console/audit"
    assert html.nav_labels() == [] and "logout-form" not in html.by_id
    assert page(web.get("/console/login?next=https://evil.example/")).form(form_id="login-form").fields["next"] == ""


@BOTH_DATABASES
def test_form_login_sets_a_fresh_http_only_cookie_and_goes_to_the_role_home(web, console_settings, team):
    for username, home in (("agent", "/console/queue"), ("ops", "/console/knowledge"), ("admin", "/console/queue")):
        web.cookies.clear()
        res = web.post("/console/login", data={"username": username.upper(), "password": PASSWORD})
        assert res.status_code == 303 and res.headers["location"] == home
        morsel = cookie_of(res)[SESSION_COOKIE]
        assert morsel["httponly"] and morsel["samesite"].lower() == "lax" and morsel["path"] == "/"
        assert not morsel["secure"]  # development over plain http; production below
        assert web.get("/api/console/me").json()["username"] == username
        assert web.get("/console").headers["location"] == home
        assert web.get("/console/login").headers["location"] == home
    assert user_row(console_settings, "ops").last_login_at is not None


def test_login_follows_next_only_inside_the_console(web, team):
    res = web.post("/console/login", data={"username": "admin", "password": PASSWORD, "next": "/console/audit?page=2"})
    assert res.headers["location"] == "/console/audit?page=2"
    for bad in ("https://evil.example/", "//evil.example/console", "/api/console/me", "/console\\@evil"):
        web.cookies.clear()
        res = web.post("/console/login", data={"username": "admin", "password": PASSWORD, "next": bad})
        assert res.headers["location"] == "/console/queue", bad


@BOTH_DATABASES
def test_failed_logins_are_generic_and_set_no_cookie(web, team):
    answers = []
    for username, password in (("agent", "wrong-password"), ("nobody", PASSWORD), ("", "")):
        res = web.post("/console/login", data={"username": username, "password": password, "next": "/console/audit"})
        assert res.status_code == 401 and "set-cookie" not in res.headers
        html = page(res)
        answers.append(html.text("error"))
        form = html.form(form_id="login-form")
        assert form.fields["username"] == username and form.fields["next"] == "/console/audit"
        assert form.fields["password"] == ""  # never echoed back
        api = web.post("/api/console/login", json={"username": username, "password": password})
        assert api.status_code == 401 and "set-cookie" not in api.headers
        answers.append(api.json()["detail"])
    assert set(answers) == {auth.LOGIN_FAILED}
    assert web.get("/api/console/me").status_code == 401


def test_repeated_failures_are_audited_and_never_lock_the_account(web, console_settings, team):
    # The agent's browser logged in before: a run of wrong passwords (anyone's) does not keep it out.
    login(web, "agent")
    for _ in range(console_settings.console.lockout_attempts):
        assert web.post("/api/console/login", json={"username": "agent", "password": "guess-guess"}).status_code == 401
    assert web.post("/api/console/login", json={"username": "agent", "password": PASSWORD}).status_code == 200

    me = login(web, "admin")
    assert web.get("/api/console/audit", params={"action": "user.login_locked"}).json()["entries"] == []
    entries = web.get("/api/console/audit", params={"action": "user.login_failures"}).json()["entries"]
    assert [(e["target_id"], e["actor"]) for e in entries] == [(team["agent"], "system")]
    users = {u["username"]: u for u in web.get("/api/console/users").json()["users"]}
    assert users["agent"]["locked"] is False
    one_time = web.post(f"/api/console/users/{team['agent']}/reset-password", headers=csrf(me)).json()["password"]
    assert login(web, "agent", one_time)["must_change_password"] is True


def test_disabled_users_cannot_log_in_and_their_sessions_end(web, team):
    assert login(web, "victim")["role"] == "agent"
    victim_cookie = web.cookies.get(SESSION_COOKIE)
    admin = login(web, "admin")
    res = web.patch(f"/api/console/users/{team['victim']}", json={"active": False}, headers=csrf(admin))
    assert res.status_code == 200 and res.json()["user"]["active"] is False
    web.cookies.clear()
    web.cookies.set(SESSION_COOKIE, victim_cookie)
    assert web.get("/api/console/me").status_code == 401
    res = web.post("/api/console/login", json={"username": "victim", "password": PASSWORD})
    assert res.status_code == 401 and res.json()["detail"] == auth.LOGIN_FAILED


@BOTH_DATABASES
def test_session_fixation_a_planted_cookie_is_never_adopted(web, console_settings, team):
    # An attacker-chosen value: login must not turn it into a session.
    web.cookies.set(SESSION_COOKIE, "attacker-chosen-token-value-0123456789")
    res = web.post("/console/login", data={"username": "agent", "password": PASSWORD})
    issued = cookie_of(res)[SESSION_COOKIE].value
    assert issued != "attacker-chosen-token-value-0123456789"
    web.cookies.clear()
    web.cookies.set(SESSION_COOKIE, "attacker-chosen-token-value-0123456789")
    assert web.get("/api/console/me").status_code == 401

    # The attacker's own valid session planted in the victim's browser: logging in replaces and ends it.
    login(web, "ops")
    planted = web.cookies.get(SESSION_COOKIE)
    res = web.post("/api/console/login", json={"username": "agent", "password": PASSWORD})
    fresh = cookie_of(res)[SESSION_COOKIE].value
    assert fresh != planted and res.json()["username"] == "agent"
    web.cookies.clear()
    web.cookies.set(SESSION_COOKIE, planted)
    assert web.get("/api/console/me").status_code == 401

    # Each login gets its own token and CSRF token.
    first, second = login(web, "agent"), login(web, "agent")
    assert first["csrf_token"] != second["csrf_token"]
    with session_scope(console_settings) as session:
        hashes = session.scalars(select(ConsoleSession.token_hash)).all()
    assert len(hashes) == len(set(hashes)) and auth.token_hash(fresh) in hashes


def test_cross_site_login_is_refused(web, team):
    res = web.post(
        "/console/login", data={"username": "agent", "password": PASSWORD}, headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert res.status_code == 403 and "set-cookie" not in res.headers
    ok = web.post(
        "/console/login", data={"username": "agent", "password": PASSWORD}, headers={"Sec-Fetch-Site": "same-origin"}
    )
    assert ok.status_code == 303


@BOTH_DATABASES
def test_logout_ends_the_session(web, console_settings, team):
    me = login(web, "agent")
    token = web.cookies.get(SESSION_COOKIE)
    html = page(web.get("/console/account"))
    logout = html.form(form_id="logout-form")
    assert (logout.method, logout.action, logout.fields) == ("post", "/console/logout", {"csrf_token": me["csrf_token"]})
    res = web.post("/console/logout", data=logout.fields)
    assert res.status_code == 303 and res.headers["location"] == "/console/login"
    assert cookie_of(res)[SESSION_COOKIE]["max-age"] == "0"
    assert count_rows(console_settings, ConsoleSession) == 0
    web.cookies.set(SESSION_COOKIE, token)
    assert web.get("/api/console/me").status_code == 401

    me = login(web, "agent")
    res = web.post("/api/console/logout", headers=csrf(me))
    assert res.status_code == 204 and count_rows(console_settings, ConsoleSession) == 0
    assert web.get("/api/console/me").status_code == 401


def test_idle_and_expired_sessions_end(web, console_settings, team):
    login(web, "agent")
    long_ago = datetime.now(timezone.utc) - timedelta(seconds=console_settings.console.idle_timeout_s + 5)
    with session_scope(console_settings) as session:
        session.execute(update(ConsoleSession).values(last_seen_at=long_ago))
    assert web.get("/api/console/me").status_code == 401
    res = web.get("/console/account")
    assert res.status_code == 303 and res.headers["location"] == "/console/login?next=/console/account"
    assert count_rows(console_settings, ConsoleSession) == 0

    login(web, "agent")
    with session_scope(console_settings) as session:
        session.execute(update(ConsoleSession).values(expires_at=datetime.now(timezone.utc) - timedelta(seconds=1)))
    assert web.get("/api/console/me").status_code == 401


def test_me_exposes_the_csrf_token_that_pages_carry(web, team):
    me = login(web, "admin")
    assert {"id", "username", "display_name", "role", "csrf_token", "must_change_password"} <= set(me)
    assert me == web.get("/api/console/me").json() and me["role"] == "admin"
    html = page(web.get("/console/users"))
    assert html.meta["csrf-token"] == me["csrf_token"]
    posting = [f for f in html.forms if f.method == "post"]
    assert posting and all(f.fields.get("csrf_token") == me["csrf_token"] for f in posting)


def test_nav_shows_what_each_role_may_open(web, team):
    expected = {
        "agent": ["Queue"],
        "ops": ["Knowledge", "Suggestions", "Analytics", "Content gaps"],
        "admin": ["Queue", "Knowledge", "Suggestions", "Analytics", "Content gaps", "Users", "Settings", "Audit"],
    }
    for role, labels in expected.items():
        login(web, role)
        html = page(web.get("/console/account"))
        assert html.nav_labels() == labels, role
        assert [link.attrs["href"] for link in html.nav] == [
            {"Queue": "/console/queue", "Knowledge": "/console/knowledge", "Users": "/console/users",
             "Audit": "/console/audit", "Analytics": "/console/analytics", "Content gaps": "/console/gaps",
             "Settings": "/console/settings", "Suggestions": "/console/suggestions"}[label]
            for label in labels
        ]
        assert html.text("user-role") == role and "logout-form" in html.by_id


# -- first admin and one-time passwords --------------------------------------------------------------------------


def test_first_admin_must_choose_a_password_before_anything_else(web, console_settings):
    one_time = auth.ensure_first_admin(console_settings)
    res = web.post("/console/login", data={"username": "admin", "password": one_time, "next": "/console/users"})
    assert res.status_code == 303 and res.headers["location"] == "/console/account"
    assert web.get("/console").headers["location"] == "/console/account"
    assert web.get("/console/login").headers["location"] == "/console/account"
    assert web.get("/console/users").headers["location"] == "/console/account"
    assert web.get("/api/console/users").status_code == 403
    me = web.get("/api/console/me").json()
    assert me["must_change_password"] is True
    html = page(web.get("/console/account"))
    assert "must-change" in html.by_id and html.nav_labels() == []
    form = html.form(form_id="password-form")

    mismatch = web.post(form.action, data={**form.fields, "current_password": one_time, "new_password":
                                           "my-own-password-1", "confirm_password": "my-own-password-2"})
    assert mismatch.status_code == 422 and "differ" in page(mismatch).text("error")
    wrong = web.post(form.action, data={**form.fields, "current_password": "nope", "new_password":
                                        "my-own-password-1", "confirm_password": "my-own-password-1"})
    assert wrong.status_code == 422 and "current password" in page(wrong).text("error")
    res = web.post(form.action, data={**form.fields, "current_password": one_time, "new_password":
                                      "my-own-password-1", "confirm_password": "my-own-password-1"})
    assert res.status_code == 303 and res.headers["location"] == "/console/account?changed=1"
    assert page(web.get(res.headers["location"])).text("notice") == "Your password is changed."
    assert web.get("/console/users").status_code == 200
    web.cookies.clear()
    assert web.post("/api/console/login", json={"username": "admin", "password": one_time}).status_code == 401
    assert login(web, "admin", "my-own-password-1")["must_change_password"] is False
    assert "user.password_change" in audit_actions(console_settings)


def test_json_password_change(web, console_settings, team):
    me = login(web, "agent")
    weak = web.post("/api/console/password", json={"current_password": PASSWORD, "new_password": "short"},
                    headers=csrf(me))
    assert weak.status_code == 422
    res = web.post("/api/console/password", json={"current_password": PASSWORD, "new_password": "newer-and-longer"},
                   headers=csrf(me))
    assert res.status_code == 204
    assert web.get("/api/console/me").status_code == 200  # this session stays
    assert login(web, "agent", "newer-and-longer")["username"] == "agent"


# -- role checks and CSRF on every route: tests/security/test_route_table.py (the table of every app route) ----------


def test_the_form_field_carries_the_csrf_token_for_html_forms(web, console_settings, team):
    me = login(web, "admin")
    res = web.post("/console/users", data={"username": "formuser", "role": "agent", "csrf_token": me["csrf_token"]})
    assert res.status_code == 200 and user_row(console_settings, "formuser") is not None


# -- user management in the console ------------------------------------------------------------------------------


def test_admin_manages_users_from_the_users_page(web, console_settings, team):
    login(web, "admin")
    html = page(web.get("/console/users"))
    create = html.form(form_id="create-user-form")
    assert create.selects["role"] == ["agent", "ops", "admin"]
    res = web.post(create.action, data={**create.fields, "username": "Newbie", "display_name": "New B", "role": "ops"})
    assert res.status_code == 200 and res.headers["cache-control"] == "no-store"
    html = page(res)
    assert html.text("one-time-username") == "newbie"
    one_time = html.text("one-time-password")
    row = next(r for r in html.rows if r.attrs.get("data-username") == "newbie")
    assert row.attrs["data-role"] == "ops" and row.attrs["data-active"] == "true"
    newbie_id = row.attrs["data-user-id"]

    # The one-time password works once shown, and no page shows it again.
    assert "one-time" not in page(web.get("/console/users")).by_id

    update_form = html.form(action=f"/console/users/{newbie_id}")
    assert update_form.fields["role"] == "ops" and update_form.fields["capacity"] == "5"
    res = web.post(update_form.action, data={**update_form.fields, "role": "agent", "capacity": "2"})
    assert res.status_code == 303 and res.headers["location"] == "/console/users?done=saved"
    html = page(web.get(res.headers["location"]))
    assert html.text("notice") == "Changes saved."
    row = next(r for r in html.rows if r.attrs.get("data-username") == "newbie")
    assert row.attrs["data-role"] == "agent"

    res = web.post(f"/console/users/{newbie_id}/disable", data=html.form(action=f"/console/users/{newbie_id}/disable").fields)
    assert res.status_code == 303
    html = page(web.get(res.headers["location"]))
    row = next(r for r in html.rows if r.attrs.get("data-username") == "newbie")
    assert row.attrs["data-active"] == "false"
    enable = html.form(action=f"/console/users/{newbie_id}/enable")
    assert web.post(enable.action, data=enable.fields).status_code == 303

    reset = html.form(action=f"/console/users/{newbie_id}/reset-password")
    again = page(web.post(reset.action, data=reset.fields)).text("one-time-password")
    assert again != one_time
    assert login(web, "newbie", again)["must_change_password"] is True
    assert web.post("/api/console/login", json={"username": "newbie", "password": one_time}).status_code == 401
    assert audit_actions(console_settings, newbie_id) == [
        "user.create", "user.capacity", "user.role", "user.disable", "user.enable", "user.password_reset",
    ]


def test_users_page_errors_keep_everything_stored(web, console_settings, team):
    me = login(web, "admin")
    dup = web.post("/console/users", data={"username": "agent", "role": "agent", "csrf_token": me["csrf_token"]})
    assert dup.status_code == 409 and "taken" in page(dup).text("error")
    bad = web.post("/console/users", data={"username": "no spaces", "role": "agent", "csrf_token": me["csrf_token"]})
    assert bad.status_code == 422 and "username" in page(bad).text("error")
    # The only admin may not demote or disable themselves: someone must be able to manage users.
    demote = web.post(f"/console/users/{team['admin']}",
                      data={"role": "ops", "display_name": "", "capacity": "5", "csrf_token": me["csrf_token"]})
    assert demote.status_code == 409 and "admin must remain" in page(demote).text("error")
    off = web.post(f"/console/users/{team['admin']}/disable", data={"csrf_token": me["csrf_token"]})
    assert off.status_code == 409
    missing = web.post(f"/console/users/{'0' * 32}/disable", data={"csrf_token": me["csrf_token"]})
    assert missing.status_code == 404
    admin = user_row(console_settings, "admin")
    assert admin.role == "admin" and admin.active and admin.display_name == ""
    assert count_rows(console_settings, User) == 4


def test_user_admin_api(web, console_settings, team):
    me = login(web, "admin")
    res = web.post("/api/console/users", json={"username": "Scripted", "role": "ops"}, headers=csrf(me))
    assert res.status_code == 201 and res.headers["cache-control"] == "no-store"
    body = res.json()
    assert body["user"]["username"] == "scripted" and body["user"]["must_change_password"] is True
    assert body["password"] and "password_hash" not in body["user"]
    chosen = web.post("/api/console/users", json={"username": "chosen", "password": "a-chosen-password",
                                                   "must_change_password": False}, headers=csrf(me))
    assert chosen.status_code == 201 and chosen.json()["password"] is None
    assert web.post("/api/console/users", json={"username": "chosen"}, headers=csrf(me)).status_code == 409
    assert web.post("/api/console/users", json={"username": "x", "role": "root"}, headers=csrf(me)).status_code == 422

    res = web.patch(f"/api/console/users/{team['victim']}",
                    json={"role": "ops", "capacity": 7, "display_name": "Vic"}, headers=csrf(me))
    assert res.status_code == 200
    assert {k: res.json()["user"][k] for k in ("role", "capacity", "display_name")} == {
        "role": "ops", "capacity": 7, "display_name": "Vic"}
    assert web.patch(f"/api/console/users/{'0' * 32}", json={"role": "ops"}, headers=csrf(me)).status_code == 404
    assert web.patch(f"/api/console/users/{team['victim']}", json={"capacity": 101}, headers=csrf(me)).status_code == 422

    # A refused change in one request changes nothing, not even the parts that came first.
    res = web.patch(f"/api/console/users/{team['admin']}", json={"display_name": "Boss", "role": "agent"},
                    headers=csrf(me))
    assert res.status_code == 409 and res.json()["detail"] == "at least one active admin must remain"
    assert user_row(console_settings, "admin").display_name == ""

    users = web.get("/api/console/users").json()["users"]
    assert [u["username"] for u in users] == ["admin", "agent", "chosen", "ops", "scripted", "victim"]
    login(web, "chosen", "a-chosen-password")


# -- the audit log -----------------------------------------------------------------------------------------------


def test_audit_page_lists_and_filters_entries(web, console_settings, team):
    me = login(web, "admin")
    web.patch(f"/api/console/users/{team['victim']}", json={"active": False}, headers=csrf(me))
    web.patch(f"/api/console/users/{team['victim']}", json={"active": True}, headers=csrf(me))
    html = page(web.get("/console/audit"))
    actions = [r.attrs["data-action"] for r in html.rows]
    assert actions[:2] == ["user.enable", "user.disable"] and actions.count("user.create") == 4
    assert html.form(form_id="audit-filter").method == "get"

    only = page(web.get("/console/audit", params={"action": "user.disable"}))
    assert [(r.attrs["data-action"], r.attrs["data-actor"], r.attrs["data-target-id"]) for r in only.rows] == [
        ("user.disable", "admin", team["victim"])]
    assert only.form(form_id="audit-filter").fields["action"] == "user.disable"
    by_actor = page(web.get("/console/audit", params={"actor": "admin"}))
    assert {r.attrs["data-actor"] for r in by_actor.rows} == {"admin"} and len(by_actor.rows) == 2
    by_target = page(web.get("/console/audit", params={"target": team["victim"]}))
    assert [r.attrs["data-action"] for r in by_target.rows] == ["user.enable", "user.disable", "user.create"]

    today = date.today()
    in_range = page(web.get("/console/audit", params={"since": str(today - timedelta(days=1)),
                                                       "until": str(today + timedelta(days=1))}))
    assert len(in_range.rows) == len(html.rows)
    future = page(web.get("/console/audit", params={"since": str(today + timedelta(days=2))}))
    assert future.rows == [] and "audit-empty" in future.by_id
    bad = web.get("/console/audit", params={"since": "yesterday"})
    assert bad.status_code == 422 and "date" in page(bad).text("error")
    nobody = web.get("/console/audit", params={"actor": "nobody"})
    assert nobody.status_code == 404 and page(nobody).rows == []


def test_audit_page_pages_through_old_entries(web, console_settings, team):
    with session_scope(console_settings) as session:
        for i in range(60):
            audit.record(session, actor=None, action="test.tick", target_id=str(i))
    login(web, "admin")
    first = page(web.get("/console/audit", params={"action": "test.tick"}))
    assert [r.attrs["data-target-id"] for r in first.rows] == [str(i) for i in range(59, 9, -1)]
    assert "newer" not in first.by_id
    older = first.by_id["older"].attrs["href"]
    second = page(web.get(older))
    assert [r.attrs["data-target-id"] for r in second.rows] == [str(i) for i in range(9, -1, -1)]
    assert "older" not in second.by_id and "newer" in second.by_id
    assert second.form(form_id="audit-filter").fields["action"] == "test.tick"


def test_audit_api_filters(web, console_settings, team):
    me = login(web, "admin")
    web.patch(f"/api/console/users/{team['victim']}", json={"role": "ops"}, headers=csrf(me))
    entries = web.get("/api/console/audit", params={"action": "user.role"}).json()["entries"]
    assert len(entries) == 1
    entry = entries[0]
    assert (entry["actor"], entry["actor_id"], entry["target_id"]) == ("admin", team["admin"], team["victim"])
    assert entry["detail"] == {"username": "victim", "from": "agent", "to": "ops"}
    assert len(web.get("/api/console/audit", params={"target_id": team["victim"]}).json()["entries"]) == 2
    assert len(web.get("/api/console/audit", params={"actor_id": team["admin"]}).json()["entries"]) == 1
    assert len(web.get("/api/console/audit", params={"limit": 2}).json()["entries"]) == 2
    now = datetime.now(timezone.utc)
    for since, until, n in (
        ((now - timedelta(hours=1)).isoformat(), None, 5),
        ((now + timedelta(hours=1)).isoformat(), None, 0),
        (None, (now - timedelta(hours=1)).isoformat(), 0),
        ((now - timedelta(hours=1)).replace(tzinfo=None).isoformat(), (now + timedelta(hours=1)).isoformat(), 5),
    ):
        params = {k: v for k, v in (("since", since), ("until", until)) if v}
        assert len(web.get("/api/console/audit", params=params).json()["entries"]) == n, params
    assert web.get("/api/console/audit", params={"limit": 0}).status_code == 422


# -- production ---------------------------------------------------------------------------------------------------


def test_production_refuses_default_secrets_and_marks_the_cookie_secure(settings):
    with pytest.raises(ValidationError, match="SUPPORT_BOT_ADMIN_TOKEN"):
        Settings(env="production")
    prod = Settings(env="production", admin_token="t" * 32)
    prod = prod.model_copy(update={"safety": prod.safety.model_copy(update={"enabled": False})})
    migrate(prod)
    add_user(prod, "agent")
    with TestClient(create_app(prod), base_url="https://testserver", follow_redirects=False) as client:
        res = client.post("/console/login", data={"username": "agent", "password": PASSWORD})
        morsel = cookie_of(res)[SESSION_COOKIE]
        assert res.status_code == 303 and morsel["secure"] and morsel["httponly"]
        assert client.get("/api/console/me").json()["username"] == "agent"


# -- the dependencies other routers use ---------------------------------------------------------------------------


def _app_with_probe_routes(settings):
    """The real app plus routes guarded by each dependency that console_deps offers to other routers."""
    app = create_app(settings)
    guarded = APIRouter(dependencies=[Depends(csrf_protect)])

    @guarded.get("/api/console/probe/agent")
    def probe_agent(user: AgentDep):
        return {"user": user.username}

    @guarded.get("/api/console/probe/ops")
    def probe_ops(user: OpsDep):
        return {"user": user.username}

    @guarded.get("/api/console/probe/admin")
    def probe_admin(user: AdminUserDep):
        return {"user": user.username}

    @guarded.get("/api/console/probe/agent-or-ops")
    def probe_agent_or_ops(user=Depends(require_roles("agent", "ops"))):
        return {"user": user.username}

    @guarded.post("/api/console/probe/change")
    def probe_change(user: CurrentUser):
        return {"user": user.username}

    @guarded.get("/console/probe", response_class=HTMLResponse)
    def probe_page(user: AgentDep):
        return f"<p>{user.username}</p>"

    scripts = APIRouter()

    @scripts.get("/api/probe/knowledge")
    @scripts.post("/api/probe/knowledge")
    def probe_knowledge(user: OpsOrAdminTokenDep):
        return {"user": user.username if user is not None else None}

    app.include_router(guarded)
    app.include_router(scripts)
    return app


def test_role_dependencies_for_other_routers(console_settings, team):
    add_user(console_settings, "fresh", "agent", must_change_password=True)
    expected = {
        "agent": {"agent": 200, "ops": 403, "admin": 403, "agent-or-ops": 200},
        "ops": {"agent": 403, "ops": 200, "admin": 403, "agent-or-ops": 200},
        "admin": {"agent": 200, "ops": 200, "admin": 200, "agent-or-ops": 200},
        "fresh": {"agent": 403, "ops": 403, "admin": 403, "agent-or-ops": 403},
    }
    with TestClient(_app_with_probe_routes(console_settings), follow_redirects=False) as client:
        for probe in expected["agent"]:
            assert client.get(f"/api/console/probe/{probe}").status_code == 401
        assert client.get("/console/probe").headers["location"] == "/console/login?next=/console/probe"
        for username, row in expected.items():
            me = login(client, username)
            got = {probe: client.get(f"/api/console/probe/{probe}").status_code for probe in row}
            assert got == row, username
            page_res = client.get("/console/probe")
            if username in ("agent", "admin"):
                assert page_res.status_code == 200
            elif username == "fresh":
                assert page_res.headers["location"] == "/console/account"
            else:
                assert page_res.status_code == 403
            if username != "fresh":
                assert client.post("/api/console/probe/change").json() == {"detail": CSRF_FAILED}
                assert client.post("/api/console/probe/change", headers=csrf(me)).json() == {"user": username}


def test_ops_or_admin_token_accepts_a_console_login_or_the_admin_token(console_settings, team):
    add_user(console_settings, "fresh", "ops", must_change_password=True)
    token = {"Authorization": f"Bearer {console_settings.admin_token}"}
    with TestClient(_app_with_probe_routes(console_settings), follow_redirects=False) as client:
        # Scripts: the bearer token alone, no cookie and no CSRF token.
        assert client.get("/api/probe/knowledge", headers=token).json() == {"user": None}
        assert client.post("/api/probe/knowledge", headers=token).json() == {"user": None}
        for bad in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}):
            assert client.post("/api/probe/knowledge", headers=bad).status_code == 401
        for username, status in (("agent", 403), ("fresh", 403), ("ops", 200), ("admin", 200)):
            me = login(client, username)
            assert client.get("/api/probe/knowledge").status_code == status, username
            res = client.post("/api/probe/knowledge", headers=csrf(me))
            assert res.status_code == status, username
            if status == 200:
                assert res.json() == {"user": username}
                assert client.post("/api/probe/knowledge").json() == {"detail": CSRF_FAILED}
                assert client.post("/api/probe/knowledge", headers={"X-CSRF-Token": "x"}).status_code == 403
            # A wrong token is refused even next to a valid console session.
            assert client.get("/api/probe/knowledge", headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_login_page_points_to_the_first_admin_password_file_until_the_admin_logs_in(web, console_settings):
    assert "first-admin-hint" not in page(web.get("/console/login")).by_id
    one_time = auth.ensure_first_admin(console_settings)
    saved = auth.first_admin_password_path(console_settings)
    html = page(web.get("/console/login"))
    assert html.text("first-admin-password-file") == str(saved)
    failed = web.post("/console/login", data={"username": "admin", "password": "not-it"})
    assert failed.status_code == 401 and page(failed).text("first-admin-password-file") == str(saved)
    assert one_time not in web.get("/console/login").text and one_time not in failed.text
    assert web.post("/console/login", data={"username": "admin", "password": one_time}).status_code == 303
    assert not saved.exists()
    web.cookies.clear()
    res = web.get("/console/login")
    assert "first-admin-hint" not in page(res).by_id and str(saved) not in res.text

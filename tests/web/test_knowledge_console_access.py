"""The knowledge API for console users: ops and admin may manage it (with CSRF), agents may not; changes are audited."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from support_bot.ops import audit, auth
from support_bot.core.db import session_scope
from tests.conftest import add_user
from tests.web.helpers import csrf, login
from web.app import create_app

CSV = b"id,question,answer\nk1,How do I reset my password?,Use the Forgot password link on the sign-in page.\n"
# Logging in is not what these tests check.
pytestmark = pytest.mark.usefixtures("fast_hashing")


@pytest.fixture
def web(db):
    for name, role in (("olga", "ops"), ("adam", "admin"), ("ann", "agent")):
        add_user(db, name, role)
    with TestClient(create_app(db), follow_redirects=False) as client:
        yield client


@pytest.mark.parametrize("username", ["olga", "adam"])
def test_ops_and_admin_sessions_manage_knowledge_and_are_audited(web, settings, username):
    headers = csrf(login(web, username))
    res = web.post("/api/knowledge/uploads", files={"file": ("help.csv", CSV, "text/csv")}, headers=headers)
    assert res.status_code == 202, res.text
    assert web.get("/api/knowledge/sources").status_code == 200
    assert web.post("/api/knowledge/reindex", headers=headers).status_code == 200
    with session_scope(settings) as session:
        entries = audit.entries(session)
        user = auth.get_user_by_name(session, username)
    upload = next(e for e in entries if e.action == "knowledge.upload")
    assert upload.actor_id == user.id and upload.detail["filename"] == "help.csv"
    assert {e.action for e in entries} >= {"knowledge.upload", "knowledge.reindex"}
    assert all(e.actor_id is not None for e in entries if e.action.startswith("knowledge."))


def test_changes_without_the_csrf_token_are_refused(web, settings):
    login(web, "olga")
    res = web.post("/api/knowledge/uploads", files={"file": ("help.csv", CSV, "text/csv")})
    assert res.status_code == 403
    assert web.post("/api/knowledge/reindex").status_code == 403
    assert web.get("/api/knowledge/sources").json()["sources"] == []  # reading needs no token


def test_agents_cannot_touch_knowledge(web):
    headers = csrf(login(web, "ann"))
    assert web.get("/api/knowledge/sources").status_code == 403
    res = web.post("/api/knowledge/uploads", files={"file": ("help.csv", CSV, "text/csv")}, headers=headers)
    assert res.status_code == 403


def test_scripts_still_use_the_admin_token_and_are_audited_as_system(web, settings):
    token = {"Authorization": f"Bearer {settings.admin_token}"}
    assert web.post("/api/knowledge/reindex", headers=token).status_code == 200
    with session_scope(settings) as session:
        entry = audit.entries(session, action="knowledge.reindex")[0]
    assert entry.actor_id is None and entry.actor_name == "system"
    assert web.post("/api/knowledge/reindex", headers={"Authorization": "Bearer wrong"}).status_code == 401

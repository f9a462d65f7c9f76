"""The learning loop in the console: ops list, edit, approve and reject suggested FAQ entries over the API and the page,
and the next customer gets the approved answer. The loop itself is tested in tests/learning.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from ingest.worker import get_worker
from support_bot.handoff import queue
from tests.learning.helpers import (
    LOCKER_A,
    LOCKER_PARAPHRASE,
    LOCKER_Q,
    SOURCE,
    learned_jobs,
    suggestion_of,
)
from tests.web.conftest import app_settings, client  # noqa: F401 - fixtures for the API tests
from tests.conftest import add_user
from tests.web.helpers import ask, new_conversation
from tests.web.test_handoff_api import Console
from web.app import create_app

pytestmark = pytest.mark.usefixtures("fast_hashing")


def console_user(client, settings, username: str, role: str) -> Console:
    add_user(settings, username, role, username.title())
    return Console(client.app, username)


def chat_resolved_by_agent(client, settings) -> str:
    """Over HTTP: a customer asks, asks for a person, an agent claims, answers and resolves."""
    conv, headers = new_conversation(client)
    ask(client, conv, headers, LOCKER_Q)
    ask(client, conv, headers, "I want to talk to a real person please")
    agent = console_user(client, settings, "alice", "agent")
    assert agent.post(f"/conversations/{conv}/claim").status_code == 200
    res = agent.post(f"/conversations/{conv}/messages", {"text": LOCKER_A})
    assert res.status_code == 201, res.text
    assert agent.post(f"/conversations/{conv}/resolve").status_code == 200
    return conv


def test_api_story_approve_then_a_new_customer_gets_the_learned_answer(client, app_settings):
    conv = chat_resolved_by_agent(client, app_settings)
    ops = console_user(client, app_settings, "olga", "ops")

    listing = ops.get("/suggestions").json()
    assert listing["counts"]["pending"] == 1 and listing["total"] == 1
    item = listing["items"][0]
    assert (item["conversation_id"], item["question"], item["answer"]) == (conv, LOCKER_Q, LOCKER_A)
    detail = ops.get(f"/suggestions/{item['id']}").json()
    assert [m["role"] for m in detail["transcript"]][0] == "customer"

    res = ops.http.patch(
        f"/api/console/suggestions/{item['id']}", json={"question": "Can I have my order shipped to a parcel locker?"},
        headers=ops.headers,
    )
    assert res.status_code == 200 and res.json()["job"] is None, res.text
    res = ops.post(f"/suggestions/{item['id']}/approve", {})
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["suggestion"]["status"] == "approved" and body["job"]["source"] == SOURCE
    assert get_worker().wait_idle(timeout=120)
    source = ops.get("/suggestions/source").json()
    assert source["last_job"]["status"] == "succeeded", source
    assert (source["source"]["status"], source["source"]["entries"]) == ("live", 1)
    assert ops.post(f"/suggestions/{item['id']}/approve", {}).status_code == 409

    customer, headers = new_conversation(client)
    events = ask(client, customer, headers, LOCKER_PARAPHRASE)
    done = events[-1][1]
    assert events[-1][0] == "done" and not done["abstained"], done
    assert done["citations"][0]["source"] == SOURCE and done["citations"][0]["entry_id"] == item["id"]
    assert "Parcel locker delivery" in done["text"]


@pytest.mark.parametrize("app_settings", ["sqlite"], indirect=True)
def test_roles_csrf_and_bad_input(client, app_settings):
    chat_resolved_by_agent(client, app_settings)
    agent = Console(client.app, "alice")
    ops = console_user(client, app_settings, "olga", "ops")
    admin = console_user(client, app_settings, "ada", "admin")
    sid = ops.get("/suggestions").json()["items"][0]["id"]

    assert client.get("/api/console/suggestions").status_code == 401
    assert agent.get("/suggestions").status_code == 403
    assert agent.post(f"/suggestions/{sid}/approve", {}).status_code == 403
    assert agent.http.get("/console/suggestions").status_code == 403
    assert admin.get("/suggestions").status_code == 200

    # No CSRF token: refused, nothing changed.
    res = ops.http.post(f"/api/console/suggestions/{sid}/approve", json={})
    assert res.status_code == 403 and "CSRF" in res.json()["detail"]
    res = ops.http.patch(f"/api/console/suggestions/{sid}", json={"answer": "changed"})
    assert res.status_code == 403
    assert ops.get(f"/suggestions/{sid}").json()["status"] == "pending"
    assert ops.get(f"/suggestions/{sid}").json()["answer"] == LOCKER_A

    res = ops.http.patch(f"/api/console/suggestions/{sid}", json={"answer": "  "}, headers=ops.headers)
    assert res.status_code == 422 and "answer" in res.json()["detail"]
    assert ops.get("/suggestions?status=bogus").status_code == 422
    assert ops.get("/suggestions/nope").status_code == 404
    assert ops.post("/suggestions/nope/approve", {}).status_code == 404
    assert ops.get(f"/suggestions/{sid}").json()["answer"] == LOCKER_A

    res = ops.post(f"/suggestions/{sid}/reject", {"reason": "too specific"})
    assert res.status_code == 200 and res.json()["suggestion"]["status"] == "rejected"
    assert ops.post(f"/suggestions/{sid}/reject", {}).status_code == 409
    assert ops.get("/suggestions?status=rejected").json()["total"] == 1
    assert learned_jobs(app_settings) == []


@pytest.mark.parametrize("app_settings", ["sqlite"], indirect=True)
def test_page_lists_suggestions_escaped_with_the_learned_source_status(client, app_settings):
    from tests.web.console_html import ConsolePage

    xss = "<img src=x onerror=window.__xss=1> my parcel locker code never arrived"
    conv, headers = new_conversation(client)
    ask(client, conv, headers, xss)
    ask(client, conv, headers, "I want to talk to a real person please")
    agent = console_user(client, app_settings, "alice", "agent")
    agent.post(f"/conversations/{conv}/claim")
    agent.post(f"/conversations/{conv}/messages", {"text": LOCKER_A})
    agent.post(f"/conversations/{conv}/resolve")
    ops = console_user(client, app_settings, "olga", "ops")

    res = ops.http.get("/console/suggestions")
    assert res.status_code == 200
    page = ConsolePage(res.text)
    assert "/console/suggestions" in [link.attrs.get("href") for link in page.nav]
    assert page.by_id["learned-source"].attrs["data-state"] == "empty"
    sid = ops.get("/suggestions").json()["items"][0]["id"]
    # Escaped: the parser reads the customer's markup back as text, not as an element.
    assert page.by_id[f"sg-question-{sid}"].text == xss
    assert page.by_id[f"sg-answer-{sid}"].text == LOCKER_A
    # Ops cannot open the agents' conversation page, so no link to it; an admin gets one.
    assert "/console/conversations/" not in res.text
    admin = console_user(client, app_settings, "ada", "admin")
    assert f"/console/conversations/{conv}" in admin.http.get("/console/suggestions").text
    assert ops.http.get("/console/suggestions?status=approved").status_code == 200
    assert ops.http.get("/console/suggestions?status=bogus").status_code == 422


@pytest.mark.parametrize("app_settings", ["sqlite"], indirect=True)
def test_the_app_subscribes_the_learning_loop_to_resolves(app_settings, monkeypatch):
    # Nothing subscribed yet, as in a fresh process: the app factory must do it, not an earlier import or test.
    monkeypatch.setattr(queue, "_resolved_hooks", [])
    with TestClient(create_app(app_settings)) as fresh:
        conv = chat_resolved_by_agent(fresh, app_settings)
    assert suggestion_of(app_settings, conv).question == LOCKER_Q

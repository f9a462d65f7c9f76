"""The console shows what may still be about one customer's case in a suggestion, in its JSON and on its page, until
ops reword it."""

from __future__ import annotations

import pytest

from tests.conftest import add_user
from tests.web.conftest import app_settings, client  # noqa: F401 - fixtures
from tests.web.console_html import ConsolePage
from tests.web.helpers import ask, new_conversation
from tests.web.test_handoff_api import Console

pytestmark = pytest.mark.usefixtures("fast_hashing")

ANSWER = (
    "Hi, I'm Alice. I checked order 5521: parcels held at the depot go out again the next working day, and the "
    "depot keeps them for 14 days."
)


def flags_box(ops: Console, suggestion_id: str):
    res = ops.http.get("/console/suggestions")
    assert res.status_code == 200 and res.headers["content-type"].startswith("text/html")
    return ConsolePage(res.text).by_id[f"sg-flags-{suggestion_id}"]


def test_a_placeholder_left_in_a_suggestion_is_flagged_in_json_and_on_the_page(client, app_settings):  # noqa: F811
    conv, headers = new_conversation(client)
    ask(client, conv, headers, "My parcel is stuck at the depot, when will it move again?")
    ask(client, conv, headers, "I want to talk to a real person please")
    add_user(app_settings, "alice", "agent", "Alice")
    agent = Console(client.app, "alice")
    assert agent.post(f"/conversations/{conv}/claim").status_code == 200
    assert agent.post(f"/conversations/{conv}/messages", {"text": ANSWER}).status_code == 201
    assert agent.post(f"/conversations/{conv}/resolve").status_code == 200
    add_user(app_settings, "olga", "ops", "Olga")
    ops = Console(client.app, "olga")

    item = ops.get("/suggestions").json()["items"][0]
    assert item["answer"] == (
        "I checked order [NUMBER]: parcels held at the depot go out again the next working day, and the depot keeps "
        "them for 14 days."
    )
    assert [(f["field"], f["kind"], f["text"]) for f in item["review_flags"]] == [("answer", "placeholder", "[NUMBER]")]
    box = flags_box(ops, item["id"])
    assert "hidden" not in box.attrs and box.attrs["data-count"] == "1"
    assert "placeholder [NUMBER]" in " ".join(box.text.split())

    reworded = "Parcels held at the depot go out again the next working day; the depot keeps them for 14 days."
    res = ops.http.patch(f"/api/console/suggestions/{item['id']}", json={"answer": reworded}, headers=ops.headers)
    assert res.status_code == 200, res.text
    assert res.json()["suggestion"]["review_flags"] == []
    assert ops.get(f"/suggestions/{item['id']}").json()["review_flags"] == []
    box = flags_box(ops, item["id"])
    assert "hidden" in box.attrs and box.attrs["data-count"] == "0"

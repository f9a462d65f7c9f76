"""Human handoff over HTTP: triggers in the chat, the customer endpoints, the agents' console API, live events."""

from __future__ import annotations

import threading

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from support_bot.ops import audit
from support_bot import handoff
from support_bot.core.db import session_scope
from support_bot.models import Conversation, Message, User
from tests.conftest import add_user
from tests.web.helpers import ask, csrf, login, new_conversation, parse_sse

UNRELATED = "What is the airspeed velocity of an unladen swallow?"

# The chat and console flows run on SQLite; the claim race over HTTP runs on PostgreSQL.
SQLITE = pytest.mark.parametrize("app_settings", ["sqlite"], indirect=True)


# Logins are many here, and their cost is not what these tests check.
pytestmark = pytest.mark.usefixtures("fast_hashing")


class Console:
    """One logged-in console user with their own cookie jar and CSRF token."""

    def __init__(self, app, username: str):
        self.http = TestClient(app, follow_redirects=False)
        self.me = login(self.http, username)
        self.headers = csrf(self.me)

    def get(self, path: str, **kw):
        return self.http.get("/api/console" + path, **kw)

    def post(self, path: str, json=None, **kw):
        return self.http.post("/api/console" + path, json=json, headers=self.headers, **kw)

    def delete(self, path: str):
        return self.http.delete("/api/console" + path, headers=self.headers)

    def online(self) -> None:
        res = self.post("/presence", {"status": "online"})
        assert res.status_code == 200 and res.json()["presence"] == "online", res.text


def agent(client, settings, username: str = "alice", display_name: str = "Alice Agent", role: str = "agent"):
    add_user(settings, username, role, display_name)
    return Console(client.app, username)


def conversation(settings, conv_id: str) -> Conversation:
    with session_scope(settings) as session:
        c = session.get(Conversation, conv_id)
        session.expunge(c)
        return c


def stored_messages(settings, conv_id: str) -> list[Message]:
    with session_scope(settings) as session:
        rows = list(session.scalars(select(Message).where(Message.conversation_id == conv_id).order_by(Message.seq)))
        session.expunge_all()
        return rows


def customer_events(client, conv_id: str, headers: dict) -> list[tuple[str, dict]]:
    res = client.get(f"/api/conversations/{conv_id}/events", params={"timeout": 0}, headers=headers)
    assert res.status_code == 200
    return [e for e in parse_sse(res.text.replace("retry: 2000\n\n", "")) if e[0] != "message" or e[1]]


def press_button(client, conv_id: str, headers: dict, status: int = 200) -> dict:
    res = client.post(f"/api/conversations/{conv_id}/handoff", json={"reason": "customer_request"}, headers=headers)
    assert res.status_code == status, res.text
    return res.json()


# --- triggers in the chat ------------------------------------------------------------------------------------------


@SQLITE
def test_asking_for_a_person_queues_the_chat_without_the_model(client, fake_engine, app_settings):
    conv_id, headers = new_conversation(client)
    events = ask(client, conv_id, headers, "I want to talk to a real person please")
    done = events[-1][1]
    assert done["handoff"] is True and done["status"] == "queued" and done["position"] == 1
    assert done["agents_online"] is False and done["eta_s"] is None
    assert "no one from our team is online" in done["text"]
    client.app.state.assistant.wait_background()
    assert fake_engine.calls == []
    c = conversation(app_settings, conv_id)
    assert (c.status, c.handoff_reason, c.handoff_detail) == ("queued", "request", "talk to a real person")
    assert c.handoff_summary == "I want to talk to a real person please"
    status = client.get(f"/api/conversations/{conv_id}/status", headers=headers).json()
    assert status["status"] == "queued" and status["position"] == 1 and status["agents_online"] is False


@SQLITE
def test_a_question_about_a_person_is_answered_by_the_bot(client, fake_engine, app_settings):
    conv_id, headers = new_conversation(client)
    done = ask(client, conv_id, headers, "is a person allowed to return two items?")[-1][1]
    assert done["handoff"] is False
    assert conversation(app_settings, conv_id).status == "bot"


@SQLITE
def test_two_abstentions_in_a_row_hand_off_with_a_model_written_summary(client, fake_engine, app_settings):
    conv_id, headers = new_conversation(client)
    first = ask(client, conv_id, headers, UNRELATED)[-1][1]
    assert first["abstained"] is True and first["handoff"] is False
    client.app.state.assistant.wait_background()
    # Checked like an answer: every sentence in the chat's own words (see tests/handoff/test_summaries.py).
    summary = (
        "The customer asks about the airspeed of an unladen swallow and the 1954 world cup; the help center lacks both."
    )
    fake_engine.queue_reply(summary)
    second = ask(client, conv_id, headers, "Who won the football world cup in 1954?")[-1][1]
    assert second["abstained"] is True and second["handoff"] is True and second["status"] == "queued"
    client.app.state.assistant.wait_background()
    c = conversation(app_settings, conv_id)
    assert (c.handoff_reason, c.abstain_streak) == ("abstain", 1)
    assert c.handoff_summary == summary
    assert "Who won the football world cup" in fake_engine.calls[-1][-1].content


@SQLITE
def test_frustration_hands_off(client, fake_engine, app_settings):
    conv_id, headers = new_conversation(client)
    done = ask(client, conv_id, headers, "This is USELESS!!! I've asked three times already")[-1][1]
    assert done["handoff"] is True
    c = conversation(app_settings, conv_id)
    assert c.handoff_reason == "sentiment" and c.handoff_detail.startswith("sentiment -")
    assert c.priority == app_settings.handoff.priority["sentiment"]


@SQLITE
def test_too_many_bot_turns_hand_off_and_a_thumbs_up_resets_the_count(client, fake_engine, app_settings):
    app_settings.handoff.max_bot_turns = 2
    conv_id, headers = new_conversation(client)
    fake_engine.queue_reply("Returns are accepted within 30 days of delivery for a full refund [1].")
    answer = ask(client, conv_id, headers, "What is your return policy?")[-1][1]
    fake_engine.queue_reply("Standard shipping takes 3 to 5 business days [1].")
    ask(client, conv_id, headers, "how many days does delivery take?")
    assert conversation(app_settings, conv_id).bot_turns == 2
    res = client.post(f"/api/messages/{answer['message_id']}/feedback", json={"rating": "up"}, headers=headers)
    assert res.status_code == 204 and conversation(app_settings, conv_id).bot_turns == 0
    fake_engine.queue_reply("Gift cards never expire [1].")
    ask(client, conv_id, headers, "Do gift cards expire?")
    fake_engine.queue_reply("Standard shipping takes 3 to 5 business days [1].")
    ask(client, conv_id, headers, "how many days does delivery take?")
    client.app.state.assistant.wait_background()
    calls = len(fake_engine.calls)
    done = ask(client, conv_id, headers, "What is your return policy?")[-1][1]
    client.app.state.assistant.wait_background()
    # No answer was generated: the one new model call is the agent's summary.
    assert done["handoff"] is True
    assert [m[0].content for m in fake_engine.calls[calls:]] == [handoff.AGENT_SUMMARY_INSTRUCTION]
    assert conversation(app_settings, conv_id).handoff_reason == "max_turns"


@SQLITE
def test_a_safety_handoff_is_recorded_with_its_policy(client, fake_engine, app_settings):
    conv_id, headers = new_conversation(client)
    done = ask(client, conv_id, headers, "I can't take this anymore, I want to kill myself")[-1][1]
    assert done["handoff"] is True and "emergency" in done["text"]
    c = conversation(app_settings, conv_id)
    assert (c.status, c.handoff_reason, c.handoff_detail, c.priority) == ("queued", "safety", "self_harm", 50)


@SQLITE
def test_with_the_safety_trigger_off_the_policy_reply_stands_alone(client, fake_engine, app_settings):
    app_settings.handoff.safety_enabled = False
    conv_id, headers = new_conversation(client)
    done = ask(client, conv_id, headers, "I can't take this anymore, I want to kill myself")[-1][1]
    assert done["handoff"] is False and "emergency" in done["text"] and fake_engine.calls == []
    assert conversation(app_settings, conv_id).status == "bot"


@SQLITE
def test_with_the_request_trigger_off_the_bot_answers(client, fake_engine, app_settings):
    app_settings.handoff.request_enabled = False
    conv_id, headers = new_conversation(client)
    done = ask(client, conv_id, headers, "talk to a human")[-1][1]
    assert done["handoff"] is False and conversation(app_settings, conv_id).status == "bot"


# --- customer endpoints --------------------------------------------------------------------------------------------


@SQLITE
def test_the_button_queues_once_and_refuses_once_a_person_has_the_chat(client, fake_engine, app_settings):
    conv_id, headers = new_conversation(client)
    alice = agent(client, app_settings)
    alice.online()
    data = press_button(client, conv_id, headers)
    assert data["status"] == "queued" and data["position"] == 1 and data["eta_s"] == 180
    assert data["agents_online"] is True and "number 1 in the queue" in data["text"]
    assert press_button(client, conv_id, headers)["status"] == "queued"
    c = conversation(app_settings, conv_id)
    assert (c.handoff_reason, c.handoff_detail) == ("button", "customer_request")
    assert alice.post(f"/conversations/{conv_id}/claim").status_code == 200
    assert press_button(client, conv_id, headers, 409)["detail"] == "a person is already handling this conversation"
    wrong = {"Authorization": "Bearer nope"}
    assert client.post(f"/api/conversations/{conv_id}/handoff", json={}, headers=wrong).status_code == 404
    assert client.get(f"/api/conversations/{conv_id}/status", headers=wrong).status_code == 404


@SQLITE
def test_the_bot_is_silent_while_queued_and_assigned(client, fake_engine, app_settings):
    conv_id, headers = new_conversation(client)
    press_button(client, conv_id, headers)
    done = ask(client, conv_id, headers, "What is your return policy?")
    assert [e for e, _ in done] == ["done"]
    assert done[0][1] == {**done[0][1], "message_id": None, "text": "", "citations": [], "handoff": True,
                          "status": "queued"}
    alice = agent(client, app_settings)
    assert alice.post(f"/conversations/{conv_id}/claim").status_code == 200
    done = ask(client, conv_id, headers, "Hello? Do gift cards expire?", client_message_id="m-1")[-1][1]
    assert done == {**done, "message_id": None, "text": "", "abstained": False, "handoff": True,
                    "status": "assigned", "agent": "Alice Agent"}
    # A retried post of the same message is still one message and still no answer.
    again = ask(client, conv_id, headers, "Hello? Do gift cards expire?", client_message_id="m-1")[-1][1]
    assert again["message_id"] is None and again["status"] == "assigned"
    client.app.state.assistant.wait_background()
    assert fake_engine.calls == []
    roles = [(m.role, m.text) for m in stored_messages(app_settings, conv_id)]
    # No bot message; the agent joining is a stored system line the customer sees.
    assert roles == [
        ("customer", "What is your return policy?"),
        ("system", "Alice Agent joined the chat."),
        ("customer", "Hello? Do gift cards expire?"),
    ]
    detail = alice.get(f"/conversations/{conv_id}").json()
    assert [m["text"] for m in detail["messages"]] == [t for _, t in roles]
    live = [d["text"] for e, d in customer_events(client, conv_id, headers) if e == "message"]
    assert live == [t for _, t in roles]


@SQLITE
def test_the_whole_console_story(client, fake_engine, app_settings):
    conv_id, headers = new_conversation(client)
    fake_engine.queue_reply("Returns are accepted within 30 days of delivery for a full refund [1].")
    ask(client, conv_id, headers, "What is your return policy?")
    # Asking for a person generates no answer, so the next model call is the agent's summary.
    fake_engine.queue_reply("Customer asks about returns and wants a person.")
    ask(client, conv_id, headers, "I want to speak to an agent")
    client.app.state.assistant.wait_background()

    alice = agent(client, app_settings)
    alice.online()
    queue = alice.get("/queue").json()
    [item] = queue["items"]
    assert queue["agents_online"] == 1
    assert item["id"] == conv_id and item["reason"] == "request" and item["position"] == 1
    assert item["summary"] == "Customer asks about returns and wants a person."
    assert item["preview"] == "I want to speak to an agent" and item["waiting_s"] >= 0
    detail = alice.get(f"/conversations/{conv_id}").json()
    assert detail["handoff_reason"] == "request" and detail["handoff_detail"] == "speak to an agent"
    assert [s["entry_id"] for s in detail["sources"]] == ["ret-01"]

    claimed = alice.post(f"/conversations/{conv_id}/claim")
    assert claimed.status_code == 200 and claimed.json()["status"] == "assigned"
    status = client.get(f"/api/conversations/{conv_id}/status", headers=headers).json()
    assert (status["status"], status["agent"]) == ("assigned", "Alice Agent")

    reply = alice.post(f"/conversations/{conv_id}/messages", {"text": "Hi, I'm Alice. Let me check."})
    assert reply.status_code == 201 and reply.json()["author"] == "Alice Agent"
    note = alice.post(f"/conversations/{conv_id}/notes", {"text": "VIP customer, be generous"})
    assert note.status_code == 201 and note.json()["private"] is True

    shown = client.get(f"/api/conversations/{conv_id}/messages", headers=headers).json()["messages"]
    assert shown[-1] == {**shown[-1], "role": "agent", "author": "Alice Agent", "text": "Hi, I'm Alice. Let me check."}
    assert "VIP" not in str(shown)
    live = customer_events(client, conv_id, headers)
    assert "VIP" not in str(live) and all(e != "note" for e, _ in live)
    assert ("Hi, I'm Alice. Let me check.", "Alice Agent") in [
        (d.get("text"), d.get("author")) for e, d in live if e == "message"
    ]
    assert [d["status"] for e, d in live if e == "status"] == ["queued", "assigned"]
    console_live = alice.get("/events", params={"conversation_id": conv_id, "timeout": 0}).text
    assert "VIP customer, be generous" in console_live and "event: note" in console_live

    assert client.post(f"/api/conversations/{conv_id}/rating", json={"rating": 5}, headers=headers).status_code == 409
    resolved = alice.post(f"/conversations/{conv_id}/resolve")
    assert resolved.status_code == 200 and resolved.json()["status"] == "resolved"
    status = client.get(f"/api/conversations/{conv_id}/status", headers=headers).json()
    assert status["status"] == "resolved" and status["can_rate"] is True
    bad = client.post(f"/api/conversations/{conv_id}/rating", json={"rating": 6}, headers=headers)
    assert bad.status_code == 422
    res = client.post(f"/api/conversations/{conv_id}/rating", json={"rating": 4, "comment": "quick"}, headers=headers)
    assert res.status_code == 204
    c = conversation(app_settings, conv_id)
    assert (c.status, c.rating, c.rating_comment) == ("resolved", 4, "quick")

    with session_scope(app_settings) as session:
        done = [(e.action, e.actor_name) for e in reversed(audit.entries(session, target_id=conv_id))]
    assert done == [
        ("conversation.queue", "system"), ("conversation.claim", "Alice Agent"),
        ("conversation.reply", "Alice Agent"), ("conversation.note", "Alice Agent"),
        ("conversation.resolve", "Alice Agent"), ("conversation.rate", "system"),
    ]

    # Writing again starts a new episode with the bot.
    fake_engine.queue_reply("Gift cards never expire [1].")
    again = ask(client, conv_id, headers, "Do gift cards expire?")[-1][1]
    assert again["handoff"] is False and "never expire" in again["text"]
    assert conversation(app_settings, conv_id).status == "bot"


@SQLITE
def test_invalid_transitions_over_http_are_409_and_change_nothing(client, fake_engine, app_settings):
    alice = agent(client, app_settings)
    conv_id, headers = new_conversation(client)
    for path in ("claim", "resolve", "return-to-bot"):
        res = alice.post(f"/conversations/{conv_id}/{path}")
        assert res.status_code == 409 and res.json()["detail"], path
    assert alice.post(f"/conversations/{conv_id}/transfer", {"agent_id": alice.me["id"]}).status_code == 409
    assert alice.post(f"/conversations/{conv_id}/messages", {"text": "hi"}).status_code == 409
    press_button(client, conv_id, headers)
    assert alice.post(f"/conversations/{conv_id}/resolve").status_code == 409
    assert alice.post(f"/conversations/{conv_id}/claim").status_code == 200
    second = alice.post(f"/conversations/{conv_id}/claim")
    assert second.status_code == 409 and "already took" in second.json()["detail"]
    assert conversation(app_settings, conv_id).status == "assigned"
    assert alice.get("/conversations/nope").status_code == 404
    assert alice.post("/conversations/nope/claim").status_code == 404


@SQLITE
def test_return_to_bot_lets_the_bot_answer_again(client, fake_engine, app_settings):
    alice = agent(client, app_settings)
    conv_id, headers = new_conversation(client)
    press_button(client, conv_id, headers)
    alice.post(f"/conversations/{conv_id}/claim")
    res = alice.post(f"/conversations/{conv_id}/return-to-bot")
    assert res.status_code == 200 and res.json()["status"] == "bot"
    fake_engine.queue_reply("Gift cards never expire [1].")
    done = ask(client, conv_id, headers, "Do gift cards expire?")[-1][1]
    assert done["handoff"] is False and "never expire" in done["text"]


@SQLITE
def test_transfer_capacity_and_the_agent_list(client, fake_engine, app_settings):
    alice = agent(client, app_settings)
    bob = agent(client, app_settings, "bob", "Bob")
    alice.online()
    bob.online()
    agents = alice.get("/agents", params={"online": True}).json()["items"]
    assert {a["username"] for a in agents} == {"alice", "bob"}
    assert all({"presence", "load", "capacity"} <= a.keys() for a in agents)
    first, h1 = new_conversation(client)
    second, h2 = new_conversation(client)
    press_button(client, first, h1)
    press_button(client, second, h2)
    assert alice.post(f"/conversations/{first}/claim").status_code == 200
    res = alice.post(f"/conversations/{first}/transfer", {"agent_id": bob.me["id"]})
    assert res.status_code == 200 and res.json()["agent"]["name"] == "Bob"
    assert alice.post(f"/conversations/{first}/messages", {"text": "still me"}).status_code == 403
    assert bob.post(f"/conversations/{first}/messages", {"text": "Bob here"}).status_code == 201
    with session_scope(app_settings) as session:
        session.execute(update(User).where(User.username == "bob").values(capacity=1))
    res = bob.post(f"/conversations/{second}/claim")
    assert res.status_code == 409 and "capacity" in res.json()["detail"]
    assert alice.post(f"/conversations/{second}/claim").status_code == 200
    assert alice.post(f"/conversations/{second}/transfer", {"agent_id": bob.me["id"]}).status_code == 409
    assert conversation(app_settings, second).assigned_agent_id == alice.me["id"]
    with session_scope(app_settings) as session:
        [entry] = audit.entries(session, action="conversation.transfer")
    assert entry.detail == {"from": alice.me["id"], "to": bob.me["id"]}


@SQLITE
def test_offline_ticket(client, fake_engine, app_settings):
    conv_id, headers = new_conversation(client)
    ask(client, conv_id, headers, "talk to a human")
    bad = client.post(f"/api/conversations/{conv_id}/offline", json={"message": "hi", "email": "nope"},
                      headers=headers)
    assert bad.status_code == 422
    res = client.post(
        f"/api/conversations/{conv_id}/offline",
        json={"message": "My order 1234 arrived damaged", "email": "jane@example.com"}, headers=headers,
    )
    assert res.status_code == 200 and res.json()["status"] == "queued"
    alice = agent(client, app_settings)
    [item] = alice.get("/queue").json()["items"]
    assert item["contact_email"] == "jane@example.com" and item["preview"] == "My order 1234 arrived damaged"
    other, h2 = new_conversation(client)
    res = client.post(f"/api/conversations/{other}/offline", json={"message": "Please call", "email": "a@b.example"},
                      headers=h2)
    assert res.status_code == 200 and conversation(app_settings, other).handoff_reason == "offline"


# --- what the customer is told, one state at a time ---------------------------------------------------------------


def status_text(client, conv_id: str, headers: dict) -> dict:
    res = client.get(f"/api/conversations/{conv_id}/status", headers=headers)
    assert res.status_code == 200, res.text
    return res.json()


QUEUE_WORDS = ("in the queue", "connecting you", "expected wait")
OFFLINE_WORDS = ("no one", "online right now", "leave a message")


@SQLITE
def test_queued_with_an_agent_online_the_customer_hears_place_and_wait_only(client, fake_engine, app_settings):
    agent(client, app_settings).online()
    conv_id, headers = new_conversation(client)
    done = ask(client, conv_id, headers, "I want to talk to a real person please")[-1][1]
    assert done["text"] == (
        "I'm connecting you with a person from our team. You are number 1 in the queue; the expected wait is about "
        "3 minutes. You can keep writing here in the meantime."
    )
    status = status_text(client, conv_id, headers)
    assert status["agents_online"] is True and status["offline_message"] is False
    assert status["text"] == done["text"]
    assert not any(w in status["text"].lower() for w in OFFLINE_WORDS)


@SQLITE
def test_queued_with_nobody_online_the_customer_is_offered_a_message_without_a_queue_place(
    client, fake_engine, app_settings
):
    conv_id, headers = new_conversation(client)
    done = ask(client, conv_id, headers, "I want to talk to a real person please")[-1][1]
    expected = (
        "I'd like to connect you with a person, but no one from our team is online right now. Leave a message and "
        "your e-mail address, and we will get back to you by e-mail."
    )
    assert done["text"] == expected
    status = status_text(client, conv_id, headers)
    assert status["status"] == "queued" and status["agents_online"] is False and status["offline_message"] is False
    assert status["text"] == expected
    assert not any(w in status["text"].lower() for w in QUEUE_WORDS)
    # The button says the same while nobody is online.
    other, other_headers = new_conversation(client)
    assert press_button(client, other, other_headers)["text"] == expected


@SQLITE
def test_once_a_message_was_left_the_customer_is_only_thanked(client, fake_engine, app_settings):
    conv_id, headers = new_conversation(client)
    ask(client, conv_id, headers, "I want to talk to a real person please")
    res = client.post(
        f"/api/conversations/{conv_id}/offline",
        json={"message": "My parcel never arrived", "email": "sam@example.com"}, headers=headers,
    )
    assert res.status_code == 200
    thanks = "Thanks! We received your message and will answer by e-mail."
    status = status_text(client, conv_id, headers)
    assert status["offline_message"] is True and status["text"] == thanks
    # An agent coming online later does not turn the promise of an e-mail back into "connecting you".
    agent(client, app_settings).online()
    status = status_text(client, conv_id, headers)
    assert status["agents_online"] is True and status["text"] == thanks
    # Back with the bot, nothing about a person is said.
    conv_id, headers = new_conversation(client)
    assert status_text(client, conv_id, headers)["text"] is None


@SQLITE
def test_canned_responses_api(client, fake_engine, app_settings):
    alice = agent(client, app_settings)
    res = alice.post("/canned", {"title": "refund", "text": "Refunds take 5 business days."})
    assert res.status_code == 201
    canned_id = res.json()["id"]
    assert alice.post("/canned", {"title": "refund", "text": "dup"}).status_code == 409
    assert [c["title"] for c in alice.get("/canned").json()["items"]] == ["refund"]
    conv_id, headers = new_conversation(client)
    press_button(client, conv_id, headers)
    alice.post(f"/conversations/{conv_id}/claim")
    res = alice.post(f"/conversations/{conv_id}/messages", {"canned_id": canned_id})
    assert res.status_code == 201 and res.json()["text"] == "Refunds take 5 business days."
    assert alice.delete(f"/canned/{canned_id}").status_code == 204
    assert alice.delete(f"/canned/{canned_id}").status_code == 404
    assert alice.get("/canned").json()["items"] == []


@SQLITE
def test_typing_both_ways(client, fake_engine, app_settings):
    alice = agent(client, app_settings)
    conv_id, headers = new_conversation(client)
    assert client.post(f"/api/conversations/{conv_id}/typing", json={"typing": True}, headers=headers).status_code == 204
    assert alice.post(f"/conversations/{conv_id}/typing", {"typing": False}).status_code == 204
    assert alice.post("/conversations/nope/typing", {"typing": True}).status_code == 404
    wrong = {"Authorization": "Bearer nope"}
    assert client.post(f"/api/conversations/{conv_id}/typing", json={}, headers=wrong).status_code == 404


@SQLITE
def test_summary_can_be_rewritten_on_demand(client, fake_engine, app_settings):
    alice = agent(client, app_settings)
    conv_id, headers = new_conversation(client)
    ask(client, conv_id, headers, UNRELATED)
    assert ask(client, conv_id, headers, "And who won the 1954 world cup?")[-1][1]["handoff"] is True
    client.app.state.assistant.wait_background()
    written = conversation(app_settings, conv_id).handoff_summary
    assert written.startswith("Fake answer to:")
    fake_engine.queue_reply("Customer asks about swallows.")
    res = alice.post(f"/conversations/{conv_id}/summary")
    assert res.status_code == 200 and res.json() == {"summary": "Customer asks about swallows."}
    assert alice.get(f"/conversations/{conv_id}").json()["summary"] == "Customer asks about swallows."


ROUTES = [
    ("GET", "/queue"), ("GET", "/conversations"), ("GET", "/conversations/x"), ("POST", "/conversations/x/claim"),
    ("POST", "/conversations/x/transfer"), ("POST", "/conversations/x/messages"), ("POST", "/conversations/x/notes"),
    ("POST", "/conversations/x/return-to-bot"), ("POST", "/conversations/x/resolve"),
    ("POST", "/conversations/x/summary"), ("POST", "/conversations/x/typing"), ("GET", "/canned"),
    ("POST", "/canned"), ("DELETE", "/canned/1"), ("POST", "/presence"), ("GET", "/agents"),
]


@SQLITE
def test_every_console_route_needs_an_agent_and_csrf(client, fake_engine, app_settings):
    from web.api import console_api

    mounted = {(m, r.path.removeprefix("/api/console").replace("{conversation_id}", "x").replace("{canned_id}", "1"))
               for r in console_api.router.routes for m in r.methods}
    assert mounted == set(ROUTES)
    anonymous = TestClient(client.app, follow_redirects=False)
    add_user(app_settings, "olga", "ops")
    ops = Console(client.app, "olga")
    alice = agent(client, app_settings)
    for method, path in ROUTES:
        assert anonymous.request(method, "/api/console" + path, json={}).status_code == 401, path
        res = ops.http.request(method, "/api/console" + path, json={}, headers=ops.headers)
        assert res.status_code == 403, path
        if method != "GET":
            res = alice.http.request(method, "/api/console" + path, json={})
            assert res.status_code == 403 and res.json()["detail"] == "CSRF token missing or wrong", path
    add_user(app_settings, "root", "admin")
    assert Console(client.app, "root").get("/queue").status_code == 200


@pytest.mark.postgres
@pytest.mark.parametrize("app_settings", ["postgres"], indirect=True)
def test_agents_claiming_over_http_at_once_exactly_one_wins(client, fake_engine, app_settings):
    consoles = [agent(client, app_settings, f"agent{i}", f"Agent {i}") for i in range(6)]
    conv_id, headers = new_conversation(client)
    press_button(client, conv_id, headers)
    barrier = threading.Barrier(len(consoles))
    codes: list[int] = []
    lock = threading.Lock()

    def claim(console: Console) -> None:
        barrier.wait(timeout=30)
        res = console.post(f"/conversations/{conv_id}/claim")
        with lock:
            codes.append(res.status_code)

    threads = [threading.Thread(target=claim, args=(c,)) for c in consoles]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(codes) == [200] + [409] * (len(consoles) - 1)
    with session_scope(app_settings) as session:
        assert len(audit.entries(session, action="conversation.claim", target_id=conv_id)) == 1

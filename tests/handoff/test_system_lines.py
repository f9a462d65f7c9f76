"""What happens to the chat itself (an agent joins, a transfer, the resolve, the bot taking over again) is stored in
the conversation as a system line, so the customer sees it again after a reload, and never reaches the model."""

from __future__ import annotations

import pytest

from support_bot import handoff
from support_bot.chat.memory import history_messages
from support_bot.core.db import session_scope
from support_bot.core.errors import Conflict
from support_bot.live import events
from tests.handoff.conftest import make_agent, make_conversation
from tests.handoff.test_queue import act, live, queue


def shown(settings, conv_id: str) -> list[tuple[str, str]]:
    with session_scope(settings) as session:
        return [(m["role"], m["text"]) for m in handoff.customer_messages(session, conv_id)]


def test_joins_transfers_resolves_and_returns_are_stored_lines_the_customer_sees(db):
    alice = make_agent(db, "alice", display_name="Alice Agent")
    bob = make_agent(db, "bob", display_name="Bob")
    conv = make_conversation(db, "my parcel never arrived")
    queue(db, conv)
    act(db, handoff.claim, alice, conv)
    act(db, handoff.agent_reply, alice, conv, text="Let me look.")
    act(db, handoff.transfer, alice, conv, to_agent_id=bob)
    act(db, handoff.resolve, bob, conv)
    queue(db, conv, "button")
    act(db, handoff.claim, alice, conv)
    act(db, handoff.return_to_bot, alice, conv)

    assert shown(db, conv)[2:] == [
        ("system", "Alice Agent joined the chat."),
        ("agent", "Let me look."),
        ("system", "Bob joined the chat."),
        ("system", "This conversation was resolved."),
        ("system", "Alice Agent joined the chat."),
        ("system", "You are chatting with the assistant again."),
    ]
    # Each went out live as it happened, to the customer and the console alike, before the status change it tells of.
    for audience in (events.CUSTOMER_AUDIENCE, events.CONSOLE_AUDIENCE):
        feed = live(db, conv, audience)
        lines = [d["text"] for kind, d in feed if kind == "message" and d["role"] == "system"]
        assert lines == [text for role, text in shown(db, conv) if role == "system"]
        kinds = [kind for kind, d in feed if kind == "status" or (kind == "message" and d["role"] == "system")]
        assert kinds[:3] == ["status", "message", "status"]  # queued; joined, then assigned
    # The model never reads them as part of the conversation.
    with session_scope(db) as session:
        turns = history_messages(handoff.public_messages(session, conv), max_turns=10)
    assert not any("joined the chat" in t.content or "was resolved" in t.content for t in turns)


def test_a_refused_change_stores_no_line(db):
    alice = make_agent(db, "alice")
    conv = make_conversation(db, "where is my refund")
    queue(db, conv)
    act(db, handoff.claim, alice, conv)
    before = shown(db, conv)
    bob = make_agent(db, "bob", presence="offline")
    with pytest.raises(Conflict, match="not online"):
        act(db, handoff.transfer, alice, conv, to_agent_id=bob)
    assert shown(db, conv) == before

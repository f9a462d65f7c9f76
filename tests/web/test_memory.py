"""Rolling conversation summaries and per-customer memory, through the API with the fake model."""

from __future__ import annotations

import pytest

from support_bot.core.security import sign_customer_id
from support_bot.core.db import session_scope
from support_bot.models import Conversation
from tests.web.helpers import ask, new_conversation

pytestmark = pytest.mark.parametrize("app_settings", ["sqlite"], indirect=True)


def test_summary_is_written_after_enough_messages_and_used_when_history_is_trimmed(client, fake_engine, app_settings):
    app_settings.chat.summary_every_messages = 4
    app_settings.chat.history_turns = 1
    assistant = client.app.state.assistant
    conv_id, headers = new_conversation(client)
    fake_engine.queue_reply("Standard shipping takes 3 to 5 business days [1].")
    ask(client, conv_id, headers, "How long does shipping take?")
    assistant.wait_background()
    with session_scope(app_settings) as session:
        assert session.get(Conversation, conv_id).summary is None  # only 2 messages so far

    fake_engine.queue_reply("Express shipping costs $14.95 on any order [1].")
    fake_engine.queue_reply("The customer asked about shipping time and express shipping cost; both were answered.")
    ask(client, conv_id, headers, "How much is express shipping?")
    assistant.wait_background()
    with session_scope(app_settings) as session:
        conv = session.get(Conversation, conv_id)
        assert conv.summary.startswith("The customer asked about shipping time")
        assert conv.summary_upto_seq is not None
    summary_call = fake_engine.calls[-1]
    assert "Customer: How long does shipping take?" in summary_call[-1].content
    assert "Assistant: Express shipping costs $14.95" in summary_call[-1].content

    fake_engine.queue_reply("Yes, we ship to Canada [1].")
    ask(client, conv_id, headers, "Do you ship internationally?")
    client.app.state.assistant.wait_background()
    prompt = fake_engine.calls[-1]
    system = prompt[0].content
    assert "Summary of the earlier part of this conversation: The customer asked about shipping time" in system
    # history_turns=1 keeps only the last exchange verbatim
    assert [m.content for m in prompt[1:]] == [
        "How much is express shipping?",
        "Express shipping costs $14.95 on any order. [1]",
        "Do you ship internationally?",
    ]


def test_identified_customer_memory_reaches_a_later_conversation(client, fake_engine, app_settings):
    app_settings.customer_hmac_secret = "test-secret-for-memory"
    customer = {"id": "cust-77", "signature": sign_customer_id("cust-77", "test-secret-for-memory")}
    first = client.post("/api/conversations", json={"customer": customer}).json()
    headers = {"Authorization": f"Bearer {first['token']}"}
    fake_engine.queue_reply("You can return unused items within 30 days [1].")
    ask(client, first["id"], headers, "What is your return policy?")
    client.app.state.assistant.wait_background()
    # In the chat's own words: a summary with words nobody said is replaced (tests/chat/test_memory.py).
    fake_engine.queue_reply("Customer wants to return unused items within 30 days.")
    client.app.state.assistant.refresh_summary(first["id"], force=True)

    second = client.post("/api/conversations", json={"customer": customer}).json()
    fake_engine.queue_reply("Refunds are issued within 5 business days [1].")
    ask(client, second["id"], {"Authorization": f"Bearer {second['token']}"}, "How long do refunds take?")
    system = fake_engine.calls[-1][0].content
    assert "- Customer wants to return unused items within 30 days." in system

    # An anonymous conversation never sees another customer's notes.
    conv_id, anon = new_conversation(client)
    fake_engine.queue_reply("Refunds are issued within 5 business days [1].")
    ask(client, conv_id, anon, "How long do refunds take?")
    assert "hiking boots" not in fake_engine.calls[-1][0].content

"""A reply that declines offers the closest help-center questions (API, SQLite and PostgreSQL, fake model)."""

from __future__ import annotations

from support_bot.chat.replies import ABSTAIN_TEXT, RELATED_OFFER, RELATED_TEXT
from tests.web.helpers import ask, new_conversation

PAYMENT_Q = "Which payment methods do you accept?"


def test_a_declined_question_lists_related_questions_and_stores_them(client, fake_engine):
    conv_id, headers = new_conversation(client)
    done = ask(client, conv_id, headers, "Can I pay with a credit card?")[-1][1]
    assert done["abstained"] is True and done["citations"] == [] and done["handoff"] is False
    related = done["related"]
    assert related and related[0] == {
        "question": PAYMENT_Q, "source": "demo-faq", "entry_id": "pay-01", "url": "https://acme.example/help/payment",
    }
    # The text carries them too, for clients and transcripts that do not show buttons.
    assert done["text"].startswith(RELATED_TEXT) and done["text"].endswith(RELATED_OFFER)
    assert f"\n- {PAYMENT_Q}\n" in done["text"]
    assert fake_engine.calls == []  # declining needs no model

    msgs = client.get(f"/api/conversations/{conv_id}/messages", headers=headers).json()["messages"]
    assert [m["role"] for m in msgs] == ["customer", "bot"]
    assert msgs[1]["related"] == related and msgs[1]["id"] == done["message_id"]
    assert msgs[0]["related"] == []

    # Asking an offered question gets its entry's answer, cited.
    fake_engine.queue_reply("We accept credit and debit cards, PayPal and Apple Pay [1].")
    answer = ask(client, conv_id, headers, related[0]["question"])[-1][1]
    assert answer["abstained"] is False and answer["related"] == []
    assert [c["entry_id"] for c in answer["citations"]] == ["pay-01"]


def test_an_unrelated_question_gets_the_plain_offer_of_a_person(client, fake_engine):
    conv_id, headers = new_conversation(client)
    done = ask(client, conv_id, headers, "What is the boiling point of liquid nitrogen on Neptune?")[-1][1]
    assert done["abstained"] is True and done["related"] == [] and done["text"] == ABSTAIN_TEXT


def test_when_declining_hands_over_no_questions_are_offered(client, app_settings, fake_engine):
    # Declining again right after a decline hands the chat to a person (handoff.abstain_streak, 2 by default):
    # that reply is the handoff, without a list.
    assert app_settings.handoff.abstain_streak == 2
    conv_id, headers = new_conversation(client)
    first = ask(client, conv_id, headers, "Can I pay with a credit card?")[-1][1]
    second = ask(client, conv_id, headers, "can I pay with my credit card please")[-1][1]
    assert first["abstained"] is True and first["related"] and first["handoff"] is False
    assert second["handoff"] is True and second["related"] == []


def test_a_new_question_after_an_answer_is_not_answered_with_the_earlier_entry(client, fake_engine):
    conv_id, headers = new_conversation(client)
    fake_engine.queue_reply("Refunds are issued within 5 business days after we receive the return [1].")
    first = ask(client, conv_id, headers, "How long does it take to get my refund?")[-1][1]
    assert [c["entry_id"] for c in first["citations"]] == ["ret-03"]
    # It stands on its own: read with the refund question, the refund entry would win and be answered again.
    second = ask(client, conv_id, headers, "Can I pay with a credit card?")[-1][1]
    assert second["abstained"] is True and second["citations"] == []
    assert second["related"][0]["entry_id"] == "pay-01"


def test_a_follow_up_is_read_with_the_previous_question(client, fake_engine):
    conv_id, headers = new_conversation(client)
    fake_engine.queue_reply("Yes, we ship to Canada, the United Kingdom, the European Union and Australia [1].")
    ask(client, conv_id, headers, "Do you ship internationally?")
    fake_engine.queue_reply("International delivery takes 7 to 14 business days [1].")
    done = ask(client, conv_id, headers, "and how long does that take?")[-1][1]
    assert done["abstained"] is False
    assert [c["entry_id"] for c in done["citations"]] == ["ship-03"]

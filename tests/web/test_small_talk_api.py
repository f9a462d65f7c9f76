"""Greetings, thanks and yes/no to the offer of a person, through the chat API (SQLite and PostgreSQL, fake model)."""

from __future__ import annotations

from support_bot.chat.replies import ABSTAIN_TEXT, DECLINED_OFFER_TEXT
from support_bot.core.db import session_scope
from support_bot.models import Conversation
from support_bot.chat.small_talk import REPLIES
from tests.web.helpers import ask, new_conversation

UNRELATED = "What is the boiling point of liquid nitrogen on Neptune?"


def conversation(settings, conv_id: str) -> Conversation:
    with session_scope(settings) as session:
        c = session.get(Conversation, conv_id)
        session.expunge(c)
        return c


def test_a_greeting_is_answered_politely_and_does_not_count_as_a_decline(client, app_settings, fake_engine):
    conv_id, headers = new_conversation(client)
    hello = ask(client, conv_id, headers, "Hi there!")[-1][1]
    assert hello["text"] == REPLIES["greeting"] and hello["abstained"] is False and hello["handoff"] is False
    assert fake_engine.calls == []
    # The decline that follows is the first in a row: an offer, not a handoff.
    declined = ask(client, conv_id, headers, UNRELATED)[-1][1]
    assert declined["abstained"] is True and declined["handoff"] is False and declined["text"] == ABSTAIN_TEXT
    thanks = ask(client, conv_id, headers, "ok thanks, bye")[-1][1]
    assert thanks["text"] == REPLIES["goodbye"] and thanks["handoff"] is False
    assert conversation(app_settings, conv_id).status == "bot"


def test_a_question_with_a_greeting_is_still_answered_from_the_help_center(client, fake_engine):
    conv_id, headers = new_conversation(client)
    fake_engine.queue_reply("Standard shipping takes 3 to 5 business days [1].")
    done = ask(client, conv_id, headers, "Hello! How long does shipping take?")[-1][1]
    assert [c["entry_id"] for c in done["citations"]] == ["ship-01"]


def test_yes_to_the_offer_of_a_person_hands_the_chat_over(client, app_settings, fake_engine):
    conv_id, headers = new_conversation(client)
    ask(client, conv_id, headers, UNRELATED)
    done = ask(client, conv_id, headers, "yes please")[-1][1]
    assert done["handoff"] is True and done["status"] in ("queued", "offline")
    c = conversation(app_settings, conv_id)
    assert (c.handoff_reason, c.handoff_detail) == ("request", "accepted the offer of a person")


def test_no_to_the_offer_keeps_the_bot_and_a_later_no_ends_politely(client, app_settings, fake_engine):
    conv_id, headers = new_conversation(client)
    ask(client, conv_id, headers, UNRELATED)
    declined = ask(client, conv_id, headers, "no thanks")[-1][1]
    assert declined["text"] == DECLINED_OFFER_TEXT and declined["handoff"] is False and declined["abstained"] is False
    done = ask(client, conv_id, headers, "no, that's all")[-1][1]
    assert done["text"] == REPLIES["goodbye"] and done["handoff"] is False
    c = conversation(app_settings, conv_id)
    assert c.status == "bot" and c.handoff_reason is None


def test_yes_without_an_offer_is_not_a_request_for_a_person(client, app_settings, fake_engine):
    conv_id, headers = new_conversation(client)
    fake_engine.queue_reply("Standard shipping takes 3 to 5 business days [1].")
    ask(client, conv_id, headers, "How long does shipping take?")
    done = ask(client, conv_id, headers, "yes")[-1][1]
    assert done["handoff"] is False
    assert conversation(app_settings, conv_id).status == "bot"


def test_small_talk_can_be_turned_off(client, app_settings, fake_engine):
    client.app.state.assistant.settings.chat.small_talk = False
    try:
        conv_id, headers = new_conversation(client)
        done = ask(client, conv_id, headers, "hi")[-1][1]
        assert done["abstained"] is True
    finally:
        client.app.state.assistant.settings.chat.small_talk = True

"""The agent's handover note: a model summary is stored only when it passes the check (no loops, speakers as stored,
nothing the chat did not say); otherwise the note is built from the transcript's own words."""

from __future__ import annotations

import pytest

from support_bot import handoff
from support_bot.core.db import session_scope
from support_bot.handoff.summaries import extractive_summary, summary_problem
from support_bot.live import events
from support_bot.llm.backends.fake import FakeEngine
from support_bot.models import Conversation, Message, User
from tests.handoff.conftest import make_agent

QUESTION = "What is your return policy?"
ANSWER = "Returns are accepted within 30 days of delivery for a full refund [1]."
ASK_PERSON = "I want to speak to an agent"
# What the transcript itself says: the first request, the bot's last answer (its handoff text left out), the reason.
EXTRACT = (
    "Customer: What is your return policy?\n"
    "Assistant: Returns are accepted within 30 days of delivery for a full refund.\n"
    "Handoff reason: Customer asked for a person."
)


def chat(settings, *turns: tuple[str, str]) -> str:
    """A conversation with these (role, text) messages, in order; returns its id."""
    with session_scope(settings) as session:
        conversation = Conversation(token_hash="x" * 64)
        session.add(conversation)
        session.flush()
        for role, text in turns:
            session.add(Message(conversation_id=conversation.id, role=role, text=text))
            session.flush()
        return conversation.id


def handed_off(settings) -> str:
    """The usual story: a question answered, then a request for a person the bot met with its handoff text."""
    conv_id = chat(
        settings, ("customer", QUESTION), ("bot", ANSWER), ("customer", ASK_PERSON),
        ("bot", settings.handoff.offline_text),
    )
    with session_scope(settings) as session:
        handoff.start_handoff(session, settings, session.get(Conversation, conv_id), reason="request")
    return conv_id


def stored_summary(settings, conv_id: str) -> str | None:
    with session_scope(settings) as session:
        return session.get(Conversation, conv_id).handoff_summary


def summarize(settings, conv_id: str, model_says: str) -> str | None:
    engine = FakeEngine()
    engine.queue_reply(model_says)
    summary = handoff.write_agent_summary(settings, engine, conv_id)
    assert len(engine.calls) == 1
    return summary


def test_a_line_repeated_six_times_gives_the_transcripts_own_words(db):
    conv_id = handed_off(db)
    summary = summarize(db, conv_id, "Customer: What is your return policy?\n" * 6)
    assert summary == EXTRACT
    assert stored_summary(db, conv_id) == EXTRACT
    with session_scope(db) as session:
        shown = events.events_after(session, conversation_id=conv_id, after_seq=0, audience=events.CONSOLE_AUDIENCE)
        assert [e.data["summary"] for e in shown if e.kind == "summary"] == [EXTRACT]


def test_the_bots_answer_labelled_as_the_customers_is_not_stored(db):
    conv_id = handed_off(db)
    summary = summarize(db, conv_id, "Customer: Returns are accepted within 30 days of delivery for a full refund.")
    assert summary == EXTRACT
    assert not any(
        line.startswith("Customer:") and "accepted" in line for line in stored_summary(db, conv_id).splitlines()
    )


@pytest.mark.parametrize(
    "model_says",
    [
        # Boots, May: nobody said either.
        "Customer wants to return hiking boots bought in May.",
        # A figure the chat never gave.
        "The customer asks about returns; they are accepted within 60 days.",
        # A sentence looping on itself.
        "The customer asks about the return policy. The customer asks about the return policy again.",
        # Nothing about what was discussed.
        "Sure! Here is a short summary for the agent.",
    ],
)
def test_an_invented_or_empty_summary_gives_the_transcripts_own_words(db, model_says):
    conv_id = handed_off(db)
    assert summarize(db, conv_id, model_says) == EXTRACT


def test_a_good_model_summary_is_kept_as_it_is(db):
    conv_id = handed_off(db)
    good = "Customer asks about the return policy (returns within 30 days for a full refund) and wants a person."
    assert summarize(db, conv_id, good) == good
    assert stored_summary(db, conv_id) == good
    # Speakers labelled as stored, each with their own words, pass too.
    labelled = "Customer: asks about the return policy.\nAssistant: returns are accepted within 30 days of delivery."
    assert summarize(db, conv_id, labelled) == labelled


def test_the_agents_last_reply_joins_the_note_and_a_failed_model_leaves_the_same_note(db):
    alice = make_agent(db, "alice", display_name="Alice Agent")
    conv_id = handed_off(db)
    with session_scope(db) as session:
        handoff.claim(session, db, conversation_id=conv_id, agent=session.get(User, alice))
    with session_scope(db) as session:
        handoff.agent_reply(
            session, db, conversation_id=conv_id, agent=session.get(User, alice),
            text="I have started the return for order 1234; the label is in your e-mail.",
        )
    expected = EXTRACT + "\nAgent: I have started the return for order 1234; the label is in your e-mail."
    # The agent's words put under the bot's name are caught like the customer's.
    assert summarize(db, conv_id, "Assistant: I have started the return for order 1234.") == expected

    class Broken(FakeEngine):
        def generate(self, messages, **kw):
            raise TimeoutError("the model took too long")

    assert handoff.write_agent_summary(db, Broken(), conv_id) == expected


def test_the_extract_skips_a_greeting_and_keeps_the_bots_own_words_before_its_handoff_text(db):
    connecting = db.handoff.connecting_text.format(position=2, wait="about 6 minutes")
    rows = [
        Message(role="customer", text="hi"),
        Message(role="bot", text="Hello! How can I help?"),
        Message(role="customer", text="My parcel never arrived"),
        Message(role="bot", text=f"I'm sorry, I'm having trouble answering right now.\n\n{connecting}"),
    ]
    assert extractive_summary(db, rows, reason="model") == (
        "Customer: My parcel never arrived\n"
        "Assistant: I'm sorry, I'm having trouble answering right now.\n"
        "Handoff reason: The bot's model failed or timed out while answering."
    )


def test_summary_problem_names_what_is_wrong():
    rows = [Message(role="customer", text=QUESTION), Message(role="bot", text=ANSWER)]
    assert summary_problem("The customer asked about returns; they were told 30 days for a full refund.", rows) is None
    assert "repeats the line" in summary_problem("Customer: What is your return policy?\n" * 2, rows)
    assert "did not say" in summary_problem("User: Returns are accepted within 30 days of delivery.", rows)
    # The bot may go by its own name in a summary.
    assert summary_problem("Helper: Returns are accepted within 30 days of delivery.", rows, bot_name="Helper") is None
    assert "figure" in summary_problem("Returns are accepted within 14 days.", rows)
    # A numbered list is layout: "1." is no figure.
    assert summary_problem("1. The customer asked about returns.\n2. Told: 30 days, full refund.", rows) is None
    # Words from the earlier summary the model was given are the conversation's words too.
    assert "does not" in summary_problem("The customer bought hiking boots.", rows)
    assert summary_problem("The customer bought hiking boots.", rows, previous="Customer bought hiking boots.") is None

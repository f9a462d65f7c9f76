"""Conversation history window, and the rolling summary: the model's when it passes the check, else the
transcript's own words."""

from __future__ import annotations

from support_bot.chat.memory import Summaries, fit_history, history_messages, summary_prompt
from support_bot.core.db import session_scope
from support_bot.llm.backends.fake import FakeEngine
from support_bot.llm.prompt import ChatMessage
from support_bot.models import Conversation, Message


def msg(role: str, text: str) -> Message:
    return Message(role=role, text=text)


def test_history_alternates_and_ends_on_an_answer():
    rows = [
        msg("bot", "Hi! How can I help?"),
        msg("customer", "q1"),
        msg("bot", "a1"),
        msg("agent", "a1 addendum from a person"),
        msg("customer", "q2"),
        msg("system", "connecting you to a person"),
        msg("customer", "q3 with no answer yet"),
    ]
    turns = history_messages(rows, max_turns=10)
    assert [(t.role, t.content) for t in turns] == [
        ("user", "q1"),
        ("assistant", "a1\na1 addendum from a person"),
    ]


def test_history_keeps_only_the_newest_turns():
    rows = []
    for i in range(8):
        rows += [msg("customer", f"q{i}"), msg("bot", f"a{i}")]
    turns = history_messages(rows, max_turns=3)
    assert [t.content for t in turns] == ["q5", "a5", "q6", "a6", "q7", "a7"]
    assert history_messages(rows, max_turns=0) == []


def test_fit_history_drops_oldest_pairs_first():
    history = []
    for i in range(5):
        history += [ChatMessage(role="user", content=f"question {i} " * 10), ChatMessage(role="assistant", content="ok")]

    def count(msgs):
        return sum(len(m.content.split()) for m in msgs)

    fitted = fit_history(history, budget_tokens=45, count_tokens=count)
    assert fitted == history[-4:]
    assert fit_history(history, budget_tokens=0, count_tokens=count) == []


# --- the rolling summary ---------------------------------------------------------------------------------------------

SHIPPING = [
    ("customer", "How long does shipping take?"),
    ("bot", "Standard shipping takes 3 to 5 business days [1]."),
    ("customer", "How much is express shipping?"),
    ("bot", "Express shipping costs $14.95 on any order [1]."),
]
SHIPPING_EXTRACT = "Customer: How long does shipping take?\nAssistant: Express shipping costs $14.95 on any order."


def conversation_with(settings, turns, **fields) -> str:
    with session_scope(settings) as session:
        conversation = Conversation(token_hash="x" * 64, **fields)
        session.add(conversation)
        session.flush()
        for role, text in turns:
            session.add(Message(conversation_id=conversation.id, role=role, text=text))
            session.flush()
        return conversation.id


def refreshed(settings, conv_id: str, model_says: str) -> tuple[str | None, str | None]:
    """What refresh returns and what it stored, with the model saying `model_says`."""
    engine = FakeEngine()
    engine.queue_reply(model_says)
    summaries = Summaries(lambda: settings, lambda: engine)
    returned = summaries.refresh(conv_id, force=True)
    assert len(engine.calls) == 1
    with session_scope(settings) as session:
        return returned, session.get(Conversation, conv_id).summary


def test_a_rolling_summary_that_repeats_one_line_is_built_from_the_transcript(db):
    conv_id = conversation_with(db, SHIPPING)
    looping = "Customer: How long does shipping take?\n" * 6
    assert refreshed(db, conv_id, looping) == (SHIPPING_EXTRACT, SHIPPING_EXTRACT)


def test_a_rolling_summary_that_gives_the_bots_words_to_the_customer_is_built_from_the_transcript(db):
    conv_id = conversation_with(db, SHIPPING)
    assert refreshed(db, conv_id, "Customer: Express shipping costs $14.95 on any order.") == (
        SHIPPING_EXTRACT, SHIPPING_EXTRACT,
    )


def test_the_transcripts_summary_names_the_handoff_and_the_agents_last_reply(db):
    turns = [*SHIPPING, ("customer", "I want to talk to a person"), ("agent", "Hi, Alice here. Your parcel left.")]
    conv_id = conversation_with(db, turns, status="assigned", handoff_reason="request")
    _, stored = refreshed(db, conv_id, "The customer wants a refund for the broken tent.")
    assert stored == (
        f"{SHIPPING_EXTRACT}\nHandoff reason: Customer asked for a person.\n"
        "Agent: Hi, Alice here. Your parcel left."
    )


def test_a_good_rolling_summary_is_kept_as_it_is(db):
    conv_id = conversation_with(db, SHIPPING)
    good = "The customer asked about shipping time and express shipping cost; both were answered."
    assert refreshed(db, conv_id, good) == (good, good)


def test_the_summary_prompt_asks_for_prose_and_labels_speakers_from_their_roles():
    rows = [msg(role, text) for role, text in SHIPPING]
    system, user = summary_prompt(previous="Customer asked about tents.", messages=rows)
    assert "third person" in system.content and "do not repeat yourself" in system.content
    assert user.content.startswith("Summary so far:\nCustomer asked about tents.")
    assert "Customer: How long does shipping take?\nAssistant: Standard shipping takes 3 to 5" in user.content

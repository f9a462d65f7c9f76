"""Conversation history window."""

from __future__ import annotations

from support_bot.chat.memory import fit_history, history_messages
from support_bot.llm.prompt import ChatMessage
from support_bot.models import Message


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

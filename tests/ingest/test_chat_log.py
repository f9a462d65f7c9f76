"""Past chat logs: question -> answer pairs from resolved chats only, pleasantries skipped, broken chats reported."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from ingest.loaders import load
from ingest.loaders.chat_log import substantive
from support_bot.core.errors import InvalidInput

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def _chat(chat_id, resolved, *messages):
    obj = {"id": chat_id, "messages": [{"role": r, "text": t, "ts": f"2024-01-01T00:0{i}:00Z"} for i, (r, t) in
                                       enumerate(messages)]}
    if resolved is not None:
        obj["resolved"] = resolved
    return json.dumps(obj)


def test_jsonl_transcripts_give_pairs_from_resolved_chats_only():
    kind, entries = load("chats.jsonl", (FIXTURES / "northwind_chats.jsonl").read_bytes())
    assert kind == "chat_log"
    # c-1002 is unresolved and c-1004 has no resolved flag: neither is used.
    assert [e.id for e in entries] == ["c-1001", "c-1003"]
    first, second = entries
    assert first.question.startswith("My e-bike display shows error E21")
    assert "Hi there" not in first.question
    assert first.answer.startswith("Error E21 means the speed sensor")
    # Greetings and sign-offs are not part of the resolution.
    assert "How can I help" not in first.answer and "great day" not in first.answer
    assert second.answer.startswith("I can see the duplicate charge")
    assert "anything else" not in second.answer.lower() and "Thanks for reaching out" not in second.answer


def test_csv_chat_log_is_recognised_by_its_columns():
    kind, entries = load("support_export.csv", (FIXTURES / "northwind_chats.csv").read_bytes())
    assert kind == "chat_log"
    assert [(e.id, e.question) for e in entries] == [
        ("c-2001", "My rear brake squeals loudly when I stop, even after cleaning the rotor.")
    ]
    assert entries[0].answer.startswith("Squealing after cleaning usually means contaminated pads.")


def test_faq_jsonl_is_not_mistaken_for_a_chat_log():
    kind, _ = load("faq.jsonl", (FIXTURES / "northwind_faq.jsonl").read_bytes())
    assert kind == "faq_jsonl"


def test_several_customer_messages_before_the_answer_make_the_question():
    data = _chat(
        "c1",
        True,
        ("customer", "Hello"),
        ("customer", "My order arrived with a bent wheel."),
        ("customer", "The box was also damaged on one side."),
        ("agent", "Sorry about that! We will send a replacement wheel today at no cost."),
        ("customer", "Great, thanks"),
    )
    _, [entry] = load("c.jsonl", data.encode())
    assert entry.question == "My order arrived with a bent wheel.\nThe box was also damaged on one side."
    assert entry.answer == "Sorry about that! We will send a replacement wheel today at no cost."


def test_chats_with_missing_fields_are_skipped_with_a_warning_when_others_are_usable(caplog):
    good = _chat("ok", True, ("customer", "How do I adjust my saddle height?"),
                 ("agent", "Loosen the seat post clamp, set the height, and tighten it to 5 Nm."))
    lines = [good, json.dumps({"id": "x1", "resolved": True}), json.dumps({"messages": [], "resolved": True})]
    with caplog.at_level(logging.WARNING):
        _, entries = load("mixed.jsonl", "\n".join(lines).encode())
    assert [e.id for e in entries] == ["ok"]
    assert "mixed.jsonl: skipped 2 chat(s) with missing fields (first: line 2 has no valid messages)" in caplog.text


def test_a_file_of_only_broken_chats_is_refused_with_count_and_first_example():
    lines = [json.dumps({"id": "a", "messages": [{"role": "customer"}], "resolved": True}),
             json.dumps({"id": "b", "resolved": True})]
    with pytest.raises(InvalidInput) as info:
        load("broken.jsonl", "\n".join(lines).encode())
    assert info.value.detail == (
        "broken.jsonl: no usable chats: 2 chat(s) with missing fields "
        "(first: line 1 has no valid role/text of message 1)"
    )


def test_a_file_of_only_unresolved_chats_is_refused():
    lines = [_chat("a", False, ("customer", "Where is my parcel right now?"), ("agent", "Still checking with DHL."))]
    with pytest.raises(InvalidInput, match="open.jsonl: no usable chats: 1 unresolved"):
        load("open.jsonl", "\n".join(lines).encode())


def test_csv_chat_log_with_a_missing_column_names_it():
    with pytest.raises(InvalidInput, match="missing column\\(s\\) resolved"):
        load("chats.csv", b"conversation_id,role,text,ts\nc1,customer,hi,1\n")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hi there!", False),
        ("Hi Anna, thanks for contacting Northwind support. How can I help you today?", False),
        ("Is there anything else I can help you with?", False),
        ("You're welcome, have a great day!", False),
        ("Thanks so much, that worked!", False),
        ("My e-bike display shows error E21.", True),
        ("Loosen the clamp and set the saddle height.", True),
    ],
)
def test_pleasantries_are_not_substantive(text, expected):
    assert substantive(text) is expected

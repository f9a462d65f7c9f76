"""Training data: where examples come from, and the fixed held-out slice that is never trained on."""

from __future__ import annotations

import pytest

from support_bot.adapt import data
from support_bot.core.config import AdaptSettings
from support_bot.core.db import session_scope
from support_bot.core.errors import InvalidInput
from support_bot.models import Conversation, FaqSuggestion, Feedback, Message
from tests.adapt.conftest import NORTHWIND_FAQ
from tests.handoff.conftest import make_agent
from tests.learning.helpers import resolved_chat


def _examples(n: int, *, shared_every: int = 0) -> list[data.Example]:
    out = []
    for i in range(n):
        answer = f"Answer number {i // shared_every if shared_every else i} about topic {i}."
        if shared_every:
            answer = f"Shared answer {i // shared_every}."
        out.append(data._example(f"kb:faq:{i}", f"Question {i} about something?", answer, "kb"))
    return out


def test_the_held_out_slice_is_disjoint_from_training_and_stays_fixed_as_data_grows():
    cfg = AdaptSettings(heldout_fraction=0.2, abstain_fraction=0.2)
    first = data.split(_examples(60, shared_every=3), cfg)
    train_keys = {e.key for e in first.train}
    assert first.heldout and first.abstain and first.train
    assert not train_keys & first.heldout_keys
    assert not any(e.group in first.withheld_groups for e in first.train)
    # Abstain questions are not indexed at all; held-out ones are (by their answer).
    assert not {e.key for e in first.abstain} & {e.key for e in first.indexed}
    assert first.heldout_keys <= {e.key for e in first.indexed}

    grown = data.split(_examples(90, shared_every=3), cfg)
    old_keys = {e.key for e in _examples(60)}
    # Nothing held out before is trained on now, and nothing trained on before is held out now.
    assert first.heldout_keys == grown.heldout_keys & old_keys
    assert first.withheld_groups <= grown.withheld_groups
    assert data.split(_examples(60, shared_every=3), cfg).fingerprint == first.fingerprint
    assert data.split(_examples(60, shared_every=3), cfg.model_copy(update={"seed": 1})).heldout_keys != first.heldout_keys


def test_too_little_data_is_refused_with_the_reason():
    with pytest.raises(InvalidInput, match="at least"):
        data.split(_examples(4), AdaptSettings())


def test_examples_come_from_the_knowledge_base_resolved_chats_suggestions_and_helpful_answers(kb):
    from ingest.pipeline import ingest_path

    assert ingest_path(settings=kb, path=NORTHWIND_FAQ).status == "succeeded"
    agent = make_agent(kb, "alice")
    chat = resolved_chat(
        kb, agent,
        customer=["My brake pads squeak after the rain, write me at sam.jones@example.com please"],
        agent=["Squeaking after rain is water on the rotor; ride a few hard stops to dry it, then it stops."],
    )
    with session_scope(kb) as session:
        session.add(FaqSuggestion(question="Can I pay by invoice?", answer="Yes, business customers can pay "
                                  "by invoice within 30 days.", status="approved"))
        session.add(FaqSuggestion(question="Pending question?", answer="Not approved yet, so not used.", status="pending"))
        conv = Conversation(token_hash="x" * 64, status="bot")
        session.add(conv)
        session.flush()
        asked = Message(conversation_id=conv.id, role="customer", text="Do you sell gift cards? I'm on +1 415 555 0134")
        session.add(asked)
        session.flush()
        answer = Message(conversation_id=conv.id, role="bot", text="Yes, gift cards come in 25, 50 and 100 dollars.",
                         reply_to_id=asked.id)
        session.add(answer)
        session.flush()
        session.add(Feedback(message_id=answer.id, rating="up"))
    with session_scope(kb) as session:
        examples = data.collect(session, kb)
    by_origin = {}
    for e in examples:
        by_origin.setdefault(e.origin, []).append(e)
    assert len(by_origin["kb"]) == 11
    assert by_origin["kb"][0].key == "kb:northwind_faq:ship-01"
    (chat_example,) = by_origin["chat"]
    assert chat_example.key == f"chat:{chat}"
    assert "[EMAIL]" in chat_example.question and "example.com" not in chat_example.question
    assert [e.question for e in by_origin["suggestion"]] == ["Can I pay by invoice?"]
    (helpful,) = by_origin["helpful"]
    assert "[PHONE]" in helpful.question and helpful.answer.startswith("Yes, gift cards")

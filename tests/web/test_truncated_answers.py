"""An answer cut short by the model's time limit is marked so: in the done event (an added field), in a console-only
event stored with the conversation, in the log and in a metric. A whole answer carries no such mark."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from support_bot.chat.service import Assistant
from support_bot.core.config import Settings
from support_bot.core.db import session_scope
from support_bot.llm.backends.fake import FakeEngine
from support_bot.models import ConversationEvent
from support_bot.ops import metrics
from tests.web.helpers import ask, new_conversation
from web.app import create_app

DEMO_FAQ = Path(__file__).resolve().parents[2] / "examples" / "demo-faq.csv"
FIRST = "Standard shipping takes 3 to 5 business days within the continental US [1]."


class Stalling(FakeEngine):
    """Writes one supported sentence and the start of the next, then nothing until told to stop (when `stall`)."""

    stall = True

    def stream(self, messages, *, max_new_tokens=None, stop=None, timeout_s=None):
        super().stream(messages, max_new_tokens=max_new_tokens, stop=stop, timeout_s=timeout_s)

        def pieces():
            yield FIRST
            yield " Express shipping"
            if self.stall:
                stop.wait(30)
            else:
                yield " arrives in 1 to 2 business days [1]."

        return pieces()


@pytest.fixture
def web(kb: Settings):
    from ingest.pipeline import ingest_path

    assert ingest_path(settings=kb, path=DEMO_FAQ, source_name="demo-faq").status == "succeeded"
    settings = kb.model_copy(update={"llm": kb.llm.model_copy(update={"timeout_s": 1.5})})
    engine = Stalling()
    with TestClient(create_app(settings, assistant=Assistant(settings, engine=engine))) as client:
        yield settings, client, engine


def test_an_answer_cut_by_the_time_limit_is_marked_truncated(web, caplog):
    settings, client, engine = web
    before = metrics.TRUNCATED_ANSWERS._value.get()
    conv_id, headers = new_conversation(client)
    events = ask(client, conv_id, headers, "How long does shipping take?")
    name, done = events[-1]
    assert name == "done"
    assert done["text"].startswith("Standard shipping takes 3 to 5 business days")
    assert done["truncated"] is True
    assert metrics.TRUNCATED_ANSWERS._value.get() == before + 1
    assert any("cut short" in r.getMessage() for r in caplog.records)
    with session_scope(settings) as session:
        rows = list(session.scalars(select(ConversationEvent).where(ConversationEvent.kind == "answer.truncated")))
    assert [(r.conversation_id, r.audience, r.data["message_id"]) for r in rows] == [
        (conv_id, "console", done["message_id"])
    ]
    # The customer's own event stream does not carry it.
    stream = client.get(f"/api/conversations/{conv_id}/events", params={"timeout": 0}, headers=headers)
    assert "answer.truncated" not in stream.text

    engine.stall = False
    whole = ask(client, conv_id, headers, "How long does shipping take?")[-1][1]
    assert "truncated" not in whole

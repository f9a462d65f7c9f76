"""A model replaced on the settings page is closed once its last answers are over, not kept loaded forever."""

from __future__ import annotations

import threading

from support_bot.chat import service as assistant_module
from support_bot.chat.service import Assistant
from support_bot.llm.registry import get_engine


def test_a_replaced_model_leaves_the_cache_and_is_closed_after_its_answers(settings, monkeypatch):
    monkeypatch.setattr(assistant_module, "RETIRE_GRACE_S", 0.0)
    first = settings.model_copy(update={"llm": settings.llm.model_copy(update={"model": "first", "timeout_s": 0.2})})
    second = first.model_copy(update={"llm": first.llm.model_copy(update={"model": "second"})})
    bot = Assistant(first)
    old = bot.engine
    assert bot.engine is old  # same settings, same engine
    closed = threading.Event()
    old.close = closed.set

    bot.settings = second
    new = bot.engine
    assert new is not old and new.name == "fake:second"
    # Not closed at once: an answer may still be streaming from it for up to llm.timeout_s.
    assert not closed.is_set()
    assert closed.wait(10)
    assert get_engine(first) is not old  # gone from the cache: asking for it again loads it anew
    assert bot.engine is new


def test_an_engine_given_to_the_assistant_is_never_retired(settings):
    class Given:
        name = "given"

    given = Given()
    bot = Assistant(settings, engine=given)
    bot.settings = settings.model_copy(update={"llm": settings.llm.model_copy(update={"model": "other"})})
    assert bot.engine is given

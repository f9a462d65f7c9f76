"""Batched greedy decoding equals single decoding on whatever device runs the tests: CUDA when one is visible (with
the static cache and captured decode graphs a GPU gets), else the CPU.

Self-contained (no conftest fixtures, no database or web imports), so that bench/gpu_check.sh can run it on a GPU
machine that has torch, transformers and pytest but not the rest of the project's dependencies (`--noconftest`).
"""

from __future__ import annotations

import time

import pytest

from support_bot.llm.backends.hf.scheduler import ContinuousBatcher, Finished, GenerationRequest

EOS = 2


@pytest.fixture(scope="module")
def model():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    device = "cuda" if torch.cuda.is_available() else "cpu"
    # fp32 without TF32: batch sizes may pick different kernels, whose rounding must not flip a greedy choice.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, bos_token_id=1, eos_token_id=None, pad_token_id=0,
        initializer_range=0.1,
    )  # fmt: skip
    return LlamaForCausalLM(config).to(device).eval()


def _prompt(length: int, seed: int) -> list[int]:
    import torch

    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, 256, (length,), generator=generator).tolist()


def _tokens(request: GenerationRequest) -> list[int]:
    tokens: list[int] = []
    while True:
        item = request.output.get(timeout=120)
        if isinstance(item, Finished):
            return tokens
        if isinstance(item, BaseException):
            raise item
        tokens.append(item)


def _request(prompt: list[int], new_tokens: int) -> GenerationRequest:
    return GenerationRequest(prompt_ids=prompt, max_new_tokens=new_tokens, deadline=time.monotonic() + 120)


def _generate(model, prompt: list[int], new_tokens: int) -> list[int]:
    import torch
    from transformers import GenerationConfig

    ids = torch.tensor([prompt], device=model.device)
    config = GenerationConfig(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config)
    return out[0, len(prompt) :].tolist()


@pytest.mark.parametrize("overlap", [None, True, False], ids=["device-default", "overlapped", "one-at-a-time"])
def test_requests_batched_together_decode_exactly_as_each_alone(model, overlap):
    """Whatever the device does by default (a GPU overlaps decode steps with the host's work, a CPU does not), and
    each way forced."""
    prompts = [_prompt(length, seed) for seed, length in enumerate([5, 37, 64, 120, 9, 200])]
    new_tokens = 24
    batcher = ContinuousBatcher(model, eos_token_ids={EOS}, max_seq_len=512, max_batch_size=8, overlap=overlap)
    try:
        alone = []
        for prompt in prompts:
            request = _request(prompt, new_tokens)
            batcher.submit(request)
            alone.append(_tokens(request))
        together = [_request(prompt, new_tokens) for prompt in prompts]
        for request in together:
            batcher.submit(request)
        batched = [_tokens(request) for request in together]
        assert batcher.stats.largest_batch > 1
    finally:
        batcher.close()
    assert batched == alone
    # And alone is what plain greedy `generate` says, up to an end-of-sequence the batcher stops at.
    for prompt, tokens in zip(prompts, alone, strict=True):
        assert tokens == _generate(model, prompt, new_tokens)[: len(tokens)]
        assert len(tokens) == new_tokens or _generate(model, prompt, new_tokens)[len(tokens)] == EOS


@pytest.mark.parametrize("attention", ["flex", "dense"])
def test_both_decode_attentions_give_single_decodings_tokens_to_rows_of_different_lengths(model, attention):
    """Flex (each row reads its own blocks; on a GPU compiled and captured per batch bucket) and dense (the batch's
    span under a mask): rows of different lengths joining at different times decode as each alone, as `generate`."""
    from support_bot.llm.backends.hf import flex

    if attention == "flex" and not flex.available():
        pytest.skip("needs torch's flex_attention")
    prompts = [_prompt(length, 40 + seed) for seed, length in enumerate([7, 150, 33, 300, 64])]
    new_tokens = 20
    # The same rows and context as the test above: on a GPU the same shapes, so its compiled flex kernels are reused.
    batcher = ContinuousBatcher(model, eos_token_ids={EOS}, max_seq_len=512, max_batch_size=8, attention=attention)
    try:
        requests, heads = [], []
        for prompt in prompts:
            request = _request(prompt, new_tokens)
            batcher.submit(request)
            requests.append(request)
            # The next request joins while this one decodes (its first token is out).
            head = request.output.get(timeout=120)
            if isinstance(head, BaseException):
                raise head
            heads.append(head)
        batched = [[head, *_tokens(request)] for head, request in zip(heads, requests, strict=True)]
        assert batcher.attention == attention and batcher.stats.largest_batch > 1
    finally:
        batcher.close()
    for prompt, tokens in zip(prompts, batched, strict=True):
        expected = _generate(model, prompt, new_tokens)
        assert tokens == expected[: len(tokens)]
        assert len(tokens) == new_tokens or expected[len(tokens)] == EOS

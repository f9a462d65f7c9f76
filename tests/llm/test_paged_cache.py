"""The paged KV cache and chunked prefill on a tiny random-weight Llama (fp32, CPU): pages equal a contiguous cache,
chunks equal a whole prefill, and blocks freed by finished requests are reused without moving anything."""

from __future__ import annotations

import functools
import time

import pytest

from support_bot.llm.backends.hf.kv_cache import BlockPool, _paged_cache_class
from tests.llm.test_scheduler import (  # noqa: F401 - fixtures
    EOS, _prompt, collect, make_batcher, model, reference, request, take,
)

# --- the block pool ---------------------------------------------------------------------------------------------------


def test_the_pool_never_hands_out_the_scratch_block_and_reuses_freed_blocks():
    pool = BlockPool(5, max_blocks=5)
    first = pool.take(3)
    assert first == [1, 2, 3] and pool.free == 1
    assert not pool.can_take(2)
    with pytest.raises(RuntimeError, match="free blocks"):
        pool.take(2)
    pool.give_back([2, 1])
    assert pool.take(2) == [1, 2] and pool.free == 1


def test_a_growing_pool_keeps_the_ids_it_handed_out():
    pool = BlockPool(4, max_blocks=20)
    held = pool.take(3)
    assert pool.can_take(16) and not pool.can_take(17)
    assert pool.growth_for(2) == 8 and pool.growth_for(15) == 19
    pool.grow(8)
    assert pool.take(4) == [4, 5, 6, 7] and held == [1, 2, 3] and pool.free == 0


# --- paged == contiguous ----------------------------------------------------------------------------------------------


def test_paged_keys_and_values_equal_a_contiguous_cache(model):
    """Prefill in two chunks and decode into scattered blocks; the gathered pages equal transformers' own cache."""
    import torch
    from transformers import DynamicCache

    from support_bot.llm.backends.hf.kv_cache import _cache_kwarg

    prompt, new = _prompt(37, 11), [5, 77, 190]
    cache = _paged_cache_class()(model.config.num_hidden_layers, 12, max_blocks=12, block_size=4)
    blocks = [9, 3, 11, 1, 6, 2, 8, 4, 10, 5, 7]  # out of order on purpose
    table = torch.tensor(blocks)
    mask_min = torch.finfo(torch.float32).min
    kw = _cache_kwarg(model)

    def chunk(ids, start):
        positions = torch.arange(start, start + len(ids))
        cache.plan.prefill(table, start, positions)
        kwargs = {}
        if start:
            visible = torch.arange(start + len(ids))[None, :] <= positions[:, None]
            kwargs["attention_mask"] = torch.where(visible, 0.0, mask_min)[None, None]
        return model(input_ids=torch.tensor([ids]), position_ids=positions[None], **{kw: cache}, **kwargs)

    with torch.inference_mode():
        chunk(prompt[:20], 0)
        paged = chunk(prompt[20:], 20).logits[0, -1]
        for i, token in enumerate(new):
            chunk([token], 37 + i)
        contiguous = DynamicCache(config=model.config)
        whole = model(input_ids=torch.tensor([prompt]), **{kw: contiguous}).logits[0, -1]
        model(input_ids=torch.tensor([new]), **{kw: contiguous})
    torch.testing.assert_close(paged, whole, rtol=1e-4, atol=1e-4)
    slots = (table[torch.arange(40) // 4] * 4 + torch.arange(40) % 4).tolist()
    for paged_layer, layer in zip(cache.layers, contiguous.layers, strict=True):
        torch.testing.assert_close(paged_layer.keys[slots].transpose(0, 1), layer.keys[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(paged_layer.values[slots].transpose(0, 1), layer.values[0], rtol=1e-5, atol=1e-5)
        # Nothing was written outside the request's blocks.
        assert not paged_layer.keys[:4].any()


@pytest.fixture
def forwards(model, monkeypatch) -> list[tuple[int, int]]:
    """(batch, tokens) of every forward pass from now on; each also takes a little longer, so requests overlap."""
    shapes: list[tuple[int, int]] = []
    original = model.forward

    @functools.wraps(original)
    def recording(*args, **kwargs):
        shapes.append(tuple(kwargs["input_ids"].shape))
        time.sleep(0.002)
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "forward", recording)
    return shapes


# --- chunked prefill == whole prefill ---------------------------------------------------------------------------------


def test_chunked_prefill_decodes_exactly_as_a_whole_prefill(model, make_batcher, forwards):
    specs = [(45, 20), (7, 25), (23, 15)]
    prompts = [_prompt(length, 40 + i) for i, (length, _) in enumerate(specs)]
    expected = [reference(model, p, n, frozenset({EOS})) for p, (_, n) in zip(prompts, specs, strict=True)]
    batcher = make_batcher(prefill_token_budget=8)
    seen = len(forwards)
    requests = [request(p, n) for p, (_, n) in zip(prompts, specs, strict=True)]
    for r in requests:
        batcher.submit(r)
    assert [collect(r)[0] for r in requests] == expected
    chunks = [tokens for _, tokens in forwards[seen:] if tokens > 1]
    assert max(chunks) == 8 and batcher.stats.prefill_chunks >= 6 + 1 + 3
    assert batcher.stats.prefills == 3


def test_a_long_prompt_is_prefilled_between_the_decode_steps_of_running_requests(model, make_batcher, forwards):
    running_prompt, long_prompt = _prompt(6, 50), _prompt(120, 51)
    expected_a = reference(model, running_prompt, 60, frozenset({EOS}))
    expected_b = reference(model, long_prompt, 10, frozenset({EOS}))
    # One token per decode step (no prompt lookup once `a` runs alone again), so chunked steps are prefill only.
    batcher = make_batcher(prefill_token_budget=16, lookup_tokens=0)
    a = request(running_prompt, 60)
    batcher.submit(a)
    head = take(a, 5)
    seen = len(forwards)
    b = request(long_prompt, 10)
    batcher.submit(b)
    assert head + collect(a)[0] == expected_a
    assert collect(b)[0] == expected_b
    after = forwards[seen:]
    chunk_steps = [i for i, (_, tokens) in enumerate(after) if tokens > 1]
    # b's prompt went in eight chunks of at most 16 tokens, and a kept decoding between every two of them.
    assert len(chunk_steps) == 8 and all(after[i][1] <= 16 for i in chunk_steps)
    assert all(after[i + 1] == (1, 1) for i in chunk_steps[:-1])


# --- blocks, admission and reuse --------------------------------------------------------------------------------------


def test_requests_joining_and_leaving_free_blocks_that_later_requests_reuse(model, make_batcher, monkeypatch):
    from support_bot.llm.backends.hf import scheduler

    specs = [(3, 30), (40, 12), (9, 44), (70, 8), (1, 25), (18, 33), (55, 20), (12, 5), (30, 28)]
    needed = [-(-(length + n) // 16) for length, n in specs]
    # A fixed pool of 16 usable blocks: the nine budgets need twice that, so they finish only by reusing blocks.
    assert sum(needed) > 2 * 16 and 3 * max(needed) <= 16
    monkeypatch.setattr(scheduler, "_static_cache", lambda device: True)
    monkeypatch.setattr(scheduler, "_gpu_blocks_that_fit", lambda model, dtype, block_size, rows, span: 17)
    prompts = [_prompt(length, 60 + i) for i, (length, _) in enumerate(specs)]
    expected = [reference(model, p, n, frozenset({EOS})) for p, (_, n) in zip(prompts, specs, strict=True)]
    batcher = make_batcher(max_batch_size=3, prefill_token_budget=32, cuda_graphs=False)
    requests, heads = [], []
    for i, (prompt, (_, n)) in enumerate(zip(prompts, specs, strict=True)):
        r = request(prompt, n)
        batcher.submit(r)
        requests.append(r)
        # Some arrive only once the one before is decoding: they join a batch in flight.
        heads.append(take(r, 1) if i % 3 == 2 else [])
    assert [head + collect(r)[0] for head, r in zip(heads, requests, strict=True)] == expected
    deadline = time.monotonic() + 5
    while batcher.stats.active and time.monotonic() < deadline:
        time.sleep(0.01)
    assert batcher.stats.blocks_used == 0 and batcher.stats.active == 0 and batcher.stats.largest_batch == 3
    assert batcher.cache.pool.total == 17 and batcher.cache.pool.free == 16


def test_admission_waits_for_free_blocks_not_just_a_free_row(model, make_batcher, monkeypatch):
    from support_bot.llm.backends.hf import scheduler

    # A fixed pool of 8 usable 16-token blocks: two 60-token budgets (4 blocks each) fit at once, a third waits.
    monkeypatch.setattr(scheduler, "_static_cache", lambda device: True)
    monkeypatch.setattr(scheduler, "_gpu_blocks_that_fit", lambda model, dtype, block_size, rows, span: 9)
    batcher = make_batcher(max_batch_size=8, cuda_graphs=False)
    prompts = [_prompt(20, 70 + i) for i in range(4)]
    requests = [request(p, 40) for p in prompts]
    for r in requests:
        batcher.submit(r)
    for p, r in zip(prompts, requests, strict=True):
        assert collect(r)[0] == reference(model, p, 40, frozenset({EOS}))
    assert batcher.stats.largest_batch == 2 and batcher.cache.pool.total == 9
    # A request whose budget exceeds the whole pool fails instead of waiting forever.
    too_big = request(_prompt(100, 80), 100)
    batcher.submit(too_big)
    with pytest.raises(RuntimeError, match="cannot hold"):
        collect(too_big)


def test_a_request_is_cut_at_the_context_not_past_it(model, make_batcher):
    from support_bot.llm.backends.hf.scheduler import ContinuousBatcher

    batcher = ContinuousBatcher(model, eos_token_ids={EOS}, max_seq_len=40)
    try:
        prompt = _prompt(30, 90)
        r = request(prompt, 50)
        batcher.submit(r)
        tokens, reason = collect(r)
        assert reason == "length" and tokens == reference(model, prompt, 10, frozenset({EOS}))
        too_long = request(_prompt(40, 91), 5)
        batcher.submit(too_long)
        with pytest.raises(ValueError, match="does not fit"):
            collect(too_long)
    finally:
        batcher.close()


def _shaped(layers: int, heads: int, kv_heads: int, hidden: int, vocab: int):
    """A model as the GPU sizing sees it: its configuration, and its weights on the first GPU."""
    import torch
    from types import SimpleNamespace

    config = SimpleNamespace(num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                             hidden_size=hidden, vocab_size=vocab)
    weights = [SimpleNamespace(device=torch.device("cuda", 0))]
    return SimpleNamespace(config=config, parameters=lambda: iter(weights))


@pytest.mark.parametrize(("rows", "fits"), [(64, True), (72, False)])
def test_64_concurrent_2k_token_chats_of_a_7b_model_fit_on_an_80gb_card(monkeypatch, rows, fits):
    import torch

    from support_bot.llm.backends.hf.kv_cache import BLOCK_SIZE, _gpu_blocks_that_fit, blocks_for

    # An 80 GB H100 reports about 79.2 GiB; Llama-2-7B's weights take 12.6 GiB of it in bf16, its context 0.5 GiB.
    free = int((79.2 - 12.6 - 0.5) * 2**30)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (free, int(79.2 * 2**30)))
    llama_2_7b = _shaped(layers=32, heads=32, kv_heads=32, hidden=4096, vocab=32000)
    # The benchmark's chats: a 1,536-token prompt and 128 new tokens each; room left for a batch of `rows` reading
    # the whole 4,096-token context, so the sizing holds whatever the batch's span.
    blocks = _gpu_blocks_that_fit(llama_2_7b, torch.bfloat16, BLOCK_SIZE, rows, 4096)
    needed = rows * blocks_for(1536 + 128) + 1  # block 0 is scratch
    assert (blocks >= needed) is fits


def test_gpu_sizing_keeps_room_for_keys_and_values_repeated_to_every_query_head(monkeypatch):
    import torch

    from support_bot.llm.backends.hf.kv_cache import BLOCK_SIZE, _gpu_blocks_that_fit

    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (64 * 2**30, 80 * 2**30))
    # Two models with the same KV bytes per token: one key/value head per query head, or one per 4 of 32 wider ones.
    alike = _gpu_blocks_that_fit(_shaped(32, 8, 8, 1024, 32000), torch.bfloat16, BLOCK_SIZE, 64, 4096)
    grouped = _gpu_blocks_that_fit(_shaped(32, 32, 8, 4096, 32000), torch.bfloat16, BLOCK_SIZE, 64, 4096)
    per_token = 2 * 32 * 8 * 128 * 2
    one_layer_gathered = 64 * 4096 * per_token // 32
    # The grouped model also reserves the gathered keys/values repeated 4 times: that many fewer blocks.
    assert (alike - grouped) * BLOCK_SIZE * per_token == pytest.approx(4 * one_layer_gathered, rel=0.01)

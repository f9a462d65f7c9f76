"""Decode attention with per-row lengths (FlexAttention over the paged pool, flex.py) on a tiny random-weight Llama
(fp32, CPU, FlexAttention's unfused reference): each row reads only its own blocks up to its own length, batched
decoding equals single decoding and the dense masked path, and a flex step or capture that fails falls back to dense
attention. Captured flex steps (one graph per batch bucket): test_scheduler.py's graph bookkeeping test."""

from __future__ import annotations

import time

import pytest

from support_bot.llm.backends.hf import flex
from tests.llm.test_scheduler import (  # noqa: F401 - fixtures
    EOS, _prompt, collect, joining_equals_generate, make_batcher, model, reference, request, take,
)

pytestmark = pytest.mark.skipif(not flex.available(), reason="needs torch's flex_attention")


def _mask_matrix(block_mask, rows: int, slots: int):
    """[rows, slots] booleans: which pool columns each row's query sees, read from the block lists and mask_mod
    together, as a kernel does (a column outside the listed blocks is never read)."""
    import torch

    size = block_mask.BLOCK_SIZE[1]
    seen = torch.zeros(rows, slots, dtype=torch.bool)
    for b in range(rows):
        full = block_mask.full_kv_indices[b, 0, 0, : int(block_mask.full_kv_num_blocks[b, 0, 0])].tolist()
        partial = block_mask.kv_indices[b, 0, 0, : int(block_mask.kv_num_blocks[b, 0, 0])].tolist()
        for block in full:
            seen[b, block * size : (block + 1) * size] = True
        for block in partial:
            for column in range(block * size, (block + 1) * size):
                seen[b, column] = bool(block_mask.mask_mod(torch.tensor(b), 0, 0, torch.tensor(column)))
    return seen


def test_each_row_reads_exactly_its_own_columns_and_padding_rows_the_scratch_slot(model, make_batcher):
    import torch

    batcher = make_batcher(max_batch_size=4, attention="flex")
    cache = batcher.cache
    # Three requests of 40, 16 and 5 tokens (3, 1 and 1 blocks of 16), blocks handed out interleaved.
    a = cache.take(2)
    b = cache.take(1)
    a += cache.take(1)
    c = cache.take(1)
    cache.order[torch.tensor(a)] = torch.arange(3)  # a's third block joined later: its index in a's table is 2
    positions = [39, 15, 4]  # each row's newest token
    inputs = batcher.inputs
    for row, (blocks, position) in enumerate(zip([a, b, c], positions, strict=True)):
        inputs.tables[row].zero_()
        inputs.tables[row, : len(blocks)] = torch.tensor(blocks)
        inputs.positions[row] = position
    inputs.tables[3].zero_()
    inputs.positions[3] = 0  # a padding row of the bucket

    block_mask = batcher.flex_mask.build(4)
    slots = cache.pool.total * cache.block_size
    seen = _mask_matrix(block_mask, 4, slots)
    for row, (blocks, position) in enumerate(zip([a, b, c], positions, strict=True)):
        columns = torch.arange(position + 1)
        expected = torch.zeros(slots, dtype=torch.bool)
        expected[torch.tensor(blocks)[columns // 16] * 16 + columns % 16] = True
        assert torch.equal(seen[row], expected), row
        # A row reads its own length rounded up to one block, whatever the longest row's length.
        assert int(block_mask.full_kv_num_blocks[row]) + int(block_mask.kv_num_blocks[row]) == position // 16 + 1
    assert seen[3].nonzero().flatten().tolist() == [0]
    # mask_mod alone (a kernel may evaluate it anywhere) agrees: it never lets a row see another row's block.
    for row, blocks in enumerate([a, b, c]):
        for other in [x for i, x in enumerate([a, b, c]) if i != row]:
            for block in other:
                assert not bool(block_mask.mask_mod(torch.tensor(row), 0, 0, torch.tensor(block * 16)))


def test_a_flex_step_gives_the_dense_steps_logits(model, make_batcher):
    """The same rows decoded once through the block mask over the pool and once through the gathered, masked span."""
    import torch

    prompts = [_prompt(length, 3000 + length) for length in (3, 29, 70)]
    # The three prompts prefilled by hand into a stopped batcher's cache, then one decode step both ways.
    batcher = make_batcher(max_batch_size=4, attention="flex")
    batcher.close()
    slots = []
    for p in prompts:
        blocks = batcher.cache.take(8)
        slot = batcher.rows.take(blocks)
        with torch.inference_mode():
            logits = batcher._forward_chunk(batcher.rows.tables[slot], p, 0)
        batcher.rows.started(slot, len(p), logits.argmax(-1))
        slots.append(slot)
    index = torch.tensor(slots)
    span = max(len(p) for p in prompts) + 1
    with torch.inference_mode():
        flex_logits = batcher._eager_step(index, span)
        # The flex step wrote each row's new token; the dense step rewrites the same keys/values at the same place.
        batcher.attention = "dense"
        dense_logits = batcher._eager_step(index, span)
    assert torch.allclose(flex_logits, dense_logits, atol=1e-5)


@pytest.mark.parametrize("overlap", [False, True], ids=["one-step-at-a-time", "overlapped"])
def test_flex_decoding_of_requests_joining_at_different_times_equals_each_alone(model, make_batcher, overlap):
    batcher = make_batcher(max_batch_size=4, attention="flex", overlap=overlap)
    joining_equals_generate(model, batcher, [(5, 30), (37, 12), (120, 25), (9, 40), (200, 8), (64, 33)], 3100)
    assert batcher.stats.largest_batch >= 3 and batcher.stats.blocks_used == 0
    assert model.config._attn_implementation == flex.ATTENTION_NAME


def test_a_flex_capture_that_fails_falls_back_to_dense_captured_steps(model, make_batcher, monkeypatch):
    from support_bot.llm.backends.hf import graphs, scheduler

    def capture(step, *, device, pool):
        if batcher_box and batcher_box[0].attention == "flex":
            raise RuntimeError("the flex kernel could not be compiled (simulated)")
        output = step()
        return (lambda: output.copy_(step())), output

    batcher_box: list = []
    real_init = graphs._CudaGraphDecoder.__init__

    def init(self, batcher):
        batcher_box.append(batcher)
        real_init(self, batcher)

    monkeypatch.setattr(graphs._CudaGraphDecoder, "__init__", init)
    monkeypatch.setattr(scheduler, "_static_cache", lambda device: True)
    monkeypatch.setattr(scheduler, "_gpu_blocks_that_fit", lambda model, dtype, block_size, rows, span: 100)
    monkeypatch.setattr(graphs, "_capture_cuda_graph", capture)
    batcher = make_batcher(max_batch_size=2, cuda_graphs=True, attention="flex")
    prompt = _prompt(21, 3300)
    r = request(prompt, 15)
    batcher.submit(r)
    assert collect(r) == (reference(model, prompt, 15, frozenset({EOS})), "length")
    assert batcher.attention == "dense" and batcher._graphs is not None
    assert {span for _, span in batcher._graphs.graphs} == {64, 128, 256, 512, 1024}


def test_an_unknown_attention_or_a_model_that_cannot_switch_is_refused(model):
    from support_bot.llm.backends.hf.scheduler import ContinuousBatcher

    with pytest.raises(ValueError, match="unknown decode attention"):
        ContinuousBatcher(model, eos_token_ids={EOS}, max_seq_len=64, attention="paged")

    class Eager:
        class config:  # noqa: N801 - stands in for a transformers config
            _attn_implementation = "eager"

    assert flex.use_on(Eager()) is False


def test_the_engine_setting_picks_the_decode_attention_and_streams_agree(settings, tiny_llama2_dir):
    """`llm.decode_attention`: the engine's batcher runs what it says; concurrent streams under flex give the dense
    engine's answers."""
    import threading

    from support_bot.llm.backends.hf.engine import TransformersEngine
    from support_bot.llm.prompt import ChatMessage

    settings.llm.model = str(tiny_llama2_dir)
    settings.llm.device = "cpu"
    conversations = [
        [ChatMessage("system", "You are a support assistant."), ChatMessage("user", f"Where is my {topic}? " * n)]
        for n, topic in enumerate(["order", "refund", "invoice"], start=1)
    ]
    answers = {}
    for attention in ("dense", "flex"):
        settings.llm.decode_attention = attention
        engine = TransformersEngine(settings)
        try:
            assert engine.batcher.attention == attention
            results: dict[int, str] = {}
            threads = [
                threading.Thread(target=lambda i=i: results.__setitem__(
                    i, "".join(engine.stream(conversations[i], max_new_tokens=20))))
                for i in range(len(conversations))
            ]  # fmt: skip
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=60)
            answers[attention] = [results.get(i) for i in range(len(conversations))]
        finally:
            engine.close()
    assert answers["flex"] == answers["dense"] and all(answers["dense"])


def test_a_flex_step_that_fails_mid_serving_is_rerun_dense_and_the_requests_go_on(model, make_batcher, monkeypatch):
    """A kernel that cannot be built for a new shape must not fail the batch: the step runs again with dense
    attention, which serves from then on, and every request still gets generate's tokens."""
    calls = []
    real = flex._flex

    def fails_on_the_third_step(*args, **kwargs):
        calls.append(1)
        if len(calls) > 2 * model.config.num_hidden_layers:
            raise RuntimeError("flex kernel compile failed for this shape (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(flex, "_flex", fails_on_the_third_step)
    prompts = [_prompt(length, 3500 + length) for length in (6, 41, 19)]
    batcher = make_batcher(max_batch_size=4, attention="flex")
    requests = []
    for p in prompts:
        r = request(p, 10)
        batcher.submit(r)
        requests.append(r)
    assert [collect(r) for r in requests] == [(reference(model, p, 10, frozenset({EOS})), "length") for p in prompts]
    assert batcher.attention == "dense" and len(calls) > 2 * model.config.num_hidden_layers

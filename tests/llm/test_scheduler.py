"""Continuous batching on a tiny random-weight Llama (fp32, CPU): batched greedy decoding must equal single decoding."""

from __future__ import annotations

import functools
import queue
import subprocess
import sys
import threading
import time

import pytest

from support_bot.llm.backends.hf.scheduler import ContinuousBatcher, Finished, GenerationRequest
from support_bot.llm.prompt import ChatMessage

EOS = 2


@pytest.fixture(scope="module")
def model():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    # eos_token_id=None: generate() stops only at the EOS ids a test passes, like the batcher.
    config = LlamaConfig(
        vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=1024, bos_token_id=1, eos_token_id=None, pad_token_id=0,
        initializer_range=0.1,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


def _prompt(length: int, seed: int) -> list[int]:
    import torch

    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, 256, (length,), generator=generator).tolist()


def reference(model, prompt: list[int], max_new_tokens: int, eos: frozenset[int] = frozenset()) -> list[int]:
    """Plain greedy `generate` at batch 1, without the EOS token itself (the batcher never emits it)."""
    import torch
    from transformers import GenerationConfig

    ids = torch.tensor([prompt], device=model.device)
    config = GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=sorted(eos) or None, pad_token_id=0
    )
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config)
    new = out[0, len(prompt) :].tolist()
    return new[:-1] if new and new[-1] in eos else new


def collect(request: GenerationRequest, *, timeout: float = 30.0) -> tuple[list[int], str]:
    """Every token of a request and why it ended."""
    tokens: list[int] = []
    while True:
        item = request.output.get(timeout=timeout)
        if isinstance(item, Finished):
            return tokens, item.reason
        if isinstance(item, BaseException):
            raise item
        tokens.append(item)


def take(request: GenerationRequest, n: int) -> list[int]:
    tokens = []
    while len(tokens) < n:
        item = request.output.get(timeout=30)
        assert isinstance(item, int), item
        tokens.append(item)
    return tokens


def request(prompt: list[int], max_new_tokens: int, *, timeout_s: float = 60.0, **kwargs) -> GenerationRequest:
    return GenerationRequest(
        prompt_ids=prompt, max_new_tokens=max_new_tokens, deadline=time.monotonic() + timeout_s, **kwargs
    )


def joining_equals_generate(model, batcher, specs: list[tuple[int, int]], seed: int, *, head: int = 1) -> None:
    """Requests of (prompt length, new tokens), each submitted once the one before has given `head` tokens (so it
    joins a running batch): every one gets plain greedy `generate`'s tokens."""
    prompts = [_prompt(length, seed + i) for i, (length, _) in enumerate(specs)]
    requests, heads = [], []
    for prompt, (_, n) in zip(prompts, specs, strict=True):
        r = request(prompt, n)
        batcher.submit(r)
        requests.append(r)
        heads.append(take(r, head))
    for prompt, (_, n), r, first in zip(prompts, specs, requests, heads, strict=True):
        assert first + collect(r)[0] == reference(model, prompt, n, frozenset({EOS}))


@pytest.fixture
def batch_sizes(model, monkeypatch) -> list[int]:
    """Batch size of every decode step from now on; each step also takes a little longer, so requests overlap."""
    sizes: list[int] = []
    original = model.forward

    @functools.wraps(original)
    def recording(*args, **kwargs):
        ids = kwargs["input_ids"]
        if ids.shape[1] == 1:
            sizes.append(ids.shape[0])
            time.sleep(0.002)
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "forward", recording)
    return sizes


@pytest.fixture
def make_batcher(model):
    made: list[ContinuousBatcher] = []

    def make(**kwargs) -> ContinuousBatcher:
        kwargs.setdefault("eos_token_ids", {EOS})
        batcher = ContinuousBatcher(model, max_seq_len=1024, **kwargs)
        made.append(batcher)
        return batcher

    yield make
    for batcher in made:
        batcher.close()


@pytest.mark.parametrize("overlap", [False, True], ids=["one-step-at-a-time", "overlapped"])
def test_requests_joining_at_different_times_decode_exactly_as_alone(model, make_batcher, batch_sizes, overlap):
    """Also with step N launched before the host reads step N-1's tokens (the GPU default, forced on a CPU): every
    stream still gets exactly its own tokens and ends where it should."""
    # Different prompt lengths (one past the cache's first 256 columns, so it grows mid-run) and lengths.
    specs = [(3, 48), (11, 40), (300, 33), (7, 45), (24, 30), (1, 38)]
    prompts = [_prompt(length, seed) for seed, (length, _) in enumerate(specs)]
    expected = [reference(model, p, n, frozenset({EOS})) for p, (_, n) in zip(prompts, specs, strict=True)]
    batcher = make_batcher(overlap=overlap)
    requests, heads = [], []
    for prompt, (_, n) in zip(prompts, specs, strict=True):
        r = request(prompt, n)
        batcher.submit(r)
        requests.append(r)
        # The next request arrives only once this one is decoding: it joins a batch already in flight.
        heads.append(take(r, 3))
    got = []
    for r, head in zip(requests, heads, strict=True):
        tokens, _ = collect(r)
        got.append(head + tokens)
    assert got == expected
    assert max(batch_sizes) >= 4, batch_sizes
    assert batcher.stats.active == 0 and batcher.stats.largest_batch == max(batch_sizes)
    assert batcher.stats.blocks_used == 0


def test_a_request_joining_mid_flight_leaves_the_running_one_untouched(model, make_batcher, batch_sizes):
    first, second = _prompt(9, 100), _prompt(21, 101)
    # One token per step (no prompt lookup, test_prompt_lookup.py), so the steps alone are counted one by one.
    batcher = make_batcher(lookup_tokens=0)
    a = request(first, 60)
    batcher.submit(a)
    head = take(a, 10)
    steps_alone = len(batch_sizes)
    b = request(second, 20)
    batcher.submit(b)
    assert head + collect(a)[0] == reference(model, first, 60, frozenset({EOS}))
    assert collect(b)[0] == reference(model, second, 20, frozenset({EOS}))
    assert steps_alone >= 9 and set(batch_sizes[:steps_alone]) == {1}
    assert 2 in batch_sizes[steps_alone:]


def test_limits_stop_timeout_and_cancel_end_only_their_own_request(model, make_batcher, batch_sizes):
    prompts = [_prompt(5 + 3 * i, 200 + i) for i in range(5)]
    full = [reference(model, p, 80, frozenset({EOS})) for p in prompts]
    batcher = make_batcher()
    stop = threading.Event()
    limited = request(prompts[0], 6)
    stopped = request(prompts[1], 80, stop=stop)
    timed = request(prompts[2], 80, timeout_s=0.12)
    cancelled = request(prompts[3], 80)
    normal = request(prompts[4], 80)
    for r in (limited, stopped, timed, cancelled, normal):
        batcher.submit(r)
    stopped_head = take(stopped, 4)
    stop.set()
    cancelled_head = take(cancelled, 2)
    cancelled.cancel()

    assert collect(limited) == (full[0][:6], "length")
    tokens, reason = collect(stopped)
    assert reason == "stop" and stopped_head + tokens == full[1][: len(stopped_head) + len(tokens)]
    assert len(stopped_head + tokens) < 80
    tokens, reason = collect(timed)
    assert reason == "timeout" and 0 < len(tokens) < 80 and tokens == full[2][: len(tokens)]
    tokens, reason = collect(cancelled)
    assert reason == "cancelled" and len(cancelled_head + tokens) < 80
    assert collect(normal) == (full[4], "length" if len(full[4]) == 80 else "eos")
    assert max(batch_sizes) == 5


def test_an_overlapped_step_of_a_finished_row_is_run_and_its_token_dropped(model, make_batcher):
    # Alone, a 5-token answer takes 4 decode steps after its prefill; overlapped, a fifth is launched before the host
    # has read the fourth's token, and its token is dropped.
    prompt = _prompt(3, 600)
    expected = reference(model, prompt, 5, frozenset({EOS}))
    for overlap, steps in ((True, 5), (False, 4)):
        batcher = make_batcher(overlap=overlap)
        r = request(prompt, 5)
        batcher.submit(r)
        assert collect(r) == (expected, "length" if len(expected) == 5 else "eos")
        assert batcher.stats.decode_steps == steps and batcher.stats.tokens == 5
        assert batcher.stats.blocks_used == 0
    assert not make_batcher().overlap  # on a CPU steps do not overlap unless asked


def test_end_of_sequence_ends_only_that_request(model, make_batcher):
    a_prompt, b_prompt = _prompt(6, 300), _prompt(13, 301)
    a_full, b_full = reference(model, a_prompt, 40), reference(model, b_prompt, 40)
    # Pick an "EOS" that request a produces a few tokens in and request b never produces.
    eos = next(t for t in a_full[3:] if t not in b_full)
    batcher = make_batcher(eos_token_ids={eos})
    a, b = request(a_prompt, 40), request(b_prompt, 40)
    batcher.submit(a)
    batcher.submit(b)
    assert collect(a) == (a_full[: a_full.index(eos)], "eos")
    assert collect(b) == (b_full, "length")
    # With ignore_eos the same request decodes the full length, EOS token included.
    c = request(a_prompt, 40, ignore_eos=True)
    batcher.submit(c)
    assert collect(c) == (a_full, "length")


def test_an_abandoned_request_frees_its_row(model, make_batcher):
    batcher = make_batcher(max_batch_size=1)
    a = request(_prompt(8, 400), 500)
    batcher.submit(a)
    take(a, 2)
    b_prompt = _prompt(12, 401)
    b = request(b_prompt, 10)
    batcher.submit(b)
    a.cancel()
    # b can only run in the single row a held.
    assert collect(b) == (reference(model, b_prompt, 10, frozenset({EOS})), "length")
    tokens, reason = collect(a)
    assert reason == "cancelled" and a.generated < 500
    assert batcher.stats.active == 0


def test_more_requests_than_rows_wait_for_a_free_row(model, make_batcher):
    prompts = [_prompt(4 + i, 500 + i) for i in range(5)]
    batcher = make_batcher(max_batch_size=2)
    requests = [request(p, 12 + i) for i, p in enumerate(prompts)]
    for r in requests:
        batcher.submit(r)
    for i, (p, r) in enumerate(zip(prompts, requests, strict=True)):
        assert collect(r) == (reference(model, p, 12 + i, frozenset({EOS})), "length")
    assert batcher.stats.largest_batch == 2


def test_a_request_still_waiting_at_its_deadline_gets_a_timeout_error(model, make_batcher, batch_sizes):
    batcher = make_batcher(max_batch_size=1)
    busy = request(_prompt(8, 600), 300)
    batcher.submit(busy)
    take(busy, 1)
    late = request(_prompt(8, 601), 10, timeout_s=0.05)
    batcher.submit(late)
    with pytest.raises(TimeoutError, match="busy"):
        collect(late)
    assert not late.admitted.is_set()
    busy.cancel()
    assert collect(busy)[1] == "cancelled"


def test_a_failed_decode_step_fails_its_batch_and_the_scheduler_goes_on(model, make_batcher, monkeypatch):
    batcher = make_batcher()
    original = model.forward

    @functools.wraps(original)
    def broken(*args, **kwargs):
        if kwargs["input_ids"].shape[1] == 1:
            raise RuntimeError("device lost (simulated)")
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "forward", broken)
    a, b = request(_prompt(5, 700), 10), request(_prompt(9, 701), 10)
    batcher.submit(a)
    batcher.submit(b)
    for r in (a, b):
        with pytest.raises(RuntimeError, match="simulated"):
            collect(r)
    monkeypatch.undo()
    prompt = _prompt(7, 702)
    c = request(prompt, 8)
    batcher.submit(c)
    assert collect(c) == (reference(model, prompt, 8, frozenset({EOS})), "length")


def test_closing_ends_running_and_waiting_requests(model, make_batcher, batch_sizes):
    batcher = make_batcher(max_batch_size=1)
    running, waiting = request(_prompt(5, 800), 500), request(_prompt(5, 801), 5)
    batcher.submit(running)
    take(running, 1)
    batcher.submit(waiting)
    batcher.close()
    for r in (running, waiting):
        with pytest.raises(RuntimeError, match="shut down"):
            collect(r)
    with pytest.raises(RuntimeError, match="shut down"):
        batcher.submit(request(_prompt(5, 802), 5))


def test_sampling_with_a_vanishing_top_p_is_greedy(model, make_batcher):
    prompt = _prompt(10, 900)
    sampled = make_batcher(temperature=0.8, top_p=1e-9)
    r = request(prompt, 20)
    sampled.submit(r)
    assert collect(r) == (reference(model, prompt, 20, frozenset({EOS})), "length")
    free = make_batcher(temperature=1.5, top_p=1.0)
    r = request(prompt, 20, ignore_eos=True)
    free.submit(r)
    tokens, reason = collect(r)
    assert reason == "length" and len(tokens) == 20 and all(0 <= t < 256 for t in tokens)


@pytest.mark.parametrize(
    ("attention", "spans"), [("dense", (64, 128, 256, 512, 1024)), ("flex", (0,))], ids=["dense", "flex"]
)
def test_graph_bookkeeping_keeps_live_rows_intact(model, make_batcher, monkeypatch, attention, spans):
    """The CUDA-graph path's logic on CPU: static block pool, graphs captured at warm-up, padding rows, scratch block.

    Only the capture itself is stood in for: a "graph" here re-runs its captured step into the captured output, which
    is what replaying a real graph does, so everything the step reads must come from the static buffers. Dense
    attention needs a graph per (batch bucket, span bucket); flex one per batch bucket, for rows of any lengths.
    """
    from support_bot.llm.backends.hf import graphs, scheduler

    captured: list[int] = []

    def capture(step, *, device, pool):
        step()  # warm-up, as on a GPU: it must write only into the scratch block
        output = step()
        captured.append(1)
        return (lambda: output.copy_(step())), output

    monkeypatch.setattr(scheduler, "_static_cache", lambda device: True)
    monkeypatch.setattr(scheduler, "_gpu_blocks_that_fit", lambda model, dtype, block_size, rows, span: 200)
    monkeypatch.setattr(graphs, "_capture_cuda_graph", capture)
    batcher = make_batcher(max_batch_size=6, cuda_graphs=True, attention=attention)
    # Every graph is captured before the first request arrives.
    deadline = time.monotonic() + 60
    while len(captured) < 4 * len(spans) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert set(batcher._graphs.graphs) == {(b, s) for b in (1, 2, 4, 6) for s in spans}
    keys = batcher.cache.layers[0].keys
    assert keys.shape[0] == 200 * 16

    joining_equals_generate(model, batcher, [(5, 40), (90, 50), (12, 30), (33, 45), (60, 20)], 1100, head=2)
    # No capture while serving, and the pool never moved (graphs hold its address).
    assert len(captured) == 4 * len(spans) and batcher.cache.layers[0].keys is keys
    assert batcher.attention == attention
    assert batcher.stats.largest_batch >= 3 and batcher.stats.blocks_used == 0


def test_a_failed_graph_capture_falls_back_to_eager_decoding(model, make_batcher, monkeypatch):
    from support_bot.llm.backends.hf import graphs, scheduler

    def capture(step, *, device, pool):
        raise RuntimeError("operation not permitted when stream is capturing (simulated)")

    monkeypatch.setattr(scheduler, "_static_cache", lambda device: True)
    monkeypatch.setattr(scheduler, "_gpu_blocks_that_fit", lambda model, dtype, block_size, rows, span: 100)
    monkeypatch.setattr(graphs, "_capture_cuda_graph", capture)
    batcher = make_batcher(cuda_graphs=True)
    prompt = _prompt(9, 1200)
    r = request(prompt, 15)
    batcher.submit(r)
    assert collect(r) == (reference(model, prompt, 15, frozenset({EOS})), "length")
    assert batcher._graphs is None


@pytest.mark.skipif("not __import__('torch').cuda.is_available()", reason="needs a GPU")
def test_cuda_graph_decoding_matches_eager_decoding_on_gpu(model):
    """GPU only: captured decode steps (fp32 here, for exactness) give plain generate's greedy tokens."""
    import copy

    gpu_model = copy.deepcopy(model).to("cuda")
    batcher = ContinuousBatcher(gpu_model, eos_token_ids={EOS}, max_seq_len=1024, max_batch_size=8, cuda_graphs=True)
    try:
        prompts = [_prompt(length, 1000 + length) for length in (4, 17, 70)]
        requests, heads = [], []
        for p in prompts:
            r = request(p, 40)
            batcher.submit(r)
            requests.append(r)
            heads.append(take(r, 2))
        for p, r, head in zip(prompts, requests, heads, strict=True):
            assert head + collect(r)[0] == reference(gpu_model, p, 40, frozenset({EOS}))
        assert batcher._graphs is not None and batcher._graphs.graphs
    finally:
        batcher.close()


# --- through the engine's streaming API ------------------------------------------------------------------------------


def _questions(n: int) -> list[list[ChatMessage]]:
    topics = ["password", "invoice", "order", "refund", "account", "delivery", "coupon", "battery"]
    return [
        [ChatMessage("system", "You are a support assistant."), ChatMessage("user", f"Where is my {t}? " * (1 + i % 3))]
        for i, t in enumerate(topics[:n])
    ]


def test_concurrent_streams_all_complete_with_their_own_answers(tiny_engine):
    engine = tiny_engine
    conversations = _questions(8)
    expected = [engine.generate(c, max_new_tokens=25) for c in conversations]
    results: dict[int, list[str]] = {}
    errors: list[BaseException] = []

    def consume(i: int) -> None:
        try:
            results[i] = list(engine.stream(conversations[i], max_new_tokens=25))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert ["".join(results[i]) for i in range(8)] == expected
    assert engine.batcher.stats.largest_batch > 1


def test_a_consumer_that_walks_away_frees_its_slot(settings, tiny_llama2_dir):
    from support_bot.llm.backends.hf.engine import TransformersEngine

    settings.llm.model = str(tiny_llama2_dir)
    settings.llm.device = "cpu"
    engine = TransformersEngine(settings, max_batch_size=1)
    try:
        conversation = _questions(1)[0]
        stream = engine.stream(conversation, max_new_tokens=400)
        next(stream)
        del stream  # garbage collection closes the generator, as when a web client disconnects
        answer = engine.generate(conversation, max_new_tokens=5, timeout_s=10)
        assert answer
        assert engine.batcher.stats.requests == 2
    finally:
        engine.close()


def test_a_stream_waiting_for_a_row_past_its_timeout_raises(settings, tiny_llama2_dir):
    from support_bot.llm.backends.hf.engine import TransformersEngine

    settings.llm.model = str(tiny_llama2_dir)
    settings.llm.device = "cpu"
    engine = TransformersEngine(settings, max_batch_size=1)
    try:
        conversation = _questions(1)[0]
        busy = engine.stream(conversation, max_new_tokens=400, timeout_s=30)
        next(busy)
        with pytest.raises(TimeoutError):
            engine.generate(conversation, max_new_tokens=5, timeout_s=0.1)
        busy.close()
    finally:
        engine.close()


def test_the_batching_modules_import_without_torch():
    code = (
        "import sys\n"
        "import support_bot.llm.backends.hf.scheduler, support_bot.llm.backends.hf.detokenize\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_output_queue_type_is_thread_safe():
    assert isinstance(GenerationRequest([1], 1, 0.0).output, queue.SimpleQueue)


def test_rows_of_one_length_decode_without_a_mask_and_mixed_lengths_with_one(model, make_batcher, monkeypatch):
    """Item: keep the mask out of the fast path. One stream (or rows that started together) reads every column of its
    span, so no mask is built and sdpa runs unmasked; rows of different lengths still get theirs. Same tokens."""
    from support_bot.llm.backends.hf.flex import ATTENTION_NAME

    # sdpa, or the paged implementation a flex test switched the model to, which hands these steps to sdpa.
    assert model.config._attn_implementation in ("sdpa", ATTENTION_NAME)
    masks: list[int] = []
    real = ContinuousBatcher.decode_mask

    def counted(self, positions, span):
        masks.append(int(positions.shape[0]))
        return real(self, positions, span)

    monkeypatch.setattr(ContinuousBatcher, "decode_mask", counted)
    alone = _prompt(13, 7)
    batcher = make_batcher()
    r = request(alone, 20)
    batcher.submit(r)
    assert collect(r)[0] == reference(model, alone, 20, frozenset({EOS}))
    assert masks == []
    first, second = _prompt(5, 8), _prompt(31, 9)
    a, b = request(first, 24), request(second, 24)
    batcher.submit(a)
    head = take(a, 2)
    batcher.submit(b)
    assert head + collect(a)[0] == reference(model, first, 24, frozenset({EOS}))
    assert collect(b)[0] == reference(model, second, 24, frozenset({EOS}))
    assert masks and max(masks) == 2


def test_one_stream_on_consecutive_blocks_reads_a_view_and_decodes_as_generate(model, make_batcher, monkeypatch):
    """One row whose blocks are consecutive reads its keys and values as a slice of the pool, not a gathered copy;
    blocks handed out out of order are gathered. The same tokens as plain `generate` either way."""
    from support_bot.llm.backends.hf.kv_cache import _Plan

    runs: list[int | None] = []
    real = _Plan.decode

    def recorded(self, tables, positions, span, *, run=None):
        runs.append(run)
        return real(self, tables, positions, span, run=run)

    monkeypatch.setattr(_Plan, "decode", recorded)
    prompt = _prompt(37, 11)
    want = reference(model, prompt, 24, frozenset({EOS}))
    batcher = make_batcher()
    r = request(prompt, 24)
    batcher.submit(r)
    assert collect(r)[0] == want
    assert runs and all(run is not None for run in runs)
    batcher.close()

    runs.clear()
    batcher = make_batcher()
    take = batcher.cache.take
    monkeypatch.setattr(batcher.cache, "take", lambda n: take(n)[::-1])  # the same blocks, out of order
    r = request(prompt, 24)
    batcher.submit(r)
    assert collect(r)[0] == want
    assert runs and all(run is None for run in runs)

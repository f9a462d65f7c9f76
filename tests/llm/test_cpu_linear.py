"""The CPU linear kernel choice (cpu_linear.py): the weight-first product equals F.linear, the engine's scheduler
thread alone takes the tuned choice, tuning keeps the faster kernel per row count only by a clear margin, and
batched decoding with the weight-first product still equals plain `generate` on a tiny random Llama."""

from __future__ import annotations

import threading

import pytest

from support_bot.llm.backends.hf import cpu_linear
from support_bot.llm.backends.hf.cpu_linear import BUCKETS, LinearKernels, weight_first
from tests.llm.test_scheduler import joining_equals_generate, make_batcher, model  # noqa: F401 - fixtures


@pytest.mark.parametrize("shape", [(1, 64), (2, 64), (3, 1, 64), (5, 64), (2, 7, 64)])
@pytest.mark.parametrize("bias", [False, True])
def test_the_weight_first_product_equals_f_linear(shape, bias):
    import torch
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(7)
    x = torch.randn(shape, generator=generator)
    weight = torch.randn(96, 64, generator=generator)
    b = torch.randn(96, generator=generator) if bias else None
    out = weight_first(x, weight, b)
    assert out.shape == (*shape[:-1], 96) and out.is_contiguous()
    torch.testing.assert_close(out, F.linear(x, weight, b), rtol=1e-5, atol=1e-5)


def _counting(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = cpu_linear.weight_first

    def counted(x, weight, bias=None):
        calls.append(x.numel() // x.shape[-1])
        return real(x, weight, bias)

    monkeypatch.setattr(cpu_linear, "weight_first", counted)
    return calls


def test_only_the_serving_thread_takes_the_weight_first_product(model, monkeypatch):
    """Another thread running the same model at the same time (a benchmark's plain generate) gets F.linear."""
    import torch

    kernels = LinearKernels(model, "weight_first")
    calls = _counting(monkeypatch)
    ids = torch.tensor([[5, 6, 7]])
    with torch.inference_mode():
        plain = model(input_ids=ids).logits
        assert calls == []
        inside: list[int] = []
        started, release = threading.Event(), threading.Event()

        def other_thread() -> None:
            started.set()
            release.wait(10)
            with torch.inference_mode():
                model(input_ids=ids)
            inside.append(len(calls))

        worker = threading.Thread(target=other_thread)
        worker.start()
        started.wait(10)
        with kernels.serving():
            served = model(input_ids=ids).logits
            during = len(calls)
            release.set()
            worker.join(10)
        assert during == len(kernels.linears) and inside == [during]  # the other thread added none
        model(input_ids=ids)
        assert len(calls) == during  # and none once the block ended
    torch.testing.assert_close(served, plain, rtol=1e-5, atol=1e-5)


def test_rows_past_the_last_bucket_and_linear_buckets_keep_f_linear(model, monkeypatch):
    import torch

    kernels = LinearKernels(model, "auto")
    kernels.tune(clock=lambda kernel, rows: 1.0 if kernel == "linear" or rows > 2 else 0.5)
    assert kernels.choices == {b: ("weight_first" if b <= 2 else "linear") for b in BUCKETS}
    calls = _counting(monkeypatch)
    with torch.inference_mode(), kernels.serving():
        model(input_ids=torch.tensor([[5]]))  # 1 row
        model(input_ids=torch.tensor([[5], [6]]))  # 2 rows
        model(input_ids=torch.arange(3, 8)[None])  # 5 rows: a linear bucket
        model(input_ids=torch.arange(3, 3 + BUCKETS[-1] + 1)[None])  # past the last bucket
    assert sorted(set(calls)) == [1, 2]


def test_tuning_takes_the_weight_first_product_only_when_clearly_faster(model):
    timings = {1: 0.90, 2: 0.97, 4: 0.5, 8: 1.2, 16: 0.949, 32: 0.951}  # weight-first's time, F.linear's being 1.0
    kernels = LinearKernels(model, "auto")
    chosen = kernels.tune(clock=lambda kernel, rows: 1.0 if kernel == "linear" else timings[rows])
    assert chosen == {1: "weight_first", 2: "linear", 4: "weight_first", 8: "linear", 16: "weight_first",
                      32: "linear"}  # fmt: skip

    def failing(kernel, rows):
        raise RuntimeError("no BLAS today")

    assert set(LinearKernels(model, "auto").tune(clock=failing).values()) == {"linear"}
    pinned = LinearKernels(model, "linear")
    assert set(pinned.tune(clock=lambda kernel, rows: 0.1 if kernel == "weight_first" else 1.0).values()) == {"linear"}
    with pytest.raises(ValueError, match="unknown CPU linear kernel"):
        LinearKernels(model, "fastest")


def test_a_second_engine_on_the_same_model_reuses_the_timing(model):
    first = LinearKernels(model, "auto")
    chosen = first.tune()
    assert set(chosen) == set(BUCKETS) and set(chosen.values()) <= {"linear", "weight_first"}
    second = LinearKernels(model, "auto")
    assert second.tune(clock=None) == chosen and second.choices is not first.choices


@pytest.mark.parametrize("choice", ["weight_first", "auto"])
def test_batched_decoding_with_the_tuned_kernels_equals_generate(model, make_batcher, choice):
    batcher = make_batcher(max_batch_size=4, cpu_linear=choice)
    joining_equals_generate(model, batcher, [(5, 30), (37, 12), (120, 25), (9, 40), (64, 33)], 4100)
    assert batcher.stats.largest_batch >= 3
    if choice == "weight_first":
        assert set(batcher.linear_kernels.choices.values()) == {"weight_first"}


def test_the_engine_setting_reaches_the_batcher(settings, tiny_llama2_dir):
    from support_bot.llm.backends.hf.engine import TransformersEngine
    from support_bot.llm.prompt import ChatMessage

    settings.llm.model = str(tiny_llama2_dir)
    settings.llm.device = "cpu"
    answers = {}
    for choice in ("linear", "weight_first"):
        settings.llm.cpu_linear = choice
        engine = TransformersEngine(settings)
        try:
            assert engine.batcher.linear_kernels.requested == choice
            answers[choice] = "".join(engine.stream([ChatMessage("user", "Where is my order?")], max_new_tokens=12))
        finally:
            engine.close()
    assert answers["linear"] == answers["weight_first"] and answers["linear"]

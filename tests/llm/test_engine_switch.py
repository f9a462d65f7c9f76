"""Switching the served model on a GPU: the replaced engine is closed and its memory freed before the new one loads
and sizes its KV cache from the memory then free; on a CPU the replaced one still waits out its answers."""

from __future__ import annotations

import gc
import threading
import time
import weakref

import pytest

from support_bot.core.errors import ModelNotAvailable
from support_bot.llm import registry
from support_bot.llm.backends.hf import engine as engine_module
from support_bot.llm.prompt import ChatMessage
from support_bot.llm.registry import get_engine, retire_engine

CARD = 80


class FakeGpu:
    """GiB of one card's memory taken per engine, and what happened in which order."""

    def __init__(self) -> None:
        self.taken: dict[str, int] = {}
        self.events: list[tuple[str, str]] = []


@pytest.fixture
def gpu(monkeypatch):
    card = FakeGpu()

    class FakeGpuEngine:
        """On the card, takes 60 of its 80 GiB and fails when less is free when it starts (as a KV cache sized
        from free memory would)."""

        def __init__(self, settings) -> None:
            self.name = settings.llm.model
            self.device = settings.llm.device
            if not self.device.startswith("cuda"):
                return
            free = CARD - sum(card.taken.values())
            card.events.append(("start", f"{self.name} with {free} GiB free"))
            if free < 60:
                raise MemoryError("CUDA out of memory")
            card.taken[self.name] = 60

        def drain(self) -> None:
            card.events.append(("drain", self.name))

        def close(self) -> None:
            card.events.append(("close", self.name))
            card.taken.pop(self.name, None)

    monkeypatch.setattr(engine_module, "TransformersEngine", FakeGpuEngine)
    return card


def _model(settings, name: str, device: str = "cuda"):
    llm = settings.llm.model_copy(update={"backend": "transformers", "model": name, "device": device})
    return settings.model_copy(update={"llm": llm})


def test_on_a_gpu_the_replaced_engine_is_closed_before_the_new_one_starts(settings, gpu):
    first, second = _model(settings, "first"), _model(settings, "second")
    get_engine(first)
    retire_engine(first, after_s=3600)
    get_engine(second)
    assert gpu.events == [
        ("start", "first with 80 GiB free"),
        ("drain", "first"),
        ("close", "first"),
        ("start", "second with 80 GiB free"),
    ]
    # Its timer no longer holds it, and it is not closed twice.
    assert registry._retiring == []


def test_a_replaced_cpu_engine_still_waits_for_its_timer(settings, gpu):
    first, second = _model(settings, "first", "cpu"), _model(settings, "second", "cpu")
    get_engine(first)
    retire_engine(first, after_s=3600)
    get_engine(second)
    assert ("close", "first") not in gpu.events
    assert [retired.engine.name for retired in registry._retiring] == ["first"]


def test_the_timer_closes_a_retired_engine_once(settings, gpu):
    first = _model(settings, "first")
    get_engine(first)
    retire_engine(first, after_s=0.0)
    deadline = time.monotonic() + 5
    while ("close", "first") not in gpu.events and time.monotonic() < deadline:
        time.sleep(0.01)
    registry._close_retiring(on_gpu_only=False)
    assert gpu.events.count(("close", "first")) == 1


def test_closing_an_engine_drops_its_model_and_refuses_new_requests(tiny_engine):
    model = weakref.ref(tiny_engine.model)
    tiny_engine.close()
    gc.collect()
    # The engine object itself is still referenced here, yet the model is gone: its memory is free.
    assert model() is None
    with pytest.raises(ModelNotAvailable, match="closed"):
        tiny_engine.stream([ChatMessage("user", "Hello?")], max_new_tokens=4)
    tiny_engine.close()  # twice is harmless


def test_drain_waits_for_the_answer_being_streamed(tiny_engine, monkeypatch):
    # The model is held after its first decode step, so the answer is still being written whatever the machine's
    # speed (a tiny model can write 200 tokens in less time than the check below waits).
    gate, steps = threading.Event(), []
    batcher = tiny_engine.batcher
    real_step = batcher._decode_step

    def held(decoding):
        steps.append(len(decoding))
        if len(steps) > 1:
            gate.wait(30)
        return real_step(decoding)

    monkeypatch.setattr(batcher, "_decode_step", held)
    stream = tiny_engine.stream([ChatMessage("user", "Hello?")], max_new_tokens=200)
    next(stream)
    drained = threading.Event()
    waiter = threading.Thread(target=lambda: (tiny_engine.drain(), drained.set()))
    waiter.start()
    assert not drained.wait(0.2)
    gate.set()
    for _ in stream:
        pass
    assert drained.wait(10)
    waiter.join()

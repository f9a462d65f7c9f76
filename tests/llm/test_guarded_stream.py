"""guarded_stream: the model's deadlines enforced by the reader, whatever the engine does."""

from __future__ import annotations

import threading

import pytest

from support_bot.core.errors import ModelNotAvailable, ModelTimeout
from support_bot.llm.base import guarded_stream
from support_bot.llm.backends.fake import FakeEngine
from support_bot.llm.prompt import ChatMessage

ASK = [ChatMessage("system", "Be brief."), ChatMessage("user", "Where is my order?")]


class _Scripted(FakeEngine):
    """Yields `pieces`, then blocks until released (ignoring stop, as a wedged backend does) or raises `error`."""

    def __init__(self, pieces: list[str], *, block: bool = False, error: Exception | None = None) -> None:
        super().__init__()
        self.pieces, self.block, self.error = pieces, block, error
        self.released = threading.Event()
        self.stop_seen: threading.Event | None = None
        self.timeout_seen: float | None = None

    def stream(self, messages, *, max_new_tokens=None, stop=None, timeout_s=None):
        self.stop_seen, self.timeout_seen = stop, timeout_s
        yield from self.pieces
        if self.block:
            self.released.wait(60)
        if self.error is not None:
            raise self.error


def test_passes_pieces_through_and_gives_the_engine_a_later_backstop():
    engine = _Scripted(["Your", " order", " ships."])
    assert list(guarded_stream(engine, ASK, timeout_s=5, first_token_timeout_s=2)) == ["Your", " order", " ships."]
    assert engine.timeout_seen > 5 and engine.stop_seen is not None and engine.stop_seen.is_set()


def test_no_first_piece_in_time_raises_model_timeout_and_stops_the_engine():
    engine = _Scripted([], block=True)
    try:
        with pytest.raises(ModelTimeout, match="sent nothing within 0.2 seconds"):
            list(guarded_stream(engine, ASK, timeout_s=5, first_token_timeout_s=0.2))
        assert engine.stop_seen.is_set()
    finally:
        engine.released.set()


def test_a_stall_after_some_pieces_raises_at_the_total_deadline():
    engine = _Scripted(["Your", " order"], block=True)
    got = []
    try:
        with pytest.raises(ModelTimeout, match="did not finish its answer within 0.5 seconds"):
            for piece in guarded_stream(engine, ASK, timeout_s=0.5, first_token_timeout_s=0.4):
                got.append(piece)
    finally:
        engine.released.set()
    assert got == ["Your", " order"]


def test_engine_errors_reach_the_caller_after_the_pieces_before_them():
    engine = _Scripted(["Your"], error=ModelNotAvailable("the model server went away"))
    got = []
    with pytest.raises(ModelNotAvailable, match="went away"):
        for piece in guarded_stream(engine, ASK, timeout_s=5):
            got.append(piece)
    assert got == ["Your"]


def test_a_set_stop_ends_the_stream_quietly():
    engine = _Scripted(["Your"], block=True)
    stop = threading.Event()
    got = []
    try:
        for piece in guarded_stream(engine, ASK, timeout_s=30, first_token_timeout_s=10, stop=stop):
            got.append(piece)
            stop.set()
    finally:
        engine.released.set()
    assert got == ["Your"] and engine.stop_seen.is_set()

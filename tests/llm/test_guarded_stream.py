"""guarded_stream: the model's deadlines enforced by the reader, whatever the engine does."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from support_bot.core.errors import ModelNotAvailable, ModelTimeout
from support_bot.llm.backends.fake import FakeEngine
from support_bot.llm.base import PENDING, AnswerTruncated, Wakeup, guarded_stream
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


# -- read from an event loop (Wakeup) --------------------------------------------------------------------------------


class _OneByOne(FakeEngine):
    """Yields each piece only once `allow` has been released for it."""

    def __init__(self, pieces: list[str]) -> None:
        super().__init__()
        self.pieces = pieces
        self.allow = threading.Semaphore(0)

    def stream(self, messages, *, max_new_tokens=None, stop=None, timeout_s=None):
        for piece in self.pieces:
            while not self.allow.acquire(timeout=0.05):
                if stop is not None and stop.is_set():
                    return
            yield piece


def test_under_a_wakeup_a_read_returns_pending_at_once_and_the_loop_is_woken_where_a_sentence_may_end():
    engine = _OneByOne(["Your", " order", " ships.", " Thanks"])

    async def read() -> list[list[str]]:
        wakeup = Wakeup()
        stream = guarded_stream(engine, ASK, timeout_s=60, first_token_timeout_s=60)

        async def woken_by(released: int) -> list[str]:
            # Nothing is ready: the step hands back PENDING instead of holding its thread until there is.
            assert await asyncio.to_thread(wakeup.step, stream) == PENDING
            for _ in range(released):
                engine.allow.release()
            # Woken by the model itself (the reader's own deadline is a minute away), then everything ready is read.
            await asyncio.wait_for(wakeup.wait(), 20)
            got = []
            while (piece := wakeup.step(stream)) != PENDING:
                got.append(piece)
            return got

        try:
            batches = [
                await woken_by(1),  # the first piece wakes the reader
                await woken_by(2),  # " order" does not, " ships." does: both are read then
            ]
            engine.allow.release()  # " Thanks" follows an end mark, and then the stream ends
            await asyncio.wait_for(wakeup.wait(), 20)
            rest = []
            with pytest.raises(StopIteration):
                while True:
                    piece = wakeup.step(stream)
                    if piece == PENDING:
                        await asyncio.wait_for(wakeup.wait(), 20)
                    else:
                        rest.append(piece)
            return [*batches, rest]
        finally:
            stream.close()

    assert asyncio.run(read()) == [["Your"], [" order", " ships."], [" Thanks"]]


def test_under_a_wakeup_the_deadline_still_ends_the_wait_and_raises():
    engine = _Scripted([], block=True)

    async def read() -> None:
        wakeup = Wakeup()
        stream = guarded_stream(engine, ASK, timeout_s=5, first_token_timeout_s=0.2)
        assert wakeup.step(stream) == PENDING
        await asyncio.wait_for(wakeup.wait(), 20)  # returns at the reader's deadline, with nothing to read
        with pytest.raises(ModelTimeout, match="sent nothing within 0.2 seconds"):
            wakeup.step(stream)

    try:
        asyncio.run(read())
        assert engine.stop_seen.is_set()
    finally:
        engine.released.set()


def test_empty_pieces_from_an_engine_are_never_passed_on():
    engine = _Scripted(["", "Your", "", " order", ""])
    assert list(guarded_stream(engine, ASK, timeout_s=5)) == ["Your", " order"]


def test_a_cut_by_the_deadline_after_some_pieces_is_answer_truncated():
    engine = _Scripted(["Your"], block=True)
    try:
        with pytest.raises(AnswerTruncated):
            list(guarded_stream(engine, ASK, timeout_s=0.3, first_token_timeout_s=0.2))
    finally:
        engine.released.set()


def test_pieces_the_model_wrote_in_time_count_even_when_the_reader_comes_late():
    # A busy server may get round to reading after the deadline: what the model wrote in time is its answer.
    engine = _Scripted(["Your", " order", " ships."])
    stream = guarded_stream(engine, ASK, timeout_s=0.3, first_token_timeout_s=0.2)
    got = [next(stream)]
    time.sleep(0.6)
    got += list(stream)
    assert got == ["Your", " order", " ships."]


@pytest.mark.skipif(not hasattr(__import__("os"), "setpriority"), reason="no per-thread priority on this system")
def test_the_thread_reading_the_engine_runs_below_the_caller():
    from support_bot.core.threads import BACKGROUND_NICE
    from tests.core.test_threads import thread_nice

    seen: list[int] = []

    class _Noting(FakeEngine):
        def stream(self, messages, *, max_new_tokens=None, stop=None, timeout_s=None):
            seen.append(thread_nice())
            yield "Hello."

    assert list(guarded_stream(_Noting(), ASK, timeout_s=5)) == ["Hello."]
    assert seen == [min(19, thread_nice() + BACKGROUND_NICE)]

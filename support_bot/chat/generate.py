"""The generate step: the model's answer as it comes, under the customer path's deadlines, ending where a small model
starts re-listing its sources or repeating itself (verify.py decides what of it the customer sees)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from support_bot.chat.grounding import repetition_start, source_echo_start
from support_bot.core.config import Settings
from support_bot.llm.base import guarded_stream
from support_bot.llm.prompt import ChatMessage
from support_bot.ops import metrics

log = logging.getLogger(__name__)


def _answer_end(raw: str) -> int | None:
    """Where the model began re-listing its numbered sources or repeating a sentence it already said, if it did."""
    cuts = [c for c in (source_echo_start(raw), repetition_start(raw)) if c is not None]
    return min(cuts) if cuts else None


def answer_is_over(raw: str) -> bool:
    """Whether the model has begun re-listing its sources or repeating a sentence it already said."""
    return _answer_end(raw) is not None


def trim_generated(raw: str) -> str:
    """The model's answer up to where it began re-listing its numbered sources or repeating itself, if it did."""
    cut = _answer_end(raw)
    return (raw if cut is None else raw[:cut]).strip()


def until_answer_ends(pieces: Iterable[str]) -> Iterator[str]:
    """Pass the model's pieces through and stop reading once it re-lists its sources or repeats itself: a small model
    loops until its token limit after answering. Both can only show at a piece that ends a sentence or a line."""
    text = ""
    for piece in pieces:
        yield piece
        text += piece
        if any(c in piece for c in ".!?\n") and answer_is_over(text):
            return


def model_pieces(
    settings: Settings, engine: Any, messages: list[ChatMessage], *, stop: threading.Event | None = None,
    observe: bool = False
) -> Iterator[str]:
    """The model's answer to `messages`, piece by piece, within llm.timeout_s and llm.first_token_timeout_s and
    (with llm.stop_on_loop) ending where it starts to loop. `observe`: count it in the generation metrics, as
    customers' answers are. Closing it stops the model."""
    generation = guarded_stream(
        engine, messages, max_new_tokens=settings.llm.max_new_tokens, stop=stop,
        timeout_s=settings.llm.timeout_s, first_token_timeout_s=settings.llm.first_token_timeout_s,
    )
    observed = metrics.observe_generation(generation, count_tokens=engine.count_tokens) if observe else generation
    try:
        yield from until_answer_ends(observed) if settings.llm.stop_on_loop else observed
    finally:
        observed.close()
        generation.close()

"""The retrieve step: the help-center entries for a question (read with the one before when it is a follow-up),
and the related questions offered when the bot declines."""

from __future__ import annotations

import re
from typing import Any

from support_bot.chat.screening import Guards
from support_bot.chat.turn import Turn
from support_bot.core.config import Settings

_FOLLOW_UP_START = re.compile(r"^\W*(and|but|also|so|or|plus|then|what about|how about|what if)\b", re.I)
_REFERRING = re.compile(
    r"\b(it|its|it's|that|this|those|these|they|them|their|there|one|ones|same|such|he|she|him|her|his)\b", re.I
)


def looks_like_follow_up(text: str) -> bool:
    """Whether a question seems to lean on the one before: it opens like a continuation ("and for kids?", "what
    about express?"), refers back ("is it free?", "how long does that take?") or is only a few words."""
    words = re.findall(r"[\w']+", text)
    return bool(_FOLLOW_UP_START.search(text) or _REFERRING.search(text) or len(words) <= 3)


def retrieve(turn: Turn, retriever: Any) -> Any:
    """The retriever's result for the turn's question: hits and whether it abstains. Raises SupportBotError."""
    settings, text = turn.settings, turn.question.text
    # Enough hits for the answer and for the related questions of a decline.
    k = max(settings.retrieval.top_k, settings.retrieval.related_questions)
    result = retriever.search(text, k=k)
    history = turn.memory.history
    if result.abstain and history and looks_like_follow_up(text):
        # A follow-up ("and for kids?") may only make sense with the previous question. A question that
        # stands on its own is not read with it: the earlier question's words would win the search and the
        # customer would be answered the earlier question again.
        previous = next((m.content for m in reversed(history) if m.role == "user"), "")
        retry = retriever.search(f"{previous} {text}", k=k)
        if not retry.abstain:
            result = retry
    return result


def related_questions(settings: Settings, hits: list[Any], guards: Guards) -> list[dict[str, Any]]:
    """The questions of the closest entries, offered when the bot declines: the customer may have meant one.

    Only entries with a question (title) that score at least retrieval.related_min_score, none that carry
    instructions aimed at the model, one per distinct question, at most retrieval.related_questions.
    """
    cfg = settings.retrieval
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for hit in hits:
        if len(out) >= cfg.related_questions:
            break
        question = " ".join((hit.title or "").split())[:300]
        if not question or hit.score < cfg.related_min_score or question.casefold() in seen:
            continue
        if settings.safety.enabled and guards.source_drop_verdict(hit) is not None:
            continue
        seen.add(question.casefold())
        out.append({"question": question, "source": hit.source, "entry_id": hit.entry_id, "url": hit.url})
    return out

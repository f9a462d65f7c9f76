"""Ask the knowledge base as ops: what a customer asking this would get, and why, with nothing stored.

Runs the assistant's own steps for a first message of a new conversation (input guard, handoff triggers, hybrid
retrieval, answer-or-abstain, source screening, prompt, generation, grounding, output guard) and reports each step's
outcome instead of streaming, storing a conversation or recording safety events: ops testing the knowledge base are
not customers, and their questions must not show up in the analytics or the handoff queue.
"""

from __future__ import annotations

import logging
from contextlib import closing
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import func, select

from support_bot import handoff
from support_bot.chat.generate import model_pieces, trim_generated
from support_bot.chat.prompt import build_prompt
from support_bot.chat.replies import ERROR_TEXT, abstain_text
from support_bot.chat.retrieve import related_questions
from support_bot.chat.screening import redact
from support_bot.chat.service import Assistant
from support_bot.chat.small_talk import small_talk
from support_bot.chat.verify import AnswerVerifier, verify_whole
from support_bot.core.db import session_scope
from support_bot.core.errors import InvalidInput, SupportBotError
from support_bot.models import Conversation

log = logging.getLogger(__name__)

# How many retrieved entries ops may ask to see (the answer itself only ever uses retrieval.top_k of them).
MAX_ENTRIES = 20

OUTCOMES = ("answer", "abstain", "blocked", "handoff", "error", "small_talk")


@dataclass
class PreviewEntry:
    """One retrieved entry with its scores and what became of it."""

    rank: int
    chunk_id: str
    source: str
    entry_id: str | None
    title: str | None
    text: str
    url: str | None
    # The fused score the abstain decision and the ranking use, and the signals it is made of.
    score: float
    dense_score: float
    lexical_score: float
    # Within retrieval.top_k, so it would go into the prompt (unless dropped).
    used: bool
    # Why the safety screen would keep it out of the prompt (instructions aimed at the model), if it would.
    dropped: str | None = None


@dataclass
class AnswerPreview:
    question: str
    # answer | abstain | blocked | handoff | error
    outcome: str
    # What the customer would be shown.
    reply: str
    entries: list[PreviewEntry] = field(default_factory=list)
    abstain: bool | None = None
    abstain_reason: str | None = None
    index_version: int | None = None
    # The input guard's verdict: {action, category, score, reason}; None with the safety filter off.
    safety: dict[str, Any] | None = None
    # Why the chat would go to a person: {reason, detail}.
    handoff: dict[str, str] | None = None
    citations: list[dict[str, Any]] = field(default_factory=list)
    # The help-center questions offered when the bot declines (as in chat).
    related: list[dict[str, Any]] = field(default_factory=list)
    # The model's own wording before grounding, and the output guard's replacement if it stepped in.
    raw_answer: str | None = None
    output_guard: dict[str, str] | None = None
    # Whether the reply quotes the best entry because no sentence of the model's could be verified, and why the
    # model's part ended where it did.
    quoted: bool = False
    stopped: str | None = None
    error: str | None = None

    def payload(self) -> dict[str, Any]:
        return asdict(self)


def _handoff_reply(assistant: Assistant, trigger: handoff.Trigger, *, prefix: str = "") -> tuple[str, dict[str, str]]:
    """The text a customer queued now would read (their place counts the chats already waiting)."""
    settings = assistant.settings
    with session_scope(settings) as session:
        online = handoff.agents_online(session, settings)
        waiting = session.scalar(
            select(func.count()).select_from(Conversation).where(Conversation.status == "queued")
        ) or 0
    position = waiting + 1
    info = handoff.QueueInfo(
        "queued", position, handoff.estimate_wait_s(settings, position=position, online=online), online
    )
    text = handoff.handoff_text(settings, info)
    return (f"{prefix}\n\n{text}" if prefix else text), {"reason": trigger.reason, "detail": trigger.detail}


def preview_answer(assistant: Assistant, question: str, *, k: int | None = None) -> AnswerPreview:
    """What the bot would answer `question` as the first message of a new conversation, step by step."""
    settings = assistant.settings
    text = assistant.validate_text(question)
    top_k = settings.retrieval.top_k
    k = top_k if k is None else k
    if not 1 <= k <= MAX_ENTRIES:
        raise InvalidInput(f"k must be between 1 and {MAX_ENTRIES}")
    # The model and the retriever see the text as it would be stored (PII redacted when configured).
    shown = redact(settings, text)
    preview = AnswerPreview(question=shown, outcome="answer", reply="")

    caution = None
    if settings.safety.enabled:
        from support_bot.safety.policy import caution_note

        verdict = assistant.guards.input.check(text, history=[])
        preview.safety = {
            "action": verdict.action, "category": verdict.category, "score": round(float(verdict.score), 4),
            "reason": verdict.reason,
        }
        trigger = handoff.safety_trigger(settings, category=verdict.category) if verdict.action == "handoff" else None
        if trigger is not None:
            preview.outcome = "handoff"
            preview.reply, preview.handoff = _handoff_reply(assistant, trigger, prefix=verdict.reply or "")
            return preview
        if verdict.action in ("block", "handoff"):
            # A blocked question is refused before retrieval: ops see the refusal, never an answer.
            preview.outcome, preview.reply = "blocked", verdict.reply or ""
            return preview
        if verdict.action == "caution":
            caution = caution_note(settings, verdict.category)

    trigger = handoff.message_trigger(settings, text=text, previous_customer_texts=[], bot_turns=0)
    if trigger is not None:
        preview.outcome = "handoff"
        preview.reply, preview.handoff = _handoff_reply(assistant, trigger)
        return preview

    talk = small_talk(text) if settings.chat.small_talk else None
    if talk is not None:
        # A greeting, thanks or goodbye on its own gets a polite reply; the help center is not searched.
        preview.outcome, preview.reply = "small_talk", talk.reply
        return preview

    try:
        result = assistant.retriever.search(shown, k=max(k, top_k))
    except SupportBotError as exc:
        preview.outcome, preview.reply, preview.error = "error", ERROR_TEXT, exc.detail
        return preview
    preview.abstain, preview.abstain_reason = result.abstain, result.reason
    preview.index_version = result.index_version
    used = result.hits[:top_k]
    for rank, hit in enumerate(result.hits[:k], start=1):
        preview.entries.append(
            PreviewEntry(
                rank=rank, chunk_id=hit.chunk_id, source=hit.source, entry_id=hit.entry_id, title=hit.title,
                text=hit.text, url=hit.url, score=round(hit.score, 4), dense_score=round(hit.dense_score, 4),
                lexical_score=round(hit.lexical_score, 4), used=rank <= top_k,
            )
        )

    if result.abstain or not used:
        _abstain(assistant, preview, related_questions(settings, result.hits, assistant.guards))
        return preview

    hits = used
    if settings.safety.enabled:
        hits = []
        for hit, entry in zip(used, preview.entries):
            dropped = assistant.guards.source_drop_verdict(hit)
            if dropped is None:
                hits.append(hit)
            else:
                entry.dropped = f"{dropped.category}: {dropped.reason}"
        if not hits or hits[0] is not used[0]:
            # As in chat: with the matching entry dropped, the bot declines rather than answer from the next one.
            _abstain(assistant, preview, related_questions(settings, result.hits, assistant.guards))
            return preview

    from support_bot.safety.output_guard import make_canary

    canary = make_canary()
    try:
        engine = assistant.engine
        messages = build_prompt(settings, engine, hits, [], shown, caution=caution, canary=canary)
        # The customer path's deadlines and loop stop: a silent or wedged model ends the preview with an error, not a
        # hung page. Not counted in the generation metrics: ops are not customers.
        with closing(model_pieces(settings, engine, messages)) as pieces:
            raw = trim_generated("".join(pieces))
    except SupportBotError as exc:
        preview.outcome, preview.reply, preview.error = "error", ERROR_TEXT, exc.detail
        return preview
    except Exception as exc:  # the page says what went wrong; the server keeps serving
        log.exception("generation failed in the knowledge tester")
        preview.outcome, preview.reply, preview.error = "error", ERROR_TEXT, f"{type(exc).__name__}: {exc}"
        return preview

    # The same sentence-by-sentence checks as chat: what the customer would see is what passes them.
    verifier = verify_whole(
        AnswerVerifier(
            settings, hits, assistant.guards if settings.safety.enabled else None, question=shown,
            customer_texts=[text], system_prompt=messages[0].content, canary=canary,
        ),
        raw,
    )
    if verifier.events:
        category, reason, _text = verifier.events[0]
        preview.output_guard = {"category": category, "reason": reason}
    ending, citations, quoted = verifier.ending()
    preview.raw_answer, preview.reply, preview.citations = raw, " ".join(verifier.shown) + ending, citations
    preview.quoted, preview.stopped = quoted, verifier.stopped
    return preview


def _abstain(assistant: Assistant, preview: AnswerPreview, related: list[dict] | None = None) -> None:
    """The first abstention of a conversation: the offer of a person, or the handoff when set to happen at once."""
    trigger = handoff.abstain_trigger(assistant.settings, abstain_streak=0)
    if trigger is not None:
        preview.outcome = "handoff"
        preview.reply, preview.handoff = _handoff_reply(assistant, trigger)
        return
    preview.outcome, preview.reply, preview.related = "abstain", abstain_text(related or []), related or []

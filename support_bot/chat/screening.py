"""The safety steps of a turn: the input guard on the customer's message, screening retrieved entries for
instructions aimed at the model, and the safety events they record (the output guard runs in verify.py)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

from support_bot import handoff
from support_bot.chat.replies import fixed_reply, handoff_reply
from support_bot.chat.turn import Turn, TurnEvent
from support_bot.core.config import Settings
from support_bot.core.db import session_scope
from support_bot.models import SafetyEvent
from support_bot.ops import metrics

_INJECTION_CATEGORIES = frozenset({"prompt_injection", "jailbreak", "system_prompt_extraction", "obfuscation"})

# Output guard findings after which nothing the model wrote in that answer is trusted, not even the verified part
# still to come. Personal data the model made up (a phone number no source gives) is not among them: that sentence is
# dropped like any unsupported one, and what was verified before it stands.
UNTRUSTWORTHY_OUTPUT = frozenset(
    {"system_prompt_leak", "jailbreak_output", "abuse", "unsafe_content", "indirect_injection"}
)


# Verdicts on knowledge entries kept for reuse: far more than the entries that answer most questions.
MAX_SOURCE_VERDICTS = 20_000


class Guards:
    """The input and output guards, each built on first use, and the input guard's verdicts on knowledge entries."""

    def __init__(self, settings: Callable[[], Settings]):
        self._settings = settings
        self._input = None
        self._output = None
        self._lock = threading.Lock()
        # Verdicts on knowledge entries, by chunk id (entries only change by getting new ids); the least recently
        # used are forgotten past MAX_SOURCE_VERDICTS, so re-indexing again and again cannot grow it without bound.
        self._source_verdicts: OrderedDict[str, Any] = OrderedDict()
        self._verdicts_lock = threading.Lock()

    # Built, and their modules imported, only when first needed: they load models and attack libraries.
    @property
    def input(self):
        if self._input is None:
            with self._lock:
                if self._input is None:
                    from support_bot.safety import InputGuard

                    self._input = InputGuard(self._settings())
        return self._input

    @property
    def output(self):
        if self._output is None:
            with self._lock:
                if self._output is None:
                    from support_bot.safety import OutputGuard

                    self._output = OutputGuard(self._settings())
        return self._output

    def warm_up(self) -> None:
        self.input.warm_up()
        self.output  # noqa: B018

    def source_drop_verdict(self, hit: Any) -> Any | None:
        """The input guard's verdict on an entry when it carries instructions aimed at the model, else None."""
        with self._verdicts_lock:
            verdict = self._source_verdicts.get(hit.chunk_id)
            if verdict is not None:
                self._source_verdicts.move_to_end(hit.chunk_id)
        if verdict is None:
            verdict = self.input.check(hit.text, entry=True)
            with self._verdicts_lock:
                self._source_verdicts[hit.chunk_id] = verdict
                while len(self._source_verdicts) > MAX_SOURCE_VERDICTS:
                    self._source_verdicts.popitem(last=False)
        if verdict.action in ("block", "handoff") and verdict.category in _INJECTION_CATEGORIES:
            return verdict
        return None


def redact(settings: Settings, text: str) -> str:
    """The customer's text as stored and shown to the model: PII replaced when configured."""
    safety = settings.safety
    if not safety.redact_pii:
        return text
    from support_bot.safety.pii import redact

    return redact(text, kinds=set(safety.pii_kinds)).text


def record_safety_event(
    settings: Settings, *, conversation_id: str | None, message_id: str | None, direction: str, category: str,
    action: str, score: float, reason: str, text: str,
) -> None:
    from support_bot.safety.pii import redact

    with session_scope(settings) as session:
        session.add(
            SafetyEvent(
                conversation_id=conversation_id, message_id=message_id, direction=direction, category=category,
                action=action, score=float(score), reason=reason[:2000], excerpt=redact(text).text[:300],
            )
        )
    metrics.safety_event(direction=direction, category=category, action=action)


def check_input(turn: Turn, guards: Guards) -> Iterator[TurnEvent] | None:
    """The input guard on the customer's message: the refusal or handoff that ends the turn, or None to go on (with
    the turn's caution set when the message is let through with care)."""
    settings = turn.settings
    if not settings.safety.enabled:
        return None
    from support_bot.safety.policy import caution_note

    previous = turn.memory.customer_texts()[-settings.safety.history_turns :]
    verdict = guards.input.check(turn.original, history=previous)
    if verdict.action != "allow":
        record_safety_event(
            settings, conversation_id=turn.conversation_id, message_id=turn.question.id, direction="input",
            category=verdict.category, action=verdict.action, score=verdict.score, reason=verdict.reason,
            text=turn.original,
        )
    trigger = handoff.safety_trigger(settings, category=verdict.category) if verdict.action == "handoff" else None
    if trigger is not None:
        return handoff_reply(turn, trigger, prefix=verdict.reply or "")
    if verdict.action in ("block", "handoff"):
        return fixed_reply(turn, verdict.reply or "", abstained=False)
    if verdict.action == "caution":
        turn.caution = caution_note(settings, verdict.category)
    return None


def screen_sources(turn: Turn, hits: list[Any], guards: Guards) -> list[Any]:
    """Drop retrieved entries that carry instructions aimed at the model (indirect injection)."""
    if not turn.settings.safety.enabled:
        return hits
    kept = []
    for hit in hits:
        verdict = guards.source_drop_verdict(hit)
        if verdict is not None:
            record_safety_event(
                turn.settings, conversation_id=turn.conversation_id, message_id=None, direction="source",
                category=verdict.category, action="dropped", score=verdict.score,
                reason=f"entry {hit.entry_id or hit.chunk_id}: {verdict.reason}", text=hit.text,
            )
            continue
        kept.append(hit)
    return kept

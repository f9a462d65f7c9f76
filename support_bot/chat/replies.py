"""The replies that need no model: the bot declining (with related questions), handing the chat to a person, and
apologising for a failed model. Each streams word by word like a generated answer and is stored like one."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from support_bot import handoff
from support_bot.chat.store import done_payload, store_reply
from support_bot.chat.turn import Turn, TurnEvent
from support_bot.core.config import Settings
from support_bot.core.db import session_scope
from support_bot.core.errors import Conflict
from support_bot.models import Conversation, Message

ABSTAIN_TEXT = (
    "I'm sorry, I couldn't find an answer to that in our help center, and I don't want to guess. "
    "Would you like me to connect you with a person?"
)
RELATED_TEXT = (
    "I'm sorry, I couldn't find an exact answer to that in our help center, and I don't want to guess. "
    "These questions from our help center may be related:"
)
RELATED_OFFER = "If one of them is what you meant, pick it. If not, would you like me to connect you with a person?"
ANYTHING_ELSE = "Is there anything else I can help you with?"
DECLINED_OFFER_TEXT = f"Alright. {ANYTHING_ELSE}"
ERROR_TEXT = "I'm sorry, something went wrong while I was answering. Please try again, or ask to talk to a person."
# Said when the model failed or timed out; the handoff text (or the offer of a person) follows it.
MODEL_FAILURE_TEXT = "I'm sorry, I'm having trouble answering right now."
MODEL_FAILURE_OFFER = "Would you like me to connect you with a person? Just say so, or press the button to talk to one."


def abstain_text(related: list[dict[str, Any]]) -> str:
    """The reply when the bot declines: the offer of a person, after the related questions when there are any."""
    if not related:
        return ABSTAIN_TEXT
    items = "\n".join(f"- {r['question']}" for r in related)
    return f"{RELATED_TEXT}\n\n{items}\n\n{RELATED_OFFER}"


def offers_person(settings: Settings, message: Message | None) -> bool:
    """Whether this bot message ended by offering to connect the customer with a person."""
    if message is None or message.role != "bot":
        return False
    text = message.text.strip()
    return bool(message.abstained) or text.endswith(MODEL_FAILURE_OFFER) or (
        text == settings.safety.fallback_text.strip()
    )


def _words(text: str) -> Iterator[TurnEvent]:
    for piece in re.findall(r"\S+\s*", text):
        yield TurnEvent("token", {"text": piece})


def fixed_reply(
    turn: Turn, text: str, *, abstained: bool, summarize: bool = False, related: list[dict[str, Any]] | None = None
) -> Iterator[TurnEvent]:
    """A reply that needs no model (abstain, refusal), streamed word by word like a generated one."""
    yield from _words(text)
    reply = store_reply(turn.settings, turn.question, text, [], abstained=abstained, related=related)
    yield TurnEvent("done", done_payload(reply))
    if summarize:
        turn.summaries.refresh_later(turn.conversation_id)


def abstain(
    turn: Turn, *, summarize: bool = False, related: list[dict[str, Any]] | None = None
) -> Iterator[TurnEvent]:
    """Say the bot has no answer (offering related questions); once too often in a row, hand the chat to a
    person instead."""
    trigger = handoff.abstain_trigger(turn.settings, abstain_streak=turn.memory.abstain_streak)
    if trigger is not None:
        yield from handoff_reply(turn, trigger, abstained=True)
        return
    yield from fixed_reply(
        turn, abstain_text(related or []), abstained=True, summarize=summarize, related=related or None
    )


def handoff_reply(
    turn: Turn, trigger: handoff.Trigger, *, prefix: str = "", abstained: bool = False
) -> Iterator[TurnEvent]:
    """Queue the chat for a person, tell the customer where they stand, and have the agent's summary written."""
    settings = turn.settings
    with session_scope(settings) as session:
        conversation = session.get(Conversation, turn.conversation_id)
        try:
            info = handoff.start_handoff(session, settings, conversation, reason=trigger.reason, detail=trigger.detail)
        except Conflict:
            # Someone queued or took the chat meanwhile (the button, an agent): say where it stands now.
            session.rollback()
            session.refresh(conversation)
            info = handoff.queue_info(session, settings, conversation)
    text = handoff.handoff_text(settings, info)
    if prefix:
        text = f"{prefix}\n\n{text}"
    yield from _words(text)
    reply = store_reply(settings, turn.question, text, [], abstained=abstained)
    yield TurnEvent("done", {**done_payload(reply, handoff=True), **info.payload()})
    turn.summaries.agent_summary_later(turn.conversation_id)


def handoff_if_called_for(turn: Turn) -> Iterator[TurnEvent] | None:
    """The handoff reply when the message calls for a person (asks for one, is upset, too many turns), else None."""
    bot_turns = turn.memory.bot_turns
    # Only this episode's earlier messages count: one answered question per bot turn since the bot took the chat.
    previous = turn.memory.customer_texts()[-bot_turns:] if bot_turns else []
    trigger = handoff.message_trigger(
        turn.settings, text=turn.original, previous_customer_texts=previous, bot_turns=bot_turns
    )
    return handoff_reply(turn, trigger) if trigger is not None else None


def model_failure_reply(turn: Turn, detail: str) -> Iterator[TurnEvent]:
    """The model failed mid-turn: apologise, and queue the chat for a person (or offer one when that is off).

    The reply is stored like any other, replacing whatever pieces were streamed, so the conversation goes on and a
    re-post of the same client_message_id gets this answer instead of waiting for one that will not come.
    """
    trigger = handoff.model_failure_trigger(turn.settings, detail=detail)
    if trigger is None:
        yield from fixed_reply(turn, f"{MODEL_FAILURE_TEXT} {MODEL_FAILURE_OFFER}", abstained=False)
        return
    yield from handoff_reply(turn, trigger, prefix=MODEL_FAILURE_TEXT)

"""The message store of the chat: conversations and their tokens, each customer message stored once per client id,
the bot's replies, and which answers this process dropped so that a re-post of the question is answered at once."""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import OrderedDict
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from support_bot import handoff
from support_bot.core.config import Settings
from support_bot.core.db import session_scope
from support_bot.core.errors import Conflict, Forbidden, NotFound, SupportBotError
from support_bot.core.security import hash_token, sign_customer_id
from support_bot.models import Conversation, Customer, Message, utcnow

# How many dropped answers are remembered; the oldest are forgotten first.
_MAX_ABANDONED = 10_000


def start_conversation(
    *, session: Session, settings: Settings, customer_id: str | None = None, signature: str | None = None
) -> tuple[Conversation, str]:
    """Create a conversation; returns it with its bearer token (shown once, stored hashed)."""
    customer = None
    if customer_id is not None:
        secret = settings.customer_hmac_secret
        if not secret:
            raise Forbidden("identified customers are not enabled on this server (no customer HMAC secret is set)")
        if not signature or not hmac.compare_digest(sign_customer_id(customer_id, secret), signature):
            raise Forbidden("the customer signature does not match the customer id")
        customer = session.scalar(select(Customer).where(Customer.external_id == customer_id))
        if customer is None:
            customer = Customer(external_id=customer_id)
            session.add(customer)
            session.flush()
    token = secrets.token_urlsafe(32)
    conversation = Conversation(token_hash=hash_token(token), customer_id=customer.id if customer else None)
    session.add(conversation)
    session.flush()
    return conversation, token


def authorize(*, session: Session, conversation_id: str, token: str | None) -> Conversation:
    """The conversation if the token is its own; NotFound otherwise, revealing nothing."""
    conversation = session.get(Conversation, conversation_id) if conversation_id else None
    if conversation is None or not token or not hmac.compare_digest(conversation.token_hash, hash_token(token)):
        raise NotFound("conversation not found")
    return conversation


def record_customer_message(
    settings: Settings, *, conversation_id: str, text: str, client_message_id: str | None
) -> tuple[Message, Message | None, bool]:
    """Store the customer's message once per client_message_id: (message, its reply if any, created now)."""
    for _attempt in range(2):
        with session_scope(settings) as session:
            if client_message_id:
                existing = session.scalar(
                    select(Message).where(
                        Message.conversation_id == conversation_id,
                        Message.client_message_id == client_message_id,
                    )
                )
                if existing is not None:
                    reply = session.scalar(select(Message).where(Message.reply_to_id == existing.id))
                    return existing, reply, False
            msg = Message(
                conversation_id=conversation_id, role="customer", text=text, client_message_id=client_message_id
            )
            session.add(msg)
            try:
                session.flush()
            except IntegrityError:
                # A concurrent post with the same client_message_id won the insert: read theirs.
                session.rollback()
                continue
            handoff.emit_message(session, msg)
            return msg, None, True
    raise SupportBotError("could not store the message; please retry")


class AbandonedAnswers:
    """Questions whose answer this process began and dropped because the customer went away mid-stream (a lost
    connection, the stop button): a re-post of one is answered at once, not after waiting for that answer."""

    def __init__(self) -> None:
        self._keys: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def mark(self, question_id: str) -> None:
        with self._lock:
            self._keys[question_id] = None
            while len(self._keys) > _MAX_ABANDONED:
                self._keys.popitem(last=False)

    def mark_post(self, conversation_id: str, client_message_id: str) -> None:
        """The post itself failed, though its message may be stored all the same."""
        self.mark(_post_key(conversation_id, client_message_id))

    def take_over(self, question: Message) -> bool:
        """True for one caller only when this process dropped the answer to `question` (or the post that stored it)."""
        keys = [question.id]
        if question.client_message_id:
            keys.append(_post_key(question.conversation_id, question.client_message_id))
        with self._lock:
            found = [key for key in keys if key in self._keys]
            for key in found:
                del self._keys[key]
            return bool(found)


def _post_key(conversation_id: str, client_message_id: str) -> str:
    return f"post:{conversation_id}:{client_message_id}"


def wait_for_reply(settings: Settings, question: Message, abandoned: AbandonedAnswers) -> Message | None:
    """A re-post of a message still being answered waits for that answer (bounded by the model timeout)."""
    # created_at is aware UTC (UtcDateTime), so its epoch seconds are right in any local time zone.
    created = question.created_at.timestamp() if question.created_at else 0.0
    deadline = created + settings.llm.timeout_s
    while True:
        reply = _reply_to(settings, question)
        if reply is not None or time.time() >= deadline or abandoned.take_over(question):
            return reply
        time.sleep(0.2)


def _reply_to(settings: Settings, question: Message) -> Message | None:
    with session_scope(settings) as session:
        return session.scalar(select(Message).where(Message.reply_to_id == question.id))


def episode_status(settings: Settings, conversation_id: str) -> str | None:
    """The conversation's status for this turn; a resolved one the customer writes to again reopens with the bot."""
    with session_scope(settings) as session:
        conversation = session.get(Conversation, conversation_id)
        if conversation is None:
            return None
        if conversation.status == "resolved":
            try:
                handoff.reopen(session, settings, conversation)
            except Conflict:
                session.refresh(conversation)
        return conversation.status


def store_reply(
    settings: Settings, question: Message, text: str, citations: list, *, abstained: bool, related: list | None = None
) -> Message:
    """The store step: the bot's reply to `question`, counted for the abstain and too-many-turns triggers.

    A question has one reply (unique reply_to_id): when another request stored one first, that one is returned.
    """
    try:
        return _insert_reply(settings, question, text, citations, abstained=abstained, related=related)
    except IntegrityError:
        existing = _reply_to(settings, question)
        if existing is None:
            raise  # some other constraint (the conversation is gone)
        return existing


def _insert_reply(
    settings: Settings, question: Message, text: str, citations: list, *, abstained: bool, related: list | None
) -> Message:
    with session_scope(settings) as session:
        reply = Message(
            conversation_id=question.conversation_id,
            role="bot",
            text=text,
            reply_to_id=question.id,
            citations=citations,
            abstained=abstained,
            related=related,
        )
        session.add(reply)
        conversation = session.get(Conversation, question.conversation_id)
        if conversation is not None:
            conversation.updated_at = utcnow()
            if conversation.status == "bot":
                # The counts behind the abstain and too-many-turns triggers, for this episode only.
                conversation.bot_turns += 1
                conversation.abstain_streak = conversation.abstain_streak + 1 if abstained else 0
        session.flush()
        handoff.emit_message(session, reply)
        return reply


# How a reply that quotes the best entry begins (verify.py): the help center's text, not the bot's own answer.
QUOTE_INTRO = "From our help center:"


def done_payload(reply: Message, *, handoff: bool = False) -> dict[str, Any]:
    """The done event of a turn answered with `reply`; `quoted` says the reply is an entry quoted whole."""
    return {
        "message_id": reply.id,
        "text": reply.text,
        "citations": reply.citations or [],
        "abstained": bool(reply.abstained),
        "related": reply.related or [],
        "handoff": handoff,
        "quoted": bool(reply.role == "bot" and reply.citations and reply.text.startswith(QUOTE_INTRO)),
    }


def silent_payload(settings: Settings, conversation_id: str) -> dict[str, Any]:
    """The done event of a message the bot does not answer because a person has the chat."""
    with session_scope(settings) as session:
        conversation = session.get(Conversation, conversation_id)
        info = handoff.queue_info(session, settings, conversation)
    return {
        "message_id": None, "text": "", "citations": [], "abstained": False, "related": [], "handoff": True, "quoted": False,
        **info.payload(),
    }

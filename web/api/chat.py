"""The public chat API (shared/API.md): conversations, streamed messages, history, feedback."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from typing import Annotated, Literal

import anyio
from fastapi import APIRouter, Body, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field, field_validator
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from support_bot import handoff
from support_bot.chat.service import Assistant
from support_bot.chat.store import authorize, start_conversation
from support_bot.chat.turn import PENDING, TurnEvent
from support_bot.core.config import Settings
from support_bot.core.db import session_scope
from support_bot.core.errors import InvalidInput, NotFound, SupportBotError
from support_bot.core.ratelimit import RateLimited, check
from support_bot.core.threads import run_below_event_loop, torch_on_one_thread
from support_bot.live import events
from support_bot.llm.base import Wakeup
from support_bot.models import Conversation, Feedback, Message
from web.deps import AssistantDep, SessionDep, SettingsDep, TokenDep
from web.middleware.public_api import conversation_limit, rate_limited_response

router = APIRouter(prefix="/api", tags=["chat"])
log = logging.getLogger(__name__)

# What the customer is told when a turn fails for a reason of ours (most often the database going away for a moment).
RETRY_TEXT = "Your message could not be processed just now. Please send it again."
# A step of a turn on a worker thread reads events for at most this long before handing them to the stream.
STEP_S = 0.02
# Turn steps running at once, whatever the number of open answers: what the CPU cores can run. More only queue for
# the interpreter lock in front of the event loop (500 open chats on 2 cores: /healthz p99 11.7 ms with 2 at once,
# 13.4-14.0 ms with 4, the same answers per second).
TURN_STEPS = max(2, os.cpu_count() or 1)
# How often a re-post of a message still being answered looks for that answer.
REPOST_POLL_S = 0.2
_HEX = re.compile(r"[0-9A-Fa-f]+")


class CustomerIn(BaseModel):
    id: str = Field(min_length=1, max_length=255)
    signature: str = Field(min_length=1, max_length=256)

    @field_validator("signature")
    @classmethod
    def _hex_signature(cls, value: str) -> str:
        # Anything else can never match, and a non-ASCII one would not even compare.
        if not _HEX.fullmatch(value):
            raise ValueError("the signature must be the hex HMAC-SHA256 of the customer id")
        return value


class ConversationCreate(BaseModel):
    customer: CustomerIn | None = None


class ConversationCreated(BaseModel):
    id: str
    token: str


class MessageCreate(BaseModel):
    text: str = Field(max_length=100_000)
    client_message_id: str | None = Field(default=None, max_length=64)


class FeedbackIn(BaseModel):
    rating: Literal["up", "down"]
    comment: str | None = Field(default=None, max_length=4000)


class HandoffIn(BaseModel):
    reason: str | None = Field(default=None, max_length=500)


class OfflineIn(BaseModel):
    message: str = Field(max_length=100_000)
    email: str = Field(max_length=1000)


class RatingIn(BaseModel):
    rating: int = Field(ge=1, le=5)
    comment: str | None = Field(default=None, max_length=4000)


class TypingIn(BaseModel):
    typing: bool = True


# _release: the customer-facing handlers here commit (or, reading, end their transaction) before they return, in
# their own worker thread. Left to the session dependency, the commit would come only after FastAPI has validated
# the response, which it does on a worker thread too: under a burst of requests every worker can be waiting for a
# database connection (or SQLite's write lock) that such a finished request still holds, and nothing moves until
# the pool's timeout fails them all. The dependency's own commit then finds nothing left to do.


def sse(event: TurnEvent) -> bytes:
    return f"event: {event.event}\ndata: {json.dumps(event.data, ensure_ascii=False)}\n\n".encode()


@router.post("/conversations", status_code=201, response_model=ConversationCreated)
def create_conversation(
    session: SessionDep, settings: SettingsDep, body: Annotated[ConversationCreate | None, Body()] = None
):
    """Start a conversation and return its id and bearer token."""
    customer = body.customer if body else None
    conversation, token = start_conversation(
        session=session,
        settings=settings,
        customer_id=customer.id if customer else None,
        signature=customer.signature if customer else None,
    )
    session.commit()  # in this thread: see _release
    return ConversationCreated(id=conversation.id, token=token)


@router.post("/conversations/{conversation_id}/messages")
def create_message(
    conversation_id: str,
    body: MessageCreate,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    token: TokenDep,
    assistant: AssistantDep,
):
    """Post a customer message; the answer streams back as server-sent events."""
    # A plain def: the token check's database work runs in the threadpool, not on the event loop.
    authorize(session=session, conversation_id=conversation_id, token=token)
    # Counted only once the token is right: a stranger who knows the id cannot use up the customer's allowance.
    # The limits as the rate-limit middleware reads them (the app's own settings).
    limits = request.app.state.settings
    limiter = getattr(request.app.state, "rate_limiter", None)
    if limiter is not None and limits.widget.rate_limit_enabled:
        try:
            check(limiter, [conversation_limit(limits, conversation_id)], what="messages")
        except RateLimited as exc:
            return rate_limited_response(exc)
    text = assistant.validate_text(body.text)
    session.close()
    stop = threading.Event()

    async def stream():
        try:
            if body.client_message_id:
                await _earlier_answer(assistant, settings, conversation_id, body.client_message_id)
            turn = assistant.turn(
                conversation_id=conversation_id, text=text, client_message_id=body.client_message_id, stop=stop
            )
            async with aclosing(_without_a_thread(turn, stop, _turn_steps(request.app))) as turn_events:
                async for event in turn_events:
                    yield sse(event)
        except SupportBotError as exc:
            yield sse(TurnEvent("error", {"detail": exc.detail}))
        except Exception:
            # The 200 is already sent, so the failure is an event: without a `done` nothing was acknowledged, and a
            # re-post with the same client_message_id stores the message once and answers it.
            log.exception("a customer turn in conversation %s failed", conversation_id)
            yield sse(TurnEvent("error", {"detail": RETRY_TEXT}))
        finally:
            # Also reached when the customer goes away or presses stop: generation ends, what was stored stays.
            stop.set()

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _steps(wakeup: Wakeup, turn: Iterator[TurnEvent]) -> tuple[list[TurnEvent], str]:
    """The turn's next events, read until it has nothing more yet or for at most STEP_S; and why it stopped there:
    "pending" (the model has written nothing new), "end" (the turn is over) or "more"."""
    run_below_event_loop()
    torch_on_one_thread()  # a query's embedding must not cost the model its cores' thread team
    events: list[TurnEvent] = []
    started = time.monotonic()
    while True:
        try:
            event = wakeup.step(turn)
        except StopIteration:
            return events, "end"
        if event.event == PENDING:
            return events, "pending"
        events.append(event)
        if time.monotonic() - started >= STEP_S:
            return events, "more"


def _turn_steps(app) -> anyio.CapacityLimiter:
    limiter = getattr(app.state, "turn_steps", None)
    if limiter is None:
        limiter = app.state.turn_steps = anyio.CapacityLimiter(TURN_STEPS)
    return limiter


async def _without_a_thread(
    turn: Iterator[TurnEvent], stop: threading.Event, limiter: anyio.CapacityLimiter
) -> AsyncIterator[TurnEvent]:
    """The turn's events, its steps run on worker threads a short stretch at a time.

    While the model writes, a step that finds no new text returns at once (PENDING) and the stream waits on the
    event loop until the generation thread says more is there: an open answer holds no worker thread between
    pieces, so a few hundred of them leave the pool free for every other request. The steps (retrieval, guards,
    grounding: work for the CPU) run at most TURN_STEPS at a time, outside the pool every other route uses, so that
    a crowd of answers neither starves those routes of threads nor the event loop of the CPU.
    """
    wakeup = Wakeup()
    try:
        while True:
            events, state = await anyio.to_thread.run_sync(_steps, wakeup, turn, limiter=limiter)
            for event in events:
                yield event
            if state == "end":
                return
            if state == "pending":
                await wakeup.wait()
    finally:
        stop.set()
        # Ends generation and marks the answer dropped (a re-post answers it again), even when the client left and
        # this task is being cancelled.
        with anyio.CancelScope(shield=True):
            await run_in_threadpool(turn.close)


def _waiting_question(settings: Settings, conversation_id: str, client_message_id: str) -> Message | None:
    """The stored message with this client id when it has no answer yet and the bot is the one to give it."""
    with session_scope(settings) as session:
        question = session.scalar(
            select(Message).where(
                Message.conversation_id == conversation_id, Message.client_message_id == client_message_id
            )
        )
        if question is None or _answered(session, question):
            return None
        return question


def _answered(session, question: Message) -> bool:
    """Answered, or a person has the chat (the bot stays silent, so no answer is coming)."""
    if session.scalar(select(Message.id).where(Message.reply_to_id == question.id)) is not None:
        return True
    conversation = session.get(Conversation, question.conversation_id)
    return conversation is None or conversation.status in ("queued", "assigned")


def _is_answered(settings: Settings, question: Message) -> bool:
    with session_scope(settings) as session:
        return _answered(session, question)


async def _earlier_answer(assistant: Assistant, settings: Settings, conversation_id: str, client_message_id: str):
    """A re-post of a message another request is still answering waits here, on the event loop, for that answer.

    The turn then finds the answer, or answers itself: once the request answering it dropped it (the customer left)
    or the model's time limit for it has passed, as the turn's own check would decide.
    """
    question = await run_in_threadpool(_waiting_question, settings, conversation_id, client_message_id)
    if question is None:
        return
    created = question.created_at.timestamp() if question.created_at else 0.0
    deadline = created + settings.llm.timeout_s
    while time.time() < deadline:
        if assistant.abandoned.take_over(question):
            assistant.abandoned.mark(question.id)  # handed back, so that the turn takes it over at once
            return
        await asyncio.sleep(REPOST_POLL_S)
        if await run_in_threadpool(_is_answered, settings, question):
            return


@router.get("/conversations/{conversation_id}/messages")
def read_messages(conversation_id: str, session: SessionDep, token: TokenDep):
    """The conversation's messages, oldest first."""
    authorize(session=session, conversation_id=conversation_id, token=token)
    messages = handoff.customer_messages(session, conversation_id)
    session.commit()  # see _release
    return {"messages": messages}


@router.post("/messages/{message_id}/feedback", status_code=204)
def create_feedback(message_id: str, body: FeedbackIn, session: SessionDep, token: TokenDep):
    """Rate one bot answer (thumbs up or down); a second rating replaces the first."""
    message = session.scalar(select(Message).where(Message.id == message_id))
    if message is None:
        raise NotFound("message not found")
    authorize(session=session, conversation_id=message.conversation_id, token=token)
    if message.role not in ("bot", "agent"):
        raise InvalidInput("only answers from the bot or an agent can be rated")
    existing = session.scalar(select(Feedback).where(Feedback.message_id == message_id))
    if existing is None:
        session.add(Feedback(message_id=message_id, rating=body.rating, comment=body.comment))
    else:
        existing.rating, existing.comment = body.rating, body.comment
    if body.rating == "up" and message.role == "bot":
        handoff.mark_helpful(session.get(Conversation, message.conversation_id))
    session.commit()  # see _release
    return Response(status_code=204)


@router.post("/conversations/{conversation_id}/handoff")
def create_handoff(
    conversation_id: str,
    session: SessionDep,
    settings: SettingsDep,
    token: TokenDep,
    assistant: AssistantDep,
    body: Annotated[HandoffIn | None, Body()] = None,
):
    """The "talk to a person" button: queue the conversation and say where the customer stands."""
    conversation = authorize(session=session, conversation_id=conversation_id, token=token)
    was_queued = conversation.status == "queued"
    info = handoff.request_handoff(session, settings, conversation, detail=(body.reason if body else None) or "")
    data = {**info.payload(), "text": handoff.handoff_text(settings, info)}
    # The summary job reads the conversation in its own session: it must see this commit.
    session.commit()
    if not was_queued:
        assistant.queue_agent_summary(conversation_id)
    return data


@router.get("/conversations/{conversation_id}/status")
def read_status(conversation_id: str, session: SessionDep, settings: SettingsDep, token: TokenDep):
    """Where the conversation stands: status, queue position and wait, the agent's name, whether anyone is online."""
    conversation = authorize(session=session, conversation_id=conversation_id, token=token)
    status = handoff.customer_status(session, settings, conversation)
    session.commit()  # see _release
    return status


@router.post("/conversations/{conversation_id}/offline")
def create_offline_message(
    conversation_id: str,
    body: OfflineIn,
    session: SessionDep,
    settings: SettingsDep,
    token: TokenDep,
    assistant: AssistantDep,
):
    """No agent online: leave a message and an e-mail address, which become an offline ticket in the queue."""
    conversation = authorize(session=session, conversation_id=conversation_id, token=token)
    info = handoff.leave_offline_message(session, settings, conversation, message=body.message, email=body.email)
    session.commit()
    assistant.queue_agent_summary(conversation_id)
    return info.payload()


@router.post("/conversations/{conversation_id}/rating", status_code=204)
def create_rating(conversation_id: str, body: RatingIn, session: SessionDep, token: TokenDep):
    """Rate a resolved conversation from 1 to 5 stars, with an optional comment."""
    conversation = authorize(session=session, conversation_id=conversation_id, token=token)
    handoff.rate(session, conversation, rating=body.rating, comment=body.comment)
    session.commit()  # see _release
    return Response(status_code=204)


@router.post("/conversations/{conversation_id}/typing", status_code=204)
def create_typing(conversation_id: str, session: SessionDep, settings: SettingsDep, token: TokenDep,
                  body: Annotated[TypingIn | None, Body()] = None):
    """The customer is typing (or stopped): shown live to the agent, never stored."""
    authorize(session=session, conversation_id=conversation_id, token=token)
    session.commit()  # see _release
    events.notify_typing(
        settings, conversation_id=conversation_id, who="customer", typing=body.typing if body else True
    )
    return Response(status_code=204)

"""The public chat API (shared/API.md): conversations, streamed messages, history, feedback."""

from __future__ import annotations

import json
import threading
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy import select
from starlette.concurrency import iterate_in_threadpool

from support_bot.assistant import TurnEvent, authorize, message_payload, start_conversation
from support_bot.errors import InvalidInput, NotFound, SupportBotError
from support_bot.models import Feedback, Message
from web.deps import AssistantDep, SessionDep, SettingsDep, TokenDep

router = APIRouter(prefix="/api", tags=["chat"])


class CustomerIn(BaseModel):
    id: str = Field(min_length=1, max_length=255)
    signature: str = Field(min_length=1, max_length=256)


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
    return ConversationCreated(id=conversation.id, token=token)


@router.post("/conversations/{conversation_id}/messages")
def create_message(
    conversation_id: str,
    body: MessageCreate,
    session: SessionDep,
    token: TokenDep,
    assistant: AssistantDep,
):
    """Post a customer message; the answer streams back as server-sent events."""
    # A plain def: the token check's database work runs in the threadpool, not on the event loop.
    authorize(session=session, conversation_id=conversation_id, token=token)
    text = assistant.validate_text(body.text)
    session.close()
    stop = threading.Event()

    async def events():
        turn = assistant.turn(
            conversation_id=conversation_id, text=text, client_message_id=body.client_message_id, stop=stop
        )
        try:
            async for event in iterate_in_threadpool(turn):
                yield sse(event)
        except SupportBotError as exc:
            yield sse(TurnEvent("error", {"detail": exc.detail}))
        finally:
            # Also reached when the customer goes away or presses stop: generation ends, what was stored stays.
            stop.set()

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/conversations/{conversation_id}/messages")
def read_messages(conversation_id: str, session: SessionDep, token: TokenDep):
    """The conversation's messages, oldest first."""
    authorize(session=session, conversation_id=conversation_id, token=token)
    rows = session.scalars(
        select(Message).where(Message.conversation_id == conversation_id).order_by(Message.seq)
    )
    return {"messages": [message_payload(m) for m in rows]}


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
    return Response(status_code=204)

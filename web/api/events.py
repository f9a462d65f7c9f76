"""Live conversation events as server-sent events: one conversation for its customer, every chat for the console."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Header, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.concurrency import run_in_threadpool

from support_bot.chat.store import authorize
from support_bot.core.config import Settings
from support_bot.core.db import session_scope
from support_bot.core.errors import InvalidInput, NotFound
from support_bot.live.events import (
    CONSOLE_AUDIENCE,
    CONSOLE_CHANNEL,
    CUSTOMER_AUDIENCE,
    EventFeed,
    Subscription,
    conversation_channel,
    get_bus,
    latest_seq,
)
from support_bot.models import Conversation, ConversationEvent
from web.console_deps import AgentDep
from web.deps import SessionDep, SettingsDep, TokenDep

router = APIRouter(tags=["events"])

BATCH = 200
# Event ids are the database's integer keys (32-bit on PostgreSQL): a larger one cannot name an event.
MAX_EVENT_ID = 2**31 - 1
_EVENT_ID = re.compile(r"[0-9]{1,10}")
After = Annotated[
    int | None, Query(ge=0, le=MAX_EVENT_ID, description="resume after this event id (like Last-Event-ID)")
]
Timeout = Annotated[
    float | None,
    Query(ge=0, allow_inf_nan=False, description="end the stream after this many seconds (long-poll clients)"),
]
LastEventId = Annotated[str | None, Header()]


def _resume_point(last_event_id: str | None, after: int | None) -> int | None:
    """The later of the Last-Event-ID header and ?after=, or None when the client gave neither."""
    points = [] if after is None else [after]
    if last_event_id is not None and last_event_id.strip():
        value = last_event_id.strip()
        # ASCII digits only: str.isdigit() also takes "²" or "٣", which int() then refuses.
        if not _EVENT_ID.fullmatch(value) or int(value) > MAX_EVENT_ID:
            raise InvalidInput(f"Last-Event-ID must be an event id (an integer from 0 to {MAX_EVENT_ID})")
        points.append(int(value))
    return max(points) if points else None


def _event_frame(row: ConversationEvent) -> str:
    data = {**row.data, "conversation_id": row.conversation_id}
    return f"id: {row.seq}\nevent: {row.kind}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def _typing_frame(message: dict[str, Any]) -> str:
    data = {k: message.get(k) for k in ("conversation_id", "who", "name", "typing")}
    return f"event: typing\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def _open_streams(app: FastAPI) -> set[Subscription]:
    streams = getattr(app.state, "event_streams", None)
    if streams is None:
        streams = app.state.event_streams = set()
    return streams


def close_streams(app: FastAPI) -> None:
    """End every live stream of this app (at shutdown), so the server need not wait for clients to leave."""
    app.state.events_closing = True  # and a stream opened from now on ends at once
    for sub in list(_open_streams(app)):
        sub.close()


def _read(settings: Settings, feed: EventFeed) -> list[ConversationEvent]:
    with session_scope(settings) as session:
        return feed.read(session, limit=BATCH)


def _stream(
    request: Request,
    settings: Settings,
    *,
    conversation_id: str | None,
    audience: frozenset[str],
    after: int,
    timeout: float | None,
    show_typing: Callable[[dict[str, Any]], bool],
) -> StreamingResponse:
    cfg = settings.events
    bus = get_bus(settings)
    channel = conversation_channel(conversation_id) if conversation_id else CONSOLE_CHANNEL
    duration = cfg.max_stream_s if timeout is None else min(timeout, cfg.max_stream_s)
    streams = _open_streams(request.app)

    async def frames() -> AsyncIterator[str]:
        # Subscribe before the first read: an event committed between the replay and the wait still wakes us.
        sub = bus.subscribe([channel])
        streams.add(sub)
        if getattr(request.app.state, "events_closing", False):
            sub.close()
        feed = EventFeed(conversation_id=conversation_id, audience=audience, after_seq=after)
        try:
            yield f"retry: {cfg.retry_ms}\n\n"
            ends = time.monotonic() + duration
            last_write = time.monotonic()
            stale = True  # the database may hold events not sent yet
            while True:
                db_away = False
                while stale:
                    try:
                        rows = await run_in_threadpool(_read, settings, feed)
                    except (OperationalError, InterfaceError):
                        # The database is restarting: the stream stays open and reads again shortly, from where the
                        # feed left off, so the client misses nothing and need not reconnect.
                        db_away = True
                        break
                    for row in rows:
                        yield _event_frame(row)
                    if rows:
                        last_write = time.monotonic()
                    stale = len(rows) == BATCH
                now = time.monotonic()
                if now >= ends:
                    return
                # No wake-ups while the bus is down, and none to trust while reads fail: read on a timer.
                polling = not bus.healthy or db_away
                wait = min(ends - now, last_write + cfg.heartbeat_s - now)
                if polling:
                    wait = min(wait, cfg.poll_interval_s)
                message = await sub.aget(wait) if wait > 0 else None
                if message is None:
                    if time.monotonic() - last_write >= cfg.heartbeat_s:
                        yield ": ping\n\n"
                        last_write = time.monotonic()
                        stale = True  # pub/sub is at-most-once: a quiet stream checks the database too
                    stale = stale or polling
                    continue
                for item in [message, *sub.drain()]:
                    kind = item.get("type")
                    if kind == "closed":
                        return
                    if kind == "typing":
                        if show_typing(item):
                            yield _typing_frame(item)
                            last_write = time.monotonic()
                    elif kind != "event" or item.get("audience") in audience:
                        stale = True  # a new event, or the bus says something may have been missed
        finally:
            streams.discard(sub)
            sub.close()

    return StreamingResponse(
        frames(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/api/conversations/{conversation_id}/events")
def read_conversation_events(
    conversation_id: str,
    request: Request,
    settings: SettingsDep,
    token: TokenDep,
    last_event_id: LastEventId = None,
    after: After = None,
    timeout: Timeout = None,
):
    """The conversation's events for its customer: replays those after Last-Event-ID (or ?after=), then live ones."""
    # A plain def: the token check's database work runs in the threadpool, not on the event loop.
    with session_scope(settings) as session:
        authorize(session=session, conversation_id=conversation_id, token=token)
    start = _resume_point(last_event_id, after)
    return _stream(
        request,
        settings,
        conversation_id=conversation_id,
        audience=CUSTOMER_AUDIENCE,
        after=start or 0,
        timeout=timeout,
        # The customer sees the agent typing, not an echo of their own typing.
        show_typing=lambda message: message.get("who") != "customer",
    )


@router.get("/api/console/events")
def read_console_events(
    request: Request,
    settings: SettingsDep,
    session: SessionDep,
    user: AgentDep,
    last_event_id: LastEventId = None,
    after: After = None,
    timeout: Timeout = None,
    conversation_id: Annotated[str | None, Query(max_length=64, description="only this conversation")] = None,
):
    """Events of every conversation (or one), console-only ones included, for agents' queue and open chats."""
    if conversation_id is not None and session.get(Conversation, conversation_id) is None:
        raise NotFound("conversation not found")
    start = _resume_point(last_event_id, after)
    if start is None:
        # One chat's history is short: replay it all. The whole queue's is not: start from now.
        start = 0 if conversation_id is not None else latest_seq(session)
    # The login check may have refreshed the session's last-seen time; keep that, and give the connection back
    # now rather than holding it for as long as the stream stays open.
    session.commit()
    session.close()
    return _stream(
        request,
        settings,
        conversation_id=conversation_id,
        audience=CONSOLE_AUDIENCE,
        after=start,
        timeout=timeout,
        show_typing=lambda message: True,
    )

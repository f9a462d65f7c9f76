"""The conversation state machine and the agent queue: handing a chat to a person, claiming, transferring, replying,
returning it to the bot, resolving and rating, and where each waiting customer stands.

Status: bot -> queued -> assigned -> resolved; queued or assigned -> bot ("return to bot"); assigned -> assigned (a
transfer); resolved -> bot when the customer writes again (a new episode). Every change is one conditional UPDATE on
the status it starts from, so two people acting at once cannot both succeed: the loser gets Conflict (409).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from support_bot.core.config import Settings
from support_bot.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from support_bot.handoff.messages import (
    BACK_TO_BOT_TEXT,
    JOINED_TEXT,
    RESOLVED_TEXT,
    add_system_line,
    emit_message,
    validate_text,
)
from support_bot.handoff.presence import (
    AGENT_ROLES,
    PRESENCE,
    agents_online,
    check_agent,
    display_name,
    effective_presence,
    load_of,
)
from support_bot.handoff.triggers import MAX_DETAIL_CHARS, REASONS, priority_for
from support_bot.live import events
from support_bot.models import CannedResponse, Conversation, Message, User, utcnow
from support_bot.ops import audit

STATUSES = ("bot", "queued", "assigned", "resolved")
# Allowed (from, to) pairs; assigned -> assigned is a transfer to another agent.
TRANSITIONS = frozenset(
    {
        ("bot", "queued"),
        ("queued", "assigned"),
        ("assigned", "assigned"),
        ("assigned", "resolved"),
        ("queued", "bot"),
        ("assigned", "bot"),
        ("resolved", "bot"),
    }
)

MAX_EMAIL_CHARS = 320
_EMAIL = re.compile(r"^[^@\s<>\"']{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}\.)+[A-Za-z]{2,24}$")

# Positions are pushed live to this many waiting customers after each queue change; the rest see theirs on refresh.
_QUEUE_BROADCAST_LIMIT = 100


# --- where a conversation stands ---------------------------------------------------------------------------------


@dataclass
class QueueInfo:
    """Where a conversation stands, as the customer is told."""

    status: str
    position: int | None = None
    eta_s: int | None = None
    agents_online: int = 0
    agent: str | None = None

    def payload(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "position": self.position,
            "eta_s": self.eta_s,
            "agent": self.agent,
            "agents_online": self.agents_online > 0,
        }


def queue_order():
    """ORDER BY for the queue: priority first, then the longest waiting."""
    return (Conversation.priority.desc(), Conversation.queued_at.asc(), Conversation.id.asc())


def queue_position(session: Session, conversation: Conversation) -> int:
    """1 for the next conversation an agent should take."""
    p, q, cid = conversation.priority, conversation.queued_at, conversation.id
    ahead = session.scalar(
        select(func.count())
        .select_from(Conversation)
        .where(
            Conversation.status == "queued",
            Conversation.id != cid,
            or_(
                Conversation.priority > p,
                and_(Conversation.priority == p, Conversation.queued_at < q),
                and_(Conversation.priority == p, Conversation.queued_at == q, Conversation.id < cid),
            ),
        )
    )
    return (ahead or 0) + 1


def estimate_wait_s(settings: Settings, *, position: int, online: int) -> int | None:
    """Seconds until an agent is expected: positions shared among the online agents; None when nobody is online."""
    if online <= 0:
        return None
    return int(math.ceil(position / online) * settings.handoff.minutes_per_position * 60)


def queue_info(session: Session, settings: Settings, conversation: Conversation) -> QueueInfo:
    online = agents_online(session, settings)
    if conversation.status == "queued":
        position = queue_position(session, conversation)
        return QueueInfo(
            "queued", position, estimate_wait_s(settings, position=position, online=online), online
        )
    agent = None
    if conversation.status == "assigned" and conversation.assigned_agent_id:
        agent = display_name(session.get(User, conversation.assigned_agent_id))
    return QueueInfo(conversation.status, agents_online=online, agent=agent)


def _emit_status(session: Session, settings: Settings, conversation: Conversation, info: QueueInfo) -> None:
    data = {**info.payload(), "conversation_id": conversation.id, "reason": conversation.handoff_reason}
    events.emit(session, conversation_id=conversation.id, kind="status", data=data)


def _broadcast_queue(session: Session, settings: Settings) -> None:
    """Tell waiting customers their new place and wait after the queue changed."""
    online = agents_online(session, settings)
    rows = session.scalars(
        select(Conversation.id).where(Conversation.status == "queued").order_by(*queue_order())
        .limit(_QUEUE_BROADCAST_LIMIT)
    )
    for position, conversation_id in enumerate(rows, start=1):
        events.emit(
            session, conversation_id=conversation_id, kind="queue",
            data={
                "conversation_id": conversation_id, "position": position,
                "eta_s": estimate_wait_s(settings, position=position, online=online), "agents_online": online > 0,
            },
        )


# --- presence changes --------------------------------------------------------------------------------------------


# Here rather than in presence.py: a change re-estimates every waiting customer's wait.
def set_presence(session: Session, settings: Settings, *, agent: User, status: str) -> User:
    """Set the agent's presence (online / away / offline); also the heartbeat that keeps "online" alive."""
    if status not in PRESENCE:
        raise InvalidInput(f"presence must be one of {', '.join(PRESENCE)}")
    before = effective_presence(agent, settings)
    agent.presence, agent.presence_at = status, utcnow()
    if before != status:
        audit.record(
            session, actor=agent, action="agent.presence", target_type="user", target_id=agent.id,
            detail={"from": before, "to": status},
        )
        # Waiting customers' estimates depend on how many agents are online.
        session.flush()
        _broadcast_queue(session, settings)
    return agent


# --- moving a conversation ---------------------------------------------------------------------------------------


def _transition(
    session: Session, conversation: Conversation, to: str, *, values: dict[str, Any], where: tuple = ()
) -> None:
    """Move the conversation to status `to` with one conditional UPDATE; Conflict when that is not allowed or lost."""
    start = conversation.status
    if (start, to) not in TRANSITIONS:
        raise Conflict(_refusal(start, to))
    result = session.execute(
        update(Conversation)
        .where(Conversation.id == conversation.id, Conversation.status == start, *where)
        .values(status=to, updated_at=utcnow(), **values)
        .execution_options(synchronize_session=False)
    )
    session.refresh(conversation)
    if result.rowcount != 1:
        # Someone else changed it first.
        raise Conflict(_refusal(conversation.status, to, changed=True))


def _refusal(status: str, to: str, *, changed: bool = False) -> str:
    prefix = "someone else changed this conversation first: " if changed else ""
    what = {
        "queued": "be queued for a person",
        "assigned": "be given to an agent",
        "resolved": "be resolved",
        "bot": "go back to the bot",
    }[to]
    return f"{prefix}the conversation is {status}, so it cannot {what}"


def get_conversation(session: Session, conversation_id: str) -> Conversation:
    conversation = session.get(Conversation, conversation_id) if conversation_id else None
    if conversation is None:
        raise NotFound("conversation not found")
    return conversation


def start_handoff(
    session: Session,
    settings: Settings,
    conversation: Conversation,
    *,
    reason: str,
    detail: str = "",
    actor: User | None = None,
) -> QueueInfo:
    """Queue the conversation for a person (bot -> queued; a resolved one opens a new episode first)."""
    if reason not in REASONS:
        raise InvalidInput(f"unknown handoff reason '{reason}'")
    if conversation.status == "resolved":
        reopen(session, settings, conversation)
    detail = (detail or "").strip()[:MAX_DETAIL_CHARS]
    priority = priority_for(settings, reason, detail)
    _transition(
        session, conversation, "queued",
        values={
            "handoff_reason": reason, "handoff_detail": detail or None, "handoff_summary": None,
            "priority": priority, "queued_at": utcnow(), "assigned_agent_id": None, "assigned_at": None,
        },
    )
    audit.record(
        session, actor=actor, action="conversation.queue", target_type="conversation", target_id=conversation.id,
        detail={"reason": reason, "detail": detail, "priority": priority},
    )
    info = queue_info(session, settings, conversation)
    _emit_status(session, settings, conversation, info)
    return info


def reopen(session: Session, settings: Settings, conversation: Conversation) -> None:
    """A resolved conversation the customer writes to again goes back to the bot as a new episode."""
    if conversation.status != "resolved":
        raise Conflict(f"the conversation is {conversation.status}; only a resolved one can be reopened")
    _transition(session, conversation, "bot", values=_back_to_bot_values())
    audit.record(session, actor=None, action="conversation.reopen", target_type="conversation",
                 target_id=conversation.id)
    _emit_status(session, settings, conversation, queue_info(session, settings, conversation))


def _back_to_bot_values() -> dict[str, Any]:
    return {
        "bot_turns": 0, "abstain_streak": 0, "queued_at": None, "assigned_agent_id": None, "assigned_at": None,
        "priority": 0,
    }


def request_handoff(session: Session, settings: Settings, conversation: Conversation, *, detail: str = "") -> QueueInfo:
    """The customer pressed "talk to a person": queue it; pressing again while queued changes nothing."""
    if not settings.handoff.button_enabled:
        raise Forbidden("talking to a person is not enabled on this server")
    if conversation.status == "queued":
        return queue_info(session, settings, conversation)
    if conversation.status == "assigned":
        raise Conflict("a person is already handling this conversation")
    return start_handoff(session, settings, conversation, reason="button", detail=detail)


def validate_email(email: str) -> str:
    email = (email or "").strip()
    if len(email) > MAX_EMAIL_CHARS or not _EMAIL.match(email):
        raise InvalidInput("that does not look like an e-mail address")
    return email


def leave_offline_message(
    session: Session, settings: Settings, conversation: Conversation, *, message: str, email: str
) -> QueueInfo:
    """With nobody online the customer leaves a message and an e-mail address: an offline ticket in the queue."""
    email = validate_email(email)
    text = validate_text(settings, message)
    if conversation.status == "assigned":
        raise Conflict("a person is already chatting with you here; write to them directly")
    if settings.safety.redact_pii:
        from support_bot.safety.pii import redact

        # The address is kept apart, on purpose; the message itself is stored like any other customer message.
        text = redact(text, kinds=set(settings.safety.pii_kinds)).text
    msg = Message(conversation_id=conversation.id, role="customer", text=text)
    session.add(msg)
    session.flush()
    emit_message(session, msg)
    conversation.contact_email = email
    if conversation.status == "queued":
        info = queue_info(session, settings, conversation)
        audit.record(
            session, actor=None, action="conversation.offline_message", target_type="conversation",
            target_id=conversation.id, detail={"message_id": msg.id},
        )
        _emit_status(session, settings, conversation, info)
        return info
    info = start_handoff(session, settings, conversation, reason="offline", detail="left a message for e-mail")
    audit.record(
        session, actor=None, action="conversation.offline_message", target_type="conversation",
        target_id=conversation.id, detail={"message_id": msg.id},
    )
    return info


def claim(session: Session, settings: Settings, *, conversation_id: str, agent: User) -> Conversation:
    """Take a queued conversation; of several agents claiming at once exactly one wins, the others get Conflict."""
    check_agent(agent)
    conversation = get_conversation(session, conversation_id)
    now = utcnow()
    # Claiming counts as being seen; the write also locks the agent's row, so one agent's concurrent claims take
    # turns at the capacity check below.
    session.execute(
        update(User).where(User.id == agent.id).values(presence_at=now).execution_options(synchronize_session=False)
    )
    session.refresh(agent)
    held = load_of(session, agent.id)
    if held >= agent.capacity:
        raise Conflict(f"you are at capacity ({held} of {agent.capacity} conversations); resolve or transfer one first")
    if conversation.status == "assigned":
        raise Conflict(f"{_holder(session, conversation)} already took this conversation")
    try:
        _transition(session, conversation, "assigned", values={"assigned_agent_id": agent.id, "assigned_at": now})
    except Conflict:
        if conversation.status == "assigned":
            raise Conflict(f"{_holder(session, conversation)} already took this conversation") from None
        raise
    audit.record(
        session, actor=agent, action="conversation.claim", target_type="conversation", target_id=conversation.id,
        detail={"reason": conversation.handoff_reason},
    )
    add_system_line(session, conversation.id, JOINED_TEXT.format(agent=display_name(agent)))
    _emit_status(session, settings, conversation, queue_info(session, settings, conversation))
    _broadcast_queue(session, settings)
    return conversation


def _holder(session: Session, conversation: Conversation) -> str:
    return display_name(session.get(User, conversation.assigned_agent_id)) or "another agent"


def _check_holder(conversation: Conversation, agent: User, *, doing: str) -> None:
    if conversation.status != "assigned":
        raise Conflict(f"the conversation is {conversation.status}; claim it before you {doing}")
    if conversation.assigned_agent_id != agent.id and agent.role != "admin":
        raise Forbidden(f"another agent holds this conversation; only they (or an admin) can {doing}")


def transfer(
    session: Session, settings: Settings, *, conversation_id: str, agent: User, to_agent_id: str
) -> Conversation:
    """Hand an assigned conversation to another online agent with room for it."""
    check_agent(agent)
    conversation = get_conversation(session, conversation_id)
    _check_holder(conversation, agent, doing="transfer it")
    target = session.get(User, to_agent_id) if to_agent_id else None
    if target is None or not target.active or target.role not in AGENT_ROLES:
        raise NotFound("no such agent")
    if target.id == conversation.assigned_agent_id:
        raise Conflict(f"{display_name(target)} already holds this conversation")
    if effective_presence(target, settings) != "online":
        raise Conflict(f"{display_name(target)} is not online")
    start = conversation.assigned_agent_id
    _transition(
        session, conversation, "assigned", values={"assigned_agent_id": target.id, "assigned_at": utcnow()},
        where=(Conversation.assigned_agent_id == start,),
    )
    # Lock the target's row for the capacity check; the conversation row is already ours, and a refusal rolls both
    # back with the caller's transaction.
    session.execute(select(User.id).where(User.id == target.id).with_for_update())
    held = load_of(session, target.id)
    if held > target.capacity:
        raise Conflict(f"{display_name(target)} is at capacity ({target.capacity} conversations)")
    audit.record(
        session, actor=agent, action="conversation.transfer", target_type="conversation", target_id=conversation.id,
        detail={"from": start, "to": target.id},
    )
    add_system_line(session, conversation.id, JOINED_TEXT.format(agent=display_name(target)))
    _emit_status(session, settings, conversation, queue_info(session, settings, conversation))
    return conversation


def agent_reply(
    session: Session,
    settings: Settings,
    *,
    conversation_id: str,
    agent: User,
    text: str | None = None,
    canned_id: int | None = None,
) -> Message:
    """An agent's message to the customer (typed, or a canned response), delivered live."""
    check_agent(agent)
    conversation = get_conversation(session, conversation_id)
    _check_holder(conversation, agent, doing="reply")
    if not (text or "").strip() and canned_id is not None:
        canned = session.get(CannedResponse, canned_id)
        if canned is None:
            raise NotFound("canned response not found")
        text = canned.text
    text = validate_text(settings, text or "")
    msg = Message(conversation_id=conversation.id, role="agent", text=text, author_id=agent.id)
    session.add(msg)
    conversation.updated_at = utcnow()
    session.flush()
    emit_message(session, msg, author=display_name(agent))
    audit.record(
        session, actor=agent, action="conversation.reply", target_type="conversation", target_id=conversation.id,
        detail={"message_id": msg.id, "canned_id": canned_id, "chars": len(text)},
    )
    return msg


def add_note(session: Session, settings: Settings, *, conversation_id: str, agent: User, text: str) -> Message:
    """An internal note: in the console only, never shown to the customer or given to the model."""
    check_agent(agent)
    conversation = get_conversation(session, conversation_id)
    text = validate_text(settings, text, what="note")
    msg = Message(conversation_id=conversation.id, role="agent", text=text, author_id=agent.id, private=True)
    session.add(msg)
    session.flush()
    emit_message(session, msg, author=display_name(agent))
    audit.record(
        session, actor=agent, action="conversation.note", target_type="conversation", target_id=conversation.id,
        detail={"message_id": msg.id},
    )
    return msg


def return_to_bot(session: Session, settings: Settings, *, conversation_id: str, agent: User) -> Conversation:
    """Give the conversation back to the bot (from the queue, or by the agent holding it)."""
    check_agent(agent)
    conversation = get_conversation(session, conversation_id)
    if conversation.status not in ("queued", "assigned"):
        # resolved -> bot is the customer's new episode, not an agent's action.
        raise Conflict(_refusal(conversation.status, "bot"))
    if conversation.status == "assigned":
        _check_holder(conversation, agent, doing="return it to the bot")
    start = conversation.status
    _transition(session, conversation, "bot", values=_back_to_bot_values())
    audit.record(
        session, actor=agent, action="conversation.return_to_bot", target_type="conversation",
        target_id=conversation.id, detail={"from": start},
    )
    add_system_line(session, conversation.id, BACK_TO_BOT_TEXT)
    _emit_status(session, settings, conversation, queue_info(session, settings, conversation))
    if start == "queued":
        _broadcast_queue(session, settings)
    return conversation


# Called in every resolve's transaction. The learning loop subscribes here (see on_resolved), so that the queue, which
# sits below it, never imports it.
ResolvedHook = Callable[[Session, Settings, str], None]
_resolved_hooks: list[ResolvedHook] = []


def on_resolved(hook: ResolvedHook) -> None:
    """From now on, call `hook(session, settings, conversation_id)` in the transaction of every resolve; subscribing
    the same hook again changes nothing.
    """
    if hook not in _resolved_hooks:
        _resolved_hooks.append(hook)


def resolve(session: Session, settings: Settings, *, conversation_id: str, agent: User) -> Conversation:
    """Close the episode; the customer may then rate it, and writing again starts a new one with the bot."""
    check_agent(agent)
    conversation = get_conversation(session, conversation_id)
    _check_holder(conversation, agent, doing="resolve it")
    _transition(
        session, conversation, "resolved", values={"resolved_at": utcnow(), "resolved_by": agent.id},
        where=(Conversation.assigned_agent_id == conversation.assigned_agent_id,),
    )
    audit.record(
        session, actor=agent, action="conversation.resolve", target_type="conversation", target_id=conversation.id,
        detail={"reason": conversation.handoff_reason},
    )
    add_system_line(session, conversation.id, RESOLVED_TEXT)
    _emit_status(session, settings, conversation, queue_info(session, settings, conversation))
    for hook in tuple(_resolved_hooks):
        hook(session, settings, conversation.id)
    return conversation


def rate(session: Session, conversation: Conversation, *, rating: int, comment: str | None = None) -> Conversation:
    """The customer's 1-5 rating of a resolved conversation (a second rating replaces the first)."""
    if not isinstance(rating, int) or not 1 <= rating <= 5:
        raise InvalidInput("the rating must be a whole number from 1 to 5")
    if conversation.resolved_at is None:
        raise Conflict("a conversation can be rated once a person has resolved it")
    comment = (comment or "").strip()[:4000] or None
    conversation.rating, conversation.rating_comment = rating, comment
    audit.record(
        session, actor=None, action="conversation.rate", target_type="conversation", target_id=conversation.id,
        detail={"rating": rating},
    )
    events.emit(
        session, conversation_id=conversation.id, kind="rating", audience="console",
        data={"conversation_id": conversation.id, "rating": rating, "comment": comment},
    )
    return conversation


def mark_helpful(conversation: Conversation) -> None:
    """A thumbs-up on a bot answer: the customer got what they came for, so the turn count starts again."""
    if conversation.status == "bot":
        conversation.bot_turns = 0

"""Human handoff: the triggers, the conversation state machine, the agent queue and what agents do with a chat.

Status: bot -> queued -> assigned -> resolved; queued or assigned -> bot ("return to bot"); assigned -> assigned (a
transfer); resolved -> bot when the customer writes again (a new episode). Every change is one conditional UPDATE on
the status it starts from, so two people acting at once cannot both succeed: the loser gets Conflict (409).
"""

from __future__ import annotations

import logging
import math
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from support_bot.ops import audit
from support_bot.live import events
from support_bot.core.config import Settings
from support_bot.core.db import session_scope
from support_bot.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from support_bot.llm.prompt import ChatMessage
from support_bot.chat.memory import transcript
from support_bot.models import CannedResponse, Conversation, Message, User, utcnow
from support_bot.handoff.sentiment import score as sentiment_score

log = logging.getLogger(__name__)

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
REASONS = ("request", "button", "abstain", "sentiment", "safety", "max_turns", "offline", "model")
REASON_LABELS = {
    "request": "Customer asked for a person",
    "button": "Customer pressed the talk-to-a-person button",
    "abstain": "The bot could not answer several times in a row",
    "sentiment": "Customer seems upset or frustrated",
    "safety": "A safety policy asked for a person",
    "max_turns": "Many bot answers without a resolution",
    "offline": "Message left while no agent was online",
    "model": "The bot's model failed or timed out while answering",
}
PRESENCE = ("online", "away", "offline")
AGENT_ROLES = ("agent", "admin")
MAX_DETAIL_CHARS = 500
MAX_EMAIL_CHARS = 320
_EMAIL = re.compile(r"^[^@\s<>\"']{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}\.)+[A-Za-z]{2,24}$")
# An online agent's last-seen time is written at most this often by ordinary console requests.
_PRESENCE_TOUCH = timedelta(seconds=60)
# Positions are pushed live to this many waiting customers after each queue change; the rest see theirs on refresh.
_QUEUE_BROADCAST_LIMIT = 100


# --- asking for a person -----------------------------------------------------------------------------------------

_DET = r"(?:(?:a|an|the|some|any|one of your|one of the|your|a member of your|a member of the|someone from your)\s+)?"
_ADJ = (
    r"(?:(?:real|live|actual|human|living|proper|flesh and blood|customer|support|service|sales|technical|tech|"
    r"customer service|customer support)\s+)*"
)
_ANY_PERSON = (
    r"(?:human beings?|humans?|person|people|agents?|representatives?|reps?|operators?|staff(?: member)?|employees?|"
    r"team members?|team|supervisors?|managers?|consultants?|advisers?|advisors?|associates?|someone|somebody|"
    r"anyone|anybody|customer service|customer support|support team|service desk|help ?desk)"
)
# What "I want / need / can I get ..." must be followed by: no bare "someone" or "person", which too often mean
# someone else ("I need someone to sign for the parcel").
_STRONG_PERSON = (
    r"(?:human beings?|humans?|(?:real|live|actual|human|living) (?:person|people|one)|agents?|representatives?|"
    r"reps?|operators?|supervisors?|managers?|staff member)"
)
# What may follow the person word, so that "I want the agent discount" is not a request.
_AFTER = (
    r"(?=\s*(?:$|[.,!?;:)]|(?:please|pls|plz|now|asap|right|immediately|instead|to|who|that|about|on|here|there|"
    r"for|and|or|because|regarding|i|rather|thanks?|from|at|in|with|today|directly|quickly|again|already|"
    r"available|online)\b))"
)
_PATTERNS_BY_LANGUAGE: dict[str, list[str]] = {
    "en": [
        rf"\b(?:talk|speak|chat|communicate|converse)(?:ing)?\s+(?:directly\s+)?(?:to|with)\s+{_DET}{_ADJ}{_ANY_PERSON}{_AFTER}",
        r"\b(?:connect|transfer|put|pass|forward|hand|route|escalate|switch|redirect|send)"
        r"(?:\s+(?:me|us|this|this chat|this conversation|my case|my call|it|my issue|my request|this issue))?"
        rf"(?:\s+(?:through|over|on|back))?\s+(?:to|with)\s+{_DET}{_ADJ}{_ANY_PERSON}{_AFTER}",
        rf"\bget\s+through\s+to\s+{_DET}{_ADJ}{_ANY_PERSON}{_AFTER}",
        rf"\b(?:want|need|like|request|prefer|get|give me|demand|require|wanna|have|looking for)\s+{_DET}{_ADJ}"
        rf"{_STRONG_PERSON}{_AFTER}",
        r"\b(?:is|are)\s+there\s+(?:a|an|any|some|one)?\s*(?:real\s+|live\s+|actual\s+)?"
        r"(?:humans?|person|people|agents?|representatives?|operators?|one)"
        r"(?=\s*(?:$|[.,!?]|i can\b|i could\b|i may\b|to (?:talk|speak|chat)\b|available\b|online\b|here\b|there\b|"
        r"around\b|who\b|that\b|working\b))",
        r"\b(?:don't want|do not want|dont want|stop|enough of|tired of|sick of|fed up with|done with|no more|not)\s+"
        r"(?:talking to |chatting with |speaking (?:to|with) |to talk to |to chat with |with )?"
        r"(?:a|an|the|this|your|you)?\s*(?:stupid |dumb |useless |damn |automated )?"
        r"(?:bot|robot|chatbot|machine|ai|computer|automated (?:system|assistant|replies|reply))s?"
        r"(?=\s*(?:$|[.,!?;:]|please\b|pls\b|i want\b|give\b|let\b|anymore\b|any more\b|i need\b))",
    ],
    "de": [
        r"\b(?:mit\s+)?(?:einem|einer|einen|ihrem|ihrer|dem|der|den)\s+(?:echten\s+|richtigen\s+|menschlichen\s+|"
        r"lebenden\s+|realen\s+)?(?:menschen|mitarbeiter(?:in)?|person|berater(?:in)?|ansprechpartner(?:in)?|"
        r"kundendienst|kundenservice|support|agenten|operator|vorgesetzten)\s+(?:sprechen|reden|verbinden|chatten)\b",
        r"\bmit\s+jemandem\s+(?:sprechen|reden|chatten)\b",
        r"\b(?:verbinden sie mich|verbinde mich|bitte verbinden)\s+mit\b",
        r"\bich\s+(?:will|mochte|brauche|hatte gern|hatte gerne|mochte gerne)\s+(?:einen|eine|ein)\s+"
        r"(?:echten\s+|richtigen\s+)?(?:menschen|mitarbeiter(?:in)?|berater(?:in)?|ansprechpartner(?:in)?)\b",
        r"\b(?:echter mensch|echten menschen|menschlichen mitarbeiter|menschlichen ansprechpartner)\b",
    ],
    "fr": [
        r"\bparler\s+(?:a|avec)\s+(?:(?:un|une|le|la|l')\s*)?(?:vrai\s+|vraie\s+|veritable\s+)?"
        r"(?:humain|etre humain|personne|conseiller|conseillere|agent|operateur|operatrice|quelqu'un|quelqu un|"
        r"responsable|service client)\b",
        r"\b(?:je veux|je voudrais|j'aimerais|je souhaite|je souhaiterais)\s+(?:un|une)\s+(?:vrai\s+|vraie\s+)?"
        r"(?:humain|conseiller|conseillere|agent|operateur|operatrice|personne reelle|vraie personne)\b",
        r"\b(?:mettez[- ]moi|mets[- ]moi|me mettre)\s+en\s+(?:relation|contact)\s+avec\b",
    ],
    "es": [
        r"\bhablar\s+con\s+(?:(?:un|una|el|la)\s+)?(?:alguien|humano|persona|agente|asesor|asesora|operador|"
        r"operadora|representante|ser humano|encargado|supervisor)\b",
        r"\b(?:quiero|necesito|quisiera|me gustaria)\s+(?:un|una)\s+(?:humano|agente|asesor|asesora|operador|"
        r"operadora|representante|persona real)\b",
    ],
    "it": [
        r"\bparlare\s+con\s+(?:(?:un|una|il|la|l')\s*)?(?:qualcuno|umano|persona|operatore|operatrice|agente|"
        r"consulente|essere umano|responsabile)\b",
        r"\b(?:voglio|vorrei)\s+(?:un|una)\s+(?:operatore|operatrice|umano|agente|consulente|persona reale|"
        r"persona vera)\b",
    ],
    "nl": [
        r"\b(?:met\s+)?(?:een|de)\s+(?:echte\s+|echt\s+)?(?:mens|medewerker|persoon|klantenservice|agent)\s+"
        r"(?:spreken|praten|chatten)\b",
        r"\bmet\s+iemand\s+(?:spreken|praten|chatten)\b",
        r"\bik\s+wil\s+(?:graag\s+)?een\s+(?:echte\s+|echt\s+)?(?:mens|medewerker)\b",
    ],
    "pt": [
        r"\bfalar\s+com\s+(?:(?:um|uma|o|a)\s+)?(?:alguem|humano|pessoa|atendente|agente|operador|operadora|"
        r"representante|ser humano|consultor|supervisor)\b",
        r"\b(?:quero|preciso de|gostaria de)\s+(?:um|uma)\s+(?:atendente|humano|agente|operador|pessoa real)\b",
        r"\batendente humano\b",
    ],
}
# A message that is nothing but a request ("HUMAN!!!", "agent please", "real person now").
_SHORT_REQUESTS = frozenset(
    {
        "human", "humans", "a human", "human being", "agent", "an agent", "live agent", "operator", "representative",
        "rep", "person", "a person", "real person", "a real person", "live person", "customer service",
        "customer support", "support agent", "someone real", "manager", "supervisor", "staff", "mensch",
        "mitarbeiter", "humain", "conseiller", "humano", "agente", "operatore", "medewerker", "atendente",
    }
)
_FILLERS = frozenset(
    {
        "please", "pls", "plz", "now", "asap", "immediately", "hello", "hi", "hey", "just", "ok", "okay", "i",
        "me", "want", "need", "give", "get", "can", "could", "may", "have", "talk", "speak", "to", "with", "bitte",
        "svp", "por", "favor", "per", "favore", "alstublieft", "graag",
    }
)
# Words that, just before a match, turn it around ("I don't need to talk to a person").
_NEGATION = re.compile(
    r"\b(?:don't|dont|do not|doesn't|does not|didn't|no need|never|without|not|rather not|won't|will not)"
    r"(?:\s+\S+){0,2}\s*$"
)


def normalize(text: str) -> str:
    """Lower-case, accents and curly quotes removed, spaces collapsed: what the request patterns are written for."""
    text = unicodedata.normalize("NFKD", text or "")
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = text.replace("\u2019", "'").replace("`", "'").lower()
    return re.sub(r"\s+", " ", text).strip()


def _compiled(settings: Settings) -> list[re.Pattern[str]]:
    key = (tuple(settings.handoff.request_languages), tuple(settings.handoff.request_phrases))
    cached = _pattern_cache.get(key)
    if cached is None:
        sources = [p for lang in key[0] for p in _PATTERNS_BY_LANGUAGE.get(lang, [])]
        sources += [rf"\b{re.escape(normalize(phrase))}\b" for phrase in key[1] if phrase.strip()]
        cached = [re.compile(p) for p in sources]
        _pattern_cache[key] = cached
    return cached


_pattern_cache: dict[tuple, list[re.Pattern[str]]] = {}


def asks_for_person(text: str, settings: Settings) -> str | None:
    """The words in which the customer asks for a person, or None when they don't."""
    norm = normalize(text)
    if not norm:
        return None
    words = re.findall(r"[a-z']+", norm)
    rest = " ".join(w for w in words if w not in _FILLERS)
    if len(words) <= 6 and rest in _SHORT_REQUESTS:
        return norm[:MAX_DETAIL_CHARS]
    for pattern in _compiled(settings):
        for match in pattern.finditer(norm):
            if not _NEGATION.search(norm[: match.start()]):
                return match.group(0).strip()
    return None


# --- triggers ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trigger:
    """Why a chat goes to a person: a reason code (REASONS) and the evidence."""

    reason: str
    detail: str = ""


def frustration(text: str, previous: list[str], settings: Settings) -> str | None:
    """The evidence when the customer is upset enough for a person, else None."""
    cfg = settings.handoff
    current = sentiment_score(text)
    evidence = f"sentiment {current.score:+.2f} ({', '.join(current.signals[:6])})"
    if current.score <= -cfg.sentiment_threshold:
        return evidence
    if cfg.sentiment_window > 1 and len(previous) >= cfg.sentiment_window - 1:
        recent = [sentiment_score(t).score for t in previous[-(cfg.sentiment_window - 1) :]] + [current.score]
        if all(s <= -cfg.sentiment_threshold / 2 for s in recent):
            return f"{evidence}; {len(recent)} unhappy messages in a row"
    return None


def message_trigger(
    settings: Settings, *, text: str, previous_customer_texts: list[str], bot_turns: int
) -> Trigger | None:
    """The trigger a new customer message fires before the bot answers: asks for a person, upset, too many turns."""
    cfg = settings.handoff
    if cfg.request_enabled:
        asked = asks_for_person(text, settings)
        if asked:
            return Trigger("request", asked)
    if cfg.sentiment_enabled:
        upset = frustration(text, previous_customer_texts, settings)
        if upset:
            return Trigger("sentiment", upset)
    if cfg.max_turns_enabled and bot_turns >= cfg.max_bot_turns:
        return Trigger("max_turns", f"{bot_turns} bot answers without a resolution")
    return None


def abstain_trigger(settings: Settings, *, abstain_streak: int) -> Trigger | None:
    """The trigger when the bot is about to abstain once more after `abstain_streak` abstentions in a row."""
    cfg = settings.handoff
    if cfg.abstain_enabled and abstain_streak + 1 >= cfg.abstain_streak:
        return Trigger("abstain", f"{abstain_streak + 1} questions in a row without an answer")
    return None


def safety_trigger(settings: Settings, *, category: str) -> Trigger | None:
    return Trigger("safety", category) if settings.handoff.safety_enabled else None


def model_failure_trigger(settings: Settings, *, detail: str) -> Trigger | None:
    """The trigger when the model failed or timed out mid-answer (None: only apologise and offer a person)."""
    return Trigger("model", detail[:MAX_DETAIL_CHARS]) if settings.handoff.model_failure_enabled else None


def priority_for(settings: Settings, reason: str, detail: str = "") -> int:
    rules = settings.handoff.priority
    return rules.get(f"{reason}:{detail}", rules.get(reason, 0))


# --- presence and capacity ---------------------------------------------------------------------------------------


def _aware(moment: datetime | None) -> datetime | None:
    # SQLite returns naive datetimes for timezone-aware columns; they were written in UTC.
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=timezone.utc)


def effective_presence(user: User, settings: Settings, now: datetime | None = None) -> str:
    """online/away as set, unless the agent has not been seen within presence_timeout_s (then offline)."""
    if not user.active or user.presence not in ("online", "away"):
        return "offline"
    seen = _aware(user.presence_at)
    now = now or utcnow()
    if seen is None or now - seen > timedelta(seconds=settings.handoff.presence_timeout_s):
        return "offline"
    return user.presence


def _online_filter(settings: Settings, now: datetime):
    return and_(
        User.active.is_(True),
        User.role.in_(AGENT_ROLES),
        User.presence == "online",
        User.presence_at >= now - timedelta(seconds=settings.handoff.presence_timeout_s),
    )


def agents_online(session: Session, settings: Settings) -> int:
    return session.scalar(select(func.count()).select_from(User).where(_online_filter(settings, utcnow()))) or 0


def load_of(session: Session, agent_id: str) -> int:
    """Conversations the agent holds now."""
    return session.scalar(
        select(func.count())
        .select_from(Conversation)
        .where(Conversation.assigned_agent_id == agent_id, Conversation.status == "assigned")
    ) or 0


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


def touch_presence(agent: User, settings: Settings) -> None:
    """Refresh an online or away agent's last-seen time (at most once a minute), so an open console keeps them on."""
    now = utcnow()
    seen = _aware(agent.presence_at)
    if agent.presence in ("online", "away") and (seen is None or now - seen >= _PRESENCE_TOUCH):
        agent.presence_at = now


def display_name(user: User | None) -> str | None:
    return (user.display_name or user.username) if user is not None else None


def _check_agent(agent: User) -> None:
    if not agent.active or agent.role not in AGENT_ROLES:
        raise Forbidden("only active agents and admins can work on conversations")


# --- payloads ----------------------------------------------------------------------------------------------------


def message_payload(msg: Message, *, author: str | None = None) -> dict[str, Any]:
    """A message as the APIs and live events show it (API.md's fields, plus author and private when set)."""
    data: dict[str, Any] = {
        "id": msg.id,
        "role": msg.role,
        "text": msg.text,
        "created_at": msg.created_at.isoformat() if msg.created_at else None,
        "citations": msg.citations or [],
        "abstained": bool(msg.abstained),
        "related": msg.related or [],
    }
    if msg.role == "agent":
        data["author"] = author
    if msg.private:
        data["private"] = True
    return data


def _names(session: Session, ids: set[str | None]) -> dict[str, str]:
    ids = {i for i in ids if i}
    if not ids:
        return {}
    return {u.id: display_name(u) for u in session.scalars(select(User).where(User.id.in_(ids)))}


def emit_message(session: Session, msg: Message, *, author: str | None = None) -> None:
    """Store a live event for a new message: a note for the console only, anything else for the customer too."""
    data = {**message_payload(msg, author=author), "conversation_id": msg.conversation_id}
    events.emit(
        session, conversation_id=msg.conversation_id, kind="note" if msg.private else "message", data=data,
        audience="console" if msg.private else "all",
    )


def public_messages(session: Session, conversation_id: str, *, before_seq: int | None = None) -> list[Message]:
    """The conversation's messages without internal notes, oldest first (optionally only those before a seq)."""
    q = select(Message).where(Message.conversation_id == conversation_id, Message.private.is_(False))
    if before_seq is not None:
        q = q.where(Message.seq < before_seq)
    return list(session.scalars(q.order_by(Message.seq)))


def customer_messages(session: Session, conversation_id: str) -> list[dict[str, Any]]:
    """What the customer may see of the conversation, oldest first: never internal notes."""
    rows = public_messages(session, conversation_id)
    names = _names(session, {m.author_id for m in rows})
    return [message_payload(m, author=names.get(m.author_id)) for m in rows]


# --- the queue ---------------------------------------------------------------------------------------------------


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


def _queue_order():
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
        select(Conversation.id).where(Conversation.status == "queued").order_by(*_queue_order())
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


def _validate_text(settings: Settings, text: str, *, what: str = "message") -> str:
    text = (text or "").strip()
    if not text:
        raise InvalidInput(f"the {what} is empty")
    limit = settings.chat.max_message_chars
    if len(text) > limit:
        raise InvalidInput(f"the {what} is too long ({len(text)} characters; the limit is {limit})")
    return text


def leave_offline_message(
    session: Session, settings: Settings, conversation: Conversation, *, message: str, email: str
) -> QueueInfo:
    """With nobody online the customer leaves a message and an e-mail address: an offline ticket in the queue."""
    email = validate_email(email)
    text = _validate_text(settings, message)
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
    _check_agent(agent)
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
    _check_agent(agent)
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
    _check_agent(agent)
    conversation = get_conversation(session, conversation_id)
    _check_holder(conversation, agent, doing="reply")
    if not (text or "").strip() and canned_id is not None:
        canned = session.get(CannedResponse, canned_id)
        if canned is None:
            raise NotFound("canned response not found")
        text = canned.text
    text = _validate_text(settings, text or "")
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
    _check_agent(agent)
    conversation = get_conversation(session, conversation_id)
    text = _validate_text(settings, text, what="note")
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
    _check_agent(agent)
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
    _emit_status(session, settings, conversation, queue_info(session, settings, conversation))
    if start == "queued":
        _broadcast_queue(session, settings)
    return conversation


def resolve(session: Session, settings: Settings, *, conversation_id: str, agent: User) -> Conversation:
    """Close the episode; the customer may then rate it, and writing again starts a new one with the bot."""
    _check_agent(agent)
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
    _emit_status(session, settings, conversation, queue_info(session, settings, conversation))
    from support_bot import learning  # here: learning reads this module's request patterns

    # Best effort once the resolve has committed: a suggestion that fails is logged, the resolve stands.
    learning.suggest_after_commit(session, settings, conversation.id)
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


# --- what the customer is told -----------------------------------------------------------------------------------


class _Blank(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def wait_words(eta_s: int | None) -> str:
    if eta_s is None:
        return "unknown"
    if eta_s < 60:
        return "less than a minute"
    minutes = round(eta_s / 60)
    return f"about {minutes} minute{'s' if minutes != 1 else ''}"


def handoff_text(settings: Settings, info: QueueInfo | None) -> str:
    """"Connecting you to a person" with place and wait, or, with nobody online, the offer to leave a message."""
    cfg = settings.handoff
    values = _Blank(company=settings.chat.company_name)
    if info is not None and info.status == "assigned":
        return f"{info.agent or 'A person'} from our team is with you now."
    if info is None or info.agents_online <= 0:
        return cfg.offline_text.format_map(values)
    values.update(position=info.position or 1, wait=wait_words(info.eta_s))
    return cfg.connecting_text.format_map(values)


def customer_status(session: Session, settings: Settings, conversation: Conversation) -> dict[str, Any]:
    """GET /status: {"status", "position", "eta_s", "agent", "agents_online"} (+ whether it can be rated)."""
    data = queue_info(session, settings, conversation).payload()
    data["can_rate"] = conversation.status == "resolved"
    data["rating"] = conversation.rating
    data["offline_message"] = conversation.contact_email is not None and conversation.status == "queued"
    return data


# --- the agent's summary -----------------------------------------------------------------------------------------

AGENT_SUMMARY_INSTRUCTION = (
    "You write a handover note for a support agent who is taking over a chat from the assistant. In one or two short "
    "sentences, say what the customer needs and what is still unresolved. Use only facts from the conversation; do "
    "not greet the customer and do not give advice."
)


def agent_summary_prompt(messages: list[Message], *, previous: str | None = None) -> list[ChatMessage]:
    parts = []
    if previous:
        parts.append(f"Summary of the earlier conversation:\n{previous.strip()}\n")
    parts.append(f"Conversation:\n{transcript(messages)}")
    return [
        ChatMessage(role="system", content=AGENT_SUMMARY_INSTRUCTION),
        ChatMessage(role="user", content="\n".join(parts)),
    ]


def write_agent_summary(settings: Settings, engine: Any, conversation_id: str) -> str | None:
    """Write and store the short problem summary agents see in the queue; the model only reads when it adds value."""
    with session_scope(settings) as session:
        conversation = session.get(Conversation, conversation_id)
        if conversation is None:
            return None
        rows = public_messages(session, conversation_id)
        previous = conversation.summary
    said = [m.text.strip() for m in rows if m.role == "customer" and m.text.strip()]
    if not said:
        return None
    text = ""
    if len(said) >= settings.handoff.summary_min_customer_messages:
        max_new = settings.handoff.summary_max_tokens
        window = [m for m in rows if m.role in ("customer", "bot", "agent")][-40:]
        messages = agent_summary_prompt(window, previous=previous)
        while len(window) > 2 and engine.prompt_tokens(messages) + max_new > engine.context_window:
            window = window[2:]
            messages = agent_summary_prompt(window, previous=previous)
        try:
            text = engine.generate(messages, max_new_tokens=max_new).strip()
        except Exception as exc:  # noqa: BLE001 - a failed or timed-out model still leaves the agent a summary
            log.warning("agent summary of %s: the model failed (%s); using the customer's words", conversation_id, exc)
            text = ""
    if not text:
        # One message says it all (or the model said nothing): the customer's own words are the summary.
        text = " / ".join(said[-3:])
    text = text[:1000]
    with session_scope(settings) as session:
        conversation = session.get(Conversation, conversation_id)
        if conversation is None:
            return None
        conversation.handoff_summary = text
        events.emit(
            session, conversation_id=conversation_id, kind="summary", audience="console",
            data={"conversation_id": conversation_id, "summary": text},
        )
    return text


# --- the console's views -----------------------------------------------------------------------------------------


def _preview(session: Session, conversation_id: str) -> str:
    text = session.scalar(
        select(Message.text)
        .where(Message.conversation_id == conversation_id, Message.role == "customer", Message.private.is_(False))
        .order_by(Message.seq.desc())
        .limit(1)
    )
    return (text or "")[:200]


def conversation_summary_payload(
    session: Session, settings: Settings, conversation: Conversation, *, names: dict[str, str] | None = None
) -> dict[str, Any]:
    names = names if names is not None else _names(session, {conversation.assigned_agent_id})
    now = utcnow()
    queued_at = _aware(conversation.queued_at)
    agent_id = conversation.assigned_agent_id
    return {
        "id": conversation.id,
        "status": conversation.status,
        "reason": conversation.handoff_reason,
        "reason_label": REASON_LABELS.get(conversation.handoff_reason or "", None),
        "handoff_detail": conversation.handoff_detail,
        "summary": conversation.handoff_summary,
        "priority": conversation.priority,
        "queued_at": queued_at.isoformat() if queued_at else None,
        "waiting_s": int((now - queued_at).total_seconds()) if queued_at and conversation.status == "queued" else None,
        "assigned_agent_id": agent_id,
        "agent": {"id": agent_id, "name": names.get(agent_id)} if agent_id else None,
        "contact_email": conversation.contact_email,
        "rating": conversation.rating,
        "preview": _preview(session, conversation.id),
        "customer_id": conversation.customer_id,
        "updated_at": conversation.updated_at.isoformat() if conversation.updated_at else None,
    }


def queue_entries(session: Session, settings: Settings) -> list[dict[str, Any]]:
    """Queued conversations in the order agents should take them: priority first, then the longest waiting."""
    rows = list(session.scalars(select(Conversation).where(Conversation.status == "queued").order_by(*_queue_order())))
    out = []
    for position, conversation in enumerate(rows, start=1):
        item = conversation_summary_payload(session, settings, conversation, names={})
        item["position"] = position
        out.append(item)
    return out


def list_conversations(
    session: Session, settings: Settings, *, status: str | None = None, agent_id: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    if status is not None and status not in STATUSES:
        raise InvalidInput(f"status must be one of {', '.join(STATUSES)}")
    query = select(Conversation)
    if status is not None:
        query = query.where(Conversation.status == status)
    if agent_id is not None:
        query = query.where(Conversation.assigned_agent_id == agent_id)
    rows = list(session.scalars(query.order_by(Conversation.updated_at.desc()).limit(max(1, min(limit, 500)))))
    names = _names(session, {c.assigned_agent_id for c in rows})
    return [conversation_summary_payload(session, settings, c, names=names) for c in rows]


def conversation_detail(session: Session, settings: Settings, conversation_id: str) -> dict[str, Any]:
    """Everything an agent needs: transcript with notes, the sources the bot used, reason and summary."""
    conversation = get_conversation(session, conversation_id)
    rows = list(
        session.scalars(select(Message).where(Message.conversation_id == conversation_id).order_by(Message.seq))
    )
    names = _names(session, {m.author_id for m in rows} | {conversation.assigned_agent_id, conversation.resolved_by})
    sources: dict[str, dict[str, Any]] = {}
    for m in rows:
        if m.role == "bot":
            for c in m.citations or []:
                key = c.get("chunk_id") or c.get("entry_id") or c.get("title") or str(len(sources))
                sources.setdefault(key, {k: v for k, v in c.items() if k != "n"})
    data = conversation_summary_payload(session, settings, conversation, names=names)
    data.update(
        {
            "handoff_reason": conversation.handoff_reason,
            "handoff_summary": conversation.handoff_summary,
            "bot_summary": conversation.summary,
            "messages": [message_payload(m, author=names.get(m.author_id)) for m in rows],
            "sources": list(sources.values()),
            "resolved_at": conversation.resolved_at.isoformat() if conversation.resolved_at else None,
            "resolved_by": names.get(conversation.resolved_by) if conversation.resolved_by else None,
            "rating_comment": conversation.rating_comment,
            "created_at": conversation.created_at.isoformat() if conversation.created_at else None,
        }
    )
    if conversation.status == "queued":
        data["position"] = queue_position(session, conversation)
    return data


def agent_list(session: Session, settings: Settings, *, online_only: bool = False) -> list[dict[str, Any]]:
    """Agents (and admins) with presence and load, online first: the transfer list."""
    users = list(
        session.scalars(
            select(User).where(User.active.is_(True), User.role.in_(AGENT_ROLES)).order_by(User.username)
        )
    )
    now = utcnow()
    out = []
    for user in users:
        presence = effective_presence(user, settings, now)
        if online_only and presence != "online":
            continue
        out.append(
            {
                "id": user.id,
                "username": user.username,
                "display_name": display_name(user),
                "role": user.role,
                "presence": presence,
                "load": load_of(session, user.id),
                "capacity": user.capacity,
            }
        )
    order = {"online": 0, "away": 1, "offline": 2}
    out.sort(key=lambda a: order[a["presence"]])
    return out


# --- canned responses --------------------------------------------------------------------------------------------


def canned_payload(canned: CannedResponse) -> dict[str, Any]:
    return {
        "id": canned.id,
        "title": canned.title,
        "text": canned.text,
        "created_by": canned.created_by,
        "created_at": canned.created_at.isoformat() if canned.created_at else None,
    }


def list_canned(session: Session) -> list[CannedResponse]:
    return list(session.scalars(select(CannedResponse).order_by(CannedResponse.title)))


def create_canned(session: Session, settings: Settings, *, actor: User, title: str, text: str) -> CannedResponse:
    _check_agent(actor)
    title = (title or "").strip()
    if not title or len(title) > 255:
        raise InvalidInput("the title must be 1 to 255 characters")
    text = _validate_text(settings, text, what="canned response")
    if session.scalar(select(CannedResponse.id).where(CannedResponse.title == title)) is not None:
        raise Conflict(f"a canned response called '{title}' exists already")
    canned = CannedResponse(title=title, text=text, created_by=actor.id)
    session.add(canned)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(f"a canned response called '{title}' exists already") from None
    audit.record(
        session, actor=actor, action="canned.create", target_type="canned_response", target_id=str(canned.id),
        detail={"title": title},
    )
    return canned


def delete_canned(session: Session, *, actor: User, canned_id: int) -> None:
    _check_agent(actor)
    canned = session.get(CannedResponse, canned_id)
    if canned is None:
        raise NotFound("canned response not found")
    audit.record(
        session, actor=actor, action="canned.delete", target_type="canned_response", target_id=str(canned.id),
        detail={"title": canned.title},
    )
    session.delete(canned)

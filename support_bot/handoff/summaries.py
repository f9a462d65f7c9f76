"""Summaries of a conversation that agents and prompts read: the handover note agents see in the queue, and the check
every model-written summary passes before it is stored (no loops, speakers as stored, nothing the chat did not say).

A summary that fails the check is built from the transcript instead: the customer's first request, the bot's last
answer or decline, why the chat went to a person, and the agent's last reply, each under its stored speaker.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from support_bot.core.config import Settings
from support_bot.core.db import session_scope
from support_bot.handoff.messages import SPEAKER, public_messages, transcript
from support_bot.handoff.texts import without_handoff_text
from support_bot.handoff.triggers import REASON_LABELS
from support_bot.live import events
from support_bot.llm.prompt import CITATION_RE, ChatMessage
from support_bot.models import Conversation, Message

log = logging.getLogger(__name__)

AGENT_SUMMARY_INSTRUCTION = (
    "You write a handover note for a support agent who is taking over a chat from the assistant. In one or two short "
    "sentences, say what the customer needs and what is still unresolved. Write about the customer in the third "
    "person; do not copy the conversation line by line and do not repeat yourself. Use only facts from the "
    "conversation; do not greet the customer and do not give advice."
)

# Share of a sentence's words the conversation must have. Lower than an answer's bar: a summary rewords on purpose.
MIN_SUMMARY_SUPPORT = 0.6
# Agent summaries are written in the background, one at a time, with no customer waiting: they get this much time
# (or the answers' own limit, when that is longer) rather than the customer's deadline, so a slow model finishes.
SUMMARY_TIMEOUT_S = 300.0
# A summary this close to its token budget most likely ran into it: only its finished sentences are kept.
BUDGET_SHARE = 0.9
_FINISHED_AT = re.compile(r"[.!?…][\"')\]]*(?=\s|$)|\n")
# Each part of a summary built from the transcript is cut to about this many characters.
EXTRACT_CHARS = 240

_WORD_RE = re.compile(r"[a-z0-9]+(?:[.,][0-9]+)*")
_STOPWORDS = frozenset(
    "a an and are as at be but by can do does for from has have how i if in is it its me my no not of on or our so "
    "that the their there these this to us was we what when where which who will with you your also please any all "
    "just very more some about both into out up then than they them he she his her been were had did would should "
    "might must here those such only even again too each other own same because while after before since until over "
    "under either neither nor one don won didn doesn isn wasn".split()
)
# Words a summary may use about any chat without the chat having said them ("The customer asked ...").
_META = frozenset(
    "customer client user visitor assistant bot chatbot agent person human team staff support representative ask "
    "asked want wanted need needed request requested question answer answered reply replied tell told said say "
    "explain explained mention mentioned help helped know find found could cannot unable still open unresolved "
    "resolved issue problem conversation chat summary handoff handed hand transfer transferred talk speak spoke "
    "contact wait waiting queue provide provided give given gave information detail regarding concerning already "
    "yet whether currently now".split()
)
# A line or sentence that opens with one of these names and a colon says who spoke.
_SPEAKER_NAMES = {
    "customer": "customer", "the customer": "customer", "user": "customer", "client": "customer",
    "visitor": "customer", "assistant": "bot", "the assistant": "bot", "bot": "bot", "the bot": "bot",
    "chatbot": "bot", "ai": "bot", "agent": "agent", "the agent": "agent", "support agent": "agent",
    "operator": "agent", "human": "agent", "representative": "agent",
}
_LABEL_RE = re.compile(
    r"(?:^|(?<=[.!?])[ \t]+)[ \t]*(?:[-*•]|\d{1,2}[.)])?[ \t]*\**(?P<name>[A-Za-z][A-Za-z ]{0,24}?)\**[ \t]*:[ \t]*",
    re.MULTILINE,
)
_LIST_MARK_RE = re.compile(r"^[ \t]*(?:[-*•]|\d{1,2}[.)])[ \t]+")
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+|\n+")


def _key(word: str) -> str:
    # Near enough to a stem for rewording: "returns"/"returned"/"return", "delivery"/"delivered".
    if any(c.isdigit() for c in word):
        return word
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        word = word[:-1]
    return word[:5]


def _words(text: str) -> list[str]:
    return [w for w in _WORD_RE.findall(text.lower()) if w not in _STOPWORDS and len(w) > 1]


def _keys(text: str) -> list[str]:
    return [_key(w) for w in _words(text)]


_META_KEYS = frozenset(_key(w) for w in _META)


def _numbers(text: str) -> set[str]:
    return {w.rstrip(".,") for w in _WORD_RE.findall(text.lower()) if any(c.isdigit() for c in w)}


def _speaker(name: str, bot_name: str) -> str | None:
    name = " ".join(name.lower().split())
    if bot_name and name == " ".join(bot_name.lower().split()):
        return "bot"
    return _SPEAKER_NAMES.get(name)


def _labelled_parts(text: str, bot_name: str) -> list[tuple[str, str]]:
    """(stored role, what follows the label) for each "Customer: ..." style part of the text."""
    parts = []
    for line in text.splitlines():
        found = [m for m in _LABEL_RE.finditer(line) if _speaker(m.group("name"), bot_name)]
        for i, m in enumerate(found):
            end = found[i + 1].start() if i + 1 < len(found) else len(line)
            parts.append((_speaker(m.group("name"), bot_name), line[m.end() : end]))
    return parts


def summary_problem(
    text: str, messages: Sequence[Message], *, previous: str | None = None, bot_name: str = ""
) -> str | None:
    """What is wrong with a model's summary (a loop, a wrong speaker, unsaid words), or None if it may be stored."""
    said = [m for m in messages if m.role in SPEAKER and m.text.strip()]
    source = "\n".join([previous or "", *(m.text for m in said)])
    vocab = set(_keys(source))
    numbers = _numbers(source)

    # "1." or "-" before a line is layout, not a figure or a word of the summary.
    lines = [_LIST_MARK_RE.sub("", line).strip() for line in text.splitlines() if line.strip()]
    body = "\n".join(lines)
    seen_lines: set[tuple[str, ...]] = set()
    for line in lines:
        key = tuple(_WORD_RE.findall(line.lower()))
        if len(key) >= 2 and key in seen_lines:
            return f"repeats the line {line[:80]!r}"
        seen_lines.add(key)

    by_role: dict[str, set[str]] = {}
    for m in said:
        by_role.setdefault(m.role, set()).update(_keys(m.text))
    for role, part in _labelled_parts(body, bot_name):
        keys = [k for k in _keys(part) if k not in _META_KEYS]
        if len(keys) < 2:
            continue
        own = by_role.get(role, set())
        if sum(k in own for k in keys) / len(keys) < MIN_SUMMARY_SUPPORT:
            return f"puts words under {SPEAKER[role]!r} that this speaker did not say: {part.strip()[:80]!r}"

    seen_sentences: list[set[str]] = []
    topical = False
    for sentence in _SENTENCE_BREAK.split(_LABEL_RE.sub(" ", body)):
        keys = _keys(sentence)
        if not keys:
            continue
        if any(n not in numbers for n in _numbers(sentence)):
            return f"has a figure the conversation does not: {sentence.strip()[:80]!r}"
        if len(keys) >= 2 and any(set(keys) <= earlier for earlier in seen_sentences):
            return f"repeats itself: {sentence.strip()[:80]!r}"
        seen_sentences.append(set(keys))
        if sum(k in vocab or k in _META_KEYS for k in keys) / len(keys) < MIN_SUMMARY_SUPPORT:
            return f"says what the conversation does not: {sentence.strip()[:80]!r}"
        topical = topical or any(k in vocab and k not in _META_KEYS for k in keys)
    if not topical:
        return "says nothing about what was discussed"
    return None


def _clip(text: str) -> str:
    text = " ".join(CITATION_RE.sub("", text).split())
    if len(text) <= EXTRACT_CHARS:
        return text
    cut = text[:EXTRACT_CHARS].rsplit(" ", 1)[0].rstrip(",;:")
    return f"{cut}…"


def extractive_summary(settings: Settings, messages: Sequence[Message], *, reason: str | None = None) -> str:
    """The transcript's own summary: first request, bot's last answer, handoff reason, agent's last reply, by role."""
    lines = []
    asked = [m for m in messages if m.role == "customer" and m.text.strip()]
    # A greeting first ("hi") is not the request; the first message with something in it is.
    request = next((m for m in asked if len(_words(m.text)) >= 2), asked[0] if asked else None)
    if request is not None:
        lines.append(f"{SPEAKER['customer']}: {_clip(request.text)}")
    for m in reversed(messages):
        # The bot's own "connecting you to a person" text says nothing about the problem.
        answer = without_handoff_text(settings, m.text) if m.role == "bot" else ""
        if answer:
            lines.append(f"{SPEAKER['bot']}: {_clip(answer)}")
            break
    if reason:
        lines.append(f"Handoff reason: {REASON_LABELS.get(reason, reason)}.")
    reply = next((m for m in reversed(messages) if m.role == "agent" and m.text.strip()), None)
    if reply is not None:
        lines.append(f"{SPEAKER['agent']}: {_clip(reply.text)}")
    return "\n".join(lines)


def checked_summary(
    settings: Settings,
    text: str,
    messages: Sequence[Message],
    *,
    previous: str | None = None,
    reason: str | None = None,
    what: str = "summary",
) -> str:
    """The model's summary when summary_problem finds nothing (citation marks dropped), else the extractive one."""
    problem = summary_problem(text, messages, previous=previous, bot_name=settings.chat.bot_name)
    if problem is None:
        return CITATION_RE.sub("", text).strip()
    conversation_id = messages[0].conversation_id if messages else None
    log.info("%s of %s: the model's text %s; using the transcript's own words", what, conversation_id, problem)
    return extractive_summary(settings, messages, reason=reason)


def summary_timeout_s(settings: Settings) -> float:
    """The time a background summary may take: its own budget, never less than a customer's answer gets."""
    return max(SUMMARY_TIMEOUT_S, settings.llm.timeout_s)


def finished_sentences(text: str) -> str:
    """`text` up to the end of its last finished sentence (or line): what a cut-off summary may keep."""
    text = text.strip()
    ends = [m.end() for m in _FINISHED_AT.finditer(text)]
    return text[: ends[-1]].strip() if ends else ""


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
        previous, reason = conversation.summary, conversation.handoff_reason
    said = [m.text.strip() for m in rows if m.role == "customer" and m.text.strip()]
    if not said:
        return None
    if len(said) >= settings.handoff.summary_min_customer_messages:
        max_new = settings.handoff.summary_max_tokens
        window = [m for m in rows if m.role in SPEAKER][-40:]
        messages = agent_summary_prompt(window, previous=previous)
        while len(window) > 2 and engine.prompt_tokens(messages) + max_new > engine.context_window:
            window = window[2:]
            messages = agent_summary_prompt(window, previous=previous)
        try:
            # A model that runs out of time raises (AnswerTruncated): a cut-off text never passes for a summary.
            text = engine.generate(messages, max_new_tokens=max_new, timeout_s=summary_timeout_s(settings)).strip()
        except Exception as exc:  # noqa: BLE001 - a failed or timed-out model still leaves the agent a summary
            log.warning("agent summary of %s: the model failed (%s); using the transcript", conversation_id, exc)
            text = ""
        if text and engine.count_tokens(text) >= BUDGET_SHARE * max_new:
            # It ran into its token budget, most likely mid-sentence: keep what it finished.
            text = finished_sentences(text)
        if text:
            text = checked_summary(settings, text, rows, previous=previous, reason=reason, what="agent summary")
        else:
            text = extractive_summary(settings, rows, reason=reason)
    else:
        # One message says it all: the customer's own words are the summary.
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

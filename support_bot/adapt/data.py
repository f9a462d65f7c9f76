"""Training data from what the company already has, and the fixed held-out slice that is never trained on.

Examples are question -> answer pairs: the knowledge base's entries (FAQ rows, guide sections, uploaded chat logs, the
learned source; PII was redacted at ingest), conversations a person resolved (the customer's problem -> the agent's
answer, redacted and generalized as the learning loop does it), approved suggestions, and bot answers a customer
marked helpful. Examples whose answers are the same text form a group: they answer the same thing.

The held-out slice is chosen by a seeded hash of each example's key (and of each group's answer), so it stays the same
from one run to the next while the data grows, and one example never moves between training and evaluation.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from support_bot.core.config import AdaptSettings, Settings
from support_bot.core.errors import InvalidInput
from support_bot.knowledge.calibration import text_key
from support_bot.safety.pii import redact

# The fewest examples (and distinct answers) worth tuning on: fewer cannot hold out a slice and still teach anything.
MIN_EXAMPLES = 6
MIN_GROUPS = 3
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Example:
    # Stable identity: origin, source and entry id (or the row's id), so the held-out choice never drifts.
    key: str
    question: str
    answer: str
    # kb | chat | suggestion | helpful
    origin: str
    # Examples with the same answer text share it.
    group: str


@dataclass
class Split:
    """Training examples, the held-out questions (their answers stay indexed) and the held-out answer groups."""

    train: list[Example]
    # Held-out questions: the example's answer is indexed without its question; the question must find it.
    heldout: list[Example]
    # Whole groups left out of training and of the evaluation index: their questions should be declined.
    abstain: list[Example]
    # Every example the evaluation indexes (all but the abstain groups).
    indexed: list[Example]
    # The abstain groups, asked or not: never trained on.
    withheld_groups: set[str] = field(default_factory=set)
    fingerprint: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    # Every held-out question, asked or not: never trained on.
    heldout_keys: set[str] = field(default_factory=set)


def normalize(text: str) -> str:
    return _SPACE.sub(" ", (text or "").strip())


def group_of(answer: str) -> str:
    return text_key(answer)


def _example(key: str, question: str, answer: str, origin: str) -> Example | None:
    question, answer = normalize(question), normalize(answer)
    if not question or not answer or question == answer:
        return None
    return Example(key=key, question=question, answer=answer, origin=origin, group=group_of(answer))


def knowledge_examples(session: Session) -> list[Example]:
    """One example per live knowledge-base entry: its question (title) -> its whole answer, in source order."""
    from support_bot.models import Chunk, Document, Source

    stmt = (
        select(Chunk.entry_id, Chunk.id, Chunk.title, Chunk.text, Chunk.extra, Source.name)
        .join(Document, Chunk.document_id == Document.id)
        .join(Source, Chunk.source_id == Source.id)
        .where(Document.version == Source.active_version)
        .order_by(Source.name, Chunk.ordinal)
    )
    seen: set[str] = set()
    out: list[Example] = []
    for entry_id, chunk_id, title, text, extra, source in session.execute(stmt):
        key = f"kb:{source}:{entry_id or chunk_id}"
        if key in seen or not title:
            continue  # a long entry's later parts repeat its first; an untitled chunk has no question
        seen.add(key)
        body = (extra or {}).get("answer") or (text[len(title) + 1 :] if text.startswith(title + "\n") else text)
        found = _example(key, title, body, "kb")
        if found is not None:
            out.append(found)
    return out


def chat_examples(session: Session, settings: Settings, limit: int) -> list[Example]:
    """The newest conversations a person resolved: problem -> the agent's answer, as the learning loop reads them."""
    from support_bot.learning import conversation_pair
    from support_bot.models import Conversation

    ids = session.scalars(
        select(Conversation.id)
        .where(Conversation.status == "resolved")
        .order_by(Conversation.resolved_at.desc(), Conversation.id)
        .limit(limit)
    ).all()
    out: list[Example] = []
    for conversation_id in ids:
        pair = conversation_pair(session, settings, conversation_id)
        found = _example(f"chat:{conversation_id}", *pair, "chat") if pair else None
        if found is not None:
            out.append(found)
    return out


def suggestion_examples(session: Session) -> list[Example]:
    """Suggestions ops approved (their wording as approved)."""
    from support_bot.models import FaqSuggestion

    rows = session.execute(
        select(FaqSuggestion.id, FaqSuggestion.question, FaqSuggestion.answer)
        .where(FaqSuggestion.status == "approved")
        .order_by(FaqSuggestion.created_at, FaqSuggestion.id)
    )
    return [e for sid, q, a in rows if (e := _example(f"suggestion:{sid}", q, a, "suggestion")) is not None]


def helpful_examples(session: Session, limit: int) -> list[Example]:
    """Bot answers a customer marked helpful: the customer's question (redacted) -> the answer given."""
    from sqlalchemy.orm import aliased

    from support_bot.models import Feedback, Message

    asked = aliased(Message)
    rows = session.execute(
        select(Message.id, asked.text, Message.text)
        .join(Feedback, Feedback.message_id == Message.id)
        .join(asked, asked.id == Message.reply_to_id)
        .where(Feedback.rating == "up", Message.role == "bot", Message.abstained.is_(False))
        .order_by(Feedback.created_at.desc(), Message.id)
        .limit(limit)
    )
    out = []
    for message_id, question, answer in rows:
        found = _example(f"helpful:{message_id}", redact(question).text, redact(answer).text, "helpful")
        if found is not None:
            out.append(found)
    return out


def collect(session: Session, settings: Settings) -> list[Example]:
    """Every example, each (question, answer) pair once: the knowledge base's wording wins over repeats."""
    cfg = settings.adapt
    found = (
        knowledge_examples(session)
        + suggestion_examples(session)
        + chat_examples(session, settings, cfg.max_chats)
        + helpful_examples(session, cfg.max_chats)
    )
    seen: set[tuple[str, str]] = set()
    out: list[Example] = []
    for e in found:
        pair = (e.question.casefold(), e.group)
        if pair not in seen:
            seen.add(pair)
            out.append(e)
    return out


def _rank(seed: int, kind: str, value: str) -> float:
    """A fixed number in [0, 1) for each value: held out when below the share; the same whatever else is in the data."""
    return int(hashlib.sha256(f"{seed}:{kind}:{value}".encode()).hexdigest()[:13], 16) / 16**13


def _below(items: list, share: float, rank) -> list:
    """The items ranked below `share`, lowest first; at least the lowest one when share > 0 (tiny data sets)."""
    ordered = sorted(items, key=rank)
    chosen = [x for x in ordered if rank(x) < share]
    return chosen or (ordered[:1] if share > 0 else [])


def split(examples: list[Example], cfg: AdaptSettings) -> Split:
    """The seeded held-out slice: whole answer groups for declining, then single questions for finding answers.

    Whether an example (or a group) is held out depends on its own key alone, so data added later never moves a
    held-out example into training. The evaluation asks at most heldout_max / abstain_max of them.
    """
    groups = sorted({e.group for e in examples})
    if len(examples) < MIN_EXAMPLES or len(groups) < MIN_GROUPS:
        raise InvalidInput(
            f"tuning needs at least {MIN_EXAMPLES} question -> answer examples with {MIN_GROUPS} different answers; "
            f"the company's data has {len(examples)} with {len(groups)}: upload an FAQ first"
        )
    abstain_groups = set(_below(groups, cfg.abstain_fraction, lambda g: _rank(cfg.seed, "group", g)))
    rest = [e for e in examples if e.group not in abstain_groups]
    held = _below(rest, cfg.heldout_fraction, lambda e: _rank(cfg.seed, "entry", e.key))
    held_keys = {e.key for e in held}
    train = [e for e in rest if e.key not in held_keys]
    abstain = sorted((e for e in examples if e.group in abstain_groups), key=lambda e: _rank(cfg.seed, "entry", e.key))
    heldout = held[: cfg.heldout_max]
    abstain_asked = abstain[: cfg.abstain_max]
    digest = hashlib.sha256()
    for e in examples:
        digest.update(f"{e.key}\0{e.question}\0{e.answer}\0".encode())
    counts = {"examples": len(examples), "train": len(train), "heldout": len(held), "heldout_asked": len(heldout),
              "abstain": len(abstain), "abstain_asked": len(abstain_asked), "abstain_groups": len(abstain_groups)}
    for e in examples:
        counts[f"from_{e.origin}"] = counts.get(f"from_{e.origin}", 0) + 1
    return Split(
        train=train, heldout=heldout, abstain=abstain_asked, indexed=rest, withheld_groups=abstain_groups,
        heldout_keys=held_keys,
        fingerprint=f"{cfg.seed}:{cfg.heldout_fraction}:{cfg.abstain_fraction}:{digest.hexdigest()[:16]}",
        counts=counts,
    )

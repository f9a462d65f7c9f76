"""Content gaps: the customer questions the bot could not answer well, grouped by meaning.

A question is a gap when the bot's reply to it abstained or got a thumbs-down. The question is the customer message the
reply answers (Message.reply_to_id), or, for a reply stored without one, the customer's last message before it.
Questions are embedded with the project's embedder and grouped greedily: newest first, each joins the group whose
centre (mean of its unit vectors) is most similar, if at least `analytics.gap_similarity`, or starts a new group; one
more pass then moves every question to its most similar centre, so early seeds do not decide a group alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import exists, func, or_, select
from sqlalchemy.orm import Session, aliased

from support_bot.ops.analytics import DateRange, Table, as_utc, within
from support_bot.core.config import Settings
from support_bot.models import Feedback, Message

# Ids per IN (...) list: well under every database's limit on bound parameters.
_ID_BATCH = 500
# Questions compared with the existing groups in one matrix product.
_BLOCK = 256


@dataclass
class GapQuestion:
    message_id: str  # the customer's message
    conversation_id: str
    text: str
    asked_at: datetime
    abstained: bool
    thumbs_down: bool


@dataclass
class GapGroup:
    label: str  # the question nearest the group's centre
    count: int
    abstained: int
    thumbs_down: int
    latest: datetime
    examples: list[GapQuestion] = field(default_factory=list)


@dataclass
class GapReport:
    range: DateRange
    questions: int
    # True when there were more than settings.analytics.gap_max_questions and the oldest were left out.
    truncated: bool
    threshold: float
    groups: list[GapGroup] = field(default_factory=list)


def gap_questions(session: Session, rng: DateRange, *, limit: int) -> tuple[list[GapQuestion], bool]:
    """Questions whose bot reply (sent in the range) abstained or got a thumbs-down, newest first, at most `limit`.

    Returns the questions and whether older ones were left out.
    """
    reply = aliased(Message)
    asked = aliased(Message)
    down = exists().where(Feedback.message_id == reply.id, Feedback.rating == "down")
    preceding = (
        select(asked.id)
        .where(asked.conversation_id == reply.conversation_id, asked.role == "customer", asked.seq < reply.seq)
        .order_by(asked.seq.desc())
        .limit(1)
        .correlate(reply)
        .scalar_subquery()
    )
    rows = session.execute(
        select(func.coalesce(reply.reply_to_id, preceding), reply.abstained, down)
        .where(reply.role == "bot", within(reply.created_at, rng), or_(reply.abstained.is_(True), down))
        .order_by(reply.created_at.desc(), reply.seq.desc())
        .limit(limit + 1)
    ).all()
    truncated = len(rows) > limit
    flags: dict[str, list[bool]] = {}
    for question_id, abstained, thumbs_down in rows[:limit]:
        if question_id is None:
            continue
        seen = flags.setdefault(question_id, [False, False])
        seen[0] |= bool(abstained)
        seen[1] |= bool(thumbs_down)
    ids = list(flags)
    questions = []
    for i in range(0, len(ids), _ID_BATCH):
        batch = ids[i : i + _ID_BATCH]
        for msg in session.scalars(
            select(Message).where(Message.id.in_(batch), Message.role == "customer", Message.private.is_(False))
        ):
            text = " ".join((msg.text or "").split())
            if text:
                abstained, thumbs_down = flags[msg.id]
                questions.append(
                    GapQuestion(msg.id, msg.conversation_id, text, as_utc(msg.created_at), abstained, thumbs_down)
                )
    questions.sort(key=lambda q: (q.asked_at, q.message_id), reverse=True)
    return questions, truncated


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


def _same_words(text: str) -> str:
    return re.sub(r"[^\w]+", " ", text.casefold()).strip()


def group_questions(
    questions: list[GapQuestion], vectors: np.ndarray, *, threshold: float, max_examples: int
) -> list[GapGroup]:
    """Group questions (newest first) by cosine similarity of their unit vectors; groups newest first."""
    if not questions:
        return []
    vectors = np.asarray(vectors, dtype=np.float32)
    n = len(questions)
    assignment = np.zeros(n, dtype=np.int64)
    sums = np.zeros_like(vectors)
    centres = np.zeros_like(vectors)
    count = 0
    # Similarities to the groups that existed when a block of questions began come from one matrix product; only the
    # groups changed or started within the block are compared one question at a time. Same result as comparing every
    # question with every current centre, without reading all centres once per question.
    for lo in range(0, n, _BLOCK):
        block = vectors[lo : lo + _BLOCK]
        base = count
        before = block @ centres[:base].T
        touched: list[int] = []
        for j, vector in enumerate(block):
            best, best_similarity = -1, -np.inf
            if base:
                similarity = before[j].copy()
                if touched:
                    similarity[touched] = centres[touched] @ vector
                best = int(np.argmax(similarity))
                best_similarity = float(similarity[best])
            if count > base:
                fresh = centres[base:count] @ vector
                k = int(np.argmax(fresh))
                if fresh[k] > best_similarity:
                    best, best_similarity = base + k, float(fresh[k])
            if best >= 0 and best_similarity >= threshold:
                sums[best] += vector
                centres[best] = _unit(sums[best])
                assignment[lo + j] = best
                if best < base and best not in touched:
                    touched.append(best)
                continue
            sums[count] = vector
            centres[count] = _unit(vector)
            assignment[lo + j] = count
            count += 1
    # One refinement pass against the finished centres (in slices, to bound memory); a question stays where it was
    # when no centre is close enough.
    centres = centres[:count]
    for lo in range(0, n, 1024):
        similarity = vectors[lo : lo + 1024] @ centres.T
        best = similarity.argmax(axis=1)
        keep = similarity[np.arange(len(best)), best] >= threshold
        assignment[lo : lo + 1024] = np.where(keep, best, assignment[lo : lo + 1024])

    members_of: dict[int, list[int]] = {}
    for i, group_id in enumerate(assignment.tolist()):
        members_of.setdefault(group_id, []).append(i)
    groups: list[GapGroup] = []
    for members in members_of.values():
        centre = _unit(vectors[members].sum(axis=0))
        # Ties go to the newest question: members are in newest-first order and argmax takes the first.
        label = questions[members[int(np.argmax(vectors[members] @ centre))]].text
        examples, seen = [], set()
        for i in members:
            key = _same_words(questions[i].text)
            if key not in seen:
                seen.add(key)
                examples.append(questions[i])
            if len(examples) >= max_examples:
                break
        groups.append(
            GapGroup(
                label=label,
                count=len(members),
                abstained=sum(questions[i].abstained for i in members),
                thumbs_down=sum(questions[i].thumbs_down for i in members),
                latest=max(questions[i].asked_at for i in members),
                examples=examples,
            )
        )
    groups.sort(key=lambda g: (g.latest, g.count), reverse=True)
    return groups


def content_gaps(session: Session, settings: Settings, rng: DateRange, *, embedder: Any = None) -> GapReport:
    """The range's gap questions grouped by meaning; the embedding model loads only when there is something to group."""
    cfg = settings.analytics
    questions, truncated = gap_questions(session, rng, limit=cfg.gap_max_questions)
    groups: list[GapGroup] = []
    if questions:
        if embedder is None:
            from support_bot.knowledge.embedder import get_embedder

            embedder = get_embedder(settings)
        vectors = embedder.encode([q.text for q in questions])
        groups = group_questions(
            questions, vectors, threshold=cfg.gap_similarity, max_examples=cfg.gap_examples
        )
    return GapReport(
        range=rng, questions=len(questions), truncated=truncated, threshold=cfg.gap_similarity, groups=groups
    )


def gaps_payload(gaps: GapReport) -> dict[str, Any]:
    """The gaps as JSON-ready data."""
    return {
        "range": gaps.range.payload(),
        "questions": gaps.questions,
        "truncated": gaps.truncated,
        "threshold": gaps.threshold,
        "groups": [
            {
                "label": g.label,
                "count": g.count,
                "abstained": g.abstained,
                "thumbs_down": g.thumbs_down,
                "latest": g.latest.isoformat(),
                "examples": [
                    {
                        "message_id": q.message_id,
                        "conversation_id": q.conversation_id,
                        "text": q.text,
                        "asked_at": q.asked_at.isoformat(),
                        "abstained": q.abstained,
                        "thumbs_down": q.thumbs_down,
                    }
                    for q in g.examples
                ],
            }
            for g in gaps.groups
        ],
    }


def gaps_table(gaps: GapReport) -> Table:
    """One row per group, for the CSV export; examples joined with " | "."""
    return Table(
        "gaps",
        "Content gaps",
        ["group", "questions", "abstained", "thumbs_down", "latest", "label", "examples"],
        [
            [n, g.count, g.abstained, g.thumbs_down, g.latest, g.label, " | ".join(q.text for q in g.examples)]
            for n, g in enumerate(gaps.groups, start=1)
        ],
    )

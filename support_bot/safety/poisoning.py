"""Knowledge poisoning at ingest: entries that carry instructions for the model are flagged when they are uploaded.

Chat already drops such an entry whenever retrieval brings it up (chat/screening.py); that protects customers but
tells ops nothing. Here the same input guard reads every entry of an upload as it is ingested, and each entry it
would drop is recorded as a safety event (direction "ingest") naming the entry, its source and the job, and logged
as a warning, so the upload's job and source can show it. Nothing is refused: the entry is stored as uploaded (an
FAQ that quotes a phishing message as a warning to customers is legitimate), and answer-time screening still applies.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_, select

from support_bot.core.config import Settings
from support_bot.core.db import session_scope
from support_bot.models import IngestJob, SafetyEvent
from support_bot.safety.input_guard import InputGuard

log = logging.getLogger(__name__)

DIRECTION = "ingest"
# The categories that make an entry an instruction to the model rather than knowledge (as at answer time).
_INSTRUCTION_CATEGORIES = frozenset({"prompt_injection", "jailbreak", "system_prompt_extraction", "obfuscation"})
_REF_RE = re.compile(r"^\[job (?P<job>[^\]]*)\] \[source (?P<source>[^\]]*)\] ")


@dataclass(frozen=True)
class PoisonedEntry:
    """An uploaded entry the guard reads as instructions for the model."""

    entry_id: str
    title: str
    category: str
    score: float
    reason: str

    @property
    def warning(self) -> str:
        name = f"entry {self.entry_id!r}" if self.entry_id else f"entry {self.title[:60]!r}"
        return f"{name} carries instructions for the model ({self.category}, {self.score:.2f}): {self.reason}"


def screening_guard(settings: Settings) -> InputGuard:
    """The input guard as ingest runs it: every signal but the sentence embedding, which would cost ~15 ms an entry
    (minutes on a large upload); the learned n-gram model and the phrase families still read every entry."""
    safety = settings.safety.model_copy(update={"use_embeddings": False})
    return InputGuard(settings.model_copy(update={"safety": safety}))


def screen_entries(
    entries: Iterable[Any], *, settings: Settings, guard: InputGuard | None = None
) -> list[PoisonedEntry]:
    """The entries (anything with id, question and answer) that the guard would drop at answer time."""
    if not settings.safety.enabled:
        return []
    guard = guard or screening_guard(settings)
    found = []
    for entry in entries:
        question = (getattr(entry, "question", "") or "").strip()
        answer = (getattr(entry, "answer", "") or "").strip()
        verdict = guard.check(f"{question}\n{answer}"[: settings.safety.max_input_chars], entry=True)
        if verdict.action in ("block", "handoff") and verdict.category in _INSTRUCTION_CATEGORIES:
            found.append(
                PoisonedEntry(
                    entry_id=str(getattr(entry, "id", "") or ""), title=question, category=verdict.category,
                    score=verdict.score, reason=verdict.reason,
                )
            )
    return found


def flag_poisoned_entries(
    entries: Iterable[Any], *, settings: Settings, job_id: str, source_name: str, filename: str = ""
) -> list[PoisonedEntry]:
    """Screen an upload's entries; record and log a warning for each one that carries instructions for the model.

    A job run again (a retry, a resumed run) records its warnings once."""
    found = screen_entries(entries, settings=settings)
    if not found or ingest_warnings(settings, job_id=job_id):
        return found
    with session_scope(settings) as session:
        for entry in found:
            log.warning("ingest of %s into source %r: %s", filename or job_id, source_name, entry.warning)
            session.add(
                SafetyEvent(
                    conversation_id=None, message_id=None, direction=DIRECTION, category=entry.category,
                    action="flagged", score=float(entry.score),
                    reason=f"[job {job_id}] [source {source_name}] {entry.warning}"[:2000],
                    excerpt=entry.title[:300],
                )
            )
    return found


def ingest_warnings(settings: Settings, *, job_id: str | None = None, source_name: str | None = None) -> list[str]:
    """The warnings recorded for an ingest job or a source's uploads, oldest first, each naming the entry."""
    with session_scope(settings) as session:
        reasons = session.scalars(
            select(SafetyEvent.reason).where(SafetyEvent.direction == DIRECTION).order_by(SafetyEvent.id)
        ).all()
    out = []
    for reason in reasons:
        m = _REF_RE.match(reason)
        if m is None:
            continue
        if (job_id is None or m["job"] == job_id) and (source_name is None or m["source"] == source_name):
            out.append(reason[m.end():])
    return out


def warnings_by_job(settings: Settings, job_ids: Iterable[str]) -> dict[str, list[str]]:
    """Each named job's recorded warnings, oldest first (one read for a whole jobs list)."""
    wanted = {j for j in job_ids if j}
    if not wanted:
        return {}
    # The console's jobs list asks this on every refresh: read only these jobs' events.
    mine = or_(*(SafetyEvent.reason.startswith(f"[job {j}] ", autoescape=True) for j in wanted))
    with session_scope(settings) as session:
        reasons = session.scalars(
            select(SafetyEvent.reason).where(SafetyEvent.direction == DIRECTION, mine).order_by(SafetyEvent.id)
        ).all()
    out: dict[str, list[str]] = {j: [] for j in wanted}
    for reason in reasons:
        m = _REF_RE.match(reason)
        if m is not None and m["job"] in wanted:
            out[m["job"]].append(reason[m.end():])
    return out


def live_warnings(settings: Settings, *, source_name: str, document_id: int | None) -> list[str]:
    """The warnings about the entries a source serves now: those of the uploads that stored its live file."""
    if document_id is None:
        return []
    with session_scope(settings) as session:
        job_ids = session.scalars(
            select(IngestJob.id)
            .where(IngestJob.source_name == source_name, IngestJob.document_id == document_id)
            .order_by(IngestJob.created_at)
        ).all()
    by_job = warnings_by_job(settings, job_ids)
    seen: dict[str, None] = {}
    for job_id in job_ids:
        for warning in by_job.get(job_id, []):
            seen.setdefault(warning, None)
    return list(seen)

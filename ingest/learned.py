"""The learning loop's approved FAQ entries, ingested as their own source through the normal pipeline.

Each approval, withdrawal or edit of an approved entry queues one job for a new version of the source (in the same
transaction as the change, under the learning lock, so jobs are created in the order the changes commit and each
holds every approval committed before it). The pipeline stages the version and makes it live in one step, then
publishes an index version that every web process swaps to. With Celery workers running jobs in parallel a later
job could in principle go live before an earlier one; the next change rebuilds from the database again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy.orm import Session

from ingest.uploads import create_job
from ingest.worker import submit_job
from support_bot import learning
from support_bot.core.config import Settings
from support_bot.core.errors import NotFound
from support_bot.knowledge import admin
from support_bot.models import FaqSuggestion, IngestJob, User

log = logging.getLogger(__name__)


@dataclass
class Review:
    """What one review did: the suggestion, and how the learned source changes once the transaction commits."""

    suggestion: FaqSuggestion
    # A queued job for the source's new version, to be submitted after the commit.
    job: IngestJob | None = None
    # Nothing approved is left: the source leaves the knowledge base after the commit.
    drop_source: bool = False


def queue_rebuild(*, session: Session, settings: Settings) -> IngestJob | None:
    """In the caller's transaction: a job for a new version of the learned source from every approved suggestion."""
    learning.lock_learning(session)
    built = learning.source_file(session, settings)
    if built is None:
        return None
    filename, data = built
    return create_job(
        session=session, settings=settings, source_name=settings.learning.source_name, filename=filename, data=data
    )


def _rebuilt(session: Session, settings: Settings, outcome: learning.Outcome) -> Review:
    if not outcome.changes_source:
        return Review(suggestion=outcome.suggestion)
    job = queue_rebuild(session=session, settings=settings)
    return Review(suggestion=outcome.suggestion, job=job, drop_source=job is None)


def approve(
    session: Session, settings: Settings, *, suggestion_id: str, actor: User, question: str | None = None,
    answer: str | None = None,
) -> Review:
    """Approve a suggestion (with optional last edits) and queue the learned source's new version with it."""
    outcome = learning.approve(
        session, settings, suggestion_id=suggestion_id, actor=actor, question=question, answer=answer
    )
    return _rebuilt(session, settings, outcome)


def reject(
    session: Session, settings: Settings, *, suggestion_id: str, actor: User, reason: str | None = None
) -> Review:
    """Reject a suggestion; withdrawing an approved one also queues the source without it."""
    outcome = learning.reject(session, settings, suggestion_id=suggestion_id, actor=actor, reason=reason)
    return _rebuilt(session, settings, outcome)


def edit(
    session: Session, settings: Settings, *, suggestion_id: str, actor: User, question: str | None = None,
    answer: str | None = None,
) -> Review:
    """Edit a suggestion; editing an approved one queues the source's new version with the new wording."""
    outcome = learning.edit(
        session, settings, suggestion_id=suggestion_id, actor=actor, question=question, answer=answer
    )
    return _rebuilt(session, settings, outcome)


def apply(settings: Settings, review: Review) -> None:
    """After the commit: hand the job to a worker, or take the emptied source out of the knowledge base."""
    if review.job is not None:
        submit_job(review.job.id, settings)
    elif review.drop_source:
        try:
            admin.delete_source(settings=settings, name=settings.learning.source_name)
        except NotFound:
            pass  # never ingested (or deleted by ops): nothing to take out

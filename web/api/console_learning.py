"""The learning loop in the console, for ops and admins: FAQ entries suggested from resolved chats.

JSON under /api/console/suggestions (list, get, edit, approve, reject, the learned source's status) and the page
/console/suggestions; every change needs the session's CSRF token and is written to the audit log.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from ingest import learned
from support_bot import learning
from support_bot.core.errors import NotFound
from support_bot.knowledge import admin
from web.console_deps import OpsDep, console_page, csrf_protect, require_roles
from web.deps import SessionDep, SettingsDep
from web.api.knowledge import job_payload, job_payloads, source_payloads

# Ops or admin on every route, and the session's CSRF token on every change.
api = APIRouter(
    prefix="/api/console/suggestions",
    tags=["console"],
    dependencies=[Depends(require_roles("ops")), Depends(csrf_protect)],
)
pages = APIRouter(prefix="/console", tags=["console"])

StatusFilter = Literal["pending", "approved", "rejected", "merged", "all"]
PAGE_SIZE = 50


class SuggestionEdit(BaseModel):
    question: str | None = Field(default=None, max_length=learning.MAX_QUESTION_CHARS * 2)
    answer: str | None = Field(default=None, max_length=learning.MAX_ANSWER_CHARS * 2)


class SuggestionReject(BaseModel):
    reason: str | None = Field(default=None, max_length=learning.MAX_REASON_CHARS * 2)


def learned_source(settings) -> dict:
    """The learned source as the knowledge pages show it, and its latest ingest job."""
    name = settings.learning.source_name
    try:
        info, _ = admin.show_source(settings=settings, name=name, limit=0)
    except NotFound:
        info = None
    jobs, _total = admin.list_jobs(settings=settings, source=name, limit=1)
    return {
        "name": name,
        "source": source_payloads(settings, [info])[0] if info is not None else None,
        "last_job": job_payloads(settings, jobs)[0] if jobs else None,
    }


def review_payload(session, review: learned.Review) -> dict:
    return {
        "suggestion": learning.payloads(session, [review.suggestion])[0],
        "job": job_payload(review.job) if review.job is not None else None,
        "source_removed": review.drop_source,
    }


def _finish(session, settings, review: learned.Review) -> dict:
    # The job exists once this commits; only then may a worker look for it.
    body = review_payload(session, review)
    session.commit()
    learned.apply(settings, review)
    return body


@api.get("")
def read_suggestions(
    user: OpsDep,
    session: SessionDep,
    status: StatusFilter = "pending",
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = PAGE_SIZE,
):
    """Suggestions of one status (default pending; "all" for every one), the most asked first, with counts."""
    rows, total = learning.list_suggestions(
        session, status=None if status == "all" else status, limit=limit, offset=offset
    )
    return {
        "items": learning.payloads(session, rows),
        "total": total,
        "offset": offset,
        "limit": limit,
        "counts": learning.status_counts(session),
    }


@api.get("/source")
def read_learned_source(user: OpsDep, settings: SettingsDep):
    """The learned source's status (live version, entries) and its latest ingest job: what approving changed."""
    return learned_source(settings)


@api.get("/{suggestion_id}")
def read_suggestion(suggestion_id: str, user: OpsDep, session: SessionDep):
    """One suggestion, the conversations merged into it and its (PII-redacted) transcript."""
    return learning.detail_payload(session, learning.get_suggestion(session, suggestion_id))


@api.patch("/{suggestion_id}")
def update_suggestion(
    suggestion_id: str, body: SuggestionEdit, user: OpsDep, session: SessionDep, settings: SettingsDep
):
    """Change the question and/or the answer; an approved entry is re-ingested with the new wording."""
    review = learned.edit(
        session, settings, suggestion_id=suggestion_id, actor=user, question=body.question, answer=body.answer
    )
    return _finish(session, settings, review)


@api.post("/{suggestion_id}/approve")
def approve_suggestion(
    suggestion_id: str, user: OpsDep, session: SessionDep, settings: SettingsDep, body: SuggestionEdit | None = None
):
    """Approve (with optional last edits): the learned source gets a new version with it (409 if decided already)."""
    body = body or SuggestionEdit()
    review = learned.approve(
        session, settings, suggestion_id=suggestion_id, actor=user, question=body.question, answer=body.answer
    )
    return _finish(session, settings, review)


@api.post("/{suggestion_id}/reject")
def reject_suggestion(
    suggestion_id: str, user: OpsDep, session: SessionDep, settings: SettingsDep,
    body: SuggestionReject | None = None,
):
    """Reject, or withdraw an approved entry (the learned source is rebuilt without it); 409 if rejected already."""
    review = learned.reject(
        session, settings, suggestion_id=suggestion_id, actor=user, reason=(body.reason if body else None)
    )
    return _finish(session, settings, review)


@pages.get("/suggestions", response_class=HTMLResponse)
def read_suggestions_page(
    request: Request,
    user: OpsDep,
    session: SessionDep,
    settings: SettingsDep,
    status: StatusFilter = "pending",
    offset: Annotated[int, Query(ge=0)] = 0,
):
    """Suggested FAQ entries to edit, approve or reject, and the learned source's ingest status."""
    rows, total = learning.list_suggestions(
        session, status=None if status == "all" else status, limit=PAGE_SIZE, offset=offset
    )
    return console_page(
        request,
        "console/suggestions.html",
        {
            "suggestions": learning.payloads(session, rows),
            "total": total,
            "offset": offset,
            "page_size": PAGE_SIZE,
            "status": status,
            "statuses": ("pending", "approved", "merged", "rejected", "all"),
            "counts": learning.status_counts(session),
            "learned": learned_source(settings),
            "can_open_conversations": user.role in ("agent", "admin"),
            "max_question": learning.MAX_QUESTION_CHARS,
            "max_answer": learning.MAX_ANSWER_CHARS,
        },
    )


# What web/app.py includes: the API and the page.
router = APIRouter()
router.include_router(api)
router.include_router(pages)

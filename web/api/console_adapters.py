"""The console's Adaptation page (knowledge area, ops and admins): tune the embedder, compare, activate, roll back.

JSON under /api/console/adapters; the page /console/knowledge/adaptation renders the same listing on the server and
adapters.js keeps it live. Tuning, activation and rollback run as jobs in a detached process (the page polls their
progress); every start is written to the audit log and needs the session's CSRF token.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field

from support_bot.adapt import artifacts, jobs, service
from support_bot.core.errors import Conflict
from support_bot.ops import audit
from web.console_deps import OpsDep, console_page, csrf_protect, require_roles
from web.deps import SessionDep, SettingsDep

api = APIRouter(
    prefix="/api/console/adapters",
    tags=["console"],
    dependencies=[Depends(require_roles("ops")), Depends(csrf_protect)],
)
pages = APIRouter(prefix="/console/knowledge", tags=["console"])

RECENT_JOBS = 10


class TuneRequest(BaseModel):
    epochs: int | None = Field(default=None, ge=1, le=50)
    max_steps: int | None = Field(default=None, ge=1, le=1_000_000)


def _start(session, settings, user, action: str, *, target: str | None = None, params: dict | None = None):
    job = jobs.create_job(settings, action, target=target, params=params)
    audit.record(session, actor=user, action=f"adapters.{action}", target_type="adapter", target_id=target,
                 detail={"job_id": job["id"], **(params or {})})
    session.commit()
    jobs.start_job(settings, job)
    return JSONResponse({"job": job}, status_code=202)


def overview(settings) -> dict:
    return {**service.list_adapters(settings), "jobs": jobs.list_jobs(settings, limit=RECENT_JOBS)}


@api.get("")
def read_adapters(user: OpsDep, settings: SettingsDep):
    """Tuned embedders with their held-out figures beside the live one's, which is live, and recent jobs."""
    return overview(settings)


@api.get("/jobs")
def read_adapter_jobs(user: OpsDep, settings: SettingsDep, limit: Annotated[int, Query(ge=1, le=100)] = RECENT_JOBS):
    """Recent tuning, activation and rollback jobs, newest first, with their progress."""
    return {"jobs": jobs.list_jobs(settings, limit=limit)}


@api.get("/jobs/{job_id}")
def read_adapter_job(job_id: str, user: OpsDep, settings: SettingsDep):
    """One job: phase, progress, and its result or error (a refused activation carries the figures)."""
    return jobs.get_job(settings, job_id)


@api.post("/tune", status_code=202)
def tune_embedder(body: TuneRequest, user: OpsDep, session: SessionDep, settings: SettingsDep):
    """Start tuning the embedder on the company's data (a job); the result is a new artifact, not yet live."""
    params = body.model_dump(exclude_none=True)
    return _start(session, settings, user, "tune", params=params)


@api.post("/rollback", status_code=202)
def rollback_adapter(user: OpsDep, session: SessionDep, settings: SettingsDep):
    """Start returning to the embedder live before the current one (a job re-embedding the knowledge base)."""
    if not service.list_adapters(settings)["can_roll_back"]:
        raise Conflict("nothing to roll back to: the configured model is live")
    return _start(session, settings, user, "rollback")


@api.get("/{artifact_id}")
def read_adapter(artifact_id: str, user: OpsDep, settings: SettingsDep):
    """One artifact: its parameters, data counts, training figures and the comparison with the live embedder."""
    return artifacts.load(settings, artifact_id)


@api.post("/{artifact_id}/activate", status_code=202)
def activate_adapter(artifact_id: str, user: OpsDep, session: SessionDep, settings: SettingsDep):
    """Start activating an artifact: refused (the job fails with the figures) if it is worse than the live one."""
    return _start(session, settings, user, "activate", target=artifact_id)


@pages.get("/adaptation", response_class=HTMLResponse)
def read_adaptation_page(request: Request, user: OpsDep, settings: SettingsDep):
    """Train, compare, activate and roll back tuned embedders."""
    return console_page(request, "console/adaptation.html", overview(settings))


router = APIRouter()
router.include_router(api)
router.include_router(pages)

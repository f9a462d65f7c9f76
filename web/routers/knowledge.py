"""Knowledge upload API for ops (admin token until console logins exist)."""

from __future__ import annotations

from pathlib import PurePath

from fastapi import APIRouter, File, Form, UploadFile
from sqlalchemy import select

from ingest.pipeline import create_job
from ingest.worker import submit_job
from support_bot.errors import InvalidInput, NotFound, PayloadTooLarge
from support_bot.models import IngestJob, Source
from web.deps import AdminDep, SessionDep, SettingsDep

router = APIRouter(prefix="/api/knowledge", tags=["knowledge"])


def job_payload(job: IngestJob) -> dict:
    return {
        "id": job.id,
        "source": job.source_name,
        "filename": job.filename,
        "status": job.status,
        "progress": {"done": job.progress_done, "total": job.progress_total},
        "attempts": job.attempts,
        "error": job.error,
        "unchanged": job.unchanged,
        "created_at": job.created_at.isoformat() if job.created_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }


@router.post("/uploads", status_code=202)
async def create_upload(
    _admin: AdminDep,
    session: SessionDep,
    settings: SettingsDep,
    file: UploadFile = File(...),
    source: str | None = Form(default=None, max_length=255),
):
    """Upload a knowledge file; it is validated now and ingested by a worker."""
    limit = settings.ingest.max_upload_bytes
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(f"{file.filename or 'the file'} is larger than the {limit // (1024 * 1024)} MB limit")
    # Only the last path component of a client-supplied name is kept, for display.
    filename = PurePath((file.filename or "upload").replace("\\", "/")).name or "upload"
    source_name = (source or PurePath(filename).stem).strip()
    if not source_name:
        raise InvalidInput("the source name is empty")
    job = create_job(session=session, settings=settings, source_name=source_name, filename=filename, data=data)
    session.commit()
    submit_job(job.id, settings)
    return {"job": job_payload(job)}


@router.get("/jobs/{job_id}")
def read_job(job_id: str, _admin: AdminDep, session: SessionDep):
    """One ingest job's status and progress."""
    job = session.get(IngestJob, job_id)
    if job is None:
        raise NotFound("job not found")
    return {"job": job_payload(job)}


@router.get("/sources")
def read_sources(_admin: AdminDep, session: SessionDep):
    """Knowledge sources with their live version."""
    rows = session.scalars(select(Source).order_by(Source.name))
    return {
        "sources": [
            {"id": s.id, "name": s.name, "kind": s.kind, "version": s.active_version,
             "updated_at": s.updated_at.isoformat() if s.updated_at else None}
            for s in rows
        ]
    }

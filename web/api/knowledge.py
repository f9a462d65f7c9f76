"""Knowledge API for ops: uploads, ingest jobs, sources (list, show, delete), reindex and the retrieval calibration.

For console users with the ops or admin role (session cookie, CSRF-checked on changes) and for scripts holding the
admin bearer token. Changes are written to the audit log.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.datastructures import FormData, UploadFile

from ingest.uploads import accept_upload, source_name_for, upload_name
from ingest.worker import submit_job
from support_bot.chat import preview as answer_preview
from support_bot.core.config import Settings
from support_bot.core.db import session_scope
from support_bot.core.errors import (
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    SupportBotError,
)
from support_bot.knowledge import admin
from support_bot.knowledge.index import read_current_version
from support_bot.models import IngestJob
from support_bot.ops import audit
from support_bot.safety.poisoning import live_warnings, warnings_by_job
from web.console_deps import OpsOrAdminTokenDep
from web.deps import AssistantDep, SessionDep, SettingsDep

router = APIRouter(prefix="/api/knowledge", tags=["knowledge"])

MAX_FILES_PER_UPLOAD = 50
MAX_PAGE = 500
MAX_TEST_ENTRIES = answer_preview.MAX_ENTRIES


def max_upload_request_bytes(settings: Settings) -> int:
    """The largest upload request: every file at its limit, plus room for the form's other fields and boundaries."""
    return MAX_FILES_PER_UPLOAD * settings.ingest.max_upload_bytes + settings.max_request_bytes


def _iso(value) -> str | None:
    return value.isoformat() if value else None


def job_payload(job: IngestJob, warnings: list[str] | None = None) -> dict:
    """A job as the API and console show it; `warnings` name the entries it flagged (see job_payloads)."""
    return {
        "id": job.id,
        "source": job.source_name,
        "filename": job.filename,
        "status": job.status,
        "progress": {"done": job.progress_done, "total": job.progress_total},
        "attempts": job.attempts,
        "error": job.error,
        "unchanged": job.unchanged,
        "size_bytes": job.size_bytes,
        "duration_s": job.duration_s,
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "warnings": list(warnings or []),
    }


def job_payloads(settings: Settings, jobs: list[IngestJob]) -> list[dict]:
    """Jobs with the warnings each recorded at ingest (entries carrying instructions for the model)."""
    warnings = warnings_by_job(settings, [j.id for j in jobs])
    return [job_payload(j, warnings.get(j.id)) for j in jobs]


def source_payloads(settings: Settings, infos: list[admin.SourceInfo]) -> list[dict]:
    """Sources with the warnings about the entries they serve now."""
    return [
        source_payload(i, live_warnings(settings, source_name=i.name, document_id=i.document_id)) for i in infos
    ]


def source_payload(info: admin.SourceInfo, warnings: list[str] | None = None) -> dict:
    return {
        "id": info.id,
        "name": info.name,
        "kind": info.kind,
        "version": info.version,
        "filename": info.filename,
        "entries": info.entries,
        "chunks": info.chunks,
        "status": info.status,
        "last_job": {"id": info.last_job_id, "status": info.last_job_status} if info.last_job_id else None,
        "last_error": info.last_error,
        # Live entries the input guard reads as instructions for the model (kept, screened again at answer time).
        "warnings": list(warnings or []),
        "updated_at": _iso(info.updated_at),
    }


def version_payload(info: admin.VersionInfo) -> dict:
    return {
        "version": info.version,
        "filename": info.filename,
        "size_bytes": info.size_bytes,
        "chunks": info.chunks,
        "created_at": _iso(info.created_at),
        "state": info.state,
    }


class KnowledgeQuestion(BaseModel):
    question: str = Field(max_length=100_000)
    # How many retrieved entries to show; the answer uses retrieval.top_k of them whatever this is.
    k: int | None = Field(default=None, ge=1, le=MAX_TEST_ENTRIES)


# The form is described here and read in the handler: a File()/Form() parameter would make FastAPI read the whole
# body (up to max_upload_request_bytes) before the caller's credentials are checked.
UPLOAD_FORM = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
                        "source": {"type": "string", "maxLength": 255},
                    },
                }
            }
        },
    }
}


async def _upload_form(request: Request) -> tuple[list[UploadFile], str | None, FormData]:
    if not request.headers.get("content-type", "").startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        raise InvalidInput("send the upload as multipart/form-data with the field `file` (or several `files`)")
    try:
        form = await request.form(max_files=MAX_FILES_PER_UPLOAD + 1, max_fields=100)
    except HTTPException as exc:  # Starlette's refusal of a malformed or over-full form
        raise InvalidInput(f"the upload form could not be read: {exc.detail}") from None
    uploads: list[UploadFile] = []
    for field in ("file", "files"):
        for value in form.getlist(field):
            if not isinstance(value, UploadFile):
                raise InvalidInput(f"the form field `{field}` must be a file")
            uploads.append(value)
    sources = form.getlist("source")
    if len(sources) > 1 or any(not isinstance(v, str) for v in sources):
        raise InvalidInput("the form field `source` must be given once, as text")
    source = sources[0] if sources else None
    if source is not None and len(source) > 255:
        raise InvalidInput("source: at most 255 characters")
    return uploads, source, form


@router.post("/uploads", status_code=202, openapi_extra=UPLOAD_FORM)
async def create_upload(request: Request, user: OpsOrAdminTokenDep, session: SessionDep, settings: SettingsDep):
    """Upload one file (`file`) or several (`files`): one job each, validated now and ingested by a worker.

    A refused file becomes a failed job naming the file and the problem; the others are queued. When no file was
    accepted the answer is the refusal (413 or 422). The caller is authorized before the body is read.
    """
    uploads, source, form = await _upload_form(request)
    try:
        return await _accept_uploads(uploads, source, user=user, session=session, settings=settings)
    finally:
        await form.close()


async def _accept_uploads(uploads: list[UploadFile], source: str | None, *, user, session, settings):
    if not uploads:
        raise InvalidInput("no file uploaded: send it as the form field `file` (or several as `files`)")
    if len(uploads) > MAX_FILES_PER_UPLOAD:
        raise InvalidInput(f"{len(uploads)} files in one upload; at most {MAX_FILES_PER_UPLOAD}")
    if source and source.strip() and len(uploads) > 1:
        raise InvalidInput(
            "`source` names the source of a single file; with several files each becomes the source named after it"
        )
    names = [upload_name(u.filename) for u in uploads]
    seen: dict[str, str] = {}
    for name in names:
        target = (source or "").strip() or source_name_for(name)
        if target in seen:
            raise InvalidInput(
                f"{seen[target]} and {name} would both replace source {target!r}; upload them one at a time"
            )
        seen[target] = name

    limit = settings.ingest.max_upload_bytes
    jobs: list[IngestJob] = []
    refusals = []
    for upload, name in zip(uploads, names):
        # Never read more than the limit: a larger file is refused from its first limit + 1 bytes.
        data = await upload.read(limit + 1)
        size = upload.size if upload.size is not None and upload.size > len(data) else None
        # Parsing, storing (fsync) and committing a large file take long, and a broker that is down keeps the
        # hand-over waiting: all of it runs off the event loop, so the process's other requests and streams go on.
        job, refusal = await run_in_threadpool(
            _accept_one, session=session, settings=settings, user=user, source=source, name=name, data=data,
            size=size,
        )
        del data
        jobs.append(job)
        if refusal is not None:
            refusals.append(refusal)
    if len(refusals) == len(jobs):
        status = 413 if all(isinstance(r, PayloadTooLarge) for r in refusals) else 422
        return JSONResponse({"detail": "; ".join(r.detail for r in refusals)}, status_code=status)
    payloads = [job_payload(j) for j in jobs]
    return {"job": payloads[0], "jobs": payloads}


def _accept_one(*, session, settings, user, source, name, data, size) -> tuple[IngestJob, SupportBotError | None]:
    """One file, in its own transaction: its job (queued, or failed saying why) and audit entry are committed, then
    a queued job is handed to a worker (or left for the workers' sweep when the broker is down)."""
    job, refusal = accept_upload(
        session=session, settings=settings, source_name=source, filename=name, data=data, size=size
    )
    audit.record(
        session, actor=user, action="knowledge.upload", target_type="source", target_id=job.source_name[:64],
        detail={"job": job.id, "filename": job.filename, "status": job.status, "bytes": job.size_bytes},
    )
    session.commit()
    if job.status == "queued":
        submit_job(job.id, settings)
    return job, refusal


@router.get("/jobs")
def read_jobs(
    user: OpsOrAdminTokenDep,
    settings: SettingsDep,
    status: Literal["queued", "running", "succeeded", "failed"] | None = None,
    source: str | None = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
):
    """Ingest jobs, newest first, optionally of one status and/or source."""
    jobs, total = admin.list_jobs(settings=settings, status=status, source=source, offset=offset, limit=limit)
    return {"jobs": job_payloads(settings, jobs), "total": total, "offset": offset, "limit": limit}


@router.get("/jobs/{job_id}")
def read_job(job_id: str, user: OpsOrAdminTokenDep, session: SessionDep, settings: SettingsDep):
    """One ingest job's status and progress, and the warnings it recorded."""
    job = session.get(IngestJob, job_id)
    if job is None:
        raise NotFound("job not found")
    return {"job": job_payloads(settings, [job])[0]}


@router.get("/sources")
def read_sources(user: OpsOrAdminTokenDep, settings: SettingsDep):
    """Knowledge sources with their live version, counts, status and the latest job's error."""
    return {"sources": source_payloads(settings, admin.list_sources(settings=settings))}


@router.get("/sources/{name:path}")
def read_source(
    name: str,
    user: OpsOrAdminTokenDep,
    settings: SettingsDep,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
):
    """One source and a page of the entries (chunks) of its live version, in file order."""
    info, entries = admin.show_source(settings=settings, name=name, offset=offset, limit=limit)
    return {
        "source": source_payloads(settings, [info])[0],
        "versions": [version_payload(v) for v in admin.list_versions(settings=settings, name=name)],
        "entries": [vars(e) for e in entries],
        "total": info.chunks,
        "offset": offset,
        "limit": limit,
    }


@router.delete("/sources/{name:path}")
def delete_source(name: str, user: OpsOrAdminTokenDep, settings: SettingsDep):
    """Delete a source: its chunks leave the database and a new index version without it is published."""
    removed = admin.delete_source(settings=settings, name=name)
    with session_scope(settings) as session:
        audit.record(session, actor=user, action="knowledge.delete", target_type="source", target_id=name[:64],
                     detail={"chunks_removed": removed})
    return {"deleted": name, "chunks_removed": removed, "index_version": read_current_version(settings.index_dir)}


@router.post("/reindex")
def reindex(user: OpsOrAdminTokenDep, settings: SettingsDep):
    """Rebuild the index from the database and publish it."""
    version = admin.reindex(settings=settings)
    with session_scope(settings) as session:
        audit.record(session, actor=user, action="knowledge.reindex", target_type="index", target_id=str(version))
    return {"index_version": version}


def calibration_payload(settings: Settings) -> dict:
    """The live index version's own retrieval weights and cut-offs (knowledge.calibration) and those in force."""
    from support_bot.knowledge.calibration import CHOSEN as keys
    from support_bot.knowledge.retriever import get_retriever

    retriever = get_retriever(settings)
    version = retriever.reader.current()
    cfg = retriever.settings_for(version)
    return {
        "index_version": version.version,
        "enabled": settings.retrieval.calibration.enabled,
        "calibration": version.calibration,
        "in_force": {k: getattr(cfg, k) for k in keys},
        "configured": {k: getattr(settings.retrieval, k) for k in keys},
    }


@router.get("/calibration")
def read_calibration(user: OpsOrAdminTokenDep, settings: SettingsDep):
    """The live index version's own retrieval weights and cut-offs (knowledge.calibration) and those in force."""
    return calibration_payload(settings)


@router.post("/test")
def ask_knowledge_base(body: KnowledgeQuestion, user: OpsOrAdminTokenDep, assistant: AssistantDep):
    """Ask the knowledge base: retrieved entries with scores, the abstain decision and the reply; nothing stored."""
    return answer_preview.preview_answer(assistant, body.question, k=body.k).payload()

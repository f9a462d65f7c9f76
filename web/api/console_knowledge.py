"""Console knowledge pages for ops and admins: sources and uploads, one source's entries, and the answer tester.

The pages render what they show on the server (so they work and are testable without scripts); knowledge.js adds the
live parts on top through /api/knowledge: multi-file upload, job progress, delete, rebuild and the tester.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from ingest.loaders import LOADERS
from support_bot.core.errors import NotFound
from support_bot.knowledge import admin
from web.console_deps import OpsDep, console_page
from web.deps import SettingsDep
from web.api.knowledge import MAX_FILES_PER_UPLOAD, MAX_PAGE, job_payloads, source_payloads, version_payload

router = APIRouter(prefix="/console/knowledge", tags=["console"])

RECENT_JOBS = 20
ENTRIES_PER_PAGE = 50


def _human_bytes(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB"):
        if n < 1024:
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


@router.get("", response_class=HTMLResponse)
def read_knowledge_page(request: Request, user: OpsDep, settings: SettingsDep):
    """Sources with their status and counts, the upload form, and recent ingest jobs (kept live by the script)."""
    jobs, _total = admin.list_jobs(settings=settings, limit=RECENT_JOBS)
    return console_page(
        request,
        "console/knowledge.html",
        {
            "sources": source_payloads(settings, admin.list_sources(settings=settings)),
            "jobs": job_payloads(settings, jobs),
            "extensions": sorted(LOADERS),
            "max_files": MAX_FILES_PER_UPLOAD,
            "max_upload": _human_bytes(settings.ingest.max_upload_bytes),
            "recent_jobs": RECENT_JOBS,
        },
    )


@router.get("/test", response_class=HTMLResponse)
def read_tester_page(request: Request, user: OpsDep, settings: SettingsDep):
    """Ask the knowledge base a question and see what the bot would do with it, and why."""
    return console_page(
        request,
        "console/knowledge_test.html",
        {"top_k": settings.retrieval.top_k, "max_chars": settings.chat.max_message_chars},
    )


@router.get("/sources/{name:path}", response_class=HTMLResponse)
def read_source_page(
    name: str,
    request: Request,
    user: OpsDep,
    settings: SettingsDep,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = ENTRIES_PER_PAGE,
):
    """One source: versions, counts, status and errors, its upload history and a page of its live entries."""
    try:
        info, entries = admin.show_source(settings=settings, name=name, offset=offset, limit=limit)
        versions = admin.list_versions(settings=settings, name=name)
    except NotFound:
        return console_page(
            request, "console/knowledge_source.html", {"name": name, "source": None}, status_code=404
        )
    jobs, jobs_total = admin.list_jobs(settings=settings, source=name, limit=RECENT_JOBS)
    return console_page(
        request,
        "console/knowledge_source.html",
        {
            "name": name,
            "source": source_payloads(settings, [info])[0],
            "versions": [version_payload(v) for v in versions],
            "entries": [vars(e) for e in entries],
            "jobs": job_payloads(settings, jobs),
            "jobs_total": jobs_total,
            "offset": offset,
            "limit": limit,
            "total": info.chunks,
            "prev_offset": max(0, offset - limit) if offset > 0 else None,
            "next_offset": offset + limit if offset + limit < info.chunks else None,
        },
    )

"""Knowledge-base administration: list, show and delete sources, list ingest jobs, rebuild the index."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select

from support_bot.core.config import Settings
from support_bot.core.db import session_scope
from support_bot.core.errors import InvalidInput, NotFound
from support_bot.knowledge.publish import publish_index
from support_bot.models import Chunk, Document, IngestJob, Source

JOB_STATUSES = ("queued", "running", "succeeded", "failed")


@dataclass(frozen=True)
class SourceInfo:
    name: str
    kind: str
    version: int
    filename: str | None
    entries: int
    chunks: int
    updated_at: datetime | None
    # live (serving its version), ingesting (a job is queued or running), failed (the latest upload failed; an
    # earlier version, if any, still serves), or empty (nothing live yet).
    status: str = "empty"
    last_job_id: str | None = None
    last_job_status: str | None = None
    # The latest job's error when it failed.
    last_error: str | None = None
    id: int | None = None
    # The stored file (document) whose chunks are live.
    document_id: int | None = None


@dataclass(frozen=True)
class EntryInfo:
    chunk_id: str
    entry_id: str | None
    title: str | None
    text: str
    url: str | None
    part: int
    parts: int


def _info(session, source: Source) -> SourceInfo:
    doc = session.scalar(
        select(Document).where(Document.source_id == source.id, Document.version == source.active_version)
    )
    live = (Chunk.source_id == source.id, Chunk.document_id == (doc.id if doc else -1))
    chunks = session.scalar(select(func.count()).select_from(Chunk).where(*live)) or 0
    # A long entry is stored as several chunks; entries count what ops uploaded.
    entries = session.scalar(select(func.count(func.distinct(Chunk.entry_id))).where(*live)) or 0
    no_id = session.scalar(select(func.count()).select_from(Chunk).where(*live, Chunk.entry_id.is_(None))) or 0
    last = session.scalar(
        select(IngestJob).where(IngestJob.source_name == source.name).order_by(IngestJob.created_at.desc()).limit(1)
    )
    pending = session.scalar(
        select(func.count())
        .select_from(IngestJob)
        .where(IngestJob.source_name == source.name, IngestJob.status.in_(("queued", "running")))
    )
    if pending:
        status = "ingesting"
    elif last is not None and last.status == "failed":
        status = "failed"
    else:
        status = "live" if source.active_version else "empty"
    return SourceInfo(
        name=source.name,
        kind=source.kind,
        version=source.active_version,
        filename=doc.filename if doc else None,
        entries=entries + no_id,
        chunks=chunks,
        updated_at=source.updated_at,
        status=status,
        last_job_id=last.id if last else None,
        last_job_status=last.status if last else None,
        last_error=last.error if last is not None and last.status == "failed" else None,
        id=source.id,
        document_id=doc.id if doc else None,
    )


def list_sources(*, settings: Settings) -> list[SourceInfo]:
    """Every source with its live version, entry and chunk counts, by name."""
    with session_scope(settings) as session:
        return [_info(session, s) for s in session.scalars(select(Source).order_by(Source.name))]


def _source(session, name: str) -> Source:
    source = session.scalar(select(Source).where(Source.name == name))
    if source is None:
        raise NotFound(f"no knowledge source named {name!r}")
    return source


def show_source(
    *, settings: Settings, name: str, offset: int = 0, limit: int | None = None
) -> tuple[SourceInfo, list[EntryInfo]]:
    """A source's summary and the chunks of its live version in file order (from offset, at most limit)."""
    with session_scope(settings) as session:
        source = _source(session, name)
        info = _info(session, source)
        stmt = (
            select(Chunk)
            .join(Document, Chunk.document_id == Document.id)
            .where(Chunk.source_id == source.id, Document.version == source.active_version)
            .order_by(Chunk.ordinal)
            .offset(max(0, offset))
        )
        if limit is not None:
            stmt = stmt.limit(max(0, limit))
        entries = [
            EntryInfo(
                chunk_id=c.id,
                entry_id=c.entry_id,
                title=c.title,
                text=c.text,
                url=c.url,
                part=int((c.extra or {}).get("part", 0)),
                parts=int((c.extra or {}).get("parts", 1)),
            )
            for c in session.scalars(stmt)
        ]
        return info, entries


@dataclass(frozen=True)
class VersionInfo:
    version: int
    filename: str
    size_bytes: int
    chunks: int
    created_at: datetime | None
    # live (served now), staged (a newer upload being ingested, not live yet) or earlier (an older one, removed as
    # the newer goes live). Each upload is a job too: the source's jobs are its full upload history.
    state: str


def list_versions(*, settings: Settings, name: str) -> list[VersionInfo]:
    """Every stored version (uploaded file) of a source, newest first."""
    with session_scope(settings) as session:
        source = _source(session, name)
        docs = session.scalars(
            select(Document).where(Document.source_id == source.id).order_by(Document.version.desc())
        )
        return [
            VersionInfo(
                version=d.version, filename=d.filename, size_bytes=d.size_bytes or 0, chunks=d.n_chunks or 0,
                created_at=d.created_at,
                state="live" if d.version == source.active_version
                else "earlier" if d.version < source.active_version else "staged",
            )
            for d in docs
        ]


def list_jobs(
    *, settings: Settings, status: str | None = None, source: str | None = None, offset: int = 0, limit: int = 50
) -> tuple[list[IngestJob], int]:
    """Ingest jobs, newest first, optionally of one status and/or source -> (page, total matching)."""
    if status is not None and status not in JOB_STATUSES:
        raise InvalidInput(f"unknown job status {status!r}; one of: {', '.join(JOB_STATUSES)}")
    where = []
    if status is not None:
        where.append(IngestJob.status == status)
    if source is not None:
        where.append(IngestJob.source_name == source)
    with session_scope(settings) as session:
        total = session.scalar(select(func.count()).select_from(IngestJob).where(*where)) or 0
        jobs = session.scalars(
            select(IngestJob)
            .where(*where)
            .order_by(IngestJob.created_at.desc(), IngestJob.id)
            .offset(max(0, offset))
            .limit(max(0, limit))
        ).all()
        return list(jobs), total


def delete_source(*, settings: Settings, name: str) -> int:
    """Remove a source with all its versions and chunks, then publish an index without it; -> chunks removed."""
    with session_scope(settings) as session:
        source = _source(session, name)
        removed = session.scalar(select(func.count()).select_from(Chunk).where(Chunk.source_id == source.id)) or 0
        # Explicit deletes: SQLite only cascades with foreign keys switched on.
        session.execute(delete(Chunk).where(Chunk.source_id == source.id))
        session.execute(delete(Document).where(Document.source_id == source.id))
        session.execute(delete(Source).where(Source.id == source.id))
    reindex(settings=settings)
    return removed


def reindex(*, settings: Settings) -> int:
    """Rebuild the index from the chunks in the database and publish it; -> the new version number."""
    with session_scope(settings) as session:
        return publish_index(session=session, settings=settings)

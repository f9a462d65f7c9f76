"""The ingestion pipeline, free of Celery: submit (validate + store bytes + job row) and run (parse -> publish)."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import time
import uuid
from pathlib import Path, PurePath

import numpy as np
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from ingest.chunking import ChunkDraft, chunk_faq
from ingest.loaders import PERSONAL_KINDS, FaqEntry, load, loader_for, parse
from support_bot.config import Settings
from support_bot.db import session_scope
from support_bot.errors import InvalidInput, NotFound, PayloadTooLarge, SupportBotError
from support_bot.knowledge.index import publish_index, read_current_version
from support_bot.models import Chunk, Document, IngestJob, Source, new_id, utcnow
from support_bot.pii import redact

log = logging.getLogger(__name__)

# Worth retrying later (a locked or unreachable database, a dropped connection); everything else fails the job.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OperationalError, ConnectionError, TimeoutError)

# Chunks embedded between two progress updates. Large groups matter: the encoder sorts a call's texts by length,
# so short question views batch together instead of being padded to the length of answers.
_PROGRESS_EVERY = 256
_MAX_ERROR_CHARS = 2000


def _human_bytes(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"


def _check_size(size: int, settings: Settings, name: str) -> None:
    limit = settings.ingest.max_upload_bytes
    if size > limit:
        raise PayloadTooLarge(f"{name}: the file is {_human_bytes(size)}, larger than the {_human_bytes(limit)} limit")


def _store_upload(settings: Settings, sha256: str, ext: str, data: bytes) -> Path:
    # Content-addressed: the user's file name never becomes a path, and identical uploads share one file.
    settings.uploads_dir.mkdir(parents=True, exist_ok=True)
    path = settings.uploads_dir / f"{sha256}{ext}"
    if not path.exists():
        tmp = settings.uploads_dir / f".{sha256}.{uuid.uuid4().hex}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    return path


def create_job(*, session: Session, settings: Settings, source_name: str, filename: str, data: bytes) -> IngestJob:
    """Validate an upload now (bad files fail here, nothing stored), keep its bytes, and queue a job row."""
    name = PurePath(filename or "").name or "upload"
    _check_size(len(data), settings, name)
    source_name = (source_name or "").strip()
    if not source_name:
        raise InvalidInput("a source name is required")
    if len(source_name) > 255:
        raise InvalidInput("the source name is longer than 255 characters")
    _, ext = loader_for(name)
    entries = parse(name, data)
    sha256 = hashlib.sha256(data).hexdigest()
    path = _store_upload(settings, sha256, ext, data)
    job = IngestJob(
        id=new_id(),
        source_name=source_name,
        filename=name[:512],
        path=str(path),
        sha256=sha256,
        size_bytes=len(data),
        status="queued",
        progress_done=0,
        progress_total=len(entries),
        attempts=0,
    )
    session.add(job)
    session.flush()
    return job


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, SupportBotError):
        text = exc.detail
    elif isinstance(exc, OperationalError):
        text = f"database error (will be retried): {exc.orig}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return text[:_MAX_ERROR_CHARS]


def _start(job_id: str, settings: Settings) -> IngestJob:
    with session_scope(settings) as session:
        job = session.get(IngestJob, job_id)
        if job is None:
            raise NotFound(f"ingest job {job_id} not found")
        if job.status != "succeeded":
            job.status = "running"
            job.attempts = (job.attempts or 0) + 1
            job.started_at = utcnow()
            job.finished_at = None
            job.error = None
            job.unchanged = False
        return job


def _set(job_id: str, settings: Settings, **values) -> IngestJob:
    with session_scope(settings) as session:
        job = session.get(IngestJob, job_id)
        if job is None:
            raise NotFound(f"ingest job {job_id} not found")
        for key, value in values.items():
            setattr(job, key, value)
        return job


def _finish(job_id: str, settings: Settings, started: float, *, document_id: int, unchanged: bool) -> IngestJob:
    with session_scope(settings) as session:
        job = session.get(IngestJob, job_id)
        job.status = "succeeded"
        job.error = None
        job.unchanged = unchanged
        job.document_id = document_id
        job.progress_done = job.progress_total
        job.finished_at = utcnow()
        job.duration_s = round(time.monotonic() - started, 3)
    _discard_upload(job, settings)
    return job


def _discard_upload(job: IngestJob, settings: Settings) -> None:
    # The bytes are kept until no unfinished job needs them; a failed job keeps them so it can be re-run.
    with session_scope(settings) as session:
        pending = session.scalar(
            select(func.count())
            .select_from(IngestJob)
            .where(IngestJob.path == job.path, IngestJob.status.in_(("queued", "running", "failed")))
        )
    if not pending:
        Path(job.path).unlink(missing_ok=True)


def _active_document(session: Session, source: Source | None) -> Document | None:
    if source is None or not source.active_version:
        return None
    return session.scalar(
        select(Document).where(Document.source_id == source.id, Document.version == source.active_version)
    )


def _index_has(settings: Settings, source_name: str, document_id: int) -> bool:
    """Whether the live index version already serves this document (a crash may have hit between swap and publish)."""
    import json

    number = read_current_version(settings.index_dir)
    if not number:
        return False
    try:
        with open(settings.index_dir / f"v{number}" / "meta.json", encoding="utf-8") as fh:
            sources = json.load(fh).get("sources", {})
    except (OSError, ValueError):
        return False
    return sources.get(source_name, {}).get("document_id") == document_id


def _publish(settings: Settings) -> int:
    with session_scope(settings) as session:
        return publish_index(session=session, settings=settings)


def _embed(job_id: str, settings: Settings, drafts: list[ChunkDraft]) -> list[bytes]:
    from support_bot.knowledge.embedder import get_embedder

    embedder = get_embedder(settings)
    out: list[bytes] = []
    for start in range(0, len(drafts), _PROGRESS_EVERY):
        group = drafts[start : start + _PROGRESS_EVERY]
        vectors = embedder.encode([v for d in group for v in d.views])
        offset = 0
        for d in group:
            out.append(np.ascontiguousarray(vectors[offset : offset + len(d.views)], dtype=np.float32).tobytes())
            offset += len(d.views)
        _set(job_id, settings, progress_done=start + len(group))
    return out


def _swap(
    job: IngestJob, settings: Settings, kind: str, drafts: list[ChunkDraft], embeddings: list[bytes]
) -> tuple[int, bool]:
    """In one transaction: new document version with its chunks goes live, older versions go. -> (doc id, unchanged)."""
    with session_scope(settings) as session:
        # Writing first takes SQLite's write lock (and the job's row lock on Postgres) before anything is read,
        # so two runs of one job serialize here instead of both inserting.
        session.execute(update(IngestJob).where(IngestJob.id == job.id).values(progress_done=len(drafts)))
        current = session.get(IngestJob, job.id, populate_existing=True)
        if current.document_id is not None and session.get(Document, current.document_id) is not None:
            return current.document_id, False
        source = session.scalar(select(Source).where(Source.name == job.source_name).with_for_update())
        if source is None:
            try:
                with session.begin_nested():
                    source = Source(name=job.source_name, kind=kind, active_version=0)
                    session.add(source)
                    session.flush()
            except IntegrityError:
                # Another job created the same source a moment ago; use theirs.
                source = session.scalar(select(Source).where(Source.name == job.source_name).with_for_update())
        active = _active_document(session, source)
        if active is not None and active.sha256 == job.sha256:
            return active.id, True
        last = session.scalar(select(func.max(Document.version)).where(Document.source_id == source.id)) or 0
        version = max(last, source.active_version) + 1
        doc = Document(
            source_id=source.id,
            version=version,
            filename=job.filename,
            sha256=job.sha256,
            size_bytes=job.size_bytes,
            n_chunks=len(drafts),
        )
        session.add(doc)
        session.flush()
        now = utcnow()
        rows = [
            {
                "id": new_id(),
                "source_id": source.id,
                "document_id": doc.id,
                "ordinal": d.ordinal,
                "entry_id": d.entry_id,
                "title": d.title,
                "text": d.text,
                "url": d.url,
                "extra": {
                    "answer": d.answer,
                    "lexical_text": d.lexical_text,
                    "n_vectors": len(d.views),
                    "part": d.part,
                    "parts": d.parts,
                    "embedding_model": settings.embedding.model,
                },
                "embedding": emb,
                "created_at": now,
            }
            for d, emb in zip(drafts, embeddings)
        ]
        if rows:
            session.execute(insert(Chunk), rows)
        source.active_version = version
        source.kind = kind
        source.updated_at = now
        session.execute(delete(Chunk).where(Chunk.source_id == source.id, Chunk.document_id != doc.id))
        session.execute(delete(Document).where(Document.source_id == source.id, Document.id != doc.id))
        current.document_id = doc.id
        return doc.id, False


def redact_entries(entries: list[FaqEntry]) -> list[FaqEntry]:
    """Entries with personal data in their id, title and text replaced by placeholders."""
    return [
        dataclasses.replace(e, id=redact(e.id).text, question=redact(e.question).text, answer=redact(e.answer).text)
        for e in entries
    ]


def _process(job: IngestJob, settings: Settings, started: float) -> IngestJob:
    with session_scope(settings) as session:
        source = session.scalar(select(Source).where(Source.name == job.source_name))
        active = _active_document(session, source)
        done_before = job.document_id is not None and active is not None and active.id == job.document_id
        if active is not None and (done_before or active.sha256 == job.sha256):
            # Same bytes as what is live (or this job already went live before a crash): only make sure it is served.
            active_id = active.id
        else:
            active_id = None
    if active_id is not None:
        if not _index_has(settings, job.source_name, active_id):
            _publish(settings)
        return _finish(job.id, settings, started, document_id=active_id, unchanged=not done_before)

    try:
        data = Path(job.path).read_bytes()
    except FileNotFoundError:
        raise InvalidInput(f"{job.filename}: the uploaded file is no longer stored; upload it again") from None
    if hashlib.sha256(data).hexdigest() != job.sha256:
        raise InvalidInput(f"{job.filename}: the stored upload does not match its checksum; upload it again")
    kind, entries = load(job.filename, data)
    if kind in PERSONAL_KINDS:
        entries = redact_entries(entries)
    from support_bot.knowledge.embedder import get_embedder

    embedder = get_embedder(settings)
    drafts = chunk_faq(
        entries,
        chunk_tokens=min(settings.ingest.chunk_tokens, embedder.max_tokens),
        chunk_overlap=settings.ingest.chunk_overlap,
        token_offsets=embedder.token_offsets,
    )
    _set(job.id, settings, progress_total=len(drafts), progress_done=0)
    embeddings = _embed(job.id, settings, drafts)
    document_id, unchanged = _swap(job, settings, kind, drafts, embeddings)
    if not unchanged or not _index_has(settings, job.source_name, document_id):
        _publish(settings)
    return _finish(job.id, settings, started, document_id=document_id, unchanged=unchanged)


def _execute(job_id: str, settings: Settings, *, raise_all: bool) -> IngestJob:
    started = time.monotonic()
    job = _start(job_id, settings)
    if job.status == "succeeded":
        # A re-delivered task for a finished job: nothing to do, and nothing duplicated.
        return job
    try:
        return _process(job, settings, started)
    except Exception as exc:
        log.warning("ingest job %s failed: %s", job_id, _error_text(exc))
        try:
            job = _set(
                job_id,
                settings,
                status="failed",
                error=_error_text(exc),
                finished_at=utcnow(),
                duration_s=round(time.monotonic() - started, 3),
            )
        except Exception:
            log.exception("could not record the failure of ingest job %s", job_id)
        if raise_all or isinstance(exc, TRANSIENT_ERRORS):
            raise
        return job


def run_job(job_id: str, settings: Settings) -> IngestJob:
    """Run a queued job to the end; idempotent. Failures are recorded on the job; transient ones are re-raised."""
    return _execute(job_id, settings, raise_all=False)


def ingest_path(*, settings: Settings, path: Path, source_name: str | None = None) -> IngestJob:
    """Create and run a job for a local file now (source name defaults to the file stem); a failure raises."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"{path}: no such file")
    _check_size(path.stat().st_size, settings, path.name)
    data = path.read_bytes()
    with session_scope(settings) as session:
        job_id = create_job(
            session=session, settings=settings, source_name=source_name or path.stem, filename=path.name, data=data
        ).id
    return _execute(job_id, settings, raise_all=True)

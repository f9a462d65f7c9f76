"""The ingestion pipeline, free of Celery: run a queued job (parse, stage, go live); uploads.py queues them.

A run stages the new version's chunks batch by batch under a document the source does not serve yet, then makes it
live in one transaction. A run that dies (SIGKILL, lost connection) leaves its staged batches behind; the next run of
the same job resumes from them, and the (document, ordinal) unique key keeps every chunk exactly once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from ingest.chunking import ChunkDraft, chunk_faq
from ingest.loaders import PERSONAL_KINDS, FaqEntry, load
from ingest.uploads import check_size, create_job, discard_upload, error_text
from support_bot.core.config import Settings
from support_bot.core.db import session_scope
from support_bot.core.errors import InvalidInput, NotFound, SupportBotError
from support_bot.core.logs import log_context
from support_bot.knowledge.index import read_current_version
from support_bot.knowledge.publish import publish_index
from support_bot.models import Chunk, Document, IngestJob, Source, new_id, utcnow
from support_bot.safety.pii import redact

log = logging.getLogger(__name__)

# Worth retrying later (a locked or unreachable database, a dropped connection); everything else fails the job.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OperationalError, ConnectionError, TimeoutError)

# Deadlines use a monotonic clock; tests replace this to run out of time without waiting.
_clock = time.monotonic


class JobTimeLimitExceeded(SupportBotError):
    """The job ran past settings.ingest.job_time_limit_s."""


class JobSuperseded(SupportBotError):
    """The job's staged version was dropped (a newer upload went live, or the source was deleted)."""


def retry_delay(attempt: int, settings: Settings) -> float:
    """Seconds to wait before retry number `attempt` (0-based) after a transient error: exponential, capped."""
    base = settings.ingest.retry_backoff_s
    return float(min(settings.ingest.retry_backoff_max_s, base * (2**attempt)))


def _start(job_id: str, settings: Settings) -> IngestJob:
    with session_scope(settings) as session:
        job = session.get(IngestJob, job_id)
        if job is None:
            raise NotFound(f"ingest job {job_id} not found")
        if job.status != "succeeded":
            job.status = "running"
            job.attempts = (job.attempts or 0) + 1
            job.started_at = job.heartbeat_at = utcnow()
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
        job.duration_s = round(_clock() - started, 3)
    _discard_upload(job, settings)
    return job


def _discard_upload(job: IngestJob, settings: Settings) -> None:
    # The bytes are kept until no unfinished job needs them; a failed job keeps them so it can be re-run.
    if not job.path:
        return
    with session_scope(settings) as session:
        discard_upload(session, job.path, job.sha256)


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


def _embed(embedder, drafts: list[ChunkDraft]) -> list[bytes]:
    """Each draft's view vectors as one float32 blob, in draft order."""
    vectors = embedder.encode([v for d in drafts for v in d.views])
    out: list[bytes] = []
    offset = 0
    for d in drafts:
        out.append(np.ascontiguousarray(vectors[offset : offset + len(d.views)], dtype=np.float32).tobytes())
        offset += len(d.views)
    return out


def _lock_job(session: Session, job_id: str) -> IngestJob:
    # Writing first takes SQLite's write lock (and the job's row lock on Postgres) before anything is read, so two
    # runs of one job serialize here, and a read-then-write transaction never meets a stale SQLite snapshot.
    session.execute(update(IngestJob).where(IngestJob.id == job_id).values(attempts=IngestJob.attempts))
    return session.get(IngestJob, job_id, populate_existing=True)


def _superseded(session: Session, job: IngestJob) -> JobSuperseded:
    source = session.scalar(select(Source).where(Source.name == job.source_name))
    if source is None:
        return JobSuperseded(
            f"{job.filename}: source {job.source_name!r} was deleted while the file was being ingested"
        )
    return JobSuperseded(
        f"{job.filename}: a newer upload of source {job.source_name!r} (version {source.active_version}) went live "
        "while this file was being ingested; it was not used"
    )


def _stage(job_id: str, settings: Settings, kind: str, n_chunks: int) -> tuple[int, set[int]]:
    """The job's staged document (made now, or kept from a run that died) -> (document id, ordinals stored)."""
    with session_scope(settings) as session:
        job = _lock_job(session, job_id)
        if job.document_id is not None:
            doc = session.get(Document, job.document_id)
            if doc is None:
                raise _superseded(session, job)
            if doc.n_chunks == n_chunks:
                ordinals = session.scalars(select(Chunk.ordinal).where(Chunk.document_id == doc.id)).all()
                return doc.id, set(ordinals)
            # Chunking settings changed since the run that died: its chunks do not line up, start over.
            session.execute(delete(Chunk).where(Chunk.document_id == doc.id))
            doc.n_chunks = n_chunks
            return doc.id, set()
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
        last = session.scalar(select(func.max(Document.version)).where(Document.source_id == source.id)) or 0
        doc = Document(
            source_id=source.id,
            version=max(last, source.active_version) + 1,
            filename=job.filename,
            sha256=job.sha256,
            size_bytes=job.size_bytes,
            n_chunks=n_chunks,
        )
        session.add(doc)
        session.flush()
        job.document_id = doc.id
        return doc.id, set()


def _insert_chunks(session: Session, rows: list[dict]) -> None:
    # A second run of the same job (a redelivered task racing the first) may store the same ordinals: keep one.
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    else:
        session.execute(insert(Chunk), rows)
        return
    stmt = dialect_insert(Chunk).on_conflict_do_nothing(index_elements=["document_id", "ordinal"])
    session.execute(stmt, rows)


def _store_batch(
    job_id: str, settings: Settings, document_id: int, drafts: list[ChunkDraft], embeddings: list[bytes]
) -> int:
    """Add one batch of chunks to the staged document and record progress -> chunks stored so far."""
    with session_scope(settings) as session:
        job = _lock_job(session, job_id)
        doc = session.get(Document, document_id)
        if doc is None:
            raise _superseded(session, job)
        now = utcnow()
        rows = [
            {
                "id": new_id(),
                "source_id": doc.source_id,
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
        try:
            with session.begin_nested():
                _insert_chunks(session, rows)
        except IntegrityError:
            # The staged document was deleted under us (Postgres checks the foreign key at insert).
            if session.get(Document, document_id, populate_existing=True) is None:
                raise _superseded(session, job) from None
            raise
        done = session.scalar(select(func.count()).select_from(Chunk).where(Chunk.document_id == document_id)) or 0
        job.progress_done = done
        return done


def _go_live(job_id: str, settings: Settings, kind: str, document_id: int, n_chunks: int) -> bool:
    """In one transaction: the staged version becomes the source's live one and older versions go.

    -> False when it already was live (a duplicate run got here first).
    """
    with session_scope(settings) as session:
        job = _lock_job(session, job_id)
        doc = session.get(Document, document_id)
        source = session.scalar(select(Source).where(Source.name == job.source_name).with_for_update())
        if doc is None or source is None or source.id != doc.source_id:
            raise _superseded(session, job)
        if source.active_version == doc.version:
            return False
        if source.active_version > doc.version:
            # The failure handler drops the staged version.
            raise _superseded(session, job)
        stored = session.scalar(select(func.count()).select_from(Chunk).where(Chunk.document_id == doc.id)) or 0
        if stored != n_chunks:
            raise RuntimeError(f"version {doc.version} of {source.name!r} has {stored} of {n_chunks} chunks staged")
        now = utcnow()
        source.active_version = doc.version
        source.kind = kind
        source.updated_at = now
        _delete_older(session, source, doc)
        job.progress_done = n_chunks
        return True


def _delete_older(session: Session, source: Source, doc: Document) -> None:
    # Only older versions go: a newer one may be staging for a later upload and will replace this one in turn.
    older = select(Document.id).where(Document.source_id == source.id, Document.version < doc.version)
    session.execute(delete(Chunk).where(Chunk.document_id.in_(older)))
    session.execute(delete(Document).where(Document.source_id == source.id, Document.version < doc.version))


def _drop_document(session: Session, doc: Document) -> None:
    session.execute(delete(Chunk).where(Chunk.document_id == doc.id))
    session.execute(delete(Document).where(Document.id == doc.id))


def _drop_staged(job_id: str, settings: Settings) -> None:
    """Remove a failed job's staged version (never a live one), and a source it created that never went live."""
    with session_scope(settings) as session:
        _drop_staged_in(session, session.get(IngestJob, job_id))


def _drop_staged_in(session: Session, job: IngestJob | None) -> None:
    if job is None or job.document_id is None:
        return
    doc = session.get(Document, job.document_id)
    if doc is None:
        return
    source = session.get(Source, doc.source_id)
    if source is not None and source.active_version == doc.version:
        return
    _drop_document(session, doc)
    session.flush()
    if source is not None and not source.active_version:
        others = session.scalar(select(func.count()).select_from(Document).where(Document.source_id == source.id))
        if not others:
            session.delete(source)


def redact_entries(entries: list[FaqEntry]) -> list[FaqEntry]:
    """Entries with personal data in their id, title and text replaced by placeholders."""
    return [
        dataclasses.replace(e, id=redact(e.id).text, question=redact(e.question).text, answer=redact(e.answer).text)
        for e in entries
    ]


def _check_deadline(job: IngestJob, settings: Settings, deadline: float) -> None:
    if _clock() > deadline:
        raise _time_limit_error(job.filename, settings)


def _time_limit_error(filename: str, settings: Settings) -> JobTimeLimitExceeded:
    limit = settings.ingest.job_time_limit_s
    return JobTimeLimitExceeded(
        f"{filename}: the job took longer than {limit} s (SUPPORT_BOT_INGEST__JOB_TIME_LIMIT_S) and was stopped; "
        "the live version of the source is unchanged"
    )


def _process(job: IngestJob, settings: Settings, started: float, deadline: float) -> IngestJob:
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
        if not done_before:
            _drop_staged(job.id, settings)
        if not _index_has(settings, job.source_name, active_id):
            _publish(settings)
        return _finish(job.id, settings, started, document_id=active_id, unchanged=not done_before)

    if not job.path:
        raise InvalidInput(f"{job.filename}: the file was refused at upload; upload it again")
    try:
        data = Path(job.path).read_bytes()
    except FileNotFoundError:
        raise InvalidInput(f"{job.filename}: the uploaded file is no longer stored; upload it again") from None
    if hashlib.sha256(data).hexdigest() != job.sha256:
        raise InvalidInput(f"{job.filename}: the stored upload does not match its checksum; upload it again")
    kind, entries = load(job.filename, data)
    del data
    if kind in PERSONAL_KINDS:
        entries = redact_entries(entries)
    # Entries carrying instructions for the model are stored as uploaded, with a warning naming each one.
    from support_bot.safety.poisoning import flag_poisoned_entries

    flag_poisoned_entries(entries, settings=settings, job_id=job.id, source_name=job.source_name, filename=job.filename)
    from support_bot.knowledge.embedder import get_embedder

    embedder = get_embedder(settings)
    drafts = chunk_faq(
        entries,
        chunk_tokens=min(settings.ingest.chunk_tokens, embedder.max_tokens),
        chunk_overlap=settings.ingest.chunk_overlap,
        token_offsets=embedder.token_offsets,
    )
    del entries
    document_id, stored = _stage(job.id, settings, kind, len(drafts))
    _set(job.id, settings, progress_total=len(drafts), progress_done=len(stored))
    todo = [d for d in drafts if d.ordinal not in stored]
    step = max(1, settings.ingest.batch_chunks)
    for start in range(0, len(todo), step):
        _check_deadline(job, settings, deadline)
        group = todo[start : start + step]
        _store_batch(job.id, settings, document_id, group, _embed(embedder, group))
    _check_deadline(job, settings, deadline)
    went_live = _go_live(job.id, settings, kind, document_id, len(drafts))
    if went_live or not _index_has(settings, job.source_name, document_id):
        _publish(settings)
    return _finish(job.id, settings, started, document_id=document_id, unchanged=False)


def _execute(
    job_id: str,
    settings: Settings,
    *,
    raise_all: bool,
    will_retry: bool = False,
    timeout_errors: tuple[type[BaseException], ...] = (),
) -> IngestJob:
    started = _clock()
    job = _start(job_id, settings)
    if job.status == "succeeded":
        # A re-delivered task for a finished job: nothing to do, and nothing duplicated.
        return job
    deadline = started + settings.ingest.job_time_limit_s
    try:
        with _heartbeat(job_id, settings):
            return _process(job, settings, started, deadline)
    except Exception as exc:
        if timeout_errors and isinstance(exc, timeout_errors):
            exc = _time_limit_error(job.filename, settings)
        transient = isinstance(exc, TRANSIENT_ERRORS)
        retrying = transient and will_retry
        error = error_text(exc)
        log.warning("ingest job %s %s: %s", job_id, "will be retried" if retrying else "failed", error)
        try:
            if not retrying:
                _drop_staged(job_id, settings)
            job = _set(
                job_id,
                settings,
                # Back to queued: its staged batches are kept for the retry to resume from.
                status="queued" if retrying else "failed",
                error=f"{error} (attempt {job.attempts}; will be retried)" if retrying else error,
                finished_at=None if retrying else utcnow(),
                duration_s=round(_clock() - started, 3),
            )
        except Exception:
            log.exception("could not record the failure of ingest job %s", job_id)
        if raise_all or transient:
            raise exc
        return job


def run_job(
    job_id: str,
    settings: Settings,
    *,
    will_retry: bool = False,
    timeout_errors: tuple[type[BaseException], ...] = (),
) -> IngestJob:
    """Run a queued job to the end; idempotent, and resumes what a killed run staged.

    Failures are recorded on the job. Transient ones are re-raised for the caller to retry: with `will_retry` the
    job goes back to queued, otherwise it is failed. `timeout_errors` are the caller's time-limit exceptions (Celery's
    soft time limit); they fail the job with the time-limit reason.
    """
    with log_context(job_id=job_id):  # every line the job writes names it
        return _execute(job_id, settings, raise_all=False, will_retry=will_retry, timeout_errors=timeout_errors)


@contextmanager
def _heartbeat(job_id: str, settings: Settings) -> Iterator[None]:
    """While the body runs, a thread stamps the job's heartbeat every ingest.heartbeat_interval_s (a thread, so a long
    parse or batch does not hold it up); the workers' sweep takes a running job whose stamps stopped as lost."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(settings.ingest.heartbeat_interval_s):
            try:
                with session_scope(settings) as session:
                    session.execute(
                        update(IngestJob)
                        .where(IngestJob.id == job_id, IngestJob.status == "running")
                        .values(heartbeat_at=utcnow())
                    )
            except Exception as exc:  # noqa: BLE001 - the next beat tries again; the sweep's timeout allows for misses
                log.warning("ingest job %s: heartbeat not recorded: %s", job_id, error_text(exc))

    thread = threading.Thread(target=beat, name=f"ingest-heartbeat-{job_id[:8]}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(settings.ingest.heartbeat_interval_s)


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def recover_lost_job(job_id: str, settings: Settings, *, stale_before: datetime) -> str | None:
    """Re-queue or fail a running job whose last heartbeat is older than `stale_before` -> "queued", "failed" or None.

    Its worker was cut off without recording anything (killed at Celery's hard time limit, out of memory, machine
    gone). Past its time limit or its retries the job fails and its staged version goes; otherwise it is queued
    again and keeps its staged batches for the next run to resume from. None when the job moved on meanwhile (it beat
    again, finished, or another worker's sweep got to it first): the job's row lock makes the check and the change one.
    """
    with session_scope(settings) as session:
        job = _lock_job(session, job_id)
        if job is None or job.status != "running":
            return None
        if _utc(job.heartbeat_at or job.started_at or job.created_at) >= stale_before:
            return None
        ran_s = (utcnow() - _utc(job.started_at)).total_seconds() if job.started_at else 0.0
        if ran_s >= settings.ingest.job_time_limit_s:
            error = error_text(_time_limit_error(job.filename, settings))
        elif job.attempts > settings.ingest.max_retries:
            error = (
                f"{job.filename}: the worker running the job stopped without finishing it, {job.attempts} times; "
                "the live version of the source is unchanged"
            )
        else:
            job.status = "queued"
            job.dispatched_at = None
            job.error = f"{job.filename}: the worker running the job stopped (attempt {job.attempts}; will be retried)"
            return "queued"
        _drop_staged_in(session, job)
        job.status = "failed"
        job.error = error
        job.finished_at = utcnow()
        return "failed"


def fail_timed_out_job(job_id: str, settings: Settings) -> IngestJob | None:
    """Fail a job whose process was killed at the hard time limit (unless it finished), dropping its staging."""
    with session_scope(settings) as session:
        job = session.get(IngestJob, job_id)
        if job is None or job.status in ("succeeded", "failed"):
            return job
        filename = job.filename
    _drop_staged(job_id, settings)
    error = error_text(_time_limit_error(filename, settings))
    return _set(job_id, settings, status="failed", error=error, finished_at=utcnow())


def ingest_path(*, settings: Settings, path: Path, source_name: str | None = None) -> IngestJob:
    """Create and run a job for a local file now (source name defaults to the file stem); a failure raises."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"{path}: no such file")
    check_size(path.stat().st_size, settings, path.name)
    data = path.read_bytes()
    with session_scope(settings) as session:
        job_id = create_job(
            session=session, settings=settings, source_name=source_name or path.stem, filename=path.name, data=data
        ).id
    with log_context(job_id=job_id):
        return _execute(job_id, settings, raise_all=True)

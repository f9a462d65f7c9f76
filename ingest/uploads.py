"""Uploads: a client's file checked at once (size, name, format, parsed), its bytes kept by content hash, and a job
row queued for the pipeline; a refused file leaves a failed job that says why, and nothing else."""

from __future__ import annotations

import hashlib
import os
import unicodedata
import uuid
from pathlib import Path, PurePath

from sqlalchemy import func, select, text, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from ingest.loaders import loader_for, parse
from support_bot.core.config import Settings
from support_bot.core.errors import InvalidInput, PayloadTooLarge, SupportBotError
from support_bot.models import IngestJob, new_id, utcnow

_MAX_ERROR_CHARS = 2000
_MAX_NAME_CHARS = 255


def _human_bytes(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"


def check_size(size: int, settings: Settings, name: str) -> None:
    limit = settings.ingest.max_upload_bytes
    if size > limit:
        raise PayloadTooLarge(f"{name}: the file is {_human_bytes(size)}, larger than the {_human_bytes(limit)} limit")


def upload_name(filename: str | None) -> str:
    """A client-supplied file name reduced to a safe display name: last path part, no control characters."""
    text = (filename or "").replace("\\", "/")
    # Control and format characters (NUL, newlines, bidi overrides) would garble logs and the console.
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C")
    name = PurePath(text).name.strip()
    if name in ("", ".", ".."):
        return "upload"
    if len(name) > _MAX_NAME_CHARS:
        # Cut the stem, not the extension: the extension picks the loader.
        suffix = PurePath(name).suffix[:16]
        name = name[: _MAX_NAME_CHARS - len(suffix)] + suffix
    return name


def source_name_for(filename: str) -> str:
    """The default source name of an upload: its file name without the extension."""
    return (PurePath(filename).stem.strip() or filename)[:_MAX_NAME_CHARS]


def lock_upload(session: Session, sha256: str) -> None:
    """Hold, until the session's transaction ends, the lock on the stored file of this content.

    Storing an upload and removing a finished job's file both take it, so a removal never decides on a count of the
    jobs that need the file while an upload of the same bytes that relies on it is not yet committed.
    """
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        # A transaction-scoped advisory lock keyed by the content hash (its first 63 bits).
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": int(sha256[:16], 16) >> 1})
    else:
        # SQLite has one write lock for the whole database; a write that changes nothing takes it.
        session.execute(update(IngestJob).where(IngestJob.sha256 == sha256).values(sha256=IngestJob.sha256))


def discard_upload(session: Session, path: str, sha256: str) -> bool:
    """Remove a stored upload that no unfinished (or failed, re-runnable) job needs -> whether it was removed.

    Decided and done under the file's lock, so an upload of the same content committing meanwhile keeps it.
    """
    lock_upload(session, sha256)
    pending = session.scalar(
        select(func.count())
        .select_from(IngestJob)
        .where(IngestJob.path == path, IngestJob.status.in_(("queued", "running", "failed")))
    )
    if pending:
        return False
    Path(path).unlink(missing_ok=True)
    return True


def _store_upload(settings: Settings, sha256: str, ext: str, data: bytes) -> Path:
    # Content-addressed: the user's file name never becomes a path, and identical uploads share one file. The
    # caller holds lock_upload, so the file seen here stays until its job row commits.
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


def _clean_source_name(source_name: str | None) -> str:
    source_name = (source_name or "").strip()
    if not source_name:
        raise InvalidInput("a source name is required")
    if len(source_name) > _MAX_NAME_CHARS:
        raise InvalidInput(f"the source name is longer than {_MAX_NAME_CHARS} characters")
    return source_name


def create_job(*, session: Session, settings: Settings, source_name: str, filename: str, data: bytes) -> IngestJob:
    """Validate an upload now (bad files fail here, nothing stored), keep its bytes, and queue a job row."""
    name = upload_name(filename)
    check_size(len(data), settings, name)
    source_name = _clean_source_name(source_name)
    _, ext = loader_for(name)
    entries = parse(name, data)
    sha256 = hashlib.sha256(data).hexdigest()
    lock_upload(session, sha256)
    path = _store_upload(settings, sha256, ext, data)
    job = IngestJob(
        id=new_id(),
        source_name=source_name,
        filename=name,
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


def accept_upload(
    *, session: Session, settings: Settings, source_name: str | None, filename: str | None, data: bytes,
    size: int | None = None,
) -> tuple[IngestJob, SupportBotError | None]:
    """Queue a job for an upload, or record a failed job saying why the file was refused -> (job, refusal or None).

    `size` is the file's full size when `data` holds only its first bytes (an upload cut off at the limit).
    """
    name = upload_name(filename)
    source = (source_name or "").strip() or source_name_for(name)
    try:
        if size is not None and size > len(data):
            check_size(size, settings, name)
        return create_job(session=session, settings=settings, source_name=source, filename=name, data=data), None
    except SupportBotError as exc:
        # Nothing of the file is kept; the row tells ops which file failed and why.
        job = IngestJob(
            id=new_id(),
            source_name=source[:_MAX_NAME_CHARS] or "upload",
            filename=name,
            path="",
            sha256="",
            size_bytes=max(size or 0, len(data)),
            status="failed",
            progress_done=0,
            progress_total=0,
            attempts=0,
            error=error_text(exc),
            finished_at=utcnow(),
        )
        session.add(job)
        session.flush()
        return job, exc


def error_text(exc: BaseException) -> str:
    if isinstance(exc, SupportBotError):
        text = exc.detail
    elif isinstance(exc, OperationalError):
        text = f"database error: {exc.orig}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return text[:_MAX_ERROR_CHARS]

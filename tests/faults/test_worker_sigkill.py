"""A real Celery worker killed with SIGKILL mid-ingest: the job runs again and every chunk exists exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select

from ingest.uploads import create_job
from ingest.worker import submit_job
from support_bot.core.config import Settings
from support_bot.core.db import migrate, session_scope
from support_bot.knowledge.reader import load_current
from support_bot.models import Chunk, Document, IngestJob

pytestmark = [pytest.mark.faults, pytest.mark.redis]

ROOT = Path(__file__).resolve().parents[2]
ROWS = 400
BATCH = 25
# Redis hands the dead worker's task to the next worker after this; kept short so the test does not wait long.
VISIBILITY_S = 3
WAIT_S = 300


def _faq(rows: int) -> bytes:
    lines = ["id,question,answer"]
    for i in range(rows):
        lines.append(f"opt-{i},How do I turn on router option {i}?,Open Settings and switch option {i} on.")
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def fault_settings(request, settings, redis_url) -> Settings:
    tag = uuid.uuid4().hex[:8]
    updates = {
        "redis_url": redis_url,
        "ingest": settings.ingest.model_copy(
            update={
                "queue": f"ingest-faults-{tag}",
                "broker_key_prefix": f"sbtest-{tag}:",
                "visibility_timeout_s": VISIBILITY_S,
                "batch_chunks": BATCH,
            }
        ),
    }
    if request.param == "postgres":
        updates["database_url"] = request.getfixturevalue("postgres_url")
    s = settings.model_copy(update=updates)
    migrate(s)
    yield s
    import redis

    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(f"{s.ingest.broker_key_prefix}*"):
        client.delete(key)
    client.close()


def _start_worker(settings: Settings, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPORT_BOT_")}
    env.update(
        SUPPORT_BOT_DATA_DIR=str(settings.data_dir),
        SUPPORT_BOT_REDIS_URL=settings.redis_url,
        SUPPORT_BOT_INGEST__QUEUE=settings.ingest.queue,
        SUPPORT_BOT_INGEST__BROKER_KEY_PREFIX=settings.ingest.broker_key_prefix,
        SUPPORT_BOT_INGEST__VISIBILITY_TIMEOUT_S=str(VISIBILITY_S),
        SUPPORT_BOT_INGEST__BATCH_CHUNKS=str(BATCH),
        PYTHONPATH=str(ROOT),
    )
    if settings.database_url:
        env["SUPPORT_BOT_DATABASE_URL"] = settings.database_url
    with open(log, "ab") as out:
        # Its own session (process group), so one killpg takes the prefork parent and its child together.
        return subprocess.Popen(
            [sys.executable, "-m", "support_bot.cli", "worker", "--concurrency", "1"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        # SIGTERM to the parent alone: a warm shutdown that lets its child finish.
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _job(settings: Settings, job_id: str) -> IngestJob:
    with session_scope(settings) as s:
        return s.get(IngestJob, job_id)


def _wait(settings: Settings, job_id: str, done, proc: subprocess.Popen, log: Path) -> IngestJob:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        job = _job(settings, job_id)
        if done(job):
            return job
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    raise AssertionError(
        f"job {job.status} {job.progress_done}/{job.progress_total} ({job.error}); worker exit {proc.poll()}; "
        f"log:\n{log.read_text(errors='replace')[-4000:]}"
    )


def test_sigkilled_worker_job_completes_on_redelivery_with_each_chunk_once(fault_settings):
    settings = fault_settings
    log = settings.data_dir / "worker.log"
    with session_scope(settings) as s:
        job_id = create_job(
            session=s, settings=settings, source_name="router-faq", filename="router-faq.csv", data=_faq(ROWS)
        ).id
    submit_job(job_id, settings)

    first = _start_worker(settings, log)
    try:
        job = _wait(settings, job_id, lambda j: j.progress_done > 0, first, log)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(30)
    finally:
        _stop(first)
    assert first.returncode == -signal.SIGKILL
    killed = _job(settings, job_id)
    # Killed mid-job: some batches committed, not all, and nothing went live.
    assert killed.status == "running" and 0 < killed.progress_done < killed.progress_total == ROWS, (
        killed.status, killed.progress_done,
    )
    with session_scope(settings) as s:
        kept = set(s.scalars(select(Chunk.id)).all())
    assert 0 < len(kept) < ROWS
    assert load_current(settings).records == []

    second = _start_worker(settings, log)
    try:
        job = _wait(settings, job_id, lambda j: j.status in ("succeeded", "failed"), second, log)
    finally:
        _stop(second)
    assert job.status == "succeeded", job.error
    assert job.attempts >= 2 and job.progress_done == job.progress_total == ROWS

    with session_scope(settings) as s:
        per_ordinal = s.execute(
            select(Chunk.document_id, Chunk.ordinal, func.count()).group_by(Chunk.document_id, Chunk.ordinal)
        ).all()
        chunk_ids = set(s.scalars(select(Chunk.id)).all())
        documents = s.scalars(select(Document.id)).all()
    assert documents == [job.document_id]
    assert len(per_ordinal) == ROWS and all(n == 1 for _, _, n in per_ordinal)
    assert sorted(o for _, o, _ in per_ordinal) == list(range(ROWS))
    # The batches committed before the kill were kept and built on, not redone.
    assert kept <= chunk_ids and len(chunk_ids) == ROWS

    records = load_current(settings).records
    assert len(records) == ROWS
    assert {r.chunk_id for r in records} == chunk_ids
    assert sorted(r.entry_id for r in records) == sorted(f"opt-{i}" for i in range(ROWS))

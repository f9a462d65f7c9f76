"""Workers: the in-process thread runs submitted and left-over jobs; a real Celery worker on Redis runs one too."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select

from ingest.uploads import create_job
from ingest.worker import InProcessWorker, get_worker, submit_job
from support_bot.core.db import session_scope
from support_bot.knowledge.index import read_current_version
from support_bot.models import Chunk, IngestJob

ROOT = Path(__file__).resolve().parents[2]


def _queue_job(settings, data: bytes, source: str = "faq") -> str:
    with session_scope(settings) as s:
        return create_job(session=s, settings=settings, source_name=source, filename="faq.csv", data=data).id


def _job(settings, job_id: str) -> IngestJob:
    with session_scope(settings) as s:
        return s.get(IngestJob, job_id)


@pytest.fixture
def worker():
    yield get_worker()
    get_worker().stop()


def test_submit_job_runs_on_the_in_process_worker(kb, faq_bytes, worker):
    job_id = _queue_job(kb, faq_bytes)
    submit_job(job_id, kb)
    assert worker.running
    assert worker.wait_idle(120)
    job = _job(kb, job_id)
    assert job.status == "succeeded" and job.progress_done == job.progress_total == 11
    assert read_current_version(kb.index_dir) == 1


def test_worker_start_picks_up_jobs_left_queued(kb, faq_bytes):
    job_id = _queue_job(kb, faq_bytes)
    worker = InProcessWorker()
    try:
        worker.start(kb)
        # Submitting the same job again does not queue it twice.
        worker.submit(job_id, kb)
        assert worker.wait_idle(120)
    finally:
        worker.stop()
    assert not worker.running
    job = _job(kb, job_id)
    assert job.status == "succeeded" and job.attempts == 1


def test_worker_survives_a_failing_job(kb, faq_bytes, worker):
    bad_id = _queue_job(kb, faq_bytes, source="first")
    Path(_job(kb, bad_id).path).unlink()
    good_id = _queue_job(kb, b"id,question,answer\n1,Is this fine?,Yes.\n", source="second")
    submit_job(bad_id, kb)
    submit_job(good_id, kb)
    assert worker.wait_idle(120)
    assert _job(kb, bad_id).status == "failed"
    assert _job(kb, good_id).status == "succeeded"


@pytest.mark.redis
def test_real_celery_worker_runs_a_submitted_job(kb, faq_bytes, redis_url):
    queue = f"ingest-test-{uuid.uuid4().hex[:8]}"
    settings = kb.model_copy(update={"redis_url": redis_url, "ingest": kb.ingest.model_copy(update={"queue": queue})})
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPORT_BOT_")}
    env.update(
        SUPPORT_BOT_DATA_DIR=str(settings.data_dir),
        SUPPORT_BOT_REDIS_URL=redis_url,
        SUPPORT_BOT_INGEST__QUEUE=queue,
        PYTHONPATH=str(ROOT),
    )
    log = settings.data_dir / "celery-worker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "ingest.celery_app",
                "worker",
                "--pool=solo",
                "-Q",
                queue,
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "--loglevel=INFO",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        job_id = _queue_job(settings, faq_bytes)
        submit_job(job_id, settings)
        deadline = time.monotonic() + 240
        status = "queued"
        while time.monotonic() < deadline and proc.poll() is None:
            status = _job(settings, job_id).status
            if status in ("succeeded", "failed"):
                break
            time.sleep(0.5)
        assert status == "succeeded", f"job {status}; worker log:\n{log.read_text(errors='replace')[-3000:]}"
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    with session_scope(settings) as s:
        assert len(s.scalars(select(Chunk.id)).all()) == 11
    assert read_current_version(settings.index_dir) == 1
    assert "ingest.run_job" in log.read_text(errors="replace")

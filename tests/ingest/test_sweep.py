"""Heartbeats and the workers' sweep: a job whose worker died is queued again or failed, never left running; a job
no worker took is handed over."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from ingest import pipeline
from ingest.pipeline import run_job
from ingest.sweep import sweep
from ingest.uploads import create_job
from ingest.worker import InProcessWorker
from support_bot.core.db import session_scope
from support_bot.knowledge.reader import load_current
from support_bot.models import Chunk, IngestJob, Source, utcnow
from tests.ingest.test_jobs import _killed_run

# Three entries, one chunk each: enough batches to resume from, little to embed.
SMALL_FAQ = b"""id,question,answer
k-1,Do you rent kayaks?,Yes: kayaks rent for $40 a day.
k-2,Do you rent paddles?,Paddles come with every kayak.
k-3,Can I rent a life jacket?,Life jackets are free with any rental.
"""


def _queue(settings, source: str = "faq") -> str:
    with session_scope(settings) as s:
        return create_job(session=s, settings=settings, source_name=source, filename="faq.csv", data=SMALL_FAQ).id


def _job(settings, job_id: str) -> IngestJob:
    with session_scope(settings) as s:
        return s.get(IngestJob, job_id)


def _age(settings, job_id: str, **ago: float) -> None:
    """Move the job's timestamps into the past: created_at=3600 puts created_at an hour back, and so on."""
    now = utcnow()
    with session_scope(settings) as s:
        s.execute(
            update(IngestJob).where(IngestJob.id == job_id).values(
                **{column: now - timedelta(seconds=seconds) for column, seconds in ago.items()}
            )
        )


def _wait_for(predicate, timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_a_running_job_stamps_its_heartbeat(kb, monkeypatch):
    kb.ingest.heartbeat_interval_s = 0.05
    kb.ingest.heartbeat_timeout_s = 10
    job_id = _queue(kb)
    beats: list[bool] = []
    real_embed = pipeline._embed

    def embed(embedder, drafts):
        if not beats:
            # Hold the first batch until a beat newer than the job's start is recorded.
            def beaten() -> bool:
                job = _job(kb, job_id)
                return job.heartbeat_at is not None and job.heartbeat_at > job.started_at

            beats.append(_wait_for(beaten, 30))
        return real_embed(embedder, drafts)

    monkeypatch.setattr(pipeline, "_embed", embed)
    assert run_job(job_id, kb).status == "succeeded"
    assert beats == [True]


def test_the_sweep_queues_again_a_job_whose_heartbeat_stopped_and_the_next_run_resumes_it(kb):
    kb.ingest.batch_chunks = 1
    job_id = _queue(kb)
    _killed_run(kb, job_id, 1)
    _age(kb, job_id, created_at=600, started_at=600, heartbeat_at=600)
    handed: list[str] = []
    result = sweep(kb, handed.append)
    assert (result.requeued, result.failed, result.dispatched, handed) == ([job_id], [], [job_id], [job_id])
    job = _job(kb, job_id)
    assert job.status == "queued" and job.dispatched_at is not None
    assert job.error == "faq.csv: the worker running the job stopped (attempt 1; will be retried)"
    # Handed over once: the next sweep leaves it to the worker that has it.
    assert sweep(kb, handed.append).dispatched == [] and handed == [job_id]
    job = run_job(job_id, kb)
    assert (job.status, job.attempts, job.error) == ("succeeded", 2, None)
    assert len(load_current(kb).records) == 3


def test_the_sweep_fails_a_lost_job_that_ran_past_its_time_limit_and_drops_what_it_staged(kb):
    kb.ingest.batch_chunks = 1
    kb.ingest.job_time_limit_s = 60
    job_id = _queue(kb, source="gifts")
    _killed_run(kb, job_id, 1)
    _age(kb, job_id, created_at=300, started_at=300, heartbeat_at=200)
    result = sweep(kb, lambda _job_id: pytest.fail("a failed job is not handed over"))
    assert (result.requeued, result.failed) == ([], [job_id])
    job = _job(kb, job_id)
    assert job.status == "failed" and job.finished_at is not None
    assert job.error.startswith("faq.csv: the job took longer than 60 s (SUPPORT_BOT_INGEST__JOB_TIME_LIMIT_S)")
    with session_scope(kb) as s:
        assert s.scalars(select(Chunk)).all() == [] and s.scalars(select(Source)).all() == []


def test_the_sweep_fails_a_job_whose_worker_was_lost_on_every_try(kb):
    kb.ingest.max_retries = 1
    job_id = _queue(kb)
    _killed_run(kb, job_id, 0)
    _killed_run(kb, job_id, 0)
    _age(kb, job_id, heartbeat_at=600)
    assert sweep(kb, lambda _job_id: None).failed == [job_id]
    job = _job(kb, job_id)
    assert job.status == "failed" and "the worker running the job stopped without finishing it, 2 times" in job.error


def test_the_sweep_leaves_a_job_whose_heartbeat_is_recent(kb):
    job_id = _queue(kb)
    _killed_run(kb, job_id, 0)
    _age(kb, job_id, created_at=3600, started_at=3600, heartbeat_at=1)
    result = sweep(kb, lambda _job_id: pytest.fail("nothing to hand over"))
    assert (result.requeued, result.failed, result.dispatched) == ([], [], [])
    assert _job(kb, job_id).status == "running"


def test_the_sweep_hands_over_a_queued_job_no_worker_took_and_retries_while_the_broker_is_down(kb):
    fresh = _queue(kb, source="fresh")
    old = _queue(kb, source="old")
    _age(kb, old, created_at=600)

    def broker_down(_job_id):
        raise ConnectionRefusedError("connection refused")

    assert sweep(kb, broker_down).dispatched == []
    assert _job(kb, old).dispatched_at is None
    handed: list[str] = []
    # The fresh job is left to its uploader for heartbeat_timeout_s.
    assert sweep(kb, handed.append).dispatched == [old] and handed == [old]
    assert _job(kb, fresh).dispatched_at is None


def test_the_in_process_worker_sweeps_for_jobs_no_worker_took(kb):
    kb.ingest.sweep_interval_s = 0.1
    kb.ingest.heartbeat_interval_s = 0.5
    kb.ingest.heartbeat_timeout_s = 1
    worker = InProcessWorker()
    worker.start(kb)
    try:
        # Committed after the worker started, and never submitted (as when the hand-over failed).
        job_id = _queue(kb)
        assert _wait_for(lambda: _job(kb, job_id).status in ("succeeded", "failed"))
    finally:
        worker.stop()
    job = _job(kb, job_id)
    assert job.status == "succeeded" and job.dispatched_at is not None

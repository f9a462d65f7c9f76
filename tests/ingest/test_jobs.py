"""Jobs: resume after a crash, duplicate runs, superseded versions, time limits, retries with backoff."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

import ingest.pipeline as pipeline
from ingest.uploads import create_job, upload_name
from ingest.pipeline import ingest_path, retry_delay, run_job
from ingest.worker import InProcessWorker
from support_bot.core.db import session_scope
from support_bot.knowledge.admin import delete_source, list_sources
from support_bot.knowledge.reader import load_current
from support_bot.knowledge.index import read_current_version
from support_bot.knowledge.retriever import Retriever
from support_bot.models import Chunk, Document, IngestJob, Source
from tests.conftest import FAQ

NEW_FAQ = (
    "id,question,answer\n"
    + "".join(f"n{i},Question {i} about gift cards?,Answer {i}: gift cards come in ${10 * i}.\n" for i in range(1, 10))
).encode()


class Crash(BaseException):
    """Stands in for the process dying: not an Exception, so no failure handler runs."""


def _queue(settings, data: bytes, source: str = "faq", filename: str = "faq.csv") -> str:
    with session_scope(settings) as s:
        return create_job(session=s, settings=settings, source_name=source, filename=filename, data=data).id


def _job(settings, job_id: str) -> IngestJob:
    with session_scope(settings) as s:
        return s.get(IngestJob, job_id)


def _rows(settings, document_id: int | None = None) -> list[tuple[int, int, str]]:
    with session_scope(settings) as s:
        stmt = select(Chunk.document_id, Chunk.ordinal, Chunk.id).order_by(Chunk.document_id, Chunk.ordinal)
        if document_id is not None:
            stmt = stmt.where(Chunk.document_id == document_id)
        return [tuple(r) for r in s.execute(stmt)]


def _assert_each_chunk_once(settings, document_id: int, expected: int) -> None:
    with session_scope(settings) as s:
        counts = s.execute(
            select(Chunk.ordinal, func.count()).where(Chunk.document_id == document_id).group_by(Chunk.ordinal)
        ).all()
    assert sorted(o for o, _ in counts) == list(range(expected))
    assert all(n == 1 for _, n in counts)


@contextmanager
def _counted(crash_after: int | None = None) -> Iterator[list[int]]:
    """Count the chunks each batch embeds; with crash_after, the run dies when about to store one batch more."""
    real_store, real_embed = pipeline._store_batch, pipeline._embed
    stored: list[int] = []
    embedded: list[int] = []

    def store(*args, **kwargs):
        if crash_after is not None and len(stored) == crash_after:
            raise Crash()
        stored.append(1)
        return real_store(*args, **kwargs)

    def embed(embedder, drafts):
        embedded.append(len(drafts))
        return real_embed(embedder, drafts)

    # A patch context of its own: undoing it must not undo the test's environment.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pipeline, "_store_batch", store)
        mp.setattr(pipeline, "_embed", embed)
        yield embedded


def _killed_run(settings, job_id: str, batches: int) -> None:
    """Run the job until it has stored `batches` batches, then let it die as a killed process would."""
    with _counted(crash_after=batches), pytest.raises(Crash):
        run_job(job_id, settings)


def test_upload_name_keeps_a_safe_display_name():
    assert upload_name("../../etc/passwd.csv") == "passwd.csv"
    assert upload_name("C:\\Users\\me\\faq.csv") == "faq.csv"
    assert upload_name("a\x00b\nc\u202e.csv") == "abc.csv"
    assert upload_name("..") == upload_name("") == upload_name(None) == upload_name("a/..") == "upload"
    assert len(upload_name("x" * 1000 + ".csv")) == 255


def test_killed_run_resumes_from_its_staged_batches(kb):
    kb.ingest.batch_chunks = 3
    job_id = _queue(kb, FAQ.read_bytes())
    _killed_run(kb, job_id, 2)
    job = _job(kb, job_id)
    assert (job.status, job.progress_done, job.progress_total) == ("running", 6, 11)
    staged = _rows(kb, job.document_id)
    assert [o for _, o, _ in staged] == list(range(6))
    # Staged chunks are not served: no source version is live yet and nothing was published.
    with session_scope(kb) as s:
        assert s.scalar(select(Source.active_version)) == 0
    assert read_current_version(kb.index_dir) == 0
    assert [i.status for i in list_sources(settings=kb)] == ["ingesting"]

    with _counted() as embedded_again:
        job = run_job(job_id, kb)
    assert job.status == "succeeded" and job.attempts == 2
    # Only the five chunks the first run had not stored were embedded again.
    assert sum(embedded_again) == 5
    rows = _rows(kb, job.document_id)
    assert {r[2] for r in staged} <= {r[2] for r in rows}
    _assert_each_chunk_once(kb, job.document_id, 11)
    assert len(load_current(kb).records) == 11


def test_two_runs_of_one_job_at_once_store_each_chunk_once(kb):
    kb.ingest.batch_chunks = 2
    job_id = _queue(kb, FAQ.read_bytes())
    results: list[object] = []

    def run() -> None:
        try:
            results.append(run_job(job_id, kb).status)
        except Exception as exc:  # recorded for the assertion below
            results.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert results == ["succeeded", "succeeded"]
    job = _job(kb, job_id)
    _assert_each_chunk_once(kb, job.document_id, 11)
    assert len(_rows(kb)) == 11
    records = load_current(kb).records
    assert len(records) == len({r.chunk_id for r in records}) == 11


def test_a_newer_upload_supersedes_a_staged_one(kb):
    kb.ingest.batch_chunks = 3
    ingest_path(settings=kb, path=FAQ, source_name="faq")
    old_id = _queue(kb, NEW_FAQ, filename="old.csv")
    _killed_run(kb, old_id, 1)
    newer = ingest_path(settings=kb, path=FAQ.parent / "northwind_faq.json", source_name="faq")
    assert newer.status == "succeeded"
    job = run_job(old_id, kb)
    assert job.status == "failed"
    assert job.error.startswith("old.csv: a newer upload of source 'faq' (version 3) went live")
    with session_scope(kb) as s:
        assert [(d.version, d.filename) for d in s.scalars(select(Document))] == [(3, "northwind_faq.json")]
    # Only the newer version's chunks remain, and the index serves exactly those.
    with session_scope(kb) as s:
        stored = set(s.scalars(select(Chunk.id)).all())
    assert {r.chunk_id for r in load_current(kb).records} == stored and len(stored) == 3


def test_deleting_the_source_under_a_staged_job_fails_it_clearly(kb):
    kb.ingest.batch_chunks = 3
    ingest_path(settings=kb, path=FAQ, source_name="faq")
    job_id = _queue(kb, NEW_FAQ, filename="v2.csv")
    _killed_run(kb, job_id, 1)
    delete_source(settings=kb, name="faq")
    job = run_job(job_id, kb)
    assert job.status == "failed"
    assert job.error == "v2.csv: source 'faq' was deleted while the file was being ingested"
    assert _rows(kb) == [] and list_sources(settings=kb) == []


class FakeClock:
    """A monotonic clock that moves ten seconds on every reading."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 10
        return self.now


def test_time_limit_fails_the_job_and_keeps_the_live_version(kb, monkeypatch):
    ingest_path(settings=kb, path=FAQ, source_name="faq")
    before, version = _rows(kb), read_current_version(kb.index_dir)
    kb.ingest.job_time_limit_s = 25
    kb.ingest.batch_chunks = 2
    monkeypatch.setattr(pipeline, "_clock", FakeClock())
    job_id = _queue(kb, NEW_FAQ, filename="v2.csv")
    worker = InProcessWorker()
    try:
        worker.start(kb)
        assert worker.wait_idle(300)
    finally:
        worker.stop()
    job = _job(kb, job_id)
    assert job.status == "failed" and job.attempts == 1
    assert job.error.startswith("v2.csv: the job took longer than 25 s (SUPPORT_BOT_INGEST__JOB_TIME_LIMIT_S)")
    # It stopped between batches, and what it had staged is gone.
    assert 0 < job.progress_done < job.progress_total
    assert _rows(kb) == before and read_current_version(kb.index_dir) == version
    with session_scope(kb) as s:
        assert s.scalar(select(func.count()).select_from(Document)) == 1
    assert Retriever(kb).search("How do I reset my password?").hits[0].entry_id == "acc-01"


def test_a_first_upload_that_fails_leaves_no_empty_source(kb, monkeypatch):
    kb.ingest.job_time_limit_s = 25
    kb.ingest.batch_chunks = 2
    monkeypatch.setattr(pipeline, "_clock", FakeClock())
    job = run_job(_queue(kb, NEW_FAQ, source="gifts"), kb)
    assert job.status == "failed" and "took longer than 25 s" in job.error
    with session_scope(kb) as s:
        assert s.scalars(select(Source)).all() == [] and s.scalars(select(Chunk)).all() == []


def test_celery_soft_time_limit_fails_the_job_with_the_time_limit_reason(kb, monkeypatch):
    from celery.exceptions import SoftTimeLimitExceeded

    from ingest.tasks import run_ingest_job

    def over_time(*args, **kwargs):
        raise SoftTimeLimitExceeded()

    monkeypatch.setattr(pipeline, "_embed", over_time)
    job_id = _queue(kb, NEW_FAQ, filename="v2.csv")
    result = run_ingest_job.run(job_id)
    assert result["status"] == "failed"
    job = _job(kb, job_id)
    assert job.error.startswith("v2.csv: the job took longer than 3600 s")
    assert _rows(kb) == []


def test_celery_hard_time_limit_records_the_killed_job_as_failed(kb):
    from celery.exceptions import TimeLimitExceeded

    from ingest.tasks import run_ingest_job

    kb.ingest.batch_chunks = 3
    job_id = _queue(kb, NEW_FAQ, source="gifts", filename="gifts.csv")
    _killed_run(kb, job_id, 1)
    # What the worker's parent process calls after killing the child at the hard limit.
    run_ingest_job.on_failure(TimeLimitExceeded(3660), "task-id", [job_id], {}, None)
    job = _job(kb, job_id)
    assert job.status == "failed" and job.error.startswith("gifts.csv: the job took longer than 3600 s")
    with session_scope(kb) as s:
        assert s.scalars(select(Chunk)).all() == [] and s.scalars(select(Source)).all() == []


def test_retry_delay_doubles_up_to_the_cap(settings):
    settings.ingest.retry_backoff_s = 2
    settings.ingest.retry_backoff_max_s = 30
    assert [retry_delay(n, settings) for n in range(6)] == [2, 4, 8, 16, 30, 30]


class FlakyDatabase:
    """Fails the first `failures` runs with a database error, like a database that is restarting."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0
        self.real = pipeline._process

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls <= self.failures:
            raise OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))
        return self.real(*args, **kwargs)


def test_in_process_worker_retries_transient_errors_with_backoff(kb, monkeypatch):
    flaky = FlakyDatabase(2)
    monkeypatch.setattr(pipeline, "_process", flaky)
    delays: list[float] = []
    real_delay = pipeline.retry_delay

    def recorded_delay(attempt, settings):
        delays.append(real_delay(attempt, settings))
        return 0.0

    monkeypatch.setattr(pipeline, "retry_delay", recorded_delay)
    job_id = _queue(kb, FAQ.read_bytes())
    worker = InProcessWorker()
    try:
        worker.start(kb)
        assert worker.wait_idle(300)
    finally:
        worker.stop()
    job = _job(kb, job_id)
    assert (job.status, job.attempts, job.error) == ("succeeded", 3, None)
    assert delays == [2.0, 4.0]
    _assert_each_chunk_once(kb, job.document_id, 11)


def test_a_job_waiting_for_its_retry_stays_queued_across_a_restart(kb, monkeypatch):
    kb.ingest.retry_backoff_s = 3600
    monkeypatch.setattr(pipeline, "_process", FlakyDatabase(1))
    job_id = _queue(kb, FAQ.read_bytes())
    worker = InProcessWorker()
    worker.start(kb)
    try:
        deadline = time.monotonic() + 120
        while _job(kb, job_id).error is None and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        worker.stop()
    job = _job(kb, job_id)
    assert job.status == "queued"
    assert job.error == "database error: connection refused (attempt 1; will be retried)"
    # A new worker (the process restarted) picks the job up and finishes it.
    again = InProcessWorker()
    try:
        again.start(kb)
        assert again.wait_idle(300)
    finally:
        again.stop()
    job = _job(kb, job_id)
    assert (job.status, job.attempts) == ("succeeded", 2)


def test_transient_errors_that_persist_fail_the_job(kb, monkeypatch):
    kb.ingest.max_retries = 2
    kb.ingest.retry_backoff_s = 0
    flaky = FlakyDatabase(99)
    monkeypatch.setattr(pipeline, "_process", flaky)
    job_id = _queue(kb, FAQ.read_bytes())
    worker = InProcessWorker()
    try:
        worker.start(kb)
        assert worker.wait_idle(120)
    finally:
        worker.stop()
    job = _job(kb, job_id)
    assert (job.status, job.attempts, flaky.calls) == ("failed", 3, 3)
    assert job.error == "database error: connection refused"


def test_worker_start_resumes_a_job_left_running(kb):
    kb.ingest.batch_chunks = 4
    job_id = _queue(kb, FAQ.read_bytes())
    _killed_run(kb, job_id, 1)
    assert _job(kb, job_id).status == "running"
    worker = InProcessWorker()
    try:
        worker.start(kb)
        assert worker.wait_idle(300)
    finally:
        worker.stop()
    job = _job(kb, job_id)
    assert job.status == "succeeded" and job.attempts == 2
    _assert_each_chunk_once(kb, job.document_id, 11)

"""Stored uploads: a job's clean-up never removes the file that another upload of the same content relies on."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from ingest import pipeline, uploads
from ingest.pipeline import run_job
from ingest.uploads import create_job
from support_bot.core.db import migrate, session_scope
from support_bot.models import IngestJob

CSV = b"id,question,answer\nk-1,Do you rent kayaks?,Yes: kayaks rent for $40 a day.\n"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request, settings, embedder):
    if request.param == "postgres":
        settings = settings.model_copy(update={"database_url": request.getfixturevalue("postgres_url")})
    migrate(settings)
    return settings


def _job(settings, job_id: str) -> IngestJob:
    with session_scope(settings) as s:
        return s.get(IngestJob, job_id)


def test_a_finished_job_keeps_the_file_of_a_same_content_upload_not_yet_committed(store, monkeypatch):
    """Job 1 finishes while a second upload of the same bytes is stored but not committed: job 1's clean-up must
    leave the file, or the second job finds it gone ("no longer stored")."""
    with session_scope(store) as s:
        first_id = create_job(session=s, settings=store, source_name="kayaks", filename="kayaks.csv", data=CSV).id
    path = Path(_job(store, first_id).path)

    at_cleanup, cleanup_may_run = threading.Event(), threading.Event()
    # Set once the clean-up has run (the old code) or has asked for the upload's lock (and so waits for the upload).
    cleanup_settled = threading.Event()
    real_discard = pipeline._discard_upload

    def discard(job, settings):
        at_cleanup.set()
        assert cleanup_may_run.wait(60)
        try:
            real_discard(job, settings)
        finally:
            cleanup_settled.set()

    real_lock = getattr(uploads, "lock_upload", None)

    def lock_upload(session, sha256):
        if threading.current_thread().name == "first-job":
            cleanup_settled.set()
        return real_lock(session, sha256)

    monkeypatch.setattr(pipeline, "_discard_upload", discard)
    monkeypatch.setattr(uploads, "lock_upload", lock_upload, raising=False)
    results: list[object] = []
    first = threading.Thread(target=lambda: results.append(run_job(first_id, store).status), name="first-job")
    first.start()
    assert at_cleanup.wait(120)

    with session_scope(store) as s:
        second_id = create_job(session=s, settings=store, source_name="kayaks-2", filename="kayaks.csv", data=CSV).id
        cleanup_may_run.set()
        assert cleanup_settled.wait(60)
    first.join(120)
    assert results == ["succeeded"]
    assert _job(store, second_id).path == str(path)
    assert path.read_bytes() == CSV

    second = run_job(second_id, store)
    assert second.status == "succeeded", second.error
    # Nothing unfinished needs it any more: the last clean-up removes it.
    assert not path.exists()


def test_the_clean_up_removes_the_file_only_when_no_unfinished_job_needs_it(store):
    with session_scope(store) as s:
        first_id = create_job(session=s, settings=store, source_name="a", filename="a.csv", data=CSV).id
        second_id = create_job(session=s, settings=store, source_name="b", filename="b.csv", data=CSV).id
    path = Path(_job(store, first_id).path)
    assert run_job(first_id, store).status == "succeeded"
    assert path.exists()
    assert run_job(second_id, store).status == "succeeded"
    assert not path.exists()

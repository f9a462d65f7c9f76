"""Adaptation jobs: one at a time, progress and outcome recorded, a dead job shown as interrupted."""

from __future__ import annotations

import json
import time

import pytest

from support_bot.adapt import jobs
from support_bot.core.errors import Conflict, InvalidInput, NotFound


def test_a_job_records_its_outcome_and_only_one_runs_at_a_time(db):
    job = jobs.create_job(db, "rollback")
    assert job["status"] == "queued" and jobs.get_job(db, job["id"])["status"] == "queued"
    with jobs._exclusive(db) as free:
        assert free and jobs.busy(db)
        with pytest.raises(Conflict, match="another adaptation job"):
            jobs.create_job(db, "tune")
        with pytest.raises(Conflict):
            jobs.run_job(db, job["id"])
    assert jobs.get_job(db, job["id"])["status"] == "failed"

    again = jobs.create_job(db, "rollback")
    done = jobs.run_job(db, again["id"])
    # Nothing to roll back to on a fresh install: the job fails with the reason, nothing else happens.
    assert done["status"] == "failed" and "nothing to roll back" in done["error"]
    assert done["started_at"] and done["finished_at"] and not jobs.busy(db)
    assert [j["id"] for j in jobs.list_jobs(db)][:1] == [again["id"]]


def test_a_running_job_whose_process_died_reads_as_interrupted(db):
    job = jobs.create_job(db, "tune")
    path = jobs.jobs_dir(db) / f"{job['id']}.json"
    path.write_text(json.dumps({**job, "status": "running"}))
    assert jobs.get_job(db, job["id"])["status"] == "interrupted"
    # A queued job gets a minute for its process to start.
    path.write_text(json.dumps({**job, "created_ts": time.time() - 120}))
    assert jobs.get_job(db, job["id"])["status"] == "interrupted"


def test_bad_job_requests_are_refused(db):
    with pytest.raises(InvalidInput):
        jobs.create_job(db, "delete-everything")
    with pytest.raises(InvalidInput):
        jobs.create_job(db, "activate", target="../../etc")
    with pytest.raises(NotFound):
        jobs.create_job(db, "activate", target="embedder-0009")
    with pytest.raises(NotFound):
        jobs.get_job(db, "../../../etc/passwd")


@pytest.mark.slow
def test_a_job_runs_in_a_detached_process(db):
    job = jobs.create_job(db, "rollback")
    proc = jobs.start_job(db, job)
    assert proc.wait(timeout=300) == 1
    done = jobs.get_job(db, job["id"])
    assert done["status"] == "failed" and "nothing to roll back" in done["error"]

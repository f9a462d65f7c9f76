"""Real Celery workers on Redis sweep for jobs: one the broker never took (it was down at upload), and one whose
process the hard time limit killed without anything recorded (as older Celery does)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from ingest.uploads import create_job
from ingest.worker import submit_job
from support_bot.core.config import Settings
from support_bot.core.db import session_scope
from support_bot.models import Chunk, IngestJob
from tests.conftest import free_port

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parents[2]
CSV = b"id,question,answer\nk-1,Do you rent kayaks?,Yes: kayaks rent for $40 a day.\n"
WAIT_S = 180
SWEEP = {"heartbeat_interval_s": 0.2, "heartbeat_timeout_s": 2, "sweep_interval_s": 0.2}


@pytest.fixture
def celery_settings(kb, redis_url):
    tag = uuid.uuid4().hex[:8]
    ingest = kb.ingest.model_copy(
        update={"queue": f"ingest-sweep-{tag}", "broker_key_prefix": f"sbtest-{tag}:", **SWEEP}
    )
    yield kb.model_copy(update={"redis_url": redis_url, "ingest": ingest})
    import redis

    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(f"sbtest-{tag}:*"):
        client.delete(key)
    client.close()


def _start(settings: Settings, command: list[str], log: Path, **env_extra: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPORT_BOT_")}
    env.update(
        SUPPORT_BOT_DATA_DIR=str(settings.data_dir),
        SUPPORT_BOT_REDIS_URL=settings.redis_url,
        SUPPORT_BOT_INGEST__QUEUE=settings.ingest.queue,
        SUPPORT_BOT_INGEST__BROKER_KEY_PREFIX=settings.ingest.broker_key_prefix,
        PYTHONPATH=str(ROOT),
        **{f"SUPPORT_BOT_INGEST__{name.upper()}": str(value) for name, value in SWEEP.items()},
        **env_extra,
    )
    with open(log, "ab") as out:
        # Its own process group, so the prefork parent and its pool go together at the end.
        return subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
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
    job = _job(settings, job_id)
    while time.monotonic() < deadline and proc.poll() is None:
        job = _job(settings, job_id)
        if done(job):
            return job
        time.sleep(0.1)
    raise AssertionError(
        f"job {job.status} ({job.error}); worker exit {proc.poll()}; log:\n{log.read_text(errors='replace')[-4000:]}"
    )


def _queue(settings: Settings) -> str:
    with session_scope(settings) as s:
        return create_job(session=s, settings=settings, source_name="kayaks", filename="kayaks.csv", data=CSV).id


def test_a_job_the_broker_never_took_is_handed_over_by_a_worker_that_comes_up(celery_settings):
    settings = celery_settings
    job_id = _queue(settings)
    down = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    assert submit_job(job_id, down) is False
    assert (_job(settings, job_id).status, _job(settings, job_id).dispatched_at) == ("queued", None)

    log = settings.data_dir / "worker.log"
    command = [sys.executable, "-m", "celery", "-A", "ingest.celery_app", "worker", "--pool=solo", "-Q",
               settings.ingest.queue, "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel=INFO"]
    proc = _start(settings, command, log)
    try:
        job = _wait(settings, job_id, lambda j: j.status in ("succeeded", "failed"), proc, log)
    finally:
        _stop(proc)
    assert job.status == "succeeded", job.error
    assert job.dispatched_at is not None and job.attempts == 1
    with session_scope(settings) as s:
        assert len(s.query(Chunk).all()) == 1


@pytest.mark.faults
def test_a_job_killed_at_the_hard_time_limit_is_failed_by_the_sweep(celery_settings):
    settings = celery_settings
    log = settings.data_dir / "stuck-worker.log"
    proc = _start(
        settings, [sys.executable, "-m", "tests.ingest.stuck_worker"], log, SUPPORT_BOT_INGEST__JOB_TIME_LIMIT_S="1"
    )
    try:
        job_id = _queue(settings)
        submit_job(job_id, settings)

        def killed_and_recorded(job: IngestJob) -> bool:
            return job.status != "running" and job.status != "queued" and "Hard time limit" in log.read_text(
                errors="replace"
            )

        job = _wait(settings, job_id, killed_and_recorded, proc, log)
    finally:
        _stop(proc)
    assert job.status == "failed"
    assert job.error.startswith("kayaks.csv: the job took longer than 1 s (SUPPORT_BOT_INGEST__JOB_TIME_LIMIT_S)")
    assert job.finished_at is not None and job.attempts == 1

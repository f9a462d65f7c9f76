"""Adaptation jobs (tune, activate, roll back) with progress, one at a time per data dir.

A job is a JSON record under <data_dir>/adapters/jobs/, so every web process and the CLI see the same jobs without a
database table. The running job holds an exclusive lock on <data_dir>/adapters/.job.lock for its whole run: a job
still marked running whose lock is free was interrupted (its process died). The console starts jobs in a detached,
lower-priority process (training must not starve the web process of CPU); the CLI runs them in its own process.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from support_bot.adapt import artifacts, service
from support_bot.core.config import Settings
from support_bot.core.errors import Conflict, InvalidInput, NotFound, SupportBotError
from support_bot.knowledge.embedder import ADAPTERS_DIR, EMBEDDER_KIND
from support_bot.llm.adapters import CHAT_KIND

log = logging.getLogger(__name__)

ACTIONS = ("tune", "activate", "rollback")
KEEP_JOBS = 200
# Progress is written at most this often, and a heartbeat at least this often.
_WRITE_EVERY_S = 0.5
_JOB_ID = set("0123456789abcdef")
_SCRIPT = "import sys; from support_bot.adapt.jobs import job_main; sys.exit(job_main(sys.argv[1:]))"


def jobs_dir(settings: Settings) -> Path:
    return (settings.data_dir / ADAPTERS_DIR / "jobs").resolve()


def _path(settings: Settings, job_id: str) -> Path:
    if not job_id or len(job_id) != 32 or set(job_id) - _JOB_ID:
        raise NotFound(f"no adaptation job {job_id!r}")
    return jobs_dir(settings) / f"{job_id}.json"


def _write(settings: Settings, job: dict) -> None:
    path = _path(settings, job["id"])
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    tmp.write_text(json.dumps(job, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)


@contextmanager
def _exclusive(settings: Settings, *, wait: bool = False) -> Iterator[bool]:
    """Holds the adaptation lock; yields False (holding nothing) when another job has it and wait is False."""
    root = settings.data_dir / ADAPTERS_DIR
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".job.lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def busy(settings: Settings) -> bool:
    """Whether an adaptation job is running now (in any process on this host)."""
    with _exclusive(settings) as free:
        return not free


def get_job(settings: Settings, job_id: str) -> dict:
    try:
        job = json.loads(_path(settings, job_id).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotFound(f"no adaptation job {job_id!r}") from None
    return _checked(settings, job)


def _checked(settings: Settings, job: dict) -> dict:
    """A job marked queued or running whose process is gone reads as interrupted."""
    # A queued job gets a minute for its process to start and take the lock.
    stale = job["status"] == "running" or (job["status"] == "queued" and time.time() - job.get("created_ts", 0) > 60)
    if stale and not busy(settings):
        job = {**job, "status": "interrupted", "error": "the job's process stopped before it finished"}
    return job


def list_jobs(settings: Settings, *, limit: int = 20) -> list[dict]:
    """The newest jobs first."""
    root = jobs_dir(settings)
    if not root.is_dir():
        return []
    jobs = []
    for path in root.glob("*.json"):
        try:
            jobs.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
    jobs.sort(key=lambda j: j.get("created_ts", 0), reverse=True)
    return [_checked(settings, j) for j in jobs[:limit]]


def create_job(
    settings: Settings, action: str, *, target: str | None = None, params: dict | None = None, kind: str = EMBEDDER_KIND
) -> dict:
    """A queued job record; Conflict while another job runs. An activation's kind is its target's."""
    artifacts.kind_dir(settings, kind)  # refuses an unknown kind
    if action not in ACTIONS:
        raise InvalidInput(f"unknown adaptation action {action!r}; one of: {', '.join(ACTIONS)}")
    if action == "activate":
        artifacts.load(settings, target or "")  # a clear 404/422 now rather than a failed job later
        kind = artifacts.parse_id(target)
    if busy(settings):
        raise Conflict("another adaptation job is running; wait for it to finish")
    jobs_dir(settings).mkdir(parents=True, exist_ok=True)
    job = {
        "id": uuid.uuid4().hex, "action": action, "kind": kind, "target": target, "params": params or {},
        "status": "queued", "phase": "queued", "done": 0, "total": 0, "error": None, "result": None,
        "created_at": artifacts.now_iso(), "created_ts": time.time(), "started_at": None, "finished_at": None,
    }
    _write(settings, job)
    _prune(settings)
    return job


def _prune(settings: Settings) -> None:
    """Keep the newest KEEP_JOBS job records (finished ones are only history)."""
    records = sorted(jobs_dir(settings).glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in records[KEEP_JOBS:]:
        path.unlink(missing_ok=True)


def _perform(settings: Settings, job: dict, progress) -> dict:
    if job["action"] == "tune":
        if job.get("kind") == CHAT_KIND:
            return service.tune_chat(settings, progress=progress, overrides=job["params"])
        return service.tune_embedder(settings, progress=progress, overrides=job["params"])
    if job["action"] == "activate":
        return service.activate(settings, job["target"], progress=progress)
    return service.rollback(settings, job["kind"], progress=progress)


def run_job(settings: Settings, job_id: str, *, echo=None) -> dict:
    """Run a queued job to the end in this process, recording progress; -> the finished job record.

    `echo(phase, done, total)` also gets each progress report (the CLI prints it).
    """
    job = get_job(settings, job_id)
    with _exclusive(settings) as free:
        if not free:
            job.update(status="failed", error="another adaptation job is running", finished_at=artifacts.now_iso())
            _write(settings, job)
            raise Conflict("another adaptation job is running; wait for it to finish")
        job.update(status="running", phase="starting", started_at=artifacts.now_iso())
        _write(settings, job)
        last = [0.0]
        lock = threading.Lock()

        def progress(phase: str, done: int, total: int) -> None:
            if echo:
                echo(phase, done, total)
            with lock:
                job.update(phase=phase, done=int(done), total=int(total))
                if time.monotonic() - last[0] >= _WRITE_EVERY_S or done >= total:
                    last[0] = time.monotonic()
                    _write(settings, job)

        try:
            result = _perform(settings, job, progress)
            job.update(status="succeeded", result=result)
        except SupportBotError as exc:
            job.update(status="failed", error=exc.detail, result={"evaluation": getattr(exc, "evaluation", None)})
        except Exception as exc:  # recorded on the job for the console; the CLI re-raises it below
            log.exception("adaptation job %s failed", job_id)
            job.update(status="failed", error=f"{type(exc).__name__}: {exc}")
            raise
        finally:
            job.update(finished_at=artifacts.now_iso())
            _write(settings, job)
    return job


def start_job(settings: Settings, job: dict) -> subprocess.Popen:
    """Run a queued job in a detached process at lower priority (settings go over stdin: they hold secrets)."""
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(
        [sys.executable, "-c", _SCRIPT, job["id"]],
        stdin=subprocess.PIPE, env=env, start_new_session=True, close_fds=True,
    )
    proc.stdin.write(settings.model_dump_json().encode("utf-8"))
    proc.stdin.close()
    # Reaped by a thread so a long-lived web process collects no zombies.
    threading.Thread(target=proc.wait, name=f"adaptation-job-{job['id'][:8]}", daemon=True).start()
    return proc


def job_main(argv: list[str]) -> int:
    """Entry point of the detached job process: JOB_ID, with the settings as JSON on stdin."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    settings = Settings.model_validate_json(sys.stdin.read())
    os.nice(10)
    try:
        job = run_job(settings, argv[0])
    except Exception:  # noqa: BLE001 - recorded on the job (and logged) by run_job; the exit status says it failed
        return 1
    return 0 if job["status"] == "succeeded" else 1

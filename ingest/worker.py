"""Where jobs run: Celery workers when a broker is configured, otherwise one in-process worker thread."""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

from sqlalchemy import select

from support_bot.config import Settings
from support_bot.db import session_scope
from support_bot.models import IngestJob

log = logging.getLogger(__name__)

TASK_NAME = "ingest.run_job"

_celery_apps: dict[str, Any] = {}
_celery_lock = threading.Lock()


class InProcessWorker:
    """A single daemon thread that runs jobs one at a time, for the embedded default (no broker)."""

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[str, Settings] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._idle = threading.Condition()
        self._pending = 0
        # Job ids waiting in the queue, so a job found at start and submitted again is queued once.
        self._queued: set[str] = set()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, settings: Settings) -> None:
        """Start the thread if needed and queue the jobs this database left queued (e.g. before a restart)."""
        with self._lock:
            if not self.running:
                self._thread = threading.Thread(target=self._loop, name="ingest-worker", daemon=True)
                self._thread.start()
        with session_scope(settings) as session:
            left = session.scalars(
                select(IngestJob.id).where(IngestJob.status == "queued").order_by(IngestJob.created_at)
            ).all()
        for job_id in left:
            self.submit(job_id, settings)

    def submit(self, job_id: str, settings: Settings) -> None:
        """Queue a job id (once); the thread runs it with these settings."""
        with self._idle:
            if job_id in self._queued:
                return
            self._queued.add(job_id)
            self._pending += 1
        self._queue.put((job_id, settings))

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every submitted job has been handled; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """Let the current job finish, then end the thread."""
        with self._lock:
            thread = self._thread
            if thread is None:
                return
            self._queue.put(None)
            thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        from ingest.pipeline import TRANSIENT_ERRORS, run_job

        while True:
            item = self._queue.get()
            if item is None:
                return
            job_id, settings = item
            with self._idle:
                self._queued.discard(job_id)
            try:
                for attempt in range(settings.ingest.max_retries + 1):
                    try:
                        run_job(job_id, settings)
                        break
                    except TRANSIENT_ERRORS:
                        if attempt == settings.ingest.max_retries:
                            log.exception("ingest job %s failed after %d attempts", job_id, attempt + 1)
                            break
                        time.sleep(min(2**attempt, 30))
            except Exception:
                # run_job recorded the failure on the job; the thread must survive for the next one.
                log.exception("ingest job %s failed", job_id)
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()


_worker = InProcessWorker()


def get_worker() -> InProcessWorker:
    """The process-wide in-process worker."""
    return _worker


def _celery(settings: Settings):
    from ingest.celery_app import make_celery

    with _celery_lock:
        app = _celery_apps.get(settings.redis_url)
        if app is None:
            app = _celery_apps[settings.redis_url] = make_celery(settings)
        return app


def submit_job(job_id: str, settings: Settings) -> None:
    """Hand a committed job to Celery (when redis_url is set) or to the in-process worker thread."""
    if settings.redis_url:
        _celery(settings).send_task(TASK_NAME, args=[job_id], queue=settings.ingest.queue)
        return
    if not _worker.running:
        _worker.start(settings)
    _worker.submit(job_id, settings)

"""Where jobs run: Celery workers when a broker is configured, otherwise one in-process worker thread."""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

from sqlalchemy import select

from ingest.sweep import Sweeper, mark_dispatched
from support_bot.core.config import Settings
from support_bot.core.db import session_scope
from support_bot.core.threads import run_as_batch_job
from support_bot.models import IngestJob

log = logging.getLogger(__name__)

_celery_apps: dict[tuple, Any] = {}
_celery_lock = threading.Lock()


class InProcessWorker:
    """A single daemon thread that runs jobs one at a time, for the embedded default (no broker)."""

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[str, Settings, int] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._idle = threading.Condition()
        self._pending = 0
        # Job ids waiting in the queue or for a retry, so a job found at start and submitted again is queued once.
        self._queued: set[str] = set()
        self._retry_timers: dict[str, threading.Timer] = {}
        self._stopping = threading.Event()
        self._sweeper: Sweeper | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, settings: Settings) -> None:
        """Start the thread if needed and queue the jobs this database left unfinished (e.g. before a restart); from
        then on it sweeps for jobs that lost their worker or never reached one (ingest.sweep)."""
        with self._lock:
            if not self.running:
                self._stopping.clear()
                self._thread = threading.Thread(target=self._loop, name="ingest-worker", daemon=True)
                self._thread.start()
            if self._sweeper is None:
                self._sweeper = Sweeper(settings, lambda job_id: self.submit(job_id, settings))
                self._sweeper.start()
        with session_scope(settings) as session:
            # A job left running was cut off when its process ended; running it again resumes its staged batches.
            left = session.scalars(
                select(IngestJob.id)
                .where(IngestJob.status.in_(("queued", "running")))
                .order_by(IngestJob.created_at)
            ).all()
        for job_id in left:
            self.submit(job_id, settings)

    def submit(self, job_id: str, settings: Settings) -> None:
        """Queue a job id (once); the thread runs it with these settings."""
        with self._idle:
            if job_id in self._queued or job_id in self._retry_timers:
                return
            self._queued.add(job_id)
            self._pending += 1
        self._queue.put((job_id, settings, 0))

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every submitted job has been handled; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """Let the current job finish, then end the thread; jobs waiting for a retry stay queued in the database."""
        with self._lock:
            if self._sweeper is not None:
                self._sweeper.stop(timeout)
                self._sweeper = None
            thread = self._thread
            if thread is None:
                return
            self._stopping.set()
            with self._idle:
                timers, self._retry_timers = list(self._retry_timers.values()), {}
                for timer in timers:
                    timer.cancel()
                self._pending -= len(timers)
                self._idle.notify_all()
            self._queue.put(None)
            thread.join(timeout)
            self._thread = None

    def _retry_later(self, job_id: str, settings: Settings, attempt: int, delay: float) -> None:
        # A timer puts the job back, so other jobs run during the back-off instead of waiting behind it.
        def requeue() -> None:
            with self._idle:
                if self._retry_timers.pop(job_id, None) is None:
                    return
            self._queue.put((job_id, settings, attempt))

        timer = threading.Timer(delay, requeue)
        timer.daemon = True
        with self._idle:
            self._retry_timers[job_id] = timer
        timer.start()

    def _loop(self) -> None:
        from ingest.pipeline import TRANSIENT_ERRORS, retry_delay, run_job

        while True:
            item = self._queue.get()
            if item is None:
                return
            job_id, settings, attempt = item
            with self._idle:
                self._queued.discard(job_id)
            done = True
            try:
                will_retry = attempt < settings.ingest.max_retries and not self._stopping.is_set()
                # On a thread that ends with the job: its embedding uses every core, and leaves no thread team behind
                # to slow the model in this process afterwards (support_bot.core.threads).
                run_as_batch_job(run_job, job_id, settings, will_retry=will_retry)
            except TRANSIENT_ERRORS:
                if will_retry:
                    delay = retry_delay(attempt, settings)
                    log.warning("ingest job %s: transient error, retry %d in %.0f s", job_id, attempt + 1, delay)
                    self._retry_later(job_id, settings, attempt + 1, delay)
                    done = False
                else:
                    log.exception("ingest job %s failed after %d attempts", job_id, attempt + 1)
            except Exception:
                # run_job recorded the failure on the job; the thread must survive for the next one.
                log.exception("ingest job %s failed", job_id)
            finally:
                if done:
                    with self._idle:
                        self._pending -= 1
                        self._idle.notify_all()


_worker = InProcessWorker()


def get_worker() -> InProcessWorker:
    """The process-wide in-process worker."""
    return _worker


def _celery(settings: Settings):
    from ingest.celery_app import make_celery

    key = (settings.redis_url, settings.ingest.broker_key_prefix)
    with _celery_lock:
        app = _celery_apps.get(key)
        if app is None:
            app = _celery_apps[key] = make_celery(settings)
        return app


def hand_over(job_id: str, settings: Settings) -> None:
    """Queue a committed job with Celery (when redis_url is set) or the in-process worker; raises when the broker
    does not take it."""
    if settings.redis_url:
        from ingest.celery_app import send_job

        send_job(_celery(settings), job_id, settings)
        return
    if not _worker.running:
        _worker.start(settings)
    _worker.submit(job_id, settings)


def submit_job(job_id: str, settings: Settings) -> bool:
    """Hand a committed job to a worker -> False when the broker did not take it.

    The job then stays queued, and the workers' sweep hands it over once the broker is back: the upload is stored
    and answered with its job either way.
    """
    try:
        hand_over(job_id, settings)
    except Exception as exc:  # noqa: BLE001 - the broker's client raises many kinds; the job is safe in the database
        log.warning("ingest job %s stays queued until a worker's sweep hands it over: %s", job_id, exc)
        return False
    try:
        mark_dispatched(job_id, settings)
    except Exception as exc:  # noqa: BLE001 - unmarked, the sweep hands it over a second time, which is harmless
        log.warning("ingest job %s: could not record that a worker took it: %s", job_id, exc)
    return True

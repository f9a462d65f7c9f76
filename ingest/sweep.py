"""The workers' sweep: running jobs that lost their worker, and queued jobs that never reached one.

A running job stamps a heartbeat (pipeline); one whose stamps stopped was cut off without recording it (a worker
killed at Celery's hard time limit, which older Celery does not report and whose message late acks have already
removed; out of memory; a machine gone) and would stay "running" for ever. A job committed while the broker was down
was never queued with it and would stay "queued" for ever. Every worker (each Celery worker's main process, the
in-process worker) sweeps every ingest.sweep_interval_s; each change is made under the job's row lock or as a
conditional update, so workers sweeping at once act on a job once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import func, select, update

from ingest.pipeline import recover_lost_job
from support_bot.core.config import Settings
from support_bot.core.db import session_scope
from support_bot.models import IngestJob, utcnow

log = logging.getLogger(__name__)


@dataclass
class SweepResult:
    """Job ids the sweep queued again, failed, and handed to a worker."""

    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    dispatched: list[str] = field(default_factory=list)


def mark_dispatched(job_id: str, settings: Settings) -> None:
    """Record that a worker's queue took the job, so the sweep does not hand it over again."""
    with session_scope(settings) as session:
        session.execute(update(IngestJob).where(IngestJob.id == job_id).values(dispatched_at=utcnow()))


def _claim(settings: Settings, job_id: str) -> bool:
    with session_scope(settings) as session:
        claimed = session.execute(
            update(IngestJob)
            .where(IngestJob.id == job_id, IngestJob.status == "queued", IngestJob.dispatched_at.is_(None))
            .values(dispatched_at=utcnow())
        )
        return claimed.rowcount == 1


def _unclaim(settings: Settings, job_id: str) -> None:
    with session_scope(settings) as session:
        session.execute(
            update(IngestJob).where(IngestJob.id == job_id, IngestJob.status == "queued").values(dispatched_at=None)
        )


def sweep(settings: Settings, dispatch: Callable[[str], None]) -> SweepResult:
    """Re-queue or fail running jobs whose heartbeat stopped, then hand queued jobs no worker took to `dispatch`.

    A queued job counts as never taken once it is ingest.heartbeat_timeout_s old without a worker's queue having
    taken it, which leaves the uploader time to hand it over itself. `dispatch` raising (the broker is still down)
    leaves the job for the next sweep.
    """
    result = SweepResult()
    stale_before = utcnow() - timedelta(seconds=settings.ingest.heartbeat_timeout_s)
    last_sign = func.coalesce(IngestJob.heartbeat_at, IngestJob.started_at, IngestJob.created_at)
    with session_scope(settings) as session:
        lost = session.scalars(
            select(IngestJob.id).where(IngestJob.status == "running", last_sign < stale_before)
        ).all()
    for job_id in lost:
        outcome = recover_lost_job(job_id, settings, stale_before=stale_before)
        if outcome is not None:
            log.warning("ingest job %s lost its worker (no heartbeat since before %s): %s", job_id, stale_before,
                        "queued again" if outcome == "queued" else "failed")
            (result.requeued if outcome == "queued" else result.failed).append(job_id)
    with session_scope(settings) as session:
        waiting = session.scalars(
            select(IngestJob.id)
            .where(
                IngestJob.status == "queued", IngestJob.dispatched_at.is_(None), IngestJob.created_at < stale_before
            )
            .order_by(IngestJob.created_at)
        ).all()
    for job_id in waiting:
        if not _claim(settings, job_id):
            continue  # another worker's sweep (or the uploader) handed it over meanwhile
        try:
            dispatch(job_id)
        except Exception as exc:  # noqa: BLE001 - whatever the broker's client raises, the job waits for the next sweep
            _unclaim(settings, job_id)
            log.warning("ingest job %s is still not queued with a worker: %s", job_id, exc)
            break
        log.info("ingest job %s was never queued with a worker; handed over now", job_id)
        result.dispatched.append(job_id)
    return result


class Sweeper:
    """A daemon thread that runs sweep() every ingest.sweep_interval_s until stopped."""

    def __init__(
        self, settings: Settings, dispatch: Callable[[str], None], *, first_after_s: float | None = None
    ) -> None:
        self.settings = settings
        self.dispatch = dispatch
        # Seconds before the first sweep; the interval unless given.
        self.first_after_s = settings.ingest.sweep_interval_s if first_after_s is None else first_after_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="ingest-sweeper", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        delay = self.first_after_s
        while not self._stop.wait(delay):
            delay = self.settings.ingest.sweep_interval_s
            try:
                sweep(self.settings, self.dispatch)
            except Exception:  # a database away for a moment: the next sweep tries again
                log.exception("ingest sweep failed; next try in %.0f s", delay)

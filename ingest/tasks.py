"""Celery tasks: thin wrappers that take ids as strings and call the Celery-free pipeline."""

from __future__ import annotations

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

from ingest.celery_app import TASK_NAME
from ingest.pipeline import TRANSIENT_ERRORS, fail_timed_out_job, run_job
from support_bot.core.config import get_settings

_ingest = get_settings().ingest


class IngestTask(Task):
    """Records a job killed at the hard time limit, which had no chance to record anything itself."""

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        if isinstance(exc, TimeLimitExceeded) and args:
            fail_timed_out_job(args[0], get_settings())
        super().on_failure(exc, task_id, args, kwargs, einfo)


@shared_task(
    name=TASK_NAME,
    base=IngestTask,
    bind=True,
    autoretry_for=TRANSIENT_ERRORS,
    retry_backoff=max(1, _ingest.retry_backoff_s),
    retry_backoff_max=_ingest.retry_backoff_max_s,
    retry_jitter=True,
    max_retries=_ingest.max_retries,
)
def run_ingest_job(self, job_id: str) -> dict:
    """Run one ingest job; the job row records progress, the outcome and any error."""
    job = run_job(
        job_id,
        get_settings(),
        will_retry=self.request.retries < self.max_retries,
        timeout_errors=(SoftTimeLimitExceeded,),
    )
    return {"job_id": job.id, "status": job.status, "document_id": job.document_id, "unchanged": job.unchanged}

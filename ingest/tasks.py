"""Celery tasks: thin wrappers that take ids as strings and call the Celery-free pipeline."""

from __future__ import annotations

from celery import shared_task

from ingest.pipeline import TRANSIENT_ERRORS, run_job
from support_bot.config import get_settings


@shared_task(
    name="ingest.run_job",
    bind=True,
    autoretry_for=TRANSIENT_ERRORS,
    retry_backoff=True,
    retry_backoff_max=600,
    retry_jitter=True,
    max_retries=get_settings().ingest.max_retries,
)
def run_ingest_job(self, job_id: str) -> dict:
    """Run one ingest job; the job row records progress, the outcome and any error."""
    job = run_job(job_id, get_settings())
    return {"job_id": job.id, "status": job.status, "document_id": job.document_id, "unchanged": job.unchanged}

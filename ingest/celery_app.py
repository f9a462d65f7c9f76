"""Celery app for ingest workers: `celery -A ingest.celery_app worker -Q ingest` (broker: SUPPORT_BOT_REDIS_URL)."""

from __future__ import annotations

from celery import Celery

from support_bot.config import Settings, get_settings
from support_bot.errors import ConfigurationError


def make_celery(settings: Settings) -> Celery:
    """A Celery app on the configured Redis, tuned so a lost worker's job is redelivered, not dropped."""
    if not settings.redis_url:
        raise ConfigurationError("SUPPORT_BOT_REDIS_URL must be set to run or reach Celery ingest workers")
    app = Celery("support_bot_ingest", broker=settings.redis_url, backend=settings.redis_url, include=["ingest.tasks"])
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_default_queue=settings.ingest.queue,
        task_time_limit=settings.ingest.job_time_limit_s,
        result_expires=24 * 3600,
        broker_connection_retry_on_startup=True,
        # Redis redelivers an unacked task after this; it must outlast the longest job or the job runs twice at once.
        broker_transport_options={"visibility_timeout": settings.ingest.job_time_limit_s + 600},
        worker_hijack_root_logger=False,
    )
    return app


def __getattr__(name: str) -> Celery:
    # `app` is built on first use (as `celery -A ingest.celery_app` does), so importing make_celery never needs Redis.
    if name in ("app", "celery"):
        global app
        app = make_celery(get_settings())
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

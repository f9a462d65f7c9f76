"""Celery app for ingest workers: `celery -A ingest.celery_app worker -Q ingest` (broker: SUPPORT_BOT_REDIS_URL)."""

from __future__ import annotations

import sys
from collections.abc import Callable

from celery import Celery

from support_bot.core.config import Settings, get_settings
from support_bot.core.errors import ConfigurationError

# After the soft limit the task gets this long to record its failure before the hard limit kills the process.
HARD_LIMIT_GRACE_S = 60


def visibility_timeout(settings: Settings) -> int:
    """Seconds after which Redis hands a task a worker took but never acknowledged (it died) to another worker."""
    return settings.ingest.visibility_timeout_s or settings.ingest.job_time_limit_s + 600


def broker_transport_options(settings: Settings) -> dict:
    """Redis transport options: redelivery of a dead worker's task, and the key prefix."""
    timeout = visibility_timeout(settings)
    options = {
        "visibility_timeout": timeout,
        # Workers look for such tasks every tenth of the timeout (1 to 60 s), so a short timeout redelivers soon;
        # each look is one cheap sorted-set query.
        "unacked_restore_interval": max(1, min(60, timeout // 10)),
        "unacked_restore_throttle": 1,
    }
    if settings.ingest.broker_key_prefix:
        options["global_keyprefix"] = settings.ingest.broker_key_prefix
    return options


def make_celery(settings: Settings) -> Celery:
    """A Celery app on the configured Redis, tuned so a lost worker's job is redelivered, not dropped."""
    if not settings.redis_url:
        raise ConfigurationError("SUPPORT_BOT_REDIS_URL must be set to run or reach Celery ingest workers")
    app = Celery("support_bot_ingest", broker=settings.redis_url, backend=settings.redis_url, include=["ingest.tasks"])
    limit = settings.ingest.job_time_limit_s
    app.conf.update(
        # Acknowledge only when the task is done, and give the task back if its worker process dies, so a job
        # whose worker was killed runs again (and resumes what it had staged).
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_default_queue=settings.ingest.queue,
        task_soft_time_limit=limit,
        task_time_limit=limit + HARD_LIMIT_GRACE_S,
        result_expires=24 * 3600,
        broker_connection_retry_on_startup=True,
        broker_transport_options=broker_transport_options(settings),
        worker_hijack_root_logger=False,
    )
    return app


# The dispatch id of the worker's answer to Celery's setup_logging signal, so it is connected once.
LOGGING_RECEIVER = "support_bot.core.logs"


def run_worker(*, loglevel: str, concurrency: int, configure_logging: Callable[[], None]) -> None:
    """Run a worker in this process, logging through `configure_logging` (the product's own set-up) instead of
    Celery's: Celery skips its logging set-up when a receiver answers its setup_logging signal."""
    from celery.signals import setup_logging

    setup_logging.connect(lambda **_kw: configure_logging(), weak=False, dispatch_uid=LOGGING_RECEIVER)
    module = sys.modules[__name__]
    module.app.worker_main(["worker", f"--loglevel={loglevel}", f"--concurrency={concurrency}"])


def __getattr__(name: str) -> Celery:
    # `app` is built on first use (as `celery -A ingest.celery_app` does), so importing make_celery never needs Redis.
    if name in ("app", "celery"):
        global app
        app = make_celery(get_settings())
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

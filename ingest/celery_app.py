"""Celery app for ingest workers: `celery -A ingest.celery_app worker -Q ingest` (broker: SUPPORT_BOT_REDIS_URL)."""

from __future__ import annotations

import sys
from collections.abc import Callable

from celery import Celery
from celery.signals import worker_process_init, worker_ready, worker_shutdown

from ingest.sweep import Sweeper
from support_bot.core.config import Settings, get_settings
from support_bot.core.db import get_engine
from support_bot.core.errors import ConfigurationError

TASK_NAME = "ingest.run_job"

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


def send_job(app: Celery, job_id: str, settings: Settings) -> None:
    """Queue one ingest job. Nothing waits on Celery's result (the job row records the outcome), so none is asked
    for: asking subscribes to the result store, which retries for half a minute when Redis is down."""
    app.send_task(TASK_NAME, args=[job_id], queue=settings.ingest.queue, ignore_result=True)


# The dispatch id of the worker's answer to Celery's setup_logging signal, so it is connected once.
LOGGING_RECEIVER = "support_bot.core.logs"

_sweepers: list[Sweeper] = []


@worker_ready.connect(weak=False, dispatch_uid="ingest.sweep.start")
def start_sweeper(sender=None, **_kw) -> None:
    """Each worker's main process sweeps for jobs that lost their worker or never reached the broker (ingest.sweep),
    the first time at once: jobs uploaded while the broker was down wait for a worker to come up."""
    settings = get_settings()
    app = sender.app

    sweeper = Sweeper(settings, lambda job_id: send_job(app, job_id, settings), first_after_s=0)
    sweeper.start()
    _sweepers.append(sweeper)


@worker_shutdown.connect(weak=False, dispatch_uid="ingest.sweep.stop")
def stop_sweepers(**_kw) -> None:
    while _sweepers:
        _sweepers.pop().stop()


@worker_process_init.connect(weak=False, dispatch_uid="ingest.fork.connections")
def drop_inherited_connections(**_kw) -> None:
    # A pool process is forked from the main one, whose sweeper (and hard time limit handler) uses the database:
    # it must open connections of its own, and leave the parent's alone (close=False: they stay open for the parent).
    get_engine(get_settings()).dispose(close=False)


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

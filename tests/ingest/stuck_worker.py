"""A real Celery ingest worker (prefork) whose jobs hang past the soft time limit, and that records nothing when the
hard limit kills them, as older Celery does; test_celery_sweep starts it: `python -m tests.ingest.stuck_worker`."""

from __future__ import annotations

import sys
import time


def main() -> int:
    from celery import Task
    from celery.exceptions import SoftTimeLimitExceeded

    from ingest import celery_app, pipeline, tasks
    from support_bot.cli import main as cli_main

    # The hard limit one second after the soft one (read when the worker builds its Celery app).
    celery_app.HARD_LIMIT_GRACE_S = 1

    def stuck(*_args, **_kwargs):
        # Like native code that does not return to Python in time: the soft limit's exception cannot stop it.
        while True:
            try:
                time.sleep(3600)
            except SoftTimeLimitExceeded:
                pass

    pipeline._process = stuck
    # Older Celery calls no failure handler when the hard limit kills the task's process.
    tasks.IngestTask.on_failure = Task.on_failure
    return cli_main(["worker", "--concurrency", "1"])


if __name__ == "__main__":
    sys.exit(main())

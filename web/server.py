"""Running the app under uvicorn, with live event streams ended as soon as the server is told to stop."""

from __future__ import annotations

import gc
import logging
import os
import sys
import time

import uvicorn
from fastapi import FastAPI

from web.api.events import close_streams

SWITCH_INTERVAL_S = 0.001
# A full collection after this many collections of the middle generation instead of 10. After the start-up heap is
# frozen, what a full collection walks is the open chats' own objects (~100k at 500 open chats), and with the default
# it ran 23 times in a 500-chat run, 120-290 ms each with every thread stopped: most of /healthz's p99 (74 ms against
# 24 ms at 100, where 3 ran; the cyclic garbage of streams is collected as before, only later).
FULL_COLLECTION_EVERY = 100
# Threads for the routes written as plain functions (database work, mostly), instead of the default 40. Python runs
# one of them at a time: on 2 cores 40 of them, busy with a burst of 500 new chats, held /healthz at 20-30 ms for
# seconds while they queued for the interpreter lock (p99 31-35 ms; 12 ms with 4 or 8, the same answers per second).
# Customer turns have their own limit (web.api.chat.TURN_STEPS) and health checks run on the event loop, so neither
# waits for these; a few slow requests (a database restarting) still leave threads for the rest.
WORKER_THREADS = max(8, 2 * (os.cpu_count() or 1))

log = logging.getLogger(__name__)


def freeze_heap() -> None:
    """Move everything alive after start-up (modules, models, settings) out of the collector's sight.

    A full collection walks every tracked object; with the models and libraries loaded that took 0.5-0.65 s, with
    every thread stopped, about every 15 s under 500 open chats. The objects alive once the model has warmed up live
    as long as the process, so the collector never needs to look at them again (`gc.freeze`).
    """
    started = time.monotonic()
    gc.collect()
    gc.freeze()
    log.info(
        "%d start-up objects frozen out of garbage collection in %.2f s",
        gc.get_freeze_count(), time.monotonic() - started,
    )  # fmt: skip


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: FastAPI):
        super().__init__(config)
        self._app = app

    async def shutdown(self, sockets=None) -> None:
        # uvicorn waits for open responses before the app's own shutdown runs; an event stream never ends by
        # itself, so end them first or a stop would hang until every browser tab is closed.
        close_streams(self._app)
        await super().shutdown(sockets=sockets)


def serve(app: FastAPI, *, host: str, port: int, log_level: str = "info") -> None:
    """Serve `app` until SIGINT/SIGTERM.

    uvicorn leaves logging alone (log_config=None): its lines go to the root handler that `configure_logging` set
    up, in the same format, and the app's own access lines (with request ids) replace uvicorn's access log.
    """
    # Worker threads (turn steps, generation threads) hand the interpreter back to the event loop after at most this
    # long, instead of the default 5 ms: under a crowd of answers every request waits on the loop.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    app.state.freeze_heap_after_warm_up = True
    app.state.worker_threads = WORKER_THREADS
    young, middle, _full = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, log_config=None, access_log=False)
    _Server(config, app).run()

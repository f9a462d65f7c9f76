"""Running the app under uvicorn, with live event streams ended as soon as the server is told to stop."""

from __future__ import annotations

import sys

import uvicorn
from fastapi import FastAPI

from web.api.events import close_streams

SWITCH_INTERVAL_S = 0.001


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
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, log_config=None, access_log=False)
    _Server(config, app).run()

"""Running the app under uvicorn, with live event streams ended as soon as the server is told to stop."""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

from web.api.events import close_streams


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
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, log_config=None, access_log=False)
    _Server(config, app).run()

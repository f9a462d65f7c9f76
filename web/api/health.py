"""Liveness and readiness probes, answered off the shared worker pool so that a busy server still answers them."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from support_bot.core.config import Settings
from support_bot.core.db import get_engine

router = APIRouter(tags=["health"])

# The readiness probe's database check runs here, not on the pool every sync route shares: a pool busy with
# requests must not make the probe wait (nor the probe's hung connection hold a worker of that pool).
_probe_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="readiness")
# The database must answer the probe within this, or the server is reported not ready.
DATABASE_PROBE_S = 3.0


@router.get("/healthz")
async def read_health():
    """The process is up (answered on the event loop: no worker thread, no database)."""
    return {"status": "ok"}


def _ping_database(settings: Settings) -> None:
    with get_engine(settings).connect() as conn:
        conn.execute(text("SELECT 1"))


@router.get("/readyz")
async def read_readiness(request: Request):
    """Ready when the database answers and the configured model is loaded."""
    # The app's own settings, not the settings dependency: that one is a plain function, run on the shared pool.
    settings = request.app.state.settings
    checks: dict[str, str] = {}
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(loop.run_in_executor(_probe_pool, _ping_database, settings), DATABASE_PROBE_S)
        checks["database"] = "ok"
    except asyncio.TimeoutError:
        checks["database"] = f"unavailable: no answer within {DATABASE_PROBE_S:g} seconds"
    except Exception as exc:  # any driver error means not ready
        checks["database"] = f"unavailable: {type(exc).__name__}"
    checks["model"] = getattr(request.app.state, "model_status", "loading")
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ok" if ready else "unavailable", "checks": checks}, status_code=200 if ready else 503)

"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from support_bot.core.db import get_engine
from web.deps import SettingsDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
def read_health():
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
def read_readiness(request: Request, settings: SettingsDep):
    """Ready when the database answers and the configured model is loaded."""
    checks: dict[str, str] = {}
    try:
        with get_engine(settings).connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # any driver error means not ready
        checks["database"] = f"unavailable: {type(exc).__name__}"
    checks["model"] = getattr(request.app.state, "model_status", "loading")
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ok" if ready else "unavailable", "checks": checks}, status_code=200 if ready else 503)

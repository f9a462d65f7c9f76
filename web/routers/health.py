"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from support_bot.db import get_engine
from web.deps import SettingsDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
def read_health():
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
def read_readiness(settings: SettingsDep):
    """Ready when the database answers and the configured model is on disk."""
    checks: dict[str, str] = {}
    try:
        with get_engine(settings).connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # any driver error means not ready
        checks["database"] = f"unavailable: {type(exc).__name__}"
    if settings.llm.backend == "transformers":
        from support_bot.errors import ModelNotAvailable
        from support_bot.llm.pull import resolve_model

        try:
            resolve_model(settings)
            checks["model"] = "ok"
        except ModelNotAvailable as exc:
            checks["model"] = exc.detail
    else:
        checks["model"] = f"{settings.llm.backend} backend"
    ready = all(v == "ok" or v.endswith("backend") for v in checks.values())
    return JSONResponse({"status": "ok" if ready else "unavailable", "checks": checks}, status_code=200 if ready else 503)

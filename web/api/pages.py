"""HTML pages: the demo host page with a chat panel."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from web.deps import SettingsDep

router = APIRouter(tags=["pages"])


@router.get("/", response_class=HTMLResponse)
def read_index(request: Request, settings: SettingsDep):
    """A demo host page with a working chat panel."""
    return request.app.state.templates.TemplateResponse(
        request,
        "index.html",
        {"company": settings.chat.company_name, "bot_name": settings.chat.bot_name},
    )

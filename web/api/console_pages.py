"""Agent console HTML pages: the live handoff queue and one conversation; the data comes from /api/console."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from support_bot.models import Conversation
from web.console_deps import AgentDep, console_page
from web.deps import SessionDep

router = APIRouter(prefix="/console", tags=["console"])


@router.get("/queue", response_class=HTMLResponse)
def read_queue_page(request: Request, user: AgentDep):
    """The queue of handed-off conversations, updated live."""
    return console_page(request, "console/queue.html")


@router.get("/conversations/{conversation_id}", response_class=HTMLResponse)
def read_conversation_page(conversation_id: str, request: Request, user: AgentDep, session: SessionDep):
    """One conversation: transcript, sources, handoff reason and summary, reply and actions."""
    found = session.get(Conversation, conversation_id) is not None
    return console_page(
        request,
        "console/conversation.html",
        {"conversation_id": conversation_id, "found": found},
        status_code=200 if found else 404,
    )

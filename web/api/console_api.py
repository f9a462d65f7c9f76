"""The agents' console API: queue, conversations (claim, transfer, reply, notes, return, resolve), canned, presence."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Body, Depends, Query, Response
from pydantic import BaseModel, Field

from support_bot.live import events
from support_bot import handoff
from support_bot.models import User
from web.console_deps import AgentDep, csrf_protect, require_roles
from web.deps import AssistantDep, SessionDep, SettingsDep

# Every route needs an agent or admin, and every change the session's CSRF token.
router = APIRouter(
    prefix="/api/console",
    tags=["console"],
    dependencies=[Depends(require_roles("agent")), Depends(csrf_protect)],
)


def seen_agent(user: AgentDep, settings: SettingsDep) -> User:
    """The agent making the request; an open console keeps an online agent online."""
    handoff.touch_presence(user, settings)
    return user


Agent = Annotated[User, Depends(seen_agent)]


class TransferIn(BaseModel):
    agent_id: str = Field(min_length=1, max_length=64)


class ReplyIn(BaseModel):
    text: str | None = Field(default=None, max_length=100_000)
    canned_id: int | None = None


class NoteIn(BaseModel):
    text: str = Field(max_length=100_000)


class TypingIn(BaseModel):
    typing: bool = True


class CannedIn(BaseModel):
    title: str = Field(max_length=1000)
    text: str = Field(max_length=100_000)


class PresenceIn(BaseModel):
    status: Literal["online", "away", "offline"]


@router.get("/queue")
def read_queue(agent: Agent, session: SessionDep, settings: SettingsDep):
    """Waiting conversations, next first: reason, summary, position, waiting seconds and the customer's last line."""
    return {"items": handoff.queue_entries(session, settings), "agents_online": handoff.agents_online(session, settings)}


@router.get("/conversations")
def read_conversations(
    agent: Agent,
    session: SessionDep,
    settings: SettingsDep,
    status: Annotated[str | None, Query()] = None,
    mine: Annotated[bool, Query()] = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
):
    """Conversations by status (bot, queued, assigned, resolved), newest activity first; mine=true: held by me."""
    return {
        "items": handoff.list_conversations(
            session, settings, status=status, agent_id=agent.id if mine else None, limit=limit
        )
    }


@router.get("/conversations/{conversation_id}")
def read_conversation(conversation_id: str, agent: Agent, session: SessionDep, settings: SettingsDep):
    """The transcript with internal notes, the sources the bot used, the handoff reason and the problem summary."""
    return handoff.conversation_detail(session, settings, conversation_id)


@router.post("/conversations/{conversation_id}/claim")
def claim_conversation(conversation_id: str, agent: Agent, session: SessionDep, settings: SettingsDep):
    """Take a queued conversation (409 when someone else was first, or you are at capacity)."""
    handoff.claim(session, settings, conversation_id=conversation_id, agent=agent)
    return handoff.conversation_detail(session, settings, conversation_id)


@router.post("/conversations/{conversation_id}/transfer")
def transfer_conversation(
    conversation_id: str, body: TransferIn, agent: Agent, session: SessionDep, settings: SettingsDep
):
    """Hand the conversation to another online agent."""
    handoff.transfer(session, settings, conversation_id=conversation_id, agent=agent, to_agent_id=body.agent_id)
    return handoff.conversation_detail(session, settings, conversation_id)


@router.post("/conversations/{conversation_id}/messages", status_code=201)
def create_reply(conversation_id: str, body: ReplyIn, agent: Agent, session: SessionDep, settings: SettingsDep):
    """Reply to the customer (text, or a canned response by id); it reaches their chat live."""
    msg = handoff.agent_reply(
        session, settings, conversation_id=conversation_id, agent=agent, text=body.text, canned_id=body.canned_id
    )
    return handoff.message_payload(msg, author=handoff.display_name(agent))


@router.post("/conversations/{conversation_id}/notes", status_code=201)
def create_note(conversation_id: str, body: NoteIn, agent: Agent, session: SessionDep, settings: SettingsDep):
    """An internal note for agents; the customer never sees it."""
    msg = handoff.add_note(session, settings, conversation_id=conversation_id, agent=agent, text=body.text)
    return handoff.message_payload(msg, author=handoff.display_name(agent))


@router.post("/conversations/{conversation_id}/return-to-bot")
def return_conversation_to_bot(conversation_id: str, agent: Agent, session: SessionDep, settings: SettingsDep):
    """Give the conversation back to the bot."""
    handoff.return_to_bot(session, settings, conversation_id=conversation_id, agent=agent)
    return handoff.conversation_detail(session, settings, conversation_id)


@router.post("/conversations/{conversation_id}/resolve")
def resolve_conversation(conversation_id: str, agent: Agent, session: SessionDep, settings: SettingsDep):
    """Mark the conversation resolved; the customer is asked to rate it."""
    handoff.resolve(session, settings, conversation_id=conversation_id, agent=agent)
    return handoff.conversation_detail(session, settings, conversation_id)


@router.post("/conversations/{conversation_id}/summary")
def refresh_conversation_summary(
    conversation_id: str, agent: Agent, session: SessionDep, settings: SettingsDep, assistant: AssistantDep
):
    """Write the problem summary again now (e.g. after more messages); answers once the model is done."""
    handoff.get_conversation(session, conversation_id)
    session.close()
    return {"summary": handoff.write_agent_summary(settings, assistant.engine, conversation_id)}


@router.post("/conversations/{conversation_id}/typing", status_code=204)
def create_typing(
    conversation_id: str,
    agent: Agent,
    session: SessionDep,
    settings: SettingsDep,
    body: Annotated[TypingIn | None, Body()] = None,
):
    """The agent is typing (or stopped): shown live to the customer, never stored."""
    handoff.get_conversation(session, conversation_id)
    events.notify_typing(
        settings, conversation_id=conversation_id, who="agent", name=handoff.display_name(agent),
        typing=body.typing if body else True,
    )
    return Response(status_code=204)


@router.get("/canned")
def read_canned(agent: Agent, session: SessionDep):
    """Saved replies, by title."""
    return {"items": [handoff.canned_payload(c) for c in handoff.list_canned(session)]}


@router.post("/canned", status_code=201)
def create_canned(body: CannedIn, agent: Agent, session: SessionDep, settings: SettingsDep):
    """Save a reply for everyone to reuse (409 when the title is taken)."""
    return handoff.canned_payload(handoff.create_canned(session, settings, actor=agent, title=body.title, text=body.text))


@router.delete("/canned/{canned_id}", status_code=204)
def delete_canned(canned_id: int, agent: Agent, session: SessionDep):
    """Delete a saved reply."""
    handoff.delete_canned(session, actor=agent, canned_id=canned_id)
    return Response(status_code=204)


@router.post("/presence")
def update_presence(body: PresenceIn, agent: Agent, session: SessionDep, settings: SettingsDep):
    """Set my presence (online, away, offline); the console repeats it as a heartbeat."""
    handoff.set_presence(session, settings, agent=agent, status=body.status)
    return {
        "presence": handoff.effective_presence(agent, settings),
        "agents_online": handoff.agents_online(session, settings),
    }


@router.get("/agents")
def read_agents(
    agent: Agent, session: SessionDep, settings: SettingsDep, online: Annotated[bool, Query()] = False
):
    """Agents with presence, load and capacity, online first (online=true: only those): whom to transfer to."""
    return {"items": handoff.agent_list(session, settings, online_only=online)}

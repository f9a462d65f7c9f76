"""Request dependencies as Annotated aliases."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.orm import Session

from support_bot.chat.service import Assistant
from support_bot.core.config import Settings
from support_bot.core.db import session_scope


def get_settings_dep(request: Request) -> Settings:
    # The assistant's settings carry the console's changes (support_bot/runtime_settings.py): no restart needed.
    assistant = getattr(request.app.state, "assistant", None)
    return assistant.settings if assistant is not None else request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


def get_db(settings: SettingsDep) -> Iterator[Session]:
    with session_scope(settings) as session:
        yield session


# "function" scope commits before the response is sent: a client that got 201 can use what it was told exists.
SessionDep = Annotated[Session, Depends(get_db, scope="function")]


def get_assistant(request: Request) -> Assistant:
    return request.app.state.assistant


AssistantDep = Annotated[Assistant, Depends(get_assistant)]


def bearer_token(authorization: Annotated[str | None, Header()] = None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


TokenDep = Annotated[str | None, Depends(bearer_token)]

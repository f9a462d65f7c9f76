"""What the customer is told while a person takes over: "connecting you" with place and wait, the offer to leave a
message when nobody is online, the thanks once one was left, and the status the widget polls.
"""

from __future__ import annotations

import re
import string
from typing import Any

from sqlalchemy.orm import Session

from support_bot.core.config import Settings
from support_bot.handoff.queue import QueueInfo, queue_info
from support_bot.models import Conversation

ASSIGNED_TEXT = "{agent} from our team is with you now."


class _Blank(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def wait_words(eta_s: int | None) -> str:
    if eta_s is None:
        return "unknown"
    if eta_s < 60:
        return "less than a minute"
    minutes = round(eta_s / 60)
    return f"about {minutes} minute{'s' if minutes != 1 else ''}"


def handoff_text(settings: Settings, info: QueueInfo | None, *, offline_message: bool = False) -> str:
    """The one text for where the customer stands: with a person, message left, place in the queue, nobody online."""
    cfg = settings.handoff
    values = _Blank(company=settings.chat.company_name)
    if info is not None and info.status == "assigned":
        return ASSIGNED_TEXT.format(agent=info.agent or "A person")
    if offline_message:
        return cfg.offline_received_text.format_map(values)
    if info is None or info.agents_online <= 0:
        return cfg.offline_text.format_map(values)
    values.update(position=info.position or 1, wait=wait_words(info.eta_s))
    return cfg.connecting_text.format_map(values)


def _template_pattern(template: str, settings: Settings) -> re.Pattern[str]:
    parts = []
    for literal, field, _spec, _conversion in string.Formatter().parse(template):
        parts.append(r"\s+".join(re.escape(w) for w in literal.split(" ")))
        if field == "company":
            parts.append(re.escape(settings.chat.company_name))
        elif field is not None:
            parts.append(r".+?")
    return re.compile("".join(parts).strip(), re.DOTALL)


def without_handoff_text(settings: Settings, text: str) -> str:
    """A bot message less its paragraphs that only tell the customer about the handoff; empty when that is all."""
    cfg = settings.handoff
    templates = (cfg.connecting_text, cfg.offline_text, cfg.offline_received_text, ASSIGNED_TEXT)
    patterns = [_template_pattern(t.strip(), settings) for t in templates if t.strip()]
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    return "\n\n".join(p for p in paragraphs if not any(r.fullmatch(p) for r in patterns))


def customer_status(session: Session, settings: Settings, conversation: Conversation) -> dict[str, Any]:
    """GET /status: where the chat stands, whether it can be rated, a message left, and what the customer is told."""
    info = queue_info(session, settings, conversation)
    data = info.payload()
    data["can_rate"] = conversation.status == "resolved"
    data["rating"] = conversation.rating
    data["offline_message"] = conversation.contact_email is not None and conversation.status == "queued"
    data["text"] = (
        handoff_text(settings, info, offline_message=data["offline_message"])
        if info.status in ("queued", "assigned") else None
    )
    return data

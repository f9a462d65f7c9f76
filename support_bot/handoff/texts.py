"""What the customer is told while a person takes over: "connecting you" with place and wait, the offer to leave a
message when nobody is online, and the status the widget polls.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from support_bot.core.config import Settings
from support_bot.handoff.queue import QueueInfo, queue_info
from support_bot.models import Conversation


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


def handoff_text(settings: Settings, info: QueueInfo | None) -> str:
    """"Connecting you to a person" with place and wait, or, with nobody online, the offer to leave a message."""
    cfg = settings.handoff
    values = _Blank(company=settings.chat.company_name)
    if info is not None and info.status == "assigned":
        return f"{info.agent or 'A person'} from our team is with you now."
    if info is None or info.agents_online <= 0:
        return cfg.offline_text.format_map(values)
    values.update(position=info.position or 1, wait=wait_words(info.eta_s))
    return cfg.connecting_text.format_map(values)


def customer_status(session: Session, settings: Settings, conversation: Conversation) -> dict[str, Any]:
    """GET /status: {"status", "position", "eta_s", "agent", "agents_online"} (+ whether it can be rated)."""
    data = queue_info(session, settings, conversation).payload()
    data["can_rate"] = conversation.status == "resolved"
    data["rating"] = conversation.rating
    data["offline_message"] = conversation.contact_email is not None and conversation.status == "queued"
    return data

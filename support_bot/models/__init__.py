"""ORM models by domain; every table is importable from here (Alembic and callers use `support_bot.models`)."""

from support_bot.models.base import Base, UtcDateTime, new_id, utcnow
from support_bot.models.conversation import CannedResponse, Conversation, Customer, Feedback, Message
from support_bot.models.events import AuditLog, ConversationEvent, SafetyEvent
from support_bot.models.knowledge import Chunk, Document, FaqSuggestion, IngestJob, Source
from support_bot.models.users import ConsoleSession, RuntimeSetting, User

__all__ = [
    "AuditLog",
    "Base",
    "CannedResponse",
    "Chunk",
    "ConsoleSession",
    "Conversation",
    "ConversationEvent",
    "Customer",
    "Document",
    "FaqSuggestion",
    "Feedback",
    "IngestJob",
    "Message",
    "new_id",
    "RuntimeSetting",
    "SafetyEvent",
    "Source",
    "User",
    "UtcDateTime",
    "utcnow",
]

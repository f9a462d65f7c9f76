"""Past chat logs (JSONL transcripts or CSV rows): question -> answer pairs from resolved chats."""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass, field
from typing import Any

from ingest.loaders.base import decode_text, display_name, refuse_html
from ingest.loaders.base import MAX_ID_CHARS, FaqEntry, jsonl_records, short
from support_bot.core.errors import InvalidInput
# Shared with the learning loop, which reads conversations resolved in the console the same way.
from support_bot.learning import problem_and_resolution, substantive  # noqa: F401 - substantive is re-exported

log = logging.getLogger(__name__)

CSV_COLUMNS = ("conversation_id", "role", "text", "ts", "resolved")
_ROLES = {
    "customer": "customer", "user": "customer", "client": "customer", "visitor": "customer",
    "agent": "agent", "support": "agent", "staff": "agent", "operator": "agent",
}
_TRUE = {"true", "yes", "y", "1", "resolved"}
_FALSE = {"false", "no", "n", "0", "unresolved", ""}


@dataclass
class Chat:
    id: str
    where: str
    resolved: bool | None = None
    messages: list[tuple[str, str]] = field(default_factory=list)
    problem: str = ""


def extract_pair(chat: Chat) -> tuple[str, str] | None:
    """(customer problem, agent resolution) of a chat, or None when it has no substantive question or answer."""
    return problem_and_resolution(chat.messages)


def _bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if value is not None else ""
    if text in _TRUE:
        return True
    if text in _FALSE and value is not None:
        return False
    return None


def is_chat_record(obj: Any) -> bool:
    """Whether a JSON object looks like a chat transcript rather than an FAQ entry."""
    return isinstance(obj, dict) and "messages" in obj and "question" not in obj


def chat_from_object(obj: Any, where: str) -> Chat:
    """A Chat from a transcript object; missing or malformed fields are named in chat.problem."""
    if not isinstance(obj, dict):
        return Chat(id="", where=where, problem="is not an object")
    chat_id = obj.get("id", obj.get("conversation_id"))
    chat_id = str(chat_id).strip() if chat_id is not None else ""
    chat = Chat(id=chat_id, where=where, resolved=_bool(obj.get("resolved")))
    missing = [k for k, bad in (("id", not chat.id), ("resolved", chat.resolved is None)) if bad]
    messages = obj.get("messages")
    if not isinstance(messages, list) or not messages:
        missing.append("messages")
    else:
        for n, message in enumerate(messages, 1):
            role = _ROLES.get(str(message.get("role", "")).strip().lower()) if isinstance(message, dict) else None
            text = message.get("text") if isinstance(message, dict) else None
            if role is None or not isinstance(text, str):
                missing.append(f"role/text of message {n}")
                break
            if text.strip():
                chat.messages.append((role, text.strip()))
    if missing:
        chat.problem = f"has no valid {', '.join(missing)}"
    elif len(chat.id) > MAX_ID_CHARS:
        chat.problem = f"has an id longer than {MAX_ID_CHARS} characters"
    return chat


def chats_from_csv(data: bytes, name: str) -> list[Chat]:
    """Chats from CSV rows `conversation_id,role,text,ts,resolved`, one message a row, grouped by conversation."""
    text = decode_text(data, name, "CSV text file")
    refuse_html(text, name, "CSV file")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except csv.Error as exc:
        raise InvalidInput(f"{name}: malformed CSV on line {reader.line_num}: {exc}") from None
    if not rows:
        raise InvalidInput(f"{name}: the file is empty")
    columns = [c.strip().lower() for c in rows[0][1]]
    missing = [c for c in ("conversation_id", "role", "text", "resolved") if c not in columns]
    if missing:
        raise InvalidInput(
            f"{name}: missing column(s) {', '.join(missing)}; expected the header {','.join(CSV_COLUMNS)}"
        )
    pos = {c: columns.index(c) for c in CSV_COLUMNS if c in columns}
    chats: dict[str, Chat] = {}
    broken: list[Chat] = []
    for line, row in rows[1:]:
        values = {c: (row[i].strip() if i < len(row) else "") for c, i in pos.items()}
        cid = values["conversation_id"]
        if not cid:
            broken.append(Chat(id="", where=f"line {line}", problem="has no conversation_id"))
            continue
        chat = chats.setdefault(cid, Chat(id=cid, where=f"conversation {short(cid)!r} (line {line})"))
        role = _ROLES.get(values["role"].lower())
        if role is None:
            chat.problem = chat.problem or f"has an unknown role {short(values['role'])!r} on line {line}"
            continue
        resolved = _bool(values["resolved"]) if values["resolved"] else None
        if resolved is not None:
            chat.resolved = resolved
        if values["text"]:
            chat.messages.append((role, values["text"].replace("\r\n", "\n")))
    for chat in chats.values():
        if not chat.problem and chat.resolved is None:
            chat.problem = "has no resolved value"
    return broken + list(chats.values())


def chats_from_jsonl(records: list[tuple[str, Any]]) -> list[Chat]:
    """Chats from (where, object) JSON records."""
    return [chat_from_object(obj, where) for where, obj in records]


def chat_entries(chats: list[Chat], name: str) -> list[FaqEntry]:
    """FAQ-like entries from resolved chats; malformed chats fail the file only when nothing usable is left."""
    entries: list[FaqEntry] = []
    broken = [c for c in chats if c.problem]
    unresolved = empty = 0
    seen: set[str] = set()
    for chat in chats:
        if chat.problem:
            continue
        if not chat.resolved:
            unresolved += 1
            continue
        pair = extract_pair(chat)
        if pair is None:
            empty += 1
            continue
        entry_id = chat.id if chat.id not in seen else f"{chat.id}-{len(seen)}"
        seen.add(entry_id)
        entries.append(FaqEntry(id=entry_id, question=pair[0], answer=pair[1]))
    if broken:
        first = broken[0]
        note = f"{len(broken)} chat(s) with missing fields (first: {first.where} {first.problem})"
        if not entries:
            raise InvalidInput(f"{name}: no usable chats: {note}")
        log.warning("%s: skipped %s", name, note)
    if not entries:
        raise InvalidInput(
            f"{name}: no usable chats: {unresolved} unresolved, {empty} without a customer question and an agent answer"
        )
    return entries


def parse_chat_jsonl(data: bytes, *, filename: str = "chats.jsonl") -> list[FaqEntry]:
    """Question -> answer entries from a JSONL file of chat transcripts."""
    name = display_name(filename, "chats.jsonl")
    return chat_entries(chats_from_jsonl(jsonl_records(data, name)), name)


def parse_chat_csv(data: bytes, *, filename: str = "chats.csv") -> list[FaqEntry]:
    """Question -> answer entries from a CSV chat log (one message a row)."""
    name = display_name(filename, "chats.csv")
    return chat_entries(chats_from_csv(data, name), name)

"""FAQ JSON and JSONL loaders: the CSV's fields (id, question, answer, url) as objects."""

from __future__ import annotations

import json
from typing import Any

from ingest.loaders.base import REQUIRED, MAX_ID_CHARS, FaqEntry, decode_text, display_name, jsonl_records, refuse_html, short
from support_bot.core.errors import InvalidInput

_MAX_REPORTED = 5


def _field(obj: dict, key: str) -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value.replace("\r\n", "\n").strip() if isinstance(value, str) else ""


def faq_entries(records: list[tuple[str, Any]], name: str) -> list[FaqEntry]:
    """Validate (where, object) records as FAQ entries; every problem is collected into one InvalidInput."""
    if not records:
        raise InvalidInput(f"{name}: the file has no entries")
    errors: list[str] = []
    entries: list[FaqEntry] = []
    seen: dict[str, str] = {}
    for line, (where, obj) in enumerate(records, 1):
        if not isinstance(obj, dict):
            errors.append(f"{where} is not an object")
            continue
        values = {k: _field(obj, k) for k in (*REQUIRED, "url")}
        empty = [k for k in REQUIRED if not values[k]]
        if empty:
            errors.append(f"{where} has no {' and no '.join(empty)}")
            continue
        if len(values["id"]) > MAX_ID_CHARS:
            errors.append(f"{where} has an id longer than {MAX_ID_CHARS} characters")
            continue
        if values["id"] in seen:
            errors.append(f"{where} repeats id {short(values['id'])!r} first used in {seen[values['id']]}")
            continue
        seen[values["id"]] = where
        url = values["url"] or None
        # Links are rendered in the widget, so only web links are accepted.
        if url and not url.lower().startswith(("http://", "https://")):
            errors.append(f"{where} has a url that is not an http(s) link: {short(url)!r}")
            continue
        entries.append(
            FaqEntry(id=values["id"], question=values["question"], answer=values["answer"], url=url, line=line)
        )
    if errors:
        more = f" (and {len(errors) - _MAX_REPORTED} more problems)" if len(errors) > _MAX_REPORTED else ""
        raise InvalidInput(f"{name}: " + "; ".join(errors[:_MAX_REPORTED]) + more)
    return entries


def load_json(data: bytes, name: str) -> Any:
    """The decoded JSON document of an upload, or InvalidInput with the line of the syntax error."""
    text = decode_text(data, name, "JSON file")
    refuse_html(text, name, "JSON file")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{name}: invalid JSON on line {exc.lineno}: {exc.msg}") from None


def json_records(doc: Any, name: str) -> list[tuple[str, Any]]:
    """The (where, object) records of a JSON FAQ: a list, or an object holding the list under "entries"."""
    if isinstance(doc, dict):
        if not isinstance(doc.get("entries"), list):
            raise InvalidInput(f'{name}: expected a list of entries or an object with an "entries" list')
        doc = doc["entries"]
    if not isinstance(doc, list):
        raise InvalidInput(f'{name}: expected a list of entries or an object with an "entries" list')
    return [(f"entry {i}", obj) for i, obj in enumerate(doc, 1)]


def parse_faq_json(data: bytes, *, filename: str = "faq.json") -> list[FaqEntry]:
    """Parse an FAQ JSON file: a list of {id, question, answer, url} or {"entries": [...]}."""
    name = display_name(filename, "faq.json")
    return faq_entries(json_records(load_json(data, name), name), name)


def parse_faq_jsonl(data: bytes, *, filename: str = "faq.jsonl") -> list[FaqEntry]:
    """Parse an FAQ JSON Lines file: one {id, question, answer, url} object a line."""
    name = display_name(filename, "faq.jsonl")
    return faq_entries(jsonl_records(data, name), name)

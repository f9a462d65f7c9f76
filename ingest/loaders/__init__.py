"""Loaders turn an uploaded file's bytes into entries; one module per format."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import PurePath

from ingest.loaders.chat_log import chats_from_jsonl, chat_entries, is_chat_record, parse_chat_csv, parse_chat_jsonl
from ingest.loaders.base import FaqEntry
from ingest.loaders.faq_csv import parse_faq_csv
from ingest.loaders.faq_json import (
    faq_entries,
    json_records,
    jsonl_records,
    load_json,
    parse_faq_json,
    parse_faq_jsonl,
)
from ingest.loaders.html import parse_html
from ingest.loaders.markdown import parse_markdown
from ingest.loaders.pdf import parse_pdf
from ingest.loaders.plain_text import parse_text
from ingest.loaders.base import display_name, is_html_document
from support_bot.core.errors import InvalidInput

Parser = Callable[..., list[FaqEntry]]

# Extension -> (default source kind, parser). The kind is stored on the Source; chat logs share the CSV and JSON
# extensions and are told apart by their fields (see `load`).
LOADERS: dict[str, tuple[str, Parser]] = {
    ".csv": ("faq_csv", parse_faq_csv),
    ".json": ("faq_json", parse_faq_json),
    ".jsonl": ("faq_jsonl", parse_faq_jsonl),
    ".ndjson": ("faq_jsonl", parse_faq_jsonl),
    ".md": ("markdown", parse_markdown),
    ".markdown": ("markdown", parse_markdown),
    ".html": ("html", parse_html),
    ".htm": ("html", parse_html),
    ".txt": ("text", parse_text),
    ".pdf": ("pdf", parse_pdf),
}
CHAT_LOG = "chat_log"
# Kinds whose text comes from customers and is redacted before it is embedded or stored.
PERSONAL_KINDS = frozenset({CHAT_LOG})


def loader_for(filename: str) -> tuple[str, str]:
    """The (default kind, extension) for an upload's file name, or InvalidInput naming the supported types."""
    ext = PurePath(filename or "").suffix.lower()
    if ext not in LOADERS:
        supported = ", ".join(sorted(LOADERS))
        raise InvalidInput(
            f"{filename or 'the upload'}: unsupported file type {ext or '(none)'}; supported: {supported}"
        )
    return LOADERS[ext][0], ext


def _csv_header(data: bytes) -> list[str]:
    text = data[:65536].decode("utf-8-sig", errors="replace")
    try:
        row = next(csv.reader(io.StringIO(text, newline="")), [])
    except csv.Error:
        return []
    return [c.strip().lower() for c in row]


def load(filename: str, data: bytes) -> tuple[str, list[FaqEntry]]:
    """Parse an upload -> (source kind, entries); chat logs are recognised by their fields."""
    kind, ext = loader_for(filename)
    name = display_name(filename, "upload")
    if ext == ".csv":
        text_head = data[:4096].decode("utf-8-sig", errors="replace")
        if is_html_document(text_head):
            raise InvalidInput(f"{name}: the file is an HTML page, not a CSV file; upload it with a .html extension")
        if text_head.lstrip().startswith(("{", "[")):
            raise InvalidInput(f"{name}: the file looks like JSON, not a CSV file; upload it with a .json extension")
        header = _csv_header(data)
        if "conversation_id" in header and "role" in header:
            return CHAT_LOG, parse_chat_csv(data, filename=name)
    elif ext in (".jsonl", ".ndjson"):
        records = jsonl_records(data, name)
        first = next((obj for _, obj in records if isinstance(obj, dict)), None)
        if is_chat_record(first):
            return CHAT_LOG, chat_entries(chats_from_jsonl(records), name)
        return kind, faq_entries(records, name)
    elif ext == ".json":
        doc = load_json(data, name)
        records = json_records(doc, name)
        first = next((obj for _, obj in records if isinstance(obj, dict)), None)
        if is_chat_record(first):
            return CHAT_LOG, chat_entries(chats_from_jsonl(records), name)
        return kind, faq_entries(records, name)
    return kind, LOADERS[ext][1](data, filename=name)


def parse(filename: str, data: bytes) -> list[FaqEntry]:
    """Parse an upload with the loader its extension (and, for chat logs, its fields) names."""
    return load(filename, data)[1]


__all__ = [
    "CHAT_LOG",
    "FaqEntry",
    "LOADERS",
    "PERSONAL_KINDS",
    "load",
    "loader_for",
    "parse",
    "parse_chat_csv",
    "parse_chat_jsonl",
    "parse_faq_csv",
    "parse_faq_json",
    "parse_faq_jsonl",
    "parse_html",
    "parse_markdown",
    "parse_pdf",
    "parse_text",
]

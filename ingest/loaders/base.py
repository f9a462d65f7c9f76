"""What every loader shares: the FaqEntry they produce, decoding, sniffing what a file really is, stable entry ids."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from support_bot.core.errors import InvalidInput

# The fields of an entry in every FAQ format (CSV columns, JSON keys).
REQUIRED = ("id", "question", "answer")
OPTIONAL = ("url",)
MAX_ID_CHARS = 255


@dataclass(frozen=True)
class FaqEntry:
    """One question and answer as every loader produces it."""

    id: str
    question: str
    answer: str
    url: str | None = None
    # Physical line of the row in the file, for messages.
    line: int = 0


def short(value: str, limit: int = 40) -> str:
    """A value cut to `limit` characters for an error message."""
    return value if len(value) <= limit else value[: limit - 1] + "…"


# Leading bytes of formats people upload by mistake under a text extension.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive (for example a .docx or .xlsx file)"),
    (b"\xd0\xcf\x11\xe0", "a legacy Microsoft Office document"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"\x1f\x8b", "a gzip archive"),
)
_HTML_DOC = re.compile(r"^\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html[\s>])", re.I | re.S)
_SLUG = re.compile(r"[^a-z0-9]+")


def display_name(filename: str, default: str) -> str:
    """The bare file name used in messages (never a path)."""
    return PurePath(filename or "").name or default


def _looks_utf16(head: bytes) -> bool:
    even, odd = head[0::2], head[1::2]
    return even.count(0) > len(even) * 0.3 or odd.count(0) > len(odd) * 0.3


def decode_text(data: bytes, name: str, what: str, *, save_hint: str = "") -> str:
    """UTF-8 text of an upload, or InvalidInput saying why it is not a `what` (e.g. 'Markdown text file')."""
    if not data.strip(b" \t\r\n\xef\xbb\xbf"):
        raise InvalidInput(f"{name}: the file is empty")
    for magic, label in _MAGIC:
        if data.startswith(magic):
            raise InvalidInput(f"{name}: the file is {label}, not a {what}")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")) or (b"\x00" in data[:4096] and _looks_utf16(data[:4096])):
        raise InvalidInput(f"{name}: the file is UTF-16 encoded, not UTF-8; save it as UTF-8{save_hint}")
    if b"\x00" in data:
        raise InvalidInput(f"{name}: the file looks like binary data, not a {what}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InvalidInput(
            f"{name}: the file is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line} is not valid UTF-8); "
            f"save it as UTF-8{save_hint}"
        ) from None
    head = text[:65536]
    controls = sum(1 for ch in head if ord(ch) < 32 and ch not in "\t\r\n\f")
    if controls > max(8, len(head) // 200):
        raise InvalidInput(f"{name}: the file looks like binary data, not a {what}")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def is_html_document(text: str) -> bool:
    """Whether text is a whole HTML page (doctype or <html> first), not text that merely contains tags."""
    return bool(_HTML_DOC.match(text[:4096]))


def refuse_html(text: str, name: str, what: str) -> None:
    """InvalidInput when a file under a non-HTML extension is really an HTML page."""
    if is_html_document(text):
        raise InvalidInput(f"{name}: the file is an HTML page, not a {what}; upload it with a .html extension")


def unique_id(base: str, seen: dict[str, int]) -> str:
    """A slug of base, suffixed -2, -3 ... when already used in this file."""
    slug = _SLUG.sub("-", base.lower()).strip("-")[:200] or "section"
    count = seen.get(slug, 0) + 1
    seen[slug] = count
    return slug if count == 1 else f"{slug}-{count}"


def title_from_name(name: str) -> str:
    """A readable title from a file name: stem with separators as spaces."""
    stem = PurePath(name).stem
    return re.sub(r"[_\-]+", " ", stem).strip() or name


# Paragraphs are packed into one entry up to about this many words, so related sentences stay together; anything
# longer is split by tokens with overlap in the chunker.
MAX_GROUP_WORDS = 160


def group_paragraphs(paragraphs: list[str], *, max_words: int = MAX_GROUP_WORDS) -> list[str]:
    """Pack consecutive paragraphs into groups of at most max_words (a longer paragraph stands alone)."""
    groups: list[str] = []
    current: list[str] = []
    words = 0
    for para in paragraphs:
        n = len(para.split())
        if current and words + n > max_words:
            groups.append("\n\n".join(current))
            current, words = [], 0
        current.append(para)
        words += n
    if current:
        groups.append("\n\n".join(current))
    return groups


def paragraphs_of(text: str) -> list[str]:
    """Blank-line separated paragraphs, inner whitespace tidied."""
    out = []
    for block in re.split(r"\n\s*\n", text):
        lines = [re.sub(r"[ \t\f\v]+", " ", line).strip() for line in block.split("\n")]
        para = "\n".join(line for line in lines if line)
        if para:
            out.append(para)
    return out


def sections_to_entries(sections: list[tuple[list[str], str]], *, doc_title: str, name: str) -> list:
    """Entries from (heading path, body) sections: the path joined by ' > ' is the title; empty bodies are dropped."""

    entries: list[FaqEntry] = []
    seen: dict[str, int] = {}
    for path, body in sections:
        title = " > ".join(path) if path else doc_title
        for part, group in enumerate(group_paragraphs(paragraphs_of(body))):
            base = title if part == 0 else f"{title} {part + 1}"
            entries.append(FaqEntry(id=unique_id(base, seen), question=title, answer=group))
    if not entries:
        raise InvalidInput(f"{name}: the file has no text to index")
    return entries


def jsonl_records(data: bytes, name: str) -> list[tuple[str, Any]]:
    """The (where, object) records of a JSON Lines file; blank lines are allowed."""
    text = decode_text(data, name, "JSON Lines file")
    refuse_html(text, name, "JSON Lines file")
    records: list[tuple[str, Any]] = []
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            records.append((f"line {number}", json.loads(line)))
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"{name}: invalid JSON on line {number}: {exc.msg}") from None
    if not records:
        raise InvalidInput(f"{name}: the file is empty")
    return records

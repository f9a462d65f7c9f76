"""Plain-text loader: paragraphs grouped into entries titled by the document."""

from __future__ import annotations

from ingest.loaders.base import (
    decode_text,
    display_name,
    paragraphs_of,
    refuse_html,
    sections_to_entries,
    title_from_name,
)
from ingest.loaders.base import FaqEntry

_MAX_TITLE_CHARS = 100


def parse_text(data: bytes, *, filename: str = "doc.txt") -> list[FaqEntry]:
    """Parse plain text: a short first line is the title, the rest is grouped by paragraphs."""
    name = display_name(filename, "doc.txt")
    text = decode_text(data, name, "plain text file")
    refuse_html(text, name, "plain text file")
    paragraphs = paragraphs_of(text)
    title = title_from_name(name)
    first = paragraphs[0] if paragraphs else ""
    # A one-line opening paragraph without a full stop reads as the document's title.
    if first and "\n" not in first and len(first) <= _MAX_TITLE_CHARS and not first.endswith((".", "?", "!")):
        if len(paragraphs) > 1:
            title, paragraphs = first, paragraphs[1:]
    return sections_to_entries([([], "\n\n".join(paragraphs))], doc_title=title, name=name)

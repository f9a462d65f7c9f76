"""Markdown loader: every heading with its body becomes an entry titled by its heading path."""

from __future__ import annotations

import re

from ingest.loaders.base import decode_text, display_name, refuse_html, sections_to_entries, title_from_name
from ingest.loaders.base import FaqEntry

_ATX = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t]*#*[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_FRONT_MATTER = re.compile(r"\A---\n.*?\n---\n", re.S)
_INLINE = (
    (re.compile(r"!\[([^\]]*)\]\([^)]*\)"), r"\1"),  # images: keep the alt text
    (re.compile(r"\[([^\]]+)\]\([^)]*\)"), r"\1"),  # links: keep the link text
    (re.compile(r"(\*\*|__)(.+?)\1"), r"\2"),
    (re.compile(r"(?<!\w)([*_])(.+?)\1(?!\w)"), r"\2"),
    (re.compile(r"`([^`]+)`"), r"\1"),
    (re.compile(r"<[^>\n]+>"), ""),
)


def _plain(line: str) -> str:
    for pattern, repl in _INLINE:
        line = pattern.sub(repl, line)
    return line


def parse_markdown(data: bytes, *, filename: str = "doc.md") -> list[FaqEntry]:
    """Parse Markdown into heading-path entries (text before the first heading is titled by the file)."""
    name = display_name(filename, "doc.md")
    text = decode_text(data, name, "Markdown text file")
    refuse_html(text, name, "Markdown file")
    doc_title = title_from_name(name)
    front = _FRONT_MATTER.match(text)
    if front:
        declared = re.search(r"^title:[ \t]*(.+?)[ \t]*$", front.group(0), re.M)
        doc_title = declared.group(1).strip("\"'") if declared else doc_title
        text = text[front.end() :]
    lines = text.split("\n")
    sections: list[tuple[list[str], str]] = []
    path: list[tuple[int, str]] = []
    body: list[str] = []
    fence: str | None = None

    def close() -> None:
        sections.append(([t for _, t in path], "\n".join(body)))
        body.clear()

    for i, line in enumerate(lines):
        match = _FENCE.match(line)
        if match:
            marker = match.group(1)
            if fence is None:
                fence = marker[0] * 3
            elif marker.startswith(fence):
                fence = None
            continue
        if fence is not None:
            body.append(line)
            continue
        level, title = 0, ""
        atx = _ATX.match(line)
        if atx:
            level, title = len(atx.group(1)), _plain(atx.group(2)).strip()
        elif _SETEXT.match(line) and body and body[-1].strip() and (i < 1 or lines[i - 1].strip()):
            # "Title\n=====" heading: the previous body line was the heading text.
            title = _plain(body.pop()).strip()
            level = 1 if line.strip().startswith("=") else 2
        if level and title:
            close()
            while path and path[-1][0] >= level:
                path.pop()
            path.append((level, title))
            continue
        stripped = re.sub(r"^ {0,3}(?:>\s?|[-*+]\s+|\d+[.)]\s+)", "", line)
        body.append(_plain(stripped))
    close()
    return sections_to_entries(sections, doc_title=doc_title, name=name)

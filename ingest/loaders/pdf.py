"""PDF loader: text extracted page by page, paragraphs grouped into entries titled by heading and page."""

from __future__ import annotations

import io
import re
import struct
import zlib

from ingest.loaders.base import _MAGIC, display_name, group_paragraphs, is_html_document, title_from_name, unique_id
from ingest.loaders.base import FaqEntry
from support_bot.core.errors import InvalidInput

# Bounds the work one upload can cause; manuals run to hundreds of pages, not thousands.
MAX_PAGES = 2000
_MAX_HEADING_CHARS = 70
_MAX_HEADING_WORDS = 10
_SENTENCE_END = (".", "!", "?", ":", ";", ",")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_SPACES = re.compile(r"[ \t\f\v\xa0]+")
# pypdf can fail on damaged input with any of these besides its own errors.
_READ_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    KeyError,
    TypeError,
    AttributeError,
    IndexError,
    AssertionError,
    RuntimeError,
    OSError,
    zlib.error,
    struct.error,
)


def _check_header(data: bytes, name: str) -> None:
    if not data.strip(b" \t\r\n\x00"):
        raise InvalidInput(f"{name}: the file is empty")
    # The spec lets the header sit anywhere in the first 1024 bytes (some writers prepend junk).
    if b"%PDF-" in data[:1024]:
        if b"%%EOF" not in data[-2048:]:
            raise InvalidInput(f"{name}: the PDF is truncated or damaged (it has no end-of-file marker)")
        return
    for magic, label in _MAGIC:
        if data.startswith(magic):
            raise InvalidInput(f"{name}: the file is {label}, not a PDF document")
    if is_html_document(data[:4096].decode("utf-8", errors="replace")):
        raise InvalidInput(f"{name}: the file is an HTML page, not a PDF document; upload it with a .html extension")
    raise InvalidInput(f"{name}: the file is not a PDF document (it has no %PDF- header)")


def _open(data: bytes, name: str):
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            try:
                # Many PDFs are "encrypted" only to restrict printing, with an empty password for reading.
                opened = reader.decrypt("")
            except DependencyError:
                opened = 0
            if not opened:
                raise InvalidInput(
                    f"{name}: the PDF is password-protected or encrypted; remove the protection and upload it again"
                )
        pages = len(reader.pages)
    except InvalidInput:
        raise
    except (PyPdfError, *_READ_ERRORS) as exc:
        raise InvalidInput(f"{name}: the PDF is damaged and cannot be read ({_reason(exc)})") from None
    if pages == 0:
        raise InvalidInput(f"{name}: the PDF has no pages")
    if pages > MAX_PAGES:
        raise InvalidInput(f"{name}: the PDF has {pages} pages, more than the {MAX_PAGES}-page limit; split it")
    return reader


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:160]
    return text or type(exc).__name__


def _page_lines(reader, name: str) -> list[list[str]]:
    from pypdf.errors import PyPdfError

    pages: list[list[str]] = []
    for number, page in enumerate(reader.pages, start=1):
        try:
            text = page.extract_text() or ""
        except (PyPdfError, *_READ_ERRORS) as exc:
            raise InvalidInput(
                f"{name}: page {number} of the PDF is damaged and cannot be read ({_reason(exc)})"
            ) from None
        text = _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
        pages.append([_SPACES.sub(" ", line).strip() for line in text.split("\n")])
    return pages


def _is_heading(lines: list[str], i: int, after_heading: bool) -> bool:
    """A short, capitalised line without closing punctuation, after a finished sentence or heading, before text."""
    line = lines[i]
    # Lines wrapped to the page width are paragraph text; a heading is clearly shorter than the page's longest line.
    widest = max(len(other) for other in lines)
    if not line or len(line) > min(_MAX_HEADING_CHARS, widest * 0.6) or len(line.split()) > _MAX_HEADING_WORDS:
        return False
    if line.endswith(_SENTENCE_END) or not (line[0].isupper() or line[0].isdigit()):
        return False
    if not any(lines[i + 1 :]):
        return False
    previous = next((p for p in reversed(lines[:i]) if p), "")
    # A short line right after a line that stops mid-sentence is the end of a wrapped paragraph, not a heading.
    return after_heading or not previous or previous.endswith((".", "!", "?", ":"))


def _paragraphs(lines: list[str]) -> list[str]:
    paragraphs: list[str] = []
    current: list[str] = []
    for line in lines + [""]:
        if line:
            current.append(line)
        elif current:
            paragraphs.append("\n".join(current))
            current = []
    return paragraphs


def parse_pdf(data: bytes, *, filename: str = "doc.pdf") -> list[FaqEntry]:
    """Parse a PDF's text layer into entries titled by heading (where obvious) and page number."""
    name = display_name(filename, "doc.pdf")
    _check_header(data, name)
    reader = _open(data, name)
    pages = _page_lines(reader, name)
    if not any(any(lines) for lines in pages):
        raise InvalidInput(
            f"{name}: the PDF has no extractable text (it is probably scanned images); "
            "run it through OCR or upload a text version"
        )
    doc_title = title_from_name(name)
    entries: list[FaqEntry] = []
    seen: dict[str, int] = {}
    heading = ""
    for number, lines in enumerate(pages, start=1):
        # (heading, lines) runs of this page; a heading from an earlier page carries over until the next one.
        sections: list[tuple[str, list[str]]] = [(heading, [])]
        after_heading = False
        for i, line in enumerate(lines):
            if not line:
                sections[-1][1].append(line)
            elif _is_heading(lines, i, after_heading):
                # Stacked headings (a document title over a section title) read as a path, as in Markdown.
                heading = f"{heading} > {line}" if after_heading else line
                sections.append((heading, []))
                after_heading = True
            else:
                sections[-1][1].append(line)
                after_heading = False
        for section_heading, body in sections:
            title = f"{section_heading or doc_title} (page {number})"
            for part, group in enumerate(group_paragraphs(_paragraphs(body))):
                base = f"p{number} {section_heading or doc_title}" + (f" {part + 1}" if part else "")
                entries.append(FaqEntry(id=unique_id(base, seen), question=title, answer=group))
    return entries

"""HTML loader: the page's main text only (no scripts, styles, navigation or page chrome); headings become entries."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from ingest.loaders.base import decode_text, display_name, sections_to_entries, title_from_name
from ingest.loaders.base import FaqEntry
from support_bot.core.errors import InvalidInput

# Content of these never reaches the index: code, styling, and page chrome repeated on every page.
_SKIP = frozenset(
    {"script", "style", "noscript", "template", "svg", "nav", "header", "footer", "aside", "form", "iframe", "head"}
)
_VOID = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
)
_BLOCK = frozenset(
    {
        "p", "div", "section", "article", "main", "li", "ul", "ol", "dl", "dt", "dd", "table", "tr", "blockquote",
        "pre", "br", "hr", "figure", "figcaption", "details", "summary", "body",
    }
)
_HEADINGS = {f"h{n}": n for n in range(1, 7)}
_TAG = re.compile(r"<\s*[a-zA-Z][a-zA-Z0-9-]*(?:\s[^>]*)?>")


class _MainText(HTMLParser):
    """Collects (heading path, body) sections, keeping main/article content apart from the rest."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.skip = 0
        self.main = 0
        self.title = ""
        self.in_title = False
        self.heading: tuple[int, list[str]] | None = None
        self.path: list[tuple[int, str]] = []
        # Sections as [path, body pieces, inside main/article]; the first one collects text before any heading.
        self.sections: list[tuple[list[str], list[str], bool]] = [([], [], False)]
        self.saw_main = False

    def _body(self) -> list[str]:
        path = [t for _, t in self.path]
        inside = self.main > 0
        last = self.sections[-1]
        if last[0] != path or last[2] != inside:
            self.sections.append((path, [], inside))
        return self.sections[-1][1]

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag == "title":
            self.in_title = True
            return
        if tag in _VOID:
            if tag in ("br", "hr") and not self.skip:
                self._body().append("\n")
            return
        self.stack.append(tag)
        if tag in _SKIP or any(k == "role" and v in ("navigation", "banner", "contentinfo") for k, v in attrs):
            self.skip += 1
            self.stack[-1] = f"skip:{tag}"
            return
        if tag in ("main", "article") or any(k == "role" and v == "main" for k, v in attrs):
            self.main += 1
            self.saw_main = True
            self.stack[-1] = f"main:{tag}"
        if self.skip:
            return
        if tag in _HEADINGS:
            self.heading = (_HEADINGS[tag], [])
        elif tag in _BLOCK:
            self._body().append("\n\n" if tag in ("p", "div", "section", "table", "blockquote", "pre") else "\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self.in_title = False
            return
        # Pop to the matching open tag, tolerating unclosed children as browsers do.
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i].split(":")[-1] == tag:
                for closed in self.stack[i:]:
                    if closed.startswith("skip:"):
                        self.skip -= 1
                    elif closed.startswith("main:"):
                        self.main -= 1
                del self.stack[i:]
                break
        else:
            return
        if self.skip:
            return
        if tag in _HEADINGS and self.heading is not None:
            level, parts = self.heading
            self.heading = None
            text = " ".join("".join(parts).split())
            if text:
                while self.path and self.path[-1][0] >= level:
                    self.path.pop()
                self.path.append((level, text))
        elif tag in _BLOCK:
            self._body().append("\n\n" if tag in ("p", "div", "section", "table", "blockquote", "pre") else "\n")

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.title += data
            return
        if self.skip:
            return
        if self.heading is not None:
            self.heading[1].append(data)
        else:
            self._body().append(data)


def parse_html(data: bytes, *, filename: str = "page.html") -> list[FaqEntry]:
    """Parse an HTML page into heading-path entries of its main text."""
    name = display_name(filename, "page.html")
    text = decode_text(data, name, "HTML file")
    if not _TAG.search(text[:65536]):
        raise InvalidInput(f"{name}: the file has no HTML tags; upload plain text with a .txt extension")
    parser = _MainText()
    try:
        parser.feed(text)
        parser.close()
    except AssertionError as exc:  # html.parser signals some malformed markup this way
        raise InvalidInput(f"{name}: malformed HTML: {exc}") from None
    title = " ".join(parser.title.split()) or title_from_name(name)
    # When the page marks its main content, everything outside it is chrome.
    kept = [s for s in parser.sections if s[2]] if parser.saw_main else parser.sections
    sections: list[tuple[list[str], str]] = []
    for path, pieces, _ in kept:
        body = re.sub(r"[ \t\f\v]+", " ", "".join(pieces))
        body = re.sub(r" *\n *", "\n", body)
        sections.append((path, body))
    return sections_to_entries(sections, doc_title=title, name=name)

"""Parse console pages in tests: forms, elements by id, links and table rows, without matching raw HTML."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


@dataclass
class Form:
    action: str
    method: str
    attrs: dict[str, str]
    fields: dict[str, str] = field(default_factory=dict)
    selects: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    text: str = ""


class ConsolePage(HTMLParser):
    """Everything a console test looks at, gathered in one pass."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.forms: list[Form] = []
        self.by_id: dict[str, Element] = {}
        self.links: list[Element] = []
        # Links inside <nav id="console-nav">, in page order.
        self.nav: list[Element] = []
        self.rows: list[Element] = []
        self.meta: dict[str, str] = {}
        self.title = ""
        self._open: list[Element] = []
        self._form: Form | None = None
        self._select: str | None = None
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        el = Element(tag, a)
        if tag == "form":
            self._form = Form(action=a.get("action", ""), method=a.get("method", "get").lower(), attrs=a)
            self.forms.append(self._form)
        elif tag == "input" and self._form is not None and a.get("name"):
            self._form.fields[a["name"]] = a.get("value", "")
        elif tag == "select" and self._form is not None and a.get("name"):
            self._select = a["name"]
            self._form.selects[self._select] = []
        elif tag == "option" and self._form is not None and self._select:
            self._form.selects[self._select].append(a.get("value", ""))
            if "selected" in a:
                self._form.fields[self._select] = a.get("value", "")
        elif tag == "meta" and a.get("name"):
            self.meta[a["name"]] = a.get("content", "")
        if tag == "a":
            self.links.append(el)
            if any(o.attrs.get("id") == "console-nav" for o in self._open):
                self.nav.append(el)
        if tag == "tr" and a:
            self.rows.append(el)
        if "id" in a:
            self.by_id[a["id"]] = el
        if tag not in VOID:
            self._open.append(el)

    def handle_endtag(self, tag):
        if tag == "form":
            self._form = None
        if tag == "select":
            self._select = None
        for i in range(len(self._open) - 1, -1, -1):
            if self._open[i].tag == tag:
                del self._open[i:]
                break

    def handle_data(self, data):
        for el in self._open:
            el.text += data
        if self._open and self._open[-1].tag == "title":
            self.title += data

    def text(self, element_id: str) -> str:
        return " ".join(self.by_id[element_id].text.split())

    def form(self, *, action: str | None = None, form_id: str | None = None) -> Form:
        for f in self.forms:
            if (form_id is None or f.attrs.get("id") == form_id) and (action is None or f.action == action):
                return f
        raise AssertionError(f"no form (id={form_id}, action={action}) on the page")

    def nav_labels(self) -> list[str]:
        return [link.text.strip() for link in self.nav]

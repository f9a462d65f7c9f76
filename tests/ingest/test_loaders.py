"""Loaders for every knowledge format: what they keep, what they drop, and how they refuse wrong files."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from ingest.chunking import chunk_faq
from ingest.loaders import LOADERS, load, loader_for, parse
from ingest.loaders.html import parse_html
from ingest.loaders.markdown import parse_markdown
from ingest.loaders.plain_text import parse_text
from support_bot.core.errors import InvalidInput

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def _load(name: str) -> tuple[str, list]:
    return load(name, (FIXTURES / name).read_bytes())


def test_faq_json_with_entries_object():
    kind, entries = _load("northwind_faq.json")
    assert kind == "faq_json"
    assert [e.id for e in entries] == ["gift-01", "gift-02", "301"]
    assert entries[0].url == "https://northwind.example/gift-cards" and entries[1].url is None
    # An FAQ's phone number is the company's own: loaders never redact.
    assert "+1 415 555 0134" in entries[2].answer


def test_faq_json_as_a_plain_list():
    data = json.dumps([{"id": "a", "question": "Q?", "answer": "A.", "url": "https://x.example/a"}]).encode()
    assert [(e.id, e.question, e.answer, e.url) for e in parse("faq.json", data)] == [
        ("a", "Q?", "A.", "https://x.example/a")
    ]


def test_faq_jsonl_skips_blank_lines():
    kind, entries = _load("northwind_faq.jsonl")
    assert kind == "faq_jsonl"
    assert [e.id for e in entries] == ["rent-01", "rent-02", "rent-03"]
    assert entries[0].question == "Can I rent a bike for a weekend?"


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("faq.json", b'{"id": "a", "question": "q"', "faq.json: invalid JSON on line 1"),
        ("faq.json", b'{"items": []}', 'an object with an "entries" list'),
        ("faq.json", b"[]", "faq.json: the file has no entries"),
        ("faq.json", b'[{"id": "a", "question": "q"}]', "entry 1 has no answer"),
        ("faq.json", b'[{"id": "a", "question": "q", "answer": "x"}, {"id": "a", "question": "r", "answer": "y"}]',
         "entry 2 repeats id 'a'"),
        ("faq.json", b'[{"id": "a", "question": "q", "answer": "x", "url": "javascript:alert(1)"}]',
         "not an http(s) link"),
        ("faq.jsonl", b'{"id": "a", "question": "q", "answer": "x"}\n{oops}\n', "faq.jsonl: invalid JSON on line 2"),
        ("faq.jsonl", b'{"id": "a", "answer": "x"}\n', "line 1 has no question"),
        ("faq.jsonl", b"[1, 2]\n", "line 1 is not an object"),
    ],
)
def test_faq_json_problems_are_named(name, data, message):
    with pytest.raises(InvalidInput) as info:
        parse(name, data)
    assert message in info.value.detail


def test_markdown_headings_become_entries_with_their_path():
    kind, entries = _load("northwind_guide.md")
    assert kind == "markdown"
    titles = [e.question for e in entries]
    assert titles == [
        "Northwind owner's guide",
        "Maintenance > Chain care",
        "Maintenance > Tyre pressure",
        "Warranty",
        "Warranty > Battery Care",
    ]
    by_title = {e.question: e for e in entries}
    # A '#' line inside a code fence is code, not a heading.
    assert "# This is a comment in a code block" in by_title["Maintenance > Chain care"].answer
    # Inline markup is dropped, link text kept.
    assert by_title["Maintenance > Tyre pressure"].answer.endswith("see the pressure table.")
    assert "*" not in by_title["Warranty"].answer
    assert len({e.id for e in entries}) == len(entries)


def test_markdown_long_section_is_chunked_with_overlap_under_its_heading():
    sentences = " ".join(f"Step {i} of the wheel truing procedure needs care and patience." for i in range(80))
    entries = parse_markdown(f"# Wheels\n\n## Truing\n\n{sentences}\n".encode(), filename="wheels.md")
    drafts = chunk_faq(entries, chunk_tokens=64, chunk_overlap=8)
    assert len(drafts) > 3
    assert all(d.text.startswith("Wheels > Truing\n") for d in drafts)
    first, second = drafts[0].text.split("\n", 1)[1], drafts[1].text.split("\n", 1)[1]
    # Windows overlap: the second starts with words the first ended with.
    assert second.split()[0] in first.split()[-20:]


def test_markdown_headings_without_text_are_not_entries():
    entries = parse_markdown(b"# A\n## B\nBody of B.\n## C\n", filename="x.md")
    assert [(e.question, e.answer) for e in entries] == [("A > B", "Body of B.")]


def test_html_keeps_main_text_and_drops_scripts_styles_and_chrome():
    kind, entries = _load("northwind_returns.html")
    assert kind == "html"
    assert [e.question for e in entries] == [
        "Returns and repairs",
        "Returns and repairs > Returning a bike",
        "Returns and repairs > Repairs under warranty",
        "Returns and repairs > Repairs under warranty > Repair times",
    ]
    everything = " ".join(e.question + " " + e.answer for e in entries)
    for dropped in ("TRACKING", "inline script", "font-family", "Free shipping", "About us", "newsletter", "rights"):
        assert dropped not in everything
    returning = entries[1].answer
    assert "30 days" in returning and "receipt & the original box" in returning
    assert "Book a slot online." in entries[2].answer and "Bring proof of purchase." in entries[2].answer


def test_html_without_main_keeps_body_text_but_not_chrome():
    page = (
        b"<html><head><title>Care</title><script>var x = 1;</script></head><body>"
        b"<nav>Home | Shop</nav><p>Oil the chain monthly.</p><h2>Brakes</h2><p>Check pads often.</p>"
        b"<footer>Contact</footer></body></html>"
    )
    entries = parse_html(page, filename="care.html")
    assert [(e.question, e.answer) for e in entries] == [
        ("Care", "Oil the chain monthly."),
        ("Brakes", "Check pads often."),
    ]


def test_html_that_is_only_script_has_no_text():
    with pytest.raises(InvalidInput, match="page.html: the file has no text to index"):
        parse_html(b"<html><body><script>alert('x')</script><style>p{}</style></body></html>", filename="page.html")


def test_plain_text_is_grouped_by_paragraphs_under_its_title():
    kind, entries = _load("northwind_care.txt")
    assert kind == "text"
    assert len(entries) == 1
    assert entries[0].question == "Winter storage checklist"
    assert entries[0].answer.startswith("Before you put your bike away")
    assert entries[0].answer.count("\n\n") == 2


def test_plain_text_long_documents_become_several_entries():
    para = "The frame is made of aluminium and is welded by hand in our workshop. " * 6
    text = "\n\n".join(f"{para} Paragraph {i}." for i in range(12))
    entries = parse_text(text.encode(), filename="frames_faq.txt")
    assert len(entries) > 2
    assert {e.question for e in entries} == {"frames faq"}
    assert len({e.id for e in entries}) == len(entries)
    # No paragraph is cut between entries.
    assert sum(e.answer.count("Paragraph ") for e in entries) == 12


@pytest.mark.parametrize("name", ["empty.csv", "empty.json", "empty.jsonl", "empty.md", "empty.html", "empty.txt"])
@pytest.mark.parametrize("data", [b"", b"\n  \n", b"\xef\xbb\xbf"])
def test_zero_byte_and_blank_files_are_refused(name, data):
    with pytest.raises(InvalidInput) as info:
        parse(name, data)
    assert info.value.detail.startswith(f"{name}: ") and "empty" in info.value.detail


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("guide.md", random.Random(3).randbytes(2048), "guide.md: the file "),
        ("guide.md", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", "guide.md: the file is a PDF document, not a Markdown"),
        ("guide.md", b"<!DOCTYPE html><html><body><p>Hi</p></body></html>", "guide.md: the file is an HTML page"),
        ("notes.txt", b"PK\x03\x04\x14\x00\x06\x00", "notes.txt: the file is a ZIP archive"),
        ("notes.txt", b"<html><body>x</body></html>", "notes.txt: the file is an HTML page"),
        ("faq.csv", b"<!doctype html>\n<html><body><table></table></body></html>", "faq.csv: the file is an HTML page"),
        ("faq.csv", b'[{"id": "1", "question": "q", "answer": "a"}]', "faq.csv: the file looks like JSON"),
        ("faq.json", b"id,question,answer\n1,q,a\n", "faq.json: invalid JSON on line 1"),
        ("faq.json", b"<html><body>x</body></html>", "faq.json: the file is an HTML page"),
        ("page.html", b"Just some words without any markup.", "page.html: the file has no HTML tags"),
        ("page.html", b"\x89PNG\r\n\x1a\n\x00\x00", "page.html: the file is a PNG image"),
        ("notes.txt", "Caf\xe9 au lait".encode("latin-1"), "notes.txt: the file is not UTF-8 text"),
        ("notes.txt", "Winter care".encode("utf-16"), "notes.txt: the file is UTF-16 encoded"),
    ],
)
def test_content_that_does_not_match_the_extension_is_refused(name, data, message):
    with pytest.raises(InvalidInput) as info:
        parse(name, data)
    assert message in info.value.detail


def test_every_extension_has_a_loader_and_others_are_not_claimed():
    assert loader_for("Guide.MD") == ("markdown", ".md")
    assert loader_for("page.htm") == ("html", ".htm")
    assert loader_for("Manual.PDF") == ("pdf", ".pdf")
    assert {".csv", ".json", ".jsonl", ".md", ".html", ".txt", ".pdf"} <= set(LOADERS)
    with pytest.raises(InvalidInput, match="unsupported file type .docx"):
        loader_for("manual.docx")

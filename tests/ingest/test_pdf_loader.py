"""PDF loader: text taken page by page from hand-built PDFs, and damaged or image-only PDFs refused by name."""

from __future__ import annotations

import io
import random

import pytest

from ingest.loaders import load, parse
from ingest.loaders.pdf import parse_pdf
from ingest.pipeline import ingest_path
from support_bot.core.errors import InvalidInput
from support_bot.knowledge.retriever import get_retriever


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def _content(lines: list[str]) -> bytes:
    """A content stream showing lines in Helvetica, one below the other."""
    ops = ["BT", "/F1 12 Tf", "14 TL", "72 720 Td"]
    for line in lines:
        ops.append(f"({_escape(line)}) Tj")
        ops.append("T*")
    ops.append("ET")
    return "\n".join(ops).encode("latin-1")


def make_pdf(pages: list[bytes]) -> bytes:
    """A minimal PDF 1.4: catalog, page tree, one Type1 font, and a page with each content stream."""
    n = len(pages)
    font_id = 3
    page_ids = [4 + 2 * i for i in range(n)]
    objects: dict[int, bytes] = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: f"<< /Type /Pages /Kids [{' '.join(f'{p} 0 R' for p in page_ids)}] /Count {n} >>".encode(),
        font_id: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    }
    for page_id, stream in zip(page_ids, pages):
        objects[page_id] = (
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Resources << /Font << /F1 {font_id} 0 R >> >> /Contents {page_id + 1} 0 R >>"
        ).encode()
        objects[page_id + 1] = b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream"
    return pdf_from_objects(objects)


def pdf_from_objects(objects: dict[int, bytes]) -> bytes:
    """A PDF from numbered objects (1 is the catalog), with a correct cross-reference table."""
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = {}
    for number in sorted(objects):
        offsets[number] = out.tell()
        out.write(b"%d 0 obj\n" % number + objects[number] + b"\nendobj\n")
    xref = out.tell()
    size = max(objects) + 1
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % size)
    for number in range(1, size):
        out.write(b"%010d 00000 n \n" % offsets[number])
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (size, xref))
    return out.getvalue()


PAGE_1 = [
    "Northwind e-bike manual",
    "Charging the battery",
    "Charge the battery at room temperature before the first ride.",
    "A full charge takes about four hours with the supplied charger.",
    "Never leave the charger connected to a damaged battery.",
]
PAGE_2 = [
    "Brake pads",
    "Replace the brake pads when the groove on the pad is no longer",
    "visible, usually every 2,000 km of riding.",
]


@pytest.fixture
def manual() -> bytes:
    return make_pdf([_content(PAGE_1), _content(PAGE_2)])


def test_pages_become_entries_titled_by_heading_and_page(manual):
    kind, entries = load("manual.pdf", manual)
    assert kind == "pdf"
    # Stacked heading lines (document title, then section title) form a path.
    assert [e.question for e in entries] == [
        "Northwind e-bike manual > Charging the battery (page 1)",
        "Brake pads (page 2)",
    ]
    assert [e.id for e in entries] == ["p1-northwind-e-bike-manual-charging-the-battery", "p2-brake-pads"]
    charging = entries[0].answer
    assert charging.startswith("Charge the battery at room temperature before the first ride.")
    assert "four hours" in charging and charging.endswith("Never leave the charger connected to a damaged battery.")
    # A short line that finishes a wrapped sentence is body text, not a heading.
    assert entries[1].answer.endswith("visible, usually every 2,000 km of riding.")


def test_a_heading_carries_over_to_the_next_page():
    first = _content(["Warranty", "The frame is covered for ten years and the motor", "for two years."])
    second = _content(["Keep the receipt as proof of purchase."])
    entries = parse_pdf(make_pdf([first, second]), filename="warranty.pdf")
    assert [(e.question, e.answer) for e in entries] == [
        ("Warranty (page 1)", "The frame is covered for ten years and the motor\nfor two years."),
        ("Warranty (page 2)", "Keep the receipt as proof of purchase."),
    ]


def test_brackets_and_backslashes_survive_extraction():
    entries = parse_pdf(make_pdf([_content(["Torque (Nm) for bolts is 5 \\ 6 at most."])]), filename="t.pdf")
    assert entries[0].answer == "Torque (Nm) for bolts is 5 \\ 6 at most."


def test_truncated_pdf_is_refused(manual):
    with pytest.raises(InvalidInput) as info:
        parse("manual.pdf", manual[: len(manual) // 2])
    assert info.value.detail == "manual.pdf: the PDF is truncated or damaged (it has no end-of-file marker)"


def test_damaged_pdfs_with_header_and_end_marker_are_refused(manual):
    junk = b"%PDF-1.7\n" + random.Random(5).randbytes(4096) + b"\n%%EOF\n"
    overwritten = manual[:200] + b"\x00" * 300 + manual[500:]
    for data in (junk, overwritten):
        with pytest.raises(InvalidInput, match=r"^junk\.pdf: the PDF is damaged and cannot be read \(.+\)$"):
            parse("junk.pdf", data)


def test_random_bytes_after_a_pdf_header_are_refused():
    with pytest.raises(InvalidInput, match=r"^noise\.pdf: the PDF is truncated or damaged"):
        parse("noise.pdf", b"%PDF-1.4\n" + random.Random(9).randbytes(2048))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"Just a text file called .pdf\n", "notes.pdf: the file is not a PDF document (it has no %PDF- header)"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "notes.pdf: the file is a PNG image, not a PDF document"),
        (b"", "notes.pdf: the file is empty"),
    ],
)
def test_files_without_a_pdf_header_are_refused(data, message):
    with pytest.raises(InvalidInput) as info:
        parse("notes.pdf", data)
    assert info.value.detail == message


def test_pdf_bytes_under_other_extensions_are_still_refused(manual):
    with pytest.raises(InvalidInput, match="guide.md: the file is a PDF document, not a Markdown"):
        parse("guide.md", manual)
    with pytest.raises(InvalidInput, match="notes.txt: the file is a PDF document"):
        parse("notes.txt", manual)


def test_pdf_without_text_is_refused_as_having_no_extractable_text():
    drawing = b"0.5 w\n72 72 m\n540 720 l\nS\n72 72 468 648 re\nS"
    with pytest.raises(InvalidInput) as info:
        parse("scan.pdf", make_pdf([drawing]))
    assert info.value.detail.startswith("scan.pdf: the PDF has no extractable text")
    assert "scanned" in info.value.detail


def test_password_protected_pdf_is_refused(manual):
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(manual)))
    writer.encrypt(user_password="secret", algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    with pytest.raises(InvalidInput, match=r"^locked\.pdf: the PDF is password-protected"):
        parse("locked.pdf", out.getvalue())


def test_page_limit_is_enforced(monkeypatch, manual):
    monkeypatch.setattr("ingest.loaders.pdf.MAX_PAGES", 1)
    with pytest.raises(InvalidInput, match=r"big\.pdf: the PDF has 2 pages, more than the 1-page limit"):
        parse("big.pdf", manual)


def test_pdf_source_is_searchable(kb, tmp_path, manual):
    path = tmp_path / "ebike_manual.pdf"
    path.write_bytes(manual)
    job = ingest_path(settings=kb, path=path, source_name="manual")
    assert job.status == "succeeded", job.error
    hits = get_retriever(kb).search("How often should I replace the brake pads?").hits
    assert hits[0].source == "manual" and hits[0].entry_id == "p2-brake-pads"
    assert "2,000 km" in hits[0].text

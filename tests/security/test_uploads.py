"""Hostile uploads and bodies: size limits before anything is read, file names that try to be paths, and bombs.

Covered elsewhere and not repeated here: an upload over ingest.max_upload_bytes (413, nothing kept) and ../, \\ and
absolute names in tests/web/test_knowledge_api.py; damaged PDFs and the page limit (patched small) in
tests/ingest/test_pdf_loader.py.
"""

from __future__ import annotations

import gzip
import io
import zipfile
import zlib
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from ingest.loaders import LOADERS, parse
from ingest.loaders.pdf import MAX_PAGES
from support_bot.core.db import session_scope
from support_bot.core.errors import InvalidInput
from support_bot.models import Conversation, IngestJob
from tests.ingest.test_pdf_loader import _content, pdf_from_objects
from tests.security.conftest import SEED_CSV, security_settings, wait_ready
from web.app import create_app

BOUNDARY = b"sbsecurityboundary"


@pytest.fixture
def api(kb):
    settings = security_settings(kb)
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        yield client, settings, {"Authorization": f"Bearer {settings.admin_token}"}


def raw_upload(filename: bytes, data: bytes) -> tuple[bytes, dict[str, str]]:
    """A multipart body written by hand, so the file name can hold bytes an HTTP library would clean up first."""
    body = (
        b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="file"; filename="' + filename + b'"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n--" + BOUNDARY + b"--\r\n"
    )
    return body, {"Content-Type": f"multipart/form-data; boundary={BOUNDARY.decode()}"}


def count(settings, model) -> int:
    with session_scope(settings) as session:
        return session.scalar(select(func.count()).select_from(model))


# -- request size ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("credentials", [{}, {"Authorization": "Bearer wrong-token"}], ids=["anonymous", "wrong-token"])
def test_an_upload_without_valid_credentials_is_refused_before_its_body_is_read(kb, credentials):
    """The upload route allows ~1 GB bodies; a caller who may not upload must not make the server read one."""
    import anyio

    app = create_app(security_settings(kb))
    chunk = b"x" * (1 << 20)
    declared = 500 * len(chunk)
    sent = {"chunks": 0}
    answer: dict = {}

    async def receive():
        sent["chunks"] += 1
        return {"type": "http.request", "body": chunk, "more_body": sent["chunks"] < 500}

    async def send(message):
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]

    headers = {"content-type": f"multipart/form-data; boundary={BOUNDARY.decode()}", "content-length": str(declared)}
    headers.update({k.lower(): v for k, v in credentials.items()})
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/api/knowledge/uploads", "raw_path": b"/api/knowledge/uploads", "query_string": b"",
        "root_path": "", "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80), "state": {},
    }
    anyio.run(app, scope, receive, send)
    assert answer["status"] == 401
    assert sent["chunks"] <= 1, f"{sent['chunks']} MiB of an unauthorized upload were read"
    assert count(kb, IngestJob) == 0


def test_oversized_bodies_are_refused_with_413_before_any_route_reads_them(api):
    client, settings, token = api
    limit = settings.max_request_bytes
    huge_json = b'{"text": "' + b"a" * (limit + 1) + b'"}'
    before = count(settings, Conversation)
    huge_form = b"username=" + b"a" * (limit + 1) + b"&password=x"
    cases = [(path, huge_json, "application/json")
             for path in ("/api/conversations", "/api/conversations/x/messages", "/api/console/login")]
    cases.append(("/console/login", huge_form, "application/x-www-form-urlencoded"))
    for path, body, content_type in cases:
        # A declared Content-Length over the limit is refused before the body is read (FastAPI answers in plain
        # text then); a chunked body is cut off once it passes the limit, with the usual JSON detail.
        res = client.post(path, content=body, headers={"Content-Type": content_type})
        assert res.status_code == 413, (path, res.text)
        res = client.post(path, content=iter([body]), headers={"Content-Type": content_type})
        assert res.status_code == 413 and res.json()["detail"], (path, res.text)
    assert count(settings, Conversation) == before
    # The knowledge upload route takes files up to ingest.max_upload_bytes each, so it allows more...
    big = b"\xff" * (limit * 2)
    res = client.post("/api/knowledge/uploads", files={"file": ("notes.txt", big)}, headers=token)
    assert res.status_code == 422 and "not UTF-8" in res.json()["detail"]
    # ... but not without bound: the whole request is capped at every file's limit together.
    from web.api.knowledge import max_upload_request_bytes

    assert max_upload_request_bytes(settings) < 2 * 1024**3


# -- file names ------------------------------------------------------------------------------------------------------

HOSTILE_NAMES = {
    "nul byte": (b"faq\x00.csv", "faq.csv"),
    "nul then traversal": (b"../../../../tmp/evil\x00/../x.csv", "x.csv"),
    "absolute": (b"/etc/cron.d/job.csv", "job.csv"),
    "windows drive": (b"C:\\Windows\\System32\\drivers\\etc\\hosts.csv", "hosts.csv"),
    "long": (b"A" * 1000 + b".csv", "A" * 251 + ".csv"),
    "percent-encoded slashes": (b"..%2F..%2Fescape.csv", "..%2F..%2Fescape.csv"),
    "tab and bell": (b"in\tvoice\x07.csv", "invoice.csv"),
}


@pytest.mark.parametrize("case", list(HOSTILE_NAMES))
def test_hostile_file_names_are_stored_under_the_data_dir_by_content_hash(api, tmp_path, case):
    client, settings, token = api
    sent, shown = HOSTILE_NAMES[case]
    outside = {p for p in tmp_path.iterdir()}
    body, headers = raw_upload(sent, SEED_CSV)
    res = client.post("/api/knowledge/uploads", content=body, headers={**headers, **token})
    assert res.status_code == 202, res.text
    job = res.json()["job"]
    assert job["filename"] == shown
    assert not any(ord(ch) < 32 or ch in "/\\" for ch in job["filename"])
    with session_scope(settings) as session:
        row = session.get(IngestJob, job["id"])
        stored = Path(row.path).resolve()
        digest = row.sha256
    uploads = settings.uploads_dir.resolve()
    assert stored.is_relative_to(uploads) and stored.name == f"{digest}.csv"
    # Nothing appeared next to the data dir, and nothing under it carries the client's name.
    assert {p for p in tmp_path.iterdir()} == outside
    assert all(shown not in p.name for p in settings.data_dir.rglob("*"))


def test_names_that_are_no_file_name_at_all_are_refused_and_nothing_is_kept(api):
    client, settings, token = api
    # A header line longer than the multipart parser takes: refused as malformed, with a reason.
    body, headers = raw_upload(b"A" * 20000 + b".csv", SEED_CSV)
    res = client.post("/api/knowledge/uploads", content=body, headers={**headers, **token})
    assert res.status_code == 400 and res.json()["detail"] == "Invalid multipart data."
    for sent in (b"..", b"/", b"\x00\x00", b"C:\\"):
        body, headers = raw_upload(sent, SEED_CSV)
        res = client.post("/api/knowledge/uploads", content=body, headers={**headers, **token})
        assert res.status_code == 422, (sent, res.text)
        assert res.json()["detail"].startswith("upload: unsupported file type")
    assert list(settings.uploads_dir.iterdir()) == []


# -- archives and bombs ----------------------------------------------------------------------------------------------


def _gzip_bomb() -> bytes:
    """~100 KiB that inflates to 100 MiB."""
    return gzip.compress(b"id,question,answer\n" + b"\x00" * (100 * 1024 * 1024), compresslevel=9)


def _docx_like() -> bytes:
    """A ZIP holding a compressed 50 MiB member, as a .docx or .xlsx would (but mostly air)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", b" " * (50 * 1024 * 1024))
    return out.getvalue()


@pytest.mark.parametrize("archive", ["gzip", "zip"])
def test_no_loader_inflates_an_archive_whatever_its_extension(archive):
    """No format the knowledge base accepts is compressed: archives are named and refused, never unpacked."""
    data = _gzip_bomb() if archive == "gzip" else _docx_like()
    assert len(data) < 1024 * 1024
    label = "a gzip archive" if archive == "gzip" else "a ZIP archive (for example a .docx or .xlsx file)"
    for ext in sorted(set(LOADERS) - {".pdf"}):
        with pytest.raises(InvalidInput) as info:
            parse(f"upload{ext}", data)
        assert info.value.detail.startswith(f"upload{ext}: the file is {label}"), (ext, info.value.detail)
    with pytest.raises(InvalidInput) as info:
        parse("upload.pdf", data)
    assert info.value.detail == f"upload.pdf: the file is {label}, not a PDF document"


def test_a_bomb_upload_fails_its_job_and_keeps_nothing(api):
    client, settings, token = api
    res = client.post("/api/knowledge/uploads", files={"file": ("faq.csv", _gzip_bomb())}, headers=token)
    assert res.status_code == 422 and "gzip archive" in res.json()["detail"]
    assert list(settings.uploads_dir.iterdir()) == []


def _one_page_pdf(contents: bytes, *, count: int = 1, extra: bytes = b"") -> bytes:
    return pdf_from_objects({
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: b"<< /Type /Pages /Kids [4 0 R] /Count %d >>" % count,
        3: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        4: b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
           b"/Contents 5 0 R >>",
        5: b"<< /Length %d %s>>\nstream\n" % (len(contents), extra) + contents + b"\nendstream",
    })


def test_a_pdf_whose_content_stream_inflates_to_hundreds_of_megabytes_is_refused():
    text_ops = b"BT /F1 12 Tf 72 720 Td (Hello) Tj ET\n"
    packed = zlib.compress(text_ops * (200 * 1024 * 1024 // len(text_ops)), 9)
    data = _one_page_pdf(packed, extra=b"/Filter /FlateDecode ")
    assert len(data) < 1024 * 1024
    with pytest.raises(InvalidInput, match=r"^bomb\.pdf: page 1 of the PDF is damaged .*Limit reached"):
        parse("bomb.pdf", data)


def test_pdf_page_counts_are_bounded_whatever_the_file_claims():
    # More real pages than the limit, cheap to make: every page shares one empty content stream.
    pages = MAX_PAGES + 1
    objects = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: b"<< /Type /Pages /Kids [%s] /Count %d >>" % (b" ".join(b"%d 0 R" % (4 + i) for i in range(pages)), pages),
        3: b"<< /Length 5 >>\nstream\nBT ET\nendstream",
    }
    objects.update({4 + i: b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 3 0 R >>"
                    for i in range(pages)})
    with pytest.raises(InvalidInput) as info:
        parse("many.pdf", pdf_from_objects(objects))
    assert info.value.detail == f"many.pdf: the PDF has {pages} pages, more than the {MAX_PAGES}-page limit; split it"

    # A page count that lies: the pages that exist are read, the claim is not believed.
    text = _content(["Returns", "You can return a bike within 30 days."])
    entries = parse("liar.pdf", _one_page_pdf(text, count=999_999_999))
    assert [e.question for e in entries] == ["Returns (page 1)"]

    # A page tree that contains itself is damaged, not endless.
    looped = pdf_from_objects({
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: b"<< /Type /Pages /Kids [3 0 R 2 0 R] /Count 2 >>",
        3: b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>",
    })
    with pytest.raises(InvalidInput, match=r"^loop\.pdf: the PDF is damaged and cannot be read \(.*cyclic"):
        parse("loop.pdf", looped)

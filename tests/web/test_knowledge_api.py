"""Knowledge API: uploads (one or several files), jobs, sources (list, show, delete), reindex; admin-only."""

from __future__ import annotations

import random
import time

import pytest
from sqlalchemy import func, select

from support_bot.core.db import session_scope
from support_bot.knowledge.reader import load_current
from support_bot.knowledge.index import read_current_version
from support_bot.knowledge.retriever import Retriever
from support_bot.models import Chunk, IngestJob, Source
from tests.web.helpers import ask, new_conversation

GOOD_CSV = b"id,question,answer,url\nkayak-1,Do you rent kayaks?,Yes. Kayaks rent for $40 a day at every Acme store.,https://acme.example/rentals\n"
TENTS_CSV = b"id,question,answer\ntent-1,Do you sell tents?,Yes: two- and four-person tents from $120.\n"
DEMO_QUESTION = "How long does shipping take?"


def admin(settings) -> dict:
    return {"Authorization": f"Bearer {settings.admin_token}"}


def wait_for_job(client, settings, job_id: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/knowledge/jobs/{job_id}", headers=admin(settings)).json()["job"]
        if job["status"] in ("succeeded", "failed"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish")


def chunk_count(settings, source: str | None = None) -> int:
    with session_scope(settings) as session:
        stmt = select(func.count()).select_from(Chunk)
        if source is not None:
            stmt = stmt.join(Source, Chunk.source_id == Source.id).where(Source.name == source)
        return session.scalar(stmt)


def upload(client, settings, *files, source: str | None = None):
    """POST several (name, bytes) pairs as `files` in one request."""
    return client.post(
        "/api/knowledge/uploads",
        files=[("files", (name, data)) for name, data in files],
        data={"source": source} if source else {},
        headers=admin(settings),
    )


def demo_still_answers(settings) -> bool:
    hits = Retriever(settings).search(DEMO_QUESTION).hits
    return bool(hits) and hits[0].entry_id == "ship-01" and hits[0].source == "demo-faq"


def test_upload_is_ingested_and_answers_the_next_question(client, app_settings, fake_engine):
    res = client.post(
        "/api/knowledge/uploads",
        files={"file": ("rentals.csv", GOOD_CSV, "text/csv")},
        data={"source": "rentals"},
        headers=admin(app_settings),
    )
    assert res.status_code == 202, res.text
    assert [j["id"] for j in res.json()["jobs"]] == [res.json()["job"]["id"]]
    job = wait_for_job(client, app_settings, res.json()["job"]["id"])
    assert job["status"] == "succeeded" and job["progress"]["done"] == job["progress"]["total"] == 1
    assert job["attempts"] == 1 and job["duration_s"] is not None and job["started_at"] is not None
    sources = client.get("/api/knowledge/sources", headers=admin(app_settings)).json()["sources"]
    assert {s["name"] for s in sources} == {"demo-faq", "rentals"}
    fake_engine.queue_reply("Yes, kayaks rent for $40 a day [1].")
    conv_id, headers = new_conversation(client)
    done = ask(client, conv_id, headers, "can I rent a kayak from you?")[-1][1]
    assert done["citations"][0]["entry_id"] == "kayak-1"


ROUTES = [
    ("post", "/api/knowledge/uploads"),
    ("get", "/api/knowledge/jobs"),
    ("get", "/api/knowledge/jobs/abc"),
    ("get", "/api/knowledge/sources"),
    ("get", "/api/knowledge/sources/demo-faq"),
    ("delete", "/api/knowledge/sources/demo-faq"),
    ("post", "/api/knowledge/reindex"),
    ("get", "/api/knowledge/calibration"),
]


def test_every_knowledge_route_needs_a_login_or_the_admin_token(client, app_settings):
    before, version = chunk_count(app_settings), read_current_version(app_settings.index_dir)
    for method, path in ROUTES:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {app_settings.admin_token}"}):
            kwargs = {"files": {"file": ("x.csv", GOOD_CSV)}} if path.endswith("uploads") else {}
            res = client.request(method, path, headers=headers, **kwargs)
            assert res.status_code == 401, (method, path, headers, res.text)
            assert "ADMIN_TOKEN" in res.json()["detail"]
    assert chunk_count(app_settings) == before
    assert read_current_version(app_settings.index_dir) == version
    with session_scope(app_settings) as session:
        assert session.scalar(select(func.count()).select_from(IngestJob)) == 1


def test_refused_upload_answers_with_the_reason_and_records_a_failed_job(client, app_settings):
    before = chunk_count(app_settings)
    cases = [
        (b"", "bad.csv: the file is empty"),
        (b"question,answer\nq,a\n", "bad.csv: missing column(s) id"),
        ("id,question,answer\n1,Où est ma commande?,Elle arrive bientôt\n".encode("latin-1"), "not UTF-8"),
        (bytes(range(256)) * 64, "bad.csv: "),
    ]
    for data, needle in cases:
        res = client.post("/api/knowledge/uploads", files={"file": ("bad.csv", data)}, headers=admin(app_settings))
        assert res.status_code == 422, (data[:20], res.text)
        assert needle in res.json()["detail"]
    big = b"id,question,answer\n" + b"1,q,a\n" * (app_settings.ingest.max_upload_bytes // 6 + 10)
    res = client.post("/api/knowledge/uploads", files={"file": ("big.csv", big)}, headers=admin(app_settings))
    assert res.status_code == 413
    assert res.json()["detail"].startswith("big.csv: the file is 20.0 MiB, larger than the 20.0 MiB limit")
    assert chunk_count(app_settings) == before
    failed = client.get("/api/knowledge/jobs?status=failed", headers=admin(app_settings)).json()
    assert failed["total"] == len(cases) + 1
    assert failed["jobs"][0]["filename"] == "big.csv" and "larger than" in failed["jobs"][0]["error"]
    assert all(j["error"].startswith(j["filename"] + ":") for j in failed["jobs"])
    # Nothing of a refused file is kept.
    assert list(app_settings.uploads_dir.iterdir()) == []
    assert demo_still_answers(app_settings)


def test_several_files_in_one_upload_each_get_a_job(client, app_settings):
    res = upload(
        client,
        app_settings,
        ("rentals.csv", GOOD_CSV),
        ("manual.pdf", b"%PDF-1.7\n" + random.Random(3).randbytes(3000) + b"\n%%EOF\n"),
        ("tents.csv", TENTS_CSV),
        ("notes.txt", b""),
    )
    assert res.status_code == 202, res.text
    jobs = {j["filename"]: j for j in res.json()["jobs"]}
    assert list(jobs) == ["rentals.csv", "manual.pdf", "tents.csv", "notes.txt"]
    assert jobs["manual.pdf"]["status"] == "failed"
    assert jobs["manual.pdf"]["error"] == "manual.pdf: the PDF is damaged and cannot be read (startxref not found)"
    assert jobs["notes.txt"]["status"] == "failed" and jobs["notes.txt"]["error"] == "notes.txt: the file is empty"
    for name in ("rentals.csv", "tents.csv"):
        assert jobs[name]["status"] in ("queued", "running", "succeeded")
        assert wait_for_job(client, app_settings, jobs[name]["id"])["status"] == "succeeded"
    assert {h.entry_id for h in Retriever(app_settings).search("do you sell tents", k=3).hits} >= {"tent-1"}
    listed = client.get("/api/knowledge/jobs", headers=admin(app_settings)).json()
    assert listed["total"] == 5  # the seeded demo FAQ and these four


def test_one_source_for_several_files_is_refused(client, app_settings):
    res = upload(client, app_settings, ("a.csv", GOOD_CSV), ("b.csv", TENTS_CSV), source="both")
    assert res.status_code == 422 and "single file" in res.json()["detail"]
    res = upload(client, app_settings, ("faq.csv", GOOD_CSV), ("faq.json", b"[]"))
    assert res.status_code == 422
    assert res.json()["detail"] == "faq.csv and faq.json would both replace source 'faq'; upload them one at a time"
    res = client.post("/api/knowledge/uploads", headers=admin(app_settings), data={"source": "x"})
    assert res.status_code == 422 and "no file uploaded" in res.json()["detail"]
    with session_scope(app_settings) as session:
        assert session.scalar(select(func.count()).select_from(IngestJob)) == 1


def test_sources_list_version_kind_counts_status_and_last_error(client, app_settings):
    res = upload(client, app_settings, ("rentals.csv", GOOD_CSV))
    wait_for_job(client, app_settings, res.json()["job"]["id"])
    # A failed re-upload of the demo FAQ: the source says so, and its live version keeps answering.
    res = client.post(
        "/api/knowledge/uploads",
        files={"file": ("demo-faq.csv", b"id,question\n1,Only a question?\n")},
        data={"source": "demo-faq"},
        headers=admin(app_settings),
    )
    assert res.status_code == 422
    listed = client.get("/api/knowledge/sources", headers=admin(app_settings)).json()["sources"]
    sources = {s["name"]: s for s in listed}
    demo, rentals = sources["demo-faq"], sources["rentals"]
    assert (demo["kind"], demo["version"], demo["entries"], demo["chunks"]) == ("faq_csv", 1, 26, 26)
    assert demo["status"] == "failed" and demo["last_job"]["status"] == "failed"
    assert demo["last_error"].startswith("demo-faq.csv: missing column(s) answer in the header")
    assert (rentals["version"], rentals["entries"], rentals["status"], rentals["last_error"]) == (1, 1, "live", None)
    assert isinstance(rentals["id"], int) and rentals["filename"] == "rentals.csv"
    assert demo_still_answers(app_settings)


def test_show_source_pages_through_its_entries(client, app_settings):
    h = admin(app_settings)
    first = client.get("/api/knowledge/sources/demo-faq?limit=10", headers=h).json()
    assert first["total"] == 26 and first["source"]["name"] == "demo-faq" and len(first["entries"]) == 10
    assert first["entries"][0]["entry_id"] == "ship-01" and first["entries"][0]["url"].startswith("https://")
    rest = client.get("/api/knowledge/sources/demo-faq?offset=10&limit=500", headers=h).json()["entries"]
    ids = [e["entry_id"] for e in first["entries"] + rest]
    assert len(ids) == len(set(ids)) == 26
    assert client.get("/api/knowledge/sources/demo-faq?offset=26", headers=h).json()["entries"] == []
    assert client.get("/api/knowledge/sources/demo-faq?limit=0", headers=h).status_code == 422
    missing = client.get("/api/knowledge/sources/nope", headers=h)
    assert missing.status_code == 404 and missing.json()["detail"] == "no knowledge source named 'nope'"


def test_source_names_with_slashes_and_spaces_are_addressable(client, app_settings):
    res = upload(client, app_settings, ("rentals.csv", GOOD_CSV), source="EU shop/rentals")
    assert wait_for_job(client, app_settings, res.json()["job"]["id"])["status"] == "succeeded"
    got = client.get("/api/knowledge/sources/EU%20shop%2Frentals", headers=admin(app_settings))
    assert got.status_code == 200 and got.json()["entries"][0]["entry_id"] == "kayak-1"
    assert client.delete("/api/knowledge/sources/EU shop/rentals", headers=admin(app_settings)).status_code == 200


def test_delete_source_removes_it_from_database_and_index(client, app_settings):
    res = upload(client, app_settings, ("rentals.csv", GOOD_CSV))
    wait_for_job(client, app_settings, res.json()["job"]["id"])
    version = read_current_version(app_settings.index_dir)
    retriever = Retriever(app_settings)
    assert retriever.search("can I rent a kayak?").hits[0].entry_id == "kayak-1"
    res = client.delete("/api/knowledge/sources/rentals", headers=admin(app_settings))
    assert res.status_code == 200
    assert res.json() == {"deleted": "rentals", "chunks_removed": 1, "index_version": version + 1}
    assert chunk_count(app_settings, "rentals") == 0
    assert set(load_current(app_settings).sources) == {"demo-faq"}
    assert all(h.entry_id != "kayak-1" for h in retriever.search("can I rent a kayak?", k=10).hits)
    assert client.get("/api/knowledge/sources/rentals", headers=admin(app_settings)).status_code == 404
    assert client.delete("/api/knowledge/sources/rentals", headers=admin(app_settings)).status_code == 404
    assert demo_still_answers(app_settings)


def test_reindex_publishes_a_new_version_with_the_same_entries(client, app_settings):
    version = read_current_version(app_settings.index_dir)
    before = sorted(r.chunk_id for r in load_current(app_settings).records)
    res = client.post("/api/knowledge/reindex", headers=admin(app_settings))
    assert res.status_code == 200 and res.json() == {"index_version": version + 1}
    assert sorted(r.chunk_id for r in load_current(app_settings).records) == before
    assert demo_still_answers(app_settings)


def test_calibration_shows_what_the_live_version_is_searched_with(client, app_settings):
    res = client.get("/api/knowledge/calibration", headers=admin(app_settings))
    assert res.status_code == 200
    body = res.json()
    assert body["index_version"] == read_current_version(app_settings.index_dir) and body["enabled"] is True
    # The demo FAQ gives each answer once: nothing to hold out, so the configured settings are in force, and say why.
    assert body["calibration"]["applied"] is False and "too few held-out questions" in body["calibration"]["reason"]
    assert body["in_force"]["min_score"] == app_settings.retrieval.min_score


def test_jobs_list_filters_by_status_and_source(client, app_settings):
    h = admin(app_settings)
    res = upload(client, app_settings, ("rentals.csv", GOOD_CSV), ("broken.csv", b"id,question\n1,q?\n"))
    for job in res.json()["jobs"]:
        wait_for_job(client, app_settings, job["id"])
    every = client.get("/api/knowledge/jobs", headers=h).json()
    assert every["total"] == 3 and every["offset"] == 0 and every["limit"] == 50
    failed = client.get("/api/knowledge/jobs?status=failed", headers=h).json()["jobs"]
    assert [(j["filename"], j["source"]) for j in failed] == [("broken.csv", "broken")]
    assert failed[0]["error"].startswith("broken.csv: missing column(s) answer in the header")
    by_source = client.get("/api/knowledge/jobs?source=demo-faq", headers=h).json()["jobs"]
    assert [(j["source"], j["status"]) for j in by_source] == [("demo-faq", "succeeded")]
    page = client.get("/api/knowledge/jobs?limit=1&offset=1", headers=h).json()
    assert page["total"] == 3 and len(page["jobs"]) == 1
    bad = client.get("/api/knowledge/jobs?status=done", headers=h)
    assert bad.status_code == 422 and "status" in bad.json()["detail"]


@pytest.mark.parametrize(
    "hostile, stored",
    [
        ("../../etc/passwd.csv", "passwd.csv"),
        ("..\\..\\windows\\system32\\evil.csv", "evil.csv"),
        ("/abs/path/x.csv", "x.csv"),
        # A right-to-left override would make the name display as something else in the console.
        ("invoice\u202egpj.csv", "invoicegpj.csv"),
    ],
)
def test_path_in_the_uploaded_file_name_is_not_used_as_a_path(client, app_settings, hostile, stored):
    res = client.post("/api/knowledge/uploads", files={"file": (hostile, GOOD_CSV)}, headers=admin(app_settings))
    assert res.status_code == 202, res.text
    job = wait_for_job(client, app_settings, res.json()["job"]["id"])
    assert job["filename"] == stored and job["source"] == stored.removesuffix(".csv")
    assert job["status"] == "succeeded"
    # Only the content-addressed store and the index were written; nothing outside the data dir.
    written = {p.name for p in app_settings.data_dir.rglob("*")}
    assert stored not in written and "etc" not in written


def _damaged_pdf() -> bytes:
    return b"%PDF-1.7\n" + random.Random(3).randbytes(3000) + b"\n%%EOF\n"


# Bad input uploaded next to a good file, as a re-upload of the seeded source: (file name, bytes, error).
BAD_INPUT = {
    "corrupt pdf": ("demo-faq.pdf", _damaged_pdf(), "demo-faq.pdf: the PDF is damaged and cannot be read"),
    "truncated pdf": ("demo-faq.pdf", b"%PDF-1.7\n1 0 obj", "demo-faq.pdf: the PDF is truncated or damaged"),
    "zero-byte file": ("demo-faq.csv", b"", "demo-faq.csv: the file is empty"),
    "pdf named .csv": (
        "demo-faq.csv", b"%PDF-1.4\n1 0 obj<<>>endobj\n", "demo-faq.csv: the file is a PDF document, not a CSV"
    ),
    "csv named .pdf": ("demo-faq.pdf", b"id,question,answer\n1,a?,b\n", "demo-faq.pdf: the file is not a PDF document"),
    "zip named .md": ("demo-faq.md", b"PK\x03\x04" + bytes(60), "demo-faq.md: the file is a ZIP archive"),
    "html named .csv": (
        "demo-faq.csv", b"<!doctype html><html><body>hi</body></html>", "demo-faq.csv: the file is an HTML page"
    ),
    "chat log missing fields": (
        "demo-faq.jsonl",
        b'{"id":"c2","messages":[{"role":"customer","text":"my order is late"},{"text":"sorry"}],"resolved":true}\n',
        "demo-faq.jsonl: no usable chats: 1 chat(s) with missing fields",
    ),
    "chat csv missing columns": (
        "demo-faq.csv", b"conversation_id,role\nc1,customer\n", "demo-faq.csv: missing column(s) text, resolved"
    ),
    "latin-1 csv": (
        "demo-faq.csv",
        "id,question,answer\n1,Où est ma commande?,Elle arrive bientôt\n".encode("latin-1"),
        "demo-faq.csv: the file is not UTF-8 text (byte 0xf9 on line 2 is not valid UTF-8); save it as UTF-8",
    ),
    "utf-16 csv": (
        "demo-faq.csv", "id,question,answer\n1,Why?,So.\n".encode("utf-16"), "demo-faq.csv: the file is UTF-16"
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_fails_its_own_job_and_loses_nothing(client, app_settings, case):
    name, data, error = BAD_INPUT[case]
    before = chunk_count(app_settings, "demo-faq")
    res = upload(client, app_settings, (name, data), ("tents.csv", TENTS_CSV))
    assert res.status_code == 202, res.text
    bad, good = res.json()["jobs"]
    assert (bad["filename"], bad["source"], bad["status"]) == (name, "demo-faq", "failed")
    assert bad["error"].startswith(error), bad["error"]
    assert wait_for_job(client, app_settings, good["id"])["status"] == "succeeded"
    assert Retriever(app_settings).search("do you sell tents").hits[0].entry_id == "tent-1"
    # The failed re-upload left the live version of the source alone.
    assert chunk_count(app_settings, "demo-faq") == before
    assert demo_still_answers(app_settings)
    demo = client.get("/api/knowledge/sources/demo-faq?limit=1", headers=admin(app_settings)).json()["source"]
    assert (demo["version"], demo["status"]) == (1, "failed") and demo["last_error"] == bad["error"]


def test_html_scripts_and_styles_are_not_ingested(client, app_settings):
    page = (
        b"<!doctype html><html><head><title>Returns</title><style>.x{color:red}</style>"
        b"<script>var trackingSecret = 'SCRIPTMARKER';</script></head><body><main><h1>Returns</h1>"
        b"<p>You can return any bike within 30 days for a full refund.</p>"
        b"<script>document.write('BODYSCRIPTMARKER')</script><noscript>NOSCRIPTMARKER</noscript></main></body></html>"
    )
    res = upload(client, app_settings, ("returns.html", page))
    job = wait_for_job(client, app_settings, res.json()["job"]["id"])
    assert job["status"] == "succeeded"
    entries = client.get("/api/knowledge/sources/returns", headers=admin(app_settings)).json()["entries"]
    text = " ".join(e["text"] + (e["title"] or "") for e in entries)
    assert "full refund" in text
    for marker in ("SCRIPTMARKER", "BODYSCRIPTMARKER", "color:red", "trackingSecret"):
        assert marker not in text
    assert not any("SCRIPTMARKER" in r.lexical_text + r.text for r in load_current(app_settings).records)

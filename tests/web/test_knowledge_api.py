"""Knowledge upload API: admin-only, validated up front, ingested by the in-process worker."""

from __future__ import annotations

import time

from sqlalchemy import func, select

from support_bot.db import session_scope
from support_bot.models import Chunk, IngestJob
from tests.web.helpers import ask, new_conversation

GOOD_CSV = b"id,question,answer,url\nkayak-1,Do you rent kayaks?,Yes. Kayaks rent for $40 a day at every Acme store.,https://acme.example/rentals\n"


def admin(settings) -> dict:
    return {"Authorization": f"Bearer {settings.admin_token}"}


def wait_for_job(client, settings, job_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/knowledge/jobs/{job_id}", headers=admin(settings)).json()["job"]
        if job["status"] in ("succeeded", "failed"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish")


def chunk_count(settings) -> int:
    with session_scope(settings) as session:
        return session.scalar(select(func.count()).select_from(Chunk))


def test_upload_is_ingested_and_answers_the_next_question(client, app_settings, fake_engine):
    res = client.post(
        "/api/knowledge/uploads",
        files={"file": ("rentals.csv", GOOD_CSV, "text/csv")},
        data={"source": "rentals"},
        headers=admin(app_settings),
    )
    assert res.status_code == 202, res.text
    job = wait_for_job(client, app_settings, res.json()["job"]["id"])
    assert job["status"] == "succeeded" and job["progress"]["done"] == job["progress"]["total"] == 1
    sources = client.get("/api/knowledge/sources", headers=admin(app_settings)).json()["sources"]
    assert {s["name"] for s in sources} == {"demo-faq", "rentals"}
    fake_engine.queue_reply("Yes, kayaks rent for $40 a day [1].")
    conv_id, headers = new_conversation(client)
    done = ask(client, conv_id, headers, "can I rent a kayak from you?")[-1][1]
    assert done["citations"][0]["entry_id"] == "kayak-1"


def test_upload_needs_the_admin_token(client, app_settings):
    before = chunk_count(app_settings)
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        res = client.post("/api/knowledge/uploads", files={"file": ("x.csv", GOOD_CSV)}, headers=headers)
        assert res.status_code == 401
    assert client.get("/api/knowledge/sources").status_code == 401
    assert chunk_count(app_settings) == before


def test_bad_uploads_are_refused_and_store_nothing(client, app_settings):
    before = chunk_count(app_settings)
    cases = [
        (b"", "empty"),
        (b"question,answer\nq,a\n", "id"),
        ("id,question,answer\n1,Où est ma commande?,Elle arrive bientôt\n".encode("latin-1"), "UTF-8"),
        (bytes(range(256)) * 64, ""),
    ]
    for data, needle in cases:
        res = client.post("/api/knowledge/uploads", files={"file": ("bad.csv", data)}, headers=admin(app_settings))
        assert 400 <= res.status_code < 500, (data[:20], res.text)
        assert needle in res.json()["detail"]
    big = b"id,question,answer\n" + b"1,q,a\n" * (app_settings.ingest.max_upload_bytes // 6 + 10)
    res = client.post("/api/knowledge/uploads", files={"file": ("big.csv", big)}, headers=admin(app_settings))
    assert res.status_code == 413
    assert chunk_count(app_settings) == before
    with session_scope(app_settings) as session:
        assert session.scalar(select(func.count()).select_from(IngestJob).where(IngestJob.status != "succeeded")) == 0


def test_path_in_the_uploaded_file_name_is_not_used_as_a_path(client, app_settings):
    res = client.post(
        "/api/knowledge/uploads",
        files={"file": ("../../etc/evil.csv", GOOD_CSV)},
        headers=admin(app_settings),
    )
    assert res.status_code == 202
    job = wait_for_job(client, app_settings, res.json()["job"]["id"])
    assert job["filename"] == "evil.csv" and job["source"] == "evil"
    assert job["status"] == "succeeded"

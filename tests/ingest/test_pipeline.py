"""The ingestion pipeline end to end on SQLite: versions, idempotency, refusals that store nothing."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from sqlalchemy import func, select

from ingest.uploads import create_job
from ingest.pipeline import ingest_path, run_job
from support_bot.core.db import session_scope
from support_bot.core.errors import InvalidInput, PayloadTooLarge
from support_bot.knowledge.index import read_current_version
from support_bot.knowledge.retriever import Retriever
from support_bot.models import Chunk, Document, IngestJob, Source

from tests.conftest import FAQ


def _chunks(settings) -> list[tuple[str, str, int]]:
    with session_scope(settings) as s:
        return [
            tuple(r) for r in s.execute(select(Chunk.id, Chunk.entry_id, Chunk.document_id).order_by(Chunk.ordinal))
        ]


def _count(settings, model) -> int:
    with session_scope(settings) as s:
        return s.scalar(select(func.count()).select_from(model))


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_ingest_end_to_end(kb):
    job = ingest_path(settings=kb, path=FAQ)
    assert job.status == "succeeded" and job.unchanged is False and job.error is None
    assert job.attempts == 1 and job.progress_done == job.progress_total == 11
    assert job.duration_s is not None and job.document_id is not None
    with session_scope(kb) as s:
        source = s.scalar(select(Source))
        doc = s.scalar(select(Document))
        assert (source.name, source.kind, source.active_version) == ("northwind_faq", "faq_csv", 1)
        assert (doc.version, doc.n_chunks, doc.filename, doc.id) == (1, 11, "northwind_faq.csv", job.document_id)
        chunk = s.scalar(select(Chunk).where(Chunk.entry_id == "ret-01"))
        # Two unit vectors: the bare question and question + answer.
        assert len(chunk.embedding) == 2 * 384 * 4 and chunk.extra["n_vectors"] == 2
        assert chunk.title == "What is your return policy?" and chunk.text.startswith(chunk.title + "\n")
    assert read_current_version(kb.index_dir) == 1
    # The upload is not kept once its job has succeeded.
    assert list(kb.uploads_dir.iterdir()) == []
    hits = Retriever(kb).search("Can I send my bike back for a refund?").hits
    assert hits[0].entry_id == "ret-01" and hits[0].source == "northwind_faq"


def test_same_file_twice_changes_nothing(kb):
    first = ingest_path(settings=kb, path=FAQ)
    before = _chunks(kb)
    second = ingest_path(settings=kb, path=FAQ)
    assert second.status == "succeeded" and second.unchanged is True
    assert second.document_id == first.document_id
    assert _chunks(kb) == before
    assert _count(kb, Document) == 1
    assert read_current_version(kb.index_dir) == 1


def test_changed_file_replaces_the_old_version(kb, tmp_path):
    ingest_path(settings=kb, path=FAQ, source_name="faq")
    old_ids = {c[0] for c in _chunks(kb)}
    retriever = Retriever(kb)
    assert retriever.search("Do you ship to other countries?").hits[0].entry_id == "ship-02"

    changed = _write(
        tmp_path,
        "faq-v2.csv",
        "id,question,answer\n"
        "ship-01,How long does shipping take?,Orders now arrive in 2 business days.\n"
        "gift-01,Do you sell gift cards?,Yes: digital gift cards from $25 to $500.\n",
    )
    job = ingest_path(settings=kb, path=changed, source_name="faq")
    assert job.status == "succeeded" and job.unchanged is False
    chunks = _chunks(kb)
    assert {c[1] for c in chunks} == {"ship-01", "gift-01"}
    assert not old_ids & {c[0] for c in chunks}
    with session_scope(kb) as s:
        assert s.scalar(select(Source.active_version)) == 2
        assert [d.version for d in s.scalars(select(Document))] == [2]
    assert read_current_version(kb.index_dir) == 2
    # The retriever made before the new version picks it up without a restart.
    result = retriever.search("Can I buy a gift card?")
    assert result.index_version == 2 and result.hits[0].entry_id == "gift-01"
    assert all(h.entry_id != "ship-02" for h in retriever.search("Do you ship to other countries?", k=10).hits)


def test_run_job_twice_gives_each_chunk_once(kb, faq_bytes):
    with session_scope(kb) as s:
        job_id = create_job(session=s, settings=kb, source_name="faq", filename="faq.csv", data=faq_bytes).id
    assert run_job(job_id, kb).status == "succeeded"
    chunks = _chunks(kb)
    # A finished job delivered again is a no-op.
    again = run_job(job_id, kb)
    assert again.status == "succeeded" and again.attempts == 1
    # A worker that died after committing but before marking the job done: the rerun adds nothing.
    with session_scope(kb) as s:
        s.get(IngestJob, job_id).status = "running"
    rerun = run_job(job_id, kb)
    assert rerun.status == "succeeded" and rerun.attempts == 2 and rerun.unchanged is False
    assert _chunks(kb) == chunks and len(chunks) == 11
    assert read_current_version(kb.index_dir) == 1


def test_rerun_after_crash_between_swap_and_publish_publishes(kb, faq_bytes):
    with session_scope(kb) as s:
        job_id = create_job(session=s, settings=kb, source_name="faq", filename="faq.csv", data=faq_bytes).id
    run_job(job_id, kb)
    # Lose the published index (as if the process died before publishing) and redeliver the job.
    for path in kb.index_dir.iterdir():
        if path.name == "CURRENT":
            path.unlink()
    with session_scope(kb) as s:
        s.get(IngestJob, job_id).status = "queued"
    assert run_job(job_id, kb).status == "succeeded"
    assert read_current_version(kb.index_dir) >= 1
    assert Retriever(kb).search("How do I reset my password?").hits[0].entry_id == "acc-01"


BAD_FILES = {
    "missing columns": ("bad.csv", b"id,question\n1,Where?\n", InvalidInput, "missing column(s) answer"),
    "latin-1": ("bad.csv", "id,question,answer\n1,Où?,Là.\n".encode("latin-1"), InvalidInput, "not UTF-8"),
    "utf-16": ("bad.csv", "id,question,answer\n1,Why?,So.\n".encode("utf-16"), InvalidInput, "UTF-16"),
    "empty": ("bad.csv", b"", InvalidInput, "empty"),
    "binary junk": ("bad.csv", random.Random(1).randbytes(4096), InvalidInput, "bad.csv:"),
    "50 MB junk": ("bad.csv", b"x" * (50 * 1024 * 1024), PayloadTooLarge, "larger than the 20.0 MiB limit"),
    "empty answer": ("bad.csv", b"id,question,answer\n1,Why?,\n", InvalidInput, "row 1 (line 2) has an empty answer"),
    "wrong type": ("faq.docx", b"PK\x03\x04", InvalidInput, "unsupported file type .docx"),
    "truncated pdf": ("faq.pdf", b"%PDF-1.7\n1 0 obj", InvalidInput, "faq.pdf: the PDF is truncated"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_files_are_refused_and_store_nothing(kb, case):
    ingest_path(settings=kb, path=FAQ, source_name="faq")
    chunks, uploads = _chunks(kb), sorted(kb.uploads_dir.iterdir())
    filename, data, error, message = BAD_FILES[case]
    with pytest.raises(error) as info:
        with session_scope(kb) as s:
            create_job(session=s, settings=kb, source_name="faq", filename=filename, data=data)
    assert message in info.value.detail
    assert _count(kb, IngestJob) == 1
    assert sorted(kb.uploads_dir.iterdir()) == uploads
    assert _chunks(kb) == chunks
    assert Retriever(kb).search("How do I reset my password?").hits[0].entry_id == "acc-01"


def test_oversized_local_file_is_refused_before_reading(kb, tmp_path):
    kb.ingest.max_upload_bytes = 1000
    path = _write(tmp_path, "big.csv", "id,question,answer\n" + "1,q,a\n" * 500)
    with pytest.raises(PayloadTooLarge):
        ingest_path(settings=kb, path=path)
    assert _count(kb, IngestJob) == 0


def test_upload_is_stored_content_addressed(kb, faq_bytes):
    with session_scope(kb) as s:
        job = create_job(session=s, settings=kb, source_name="faq", filename="../../etc/passwd.csv", data=faq_bytes)
    stored = Path(job.path)
    assert stored.parent == kb.uploads_dir and stored.name == f"{job.sha256}.csv"
    assert stored.read_bytes() == faq_bytes
    assert (job.filename, job.status, job.size_bytes) == ("passwd.csv", "queued", len(faq_bytes))


def test_failed_job_keeps_the_previous_version_live(kb, tmp_path):
    ingest_path(settings=kb, path=FAQ, source_name="faq")
    chunks = _chunks(kb)
    new = _write(tmp_path, "v2.csv", "id,question,answer\nn1,New question?,New answer.\n")
    with session_scope(kb) as s:
        job_id = create_job(session=s, settings=kb, source_name="faq", filename="v2.csv", data=new.read_bytes()).id
        path = Path(s.get(IngestJob, job_id).path)
    path.unlink()
    job = run_job(job_id, kb)
    assert job.status == "failed" and "no longer stored" in job.error and job.finished_at is not None
    assert _chunks(kb) == chunks and read_current_version(kb.index_dir) == 1
    with session_scope(kb) as s:
        assert s.scalar(select(Source.active_version)) == 1


def test_failure_inside_the_swap_leaves_nothing_half_stored(kb, tmp_path, monkeypatch):
    ingest_path(settings=kb, path=FAQ, source_name="faq")
    chunks = _chunks(kb)
    import ingest.pipeline as pipeline

    def broken_delete_older(*args, **kwargs):
        raise RuntimeError("disk on fire")

    # Fails after the new version was staged and made active, before the transaction commits.
    monkeypatch.setattr(pipeline, "_delete_older", broken_delete_older)
    new = _write(tmp_path, "v2.csv", "id,question,answer\nn1,New question?,New answer.\n")
    with pytest.raises(RuntimeError):
        ingest_path(settings=kb, path=new, source_name="faq")
    # The staged version is cleaned up with the failure: only the old version's rows remain.
    assert _chunks(kb) == chunks and _count(kb, Document) == 1
    with session_scope(kb) as s:
        job = s.scalar(select(IngestJob).where(IngestJob.filename == "v2.csv"))
        assert job.status == "failed" and "disk on fire" in job.error
        assert s.scalar(select(Source.active_version)) == 1
    assert read_current_version(kb.index_dir) == 1


def test_long_answers_are_split_and_collapse_to_one_hit(kb):
    kb.ingest.chunk_tokens = 64
    ingest_path(settings=kb, path=FAQ)
    with session_scope(kb) as s:
        parts = s.scalars(select(Chunk).where(Chunk.entry_id == "asm-01").order_by(Chunk.ordinal)).all()
        assert len(parts) > 1
        assert all(c.text.startswith("How do I assemble my new bike?\n") for c in parts)
        # Each part is embedded as its heading and its own part of the answer.
        assert [c.extra["n_vectors"] for c in parts] == [2] * len(parts)
    hits = Retriever(kb).search("How do I fit the pedals and the front wheel?", k=5).hits
    assert hits[0].entry_id == "asm-01"
    assert len({h.entry_id for h in hits}) == len(hits)
    assert hits[0].answer.startswith("Your bike arrives 90% assembled.")


@pytest.mark.postgres
def test_versions_and_idempotency_on_postgres(postgres_url, settings, embedder, tmp_path):
    from support_bot.core.db import migrate

    pg = settings.model_copy(update={"database_url": postgres_url})
    migrate(pg)
    first = ingest_path(settings=pg, path=FAQ, source_name="faq")
    assert first.status == "succeeded" and len(_chunks(pg)) == 11
    assert ingest_path(settings=pg, path=FAQ, source_name="faq").unchanged is True
    changed = _write(tmp_path, "v2.csv", "id,question,answer\ng1,Do you sell gift cards?,\"Yes, from $25.\"\n")
    with session_scope(pg) as s:
        job_id = create_job(session=s, settings=pg, source_name="faq", filename="v2.csv", data=changed.read_bytes()).id
    assert run_job(job_id, pg).status == "succeeded"
    with session_scope(pg) as s:
        s.get(IngestJob, job_id).status = "running"
    assert run_job(job_id, pg).status == "succeeded"
    assert [c[1] for c in _chunks(pg)] == ["g1"]
    with session_scope(pg) as s:
        assert s.scalar(select(Source.active_version)) == 2 and _count(pg, Document) == 1
    assert Retriever(pg).search("Can I buy a gift card?").hits[0].entry_id == "g1"

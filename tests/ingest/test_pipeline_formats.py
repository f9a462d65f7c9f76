"""The pipeline on every format: chat logs redacted before storage, FAQs kept verbatim, bad files harm nothing."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from sqlalchemy import select

from ingest.uploads import create_job
from ingest.pipeline import ingest_path, run_job
from support_bot.core.db import session_scope
from support_bot.core.errors import InvalidInput
from support_bot.knowledge.reader import load_current
from support_bot.knowledge.index import read_current_version
from support_bot.knowledge.retriever import Retriever
from support_bot.models import Chunk, IngestJob, Source

from tests.conftest import FAQ

FIXTURES = FAQ.parent


def _source_chunks(settings, name: str) -> list[Chunk]:
    with session_scope(settings) as s:
        rows = s.scalars(select(Chunk).join(Source).where(Source.name == name).order_by(Chunk.ordinal)).all()
        s.expunge_all()
        return rows


def test_chat_log_is_redacted_before_it_is_embedded_or_stored(kb):
    job = ingest_path(settings=kb, path=FIXTURES / "northwind_chats.jsonl", source_name="chats")
    assert job.status == "succeeded"
    with session_scope(kb) as s:
        assert s.scalar(select(Source.kind).where(Source.name == "chats")) == "chat_log"
    chunks = _source_chunks(kb, "chats")
    assert [c.entry_id for c in chunks] == ["c-1001", "c-1003"]
    stored = json.dumps([[c.title, c.text, c.extra] for c in chunks])
    for secret in ("anna.berg@example.com", "415-555-0199", "4111 1111 1111 1111"):
        assert secret not in stored
    assert "[EMAIL]" in chunks[0].text and "[PHONE]" in chunks[0].text and "[CARD]" in chunks[1].text
    # The published index is built from the stored chunks, so it holds no personal data either.
    index_text = "".join(p.read_text(errors="ignore") for p in (kb.index_dir).rglob("*.json"))
    assert "anna.berg@example.com" not in index_text
    hit = Retriever(kb).search("my display shows E21 and the motor won't start").hits[0]
    assert hit.entry_id == "c-1001" and hit.source == "chats"
    assert "speed sensor" in hit.text


def test_faq_phone_numbers_are_not_redacted(kb):
    ingest_path(settings=kb, path=FIXTURES / "northwind_faq.json", source_name="gifts")
    [phone] = [c for c in _source_chunks(kb, "gifts") if c.entry_id == "301"]
    assert "+1 415 555 0134" in phone.text and "[PHONE]" not in phone.text


def test_documents_of_each_format_are_searchable(kb):
    for name in ("northwind_guide.md", "northwind_returns.html", "northwind_care.txt", "northwind_faq.jsonl"):
        job = ingest_path(settings=kb, path=FIXTURES / name)
        assert job.status == "succeeded", job.error
    retriever = Retriever(kb)
    hit = retriever.search("how often should I oil my chain").hits[0]
    assert (hit.source, hit.title) == ("northwind_guide", "Maintenance > Chain care")
    hit = retriever.search("how long do warranty repairs take").hits[0]
    assert hit.title == "Returns and repairs > Repairs under warranty > Repair times"
    assert retriever.search("can I rent a bike for the weekend").hits[0].entry_id == "rent-01"
    with session_scope(kb) as s:
        kinds = dict(s.execute(select(Source.name, Source.kind)).all())
    assert kinds == {
        "northwind_guide": "markdown",
        "northwind_returns": "html",
        "northwind_care": "text",
        "northwind_faq": "faq_jsonl",
    }


def test_bad_uploads_leave_indexed_sources_intact_and_good_ones_still_ingest(kb, tmp_path):
    ingest_path(settings=kb, path=FAQ, source_name="faq")
    ingest_path(settings=kb, path=FIXTURES / "northwind_guide.md", source_name="guide")
    before = {name: [c.id for c in _source_chunks(kb, name)] for name in ("faq", "guide")}
    version = read_current_version(kb.index_dir)

    # Refused at upload: a photo saved as Markdown, meant to replace an existing source.
    photo = b"\xff\xd8\xff\xe0" + random.Random(5).randbytes(4096)
    with pytest.raises(InvalidInput) as info:
        with session_scope(kb) as s:
            create_job(session=s, settings=kb, source_name="guide", filename="guide.md", data=photo)
    assert info.value.detail == "guide.md: the file is a JPEG image, not a Markdown text file"

    # Fails while running: its stored bytes no longer match what was uploaded.
    with session_scope(kb) as s:
        bad = create_job(
            session=s, settings=kb, source_name="faq", filename="v2.html", data=b"<html><body><p>New</p></body></html>"
        )
        bad_id, bad_path = bad.id, Path(bad.path)
        good_id = create_job(
            session=s, settings=kb, source_name="care", filename="care.txt",
            data=(FIXTURES / "northwind_care.txt").read_bytes(),
        ).id
    bad_path.write_bytes(b"\x89PNG\r\n\x1a\n")
    failed = run_job(bad_id, kb)
    assert failed.status == "failed" and failed.error.startswith("v2.html: ")
    assert run_job(good_id, kb).status == "succeeded"

    after = {name: [c.id for c in _source_chunks(kb, name)] for name in ("faq", "guide")}
    assert after == before
    assert read_current_version(kb.index_dir) == version + 1
    assert set(load_current(kb).sources) == {"faq", "guide", "care"}
    retriever = Retriever(kb)
    assert retriever.search("How do I reset my password?").hits[0].entry_id == "acc-01"
    assert retriever.search("tyre pressure for road bikes").hits[0].source == "guide"
    with session_scope(kb) as s:
        assert s.scalar(select(IngestJob.status).where(IngestJob.id == bad_id)) == "failed"

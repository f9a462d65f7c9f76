"""Knowledge-base administration: list, show, delete and reindex, as functions and as `support-bot kb`."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from ingest.pipeline import ingest_path
from support_bot.cli import main
from support_bot.core.db import session_scope
from support_bot.core.errors import NotFound
from support_bot.knowledge.admin import delete_source, list_sources, reindex, show_source
from support_bot.knowledge.reader import load_current
from support_bot.knowledge.index import read_current_version
from support_bot.knowledge.retriever import Retriever
from support_bot.models import Chunk, Document, Source
from tests.conftest import FAQ, FIXTURES


@pytest.fixture
def two_sources(kb):
    ingest_path(settings=kb, path=FAQ, source_name="faq")
    ingest_path(settings=kb, path=FIXTURES / "northwind_guide.md", source_name="guide")
    return kb


def test_list_sources_gives_version_kind_and_counts(two_sources):
    ingest_path(settings=two_sources, path=FIXTURES / "northwind_faq.json", source_name="faq")
    rows = {r.name: r for r in list_sources(settings=two_sources)}
    assert list(rows) == ["faq", "guide"]
    faq, guide = rows["faq"], rows["guide"]
    assert (faq.kind, faq.version, faq.entries, faq.chunks, faq.filename) == ("faq_json", 2, 3, 3, "northwind_faq.json")
    assert (guide.kind, guide.version, guide.entries) == ("markdown", 1, 5)
    assert guide.updated_at is not None


def test_show_source_lists_the_live_entries_in_order(two_sources):
    info, entries = show_source(settings=two_sources, name="guide")
    assert info.name == "guide" and info.chunks == len(entries) == 5
    assert [e.title for e in entries][:2] == ["Northwind owner's guide", "Maintenance > Chain care"]
    assert entries[1].text.startswith("Maintenance > Chain care\nClean and lube the chain")
    with pytest.raises(NotFound, match="no knowledge source named 'nope'"):
        show_source(settings=two_sources, name="nope")


def test_delete_source_removes_its_chunks_and_republishes(two_sources):
    version = read_current_version(two_sources.index_dir)
    retriever = Retriever(two_sources)
    assert retriever.search("how often should I oil my chain").hits[0].source == "guide"
    removed = delete_source(settings=two_sources, name="guide")
    assert removed == 5
    with session_scope(two_sources) as s:
        assert s.scalars(select(Source.name)).all() == ["faq"]
        assert s.scalar(select(func.count()).select_from(Chunk).where(Chunk.entry_id.like("maintenance%"))) == 0
        assert s.scalar(select(func.count()).select_from(Document)) == 1
    assert read_current_version(two_sources.index_dir) == version + 1
    assert set(load_current(two_sources).sources) == {"faq"}
    # A running retriever picks up the new version without a restart.
    assert all(h.source == "faq" for h in retriever.search("how often should I oil my chain").hits)
    with pytest.raises(NotFound):
        delete_source(settings=two_sources, name="guide")


def test_deleting_the_last_source_leaves_an_empty_index(kb):
    ingest_path(settings=kb, path=FAQ, source_name="faq")
    delete_source(settings=kb, name="faq")
    assert len(load_current(kb)) == 0
    assert Retriever(kb).search("What is your return policy?").hits == []


def test_reindex_rebuilds_the_same_index_as_a_new_version(two_sources):
    before = load_current(two_sources)
    version = reindex(settings=two_sources)
    assert version == read_current_version(two_sources.index_dir) == 3
    after = load_current(two_sources)
    assert [r.chunk_id for r in after.records] == [r.chunk_id for r in before.records]
    assert Retriever(two_sources).search("What is your return policy?").hits[0].entry_id == "ret-01"


def test_kb_commands(two_sources, capsys):
    assert main(["kb", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["NAME", "KIND", "VERSION", "ENTRIES", "CHUNKS", "UPDATED"]
    assert out[1].split()[:5] == ["faq", "faq_csv", "1", "11", "11"]
    assert out[2].split()[:5] == ["guide", "markdown", "1", "5", "5"]

    assert main(["kb", "list", "--json"]) == 0
    assert [r["name"] for r in json.loads(capsys.readouterr().out)] == ["faq", "guide"]

    assert main(["kb", "show", "guide"]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith("guide (markdown, version 1, northwind_guide.md): 5 entries, 5 chunks")
    assert "[maintenance-tyre-pressure] Maintenance > Tyre pressure" in shown

    assert main(["kb", "show", "missing"]) == 2
    assert "no knowledge source named 'missing'" in capsys.readouterr().err

    assert main(["kb", "delete", "guide"]) == 0
    assert "deleted source 'guide' (5 chunks)" in capsys.readouterr().err
    assert main(["kb", "reindex"]) == 0
    assert "published index version 4" in capsys.readouterr().err
    assert set(load_current(two_sources).sources) == {"faq"}

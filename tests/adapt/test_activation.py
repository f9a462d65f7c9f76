"""Tuned embedders as versioned artifacts: the gate, activation into a new index version, search following it, rollback."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import select

from ingest.pipeline import ingest_path
from support_bot.adapt import activation, artifacts, service
from support_bot.core.db import session_scope
from support_bot.core.errors import Conflict, InvalidInput, NotFound
from support_bot.knowledge.embedder import (
    get_embedder,
    query_embedder,
    serving_artifact,
)
from support_bot.knowledge.index import read_current_version
from support_bot.knowledge.retriever import get_retriever
from support_bot.models import Chunk
from tests.adapt.conftest import DEMO_FAQ, NORTHWIND_FAQ, install


def stored_vectors(settings) -> dict[str, np.ndarray]:
    with session_scope(settings) as session:
        rows = session.execute(select(Chunk.id, Chunk.embedding, Chunk.extra)).all()
    return {cid: np.frombuffer(blob, dtype=np.float32).reshape(int(extra["n_vectors"]), -1) for cid, blob, extra in rows}


def expected_vectors(settings, embedder) -> dict[str, np.ndarray]:
    with session_scope(settings) as session:
        rows = session.execute(select(Chunk.id, Chunk.title, Chunk.text, Chunk.extra)).all()
    return {cid: embedder.encode(activation.chunk_views(t, x, int(e["n_vectors"]))) for cid, t, x, e in rows}


def assert_vectors(settings, embedder) -> None:
    stored, expected = stored_vectors(settings), expected_vectors(settings, embedder)
    assert stored.keys() == expected.keys()
    for cid in stored:
        np.testing.assert_allclose(stored[cid], expected[cid], atol=1e-5)


def test_the_views_ingest_embedded_are_recovered_from_stored_chunks(db, embedder):
    # Long answers split into parts under their question (small chunks here), and single-text chunks.
    settings = db.model_copy(update={"ingest": db.ingest.model_copy(update={"chunk_tokens": 24, "chunk_overlap": 4})})
    assert ingest_path(settings=settings, path=NORTHWIND_FAQ).status == "succeeded"
    with session_scope(settings) as session:
        assert session.scalar(select(Chunk).where(Chunk.extra["parts"].as_integer() > 1).limit(1)) is not None
    assert activation.chunk_views(None, "just text", 1) == ["just text"]
    # Re-embedding with the model ingest used gives back the stored vectors: nothing is lost in a switch.
    assert_vectors(settings, get_embedder(settings, None))


def test_activation_reembeds_into_a_new_index_version_that_search_follows(small_kb, tuned_model, monkeypatch):
    settings = small_kb
    monkeypatch.setattr(activation, "_BATCH", 4)  # several batches, as a real knowledge base has
    retriever = get_retriever(settings)
    assert retriever.search("Do you ship abroad?").index_version == 1
    assert retriever.embedder.artifact is None
    artifact = install(settings, tuned_model)
    assert artifact == "embedder-0001"

    result = service.activate(settings, artifact)

    assert result["index_version"] == 2 == read_current_version(settings.index_dir)
    tuned = get_embedder(settings, artifact)
    assert_vectors(settings, tuned)
    # The same retriever object, no restart: the new version is searched with the tuned model.
    found = retriever.search("Do you ship abroad?")
    assert found.index_version == 2 and retriever.embedder is tuned
    assert found.hits[0].title == "Do you ship internationally?"
    # Uploads from now on are embedded with it too.
    assert get_embedder(settings) is tuned
    assert ingest_path(settings=settings, path=DEMO_FAQ).status == "succeeded"
    assert_vectors(settings, tuned)
    listing = service.list_adapters(settings)
    assert listing["live"] == artifact and listing["can_roll_back"] and listing["rollback_to"] is None
    assert [a["live"] for a in listing["artifacts"]] == [True]
    assert listing["artifacts"][0]["activated_at"]
    with pytest.raises(Conflict, match="already live"):
        service.activate(settings, artifact)


def test_rollback_returns_to_the_previous_embedder_in_a_new_index_version(small_kb, tuned_model):
    settings = small_kb
    first = install(settings, tuned_model)
    second = install(settings, tuned_model)
    service.activate(settings, first)
    service.activate(settings, second)
    assert read_current_version(settings.index_dir) == 3

    back = service.rollback(settings)
    assert (back["artifact"], back["rolled_back_from"], back["index_version"]) == (first, second, 4)
    assert get_retriever(settings).embedder is get_embedder(settings, first)
    back = service.rollback(settings)
    assert back["artifact"] is None and read_current_version(settings.index_dir) == 5
    assert_vectors(settings, get_embedder(settings, None))
    assert get_retriever(settings).embedder.artifact is None
    with pytest.raises(Conflict, match="nothing to roll back"):
        service.rollback(settings)


def test_the_gate_refuses_an_artifact_worse_than_the_live_one_and_changes_nothing(faq_kb, broken_model):
    worse = install(faq_kb, broken_model)
    before = stored_vectors(faq_kb)

    with pytest.raises(service.GateRefused) as refused:
        service.activate(faq_kb, worse)

    evaluation = refused.value.evaluation
    assert evaluation["live_artifact"] is None and not evaluation["verdict"]["passed"]
    worse_in = {w["metric"] for w in evaluation["verdict"]["worse"]}
    assert worse_in and all(evaluation["candidate"][m] < evaluation["live"][m] for m in worse_in)
    assert all(m in refused.value.detail for m in worse_in)
    # Nothing changed: same index version, same vectors, same model for uploads; the figures are kept.
    assert read_current_version(faq_kb.index_dir) == 1
    assert artifacts.active(artifacts.read_state(faq_kb)) is None and get_embedder(faq_kb).artifact is None
    after = stored_vectors(faq_kb)
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert artifacts.load(faq_kb, worse)["evaluation"]["verdict"]["passed"] is False


def test_an_activation_that_fails_before_its_commit_leaves_the_previous_model(small_kb, tuned_model, monkeypatch):
    settings = small_kb
    artifact = install(settings, tuned_model)

    def broken(_index_dir):
        raise OSError("disk full")

    monkeypatch.setattr(activation, "next_index_version", broken)
    with pytest.raises(OSError):
        service.activate(settings, artifact)
    state = artifacts.read_state(settings)
    assert state.get("ingest") is None and not state.get("serving") and artifacts.active(state) is None
    assert read_current_version(settings.index_dir) == 1
    assert_vectors(settings, get_embedder(settings, None))


def test_each_index_version_is_searched_with_the_model_its_vectors_came_from(settings):
    state = {"serving": [[3, "embedder-0001"], [6, None], [8, "embedder-0002"]]}
    assert [serving_artifact(state, v) for v in (1, 3, 5, 6, 7, 8, 9)] == [
        None, "embedder-0001", "embedder-0001", None, None, "embedder-0002", "embedder-0002"
    ]
    assert query_embedder(settings, 1) is get_embedder(settings, None)


def test_artifact_ids_are_numbered_and_checked(settings):
    first, _ = artifacts.create(settings, "embedder", {"status": "ready"})
    second, _ = artifacts.create(settings, "embedder", {"status": "ready"})
    assert (first, second) == ("embedder-0001", "embedder-0002")
    assert [r["id"] for r in artifacts.list_records(settings, "embedder")] == [second, first]
    for bad in ("../etc", "embedder-1", "lora-0001", ""):
        with pytest.raises(InvalidInput):
            artifacts.load(settings, bad)
    with pytest.raises(NotFound):
        artifacts.load(settings, "embedder-0042")


def test_a_switch_waits_for_running_uploads_and_embeds_what_arrived_meanwhile(small_kb, tuned_model):
    import threading
    import time

    from support_bot.models import IngestJob

    artifact = install(small_kb, tuned_model)
    with session_scope(small_kb) as session:
        # An upload already embedding with the previous model when the switch starts.
        session.add(IngestJob(id="running-upload", source_name="x", filename="x.csv", path="", sha256="0" * 64,
                              status="running"))
    phases: list[str] = []
    done: dict = {}
    worker = threading.Thread(
        target=lambda: done.update(activation.switch(small_kb, artifact, history=[None, artifact],
                                                     progress=lambda phase, *_: phases.append(phase)))
    )
    worker.start()
    deadline = time.monotonic() + 600
    while "waiting for running uploads" not in phases and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "waiting for running uploads" in phases and worker.is_alive()
    # New uploads already use the new model, and go live while the switch waits.
    assert get_embedder(small_kb).artifact == artifact
    assert ingest_path(settings=small_kb, path=DEMO_FAQ).status == "succeeded"
    with session_scope(small_kb) as session:
        session.get(IngestJob, "running-upload").status = "failed"
    worker.join(timeout=600)
    assert done["index_version"] == read_current_version(small_kb.index_dir) == 3
    # Every chunk, those stored while it waited included, holds the new model's vectors.
    assert_vectors(small_kb, get_embedder(small_kb, artifact))
    assert get_retriever(small_kb).embedder.artifact == artifact

"""Index store: versions, atomic CURRENT swaps, pruning, empty knowledge base, hot swap in readers."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from support_bot.db import session_scope
from support_bot.errors import ConfigurationError
from support_bot.knowledge.index import (
    KEEP_VERSIONS,
    ChunkRecord,
    IndexReader,
    lexical_tokens,
    load_current,
    publish_index,
    read_current_version,
    write_version,
)


def _records(n: int, prefix: str = "r") -> list[ChunkRecord]:
    return [
        ChunkRecord(f"{prefix}{i}", "src", f"e{i}", f"title {i}", f"text {i} word{i}", None, None, f"text word{i}")
        for i in range(n)
    ]


def _vectors(n: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_lexical_tokens_drop_stopwords_and_match_word_forms():
    assert lexical_tokens("How do I return my Bikes?") == ["return", "bike"]
    assert lexical_tokens("shipping shipped ships") == lexical_tokens("ship ship ship")
    assert lexical_tokens("Queries and policies") == ["query", "policy"]
    assert lexical_tokens("I can't log in") == ["can't", "log"]


def test_empty_knowledge_base_publishes_an_empty_version(kb):
    with session_scope(kb) as s:
        assert publish_index(session=s, settings=kb) == 1
    version = load_current(kb)
    assert version.version == 1 and len(version) == 0
    assert version.lexical_scores("anything").size == 0
    assert version.dense_search(np.ones(384, dtype=np.float32), 10) == {}


def test_nothing_published_reads_as_empty(tmp_path):
    reader = IndexReader(tmp_path / "index")
    assert reader.current().version == 0 and len(reader.current()) == 0


def test_write_version_then_search_maps_vectors_to_rows(tmp_path):
    records = _records(3)
    vectors = _vectors(5)
    number = write_version(tmp_path, records=records, vectors=vectors, vec_counts=[2, 1, 2], embedding_model="m")
    assert number == 1 and read_current_version(tmp_path) == 1
    version = IndexReader(tmp_path).current()
    best = version.dense_search(vectors[4], 3)
    assert next(iter(best)) == 2 and best[2] == pytest.approx(1.0, abs=1e-5)
    assert set(best) == {0, 1, 2}
    exact = version.dense_scores(vectors[4], [0, 1])
    assert exact[0] == pytest.approx(float(max(vectors[0] @ vectors[4], vectors[1] @ vectors[4])), abs=1e-5)
    lex = version.lexical_scores("word1")
    assert lex.argmax() == 1 and lex[0] == 0


def test_failed_build_leaves_current_alone(tmp_path):
    write_version(tmp_path, records=_records(2), vectors=_vectors(2), vec_counts=[1, 1], embedding_model="m")
    with pytest.raises(ValueError):
        write_version(tmp_path, records=_records(2), vectors=_vectors(3), vec_counts=[1, 1], embedding_model="m")
    assert read_current_version(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["CURRENT", "v1"]


def test_old_versions_are_pruned(tmp_path):
    for i in range(KEEP_VERSIONS + 3):
        write_version(tmp_path, records=_records(1), vectors=_vectors(1, seed=i), vec_counts=[1], embedding_model="m")
    kept = sorted(int(p.name[1:]) for p in tmp_path.glob("v*"))
    assert kept == list(range(4, KEEP_VERSIONS + 4)) and read_current_version(tmp_path) == KEEP_VERSIONS + 3


def test_reader_swaps_to_a_new_version_and_never_sees_a_partial_one(tmp_path):
    write_version(tmp_path, records=_records(1), vectors=_vectors(1), vec_counts=[1], embedding_model="m")
    reader = IndexReader(tmp_path)
    assert reader.current().version == 1
    seen: list[int] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def read_loop():
        while not stop.is_set():
            try:
                v = reader.current()
                # Every version handed out is complete: its row count matches its number.
                assert len(v) == v.version
                v.lexical_scores("text")
                seen.append(v.version)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
                return

    thread = threading.Thread(target=read_loop)
    thread.start()
    try:
        for n in range(2, 7):
            write_version(tmp_path, records=_records(n), vectors=_vectors(n), vec_counts=[1] * n, embedding_model="m")
    finally:
        stop.set()
        thread.join()
    assert not errors
    assert seen == sorted(seen)
    assert reader.current().version == 6


def test_corrupt_pointer_keeps_serving_the_loaded_version(tmp_path):
    write_version(tmp_path, records=_records(1), vectors=_vectors(1), vec_counts=[1], embedding_model="m")
    reader = IndexReader(tmp_path)
    assert reader.current().version == 1
    (tmp_path / "CURRENT").write_text("garbage")
    assert reader.current().version == 1
    with pytest.raises(ConfigurationError, match="corrupt"):
        read_current_version(tmp_path)


def test_wrong_query_dimension_is_a_clear_error(tmp_path):
    write_version(tmp_path, records=_records(1), vectors=_vectors(1), vec_counts=[1], embedding_model="m8")
    version = IndexReader(tmp_path).current()
    with pytest.raises(ConfigurationError, match="re-ingest"):
        version.dense_search(np.ones(384, dtype=np.float32), 5)

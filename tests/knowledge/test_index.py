"""Index store: versions, atomic CURRENT swaps, pruning, empty knowledge base, hot swap in readers."""

from __future__ import annotations

import json
import logging
import threading
import time

import numpy as np
import pytest

from support_bot.core.config import IndexSettings
from support_bot.core.db import session_scope
from support_bot.core.errors import ConfigurationError
from support_bot.knowledge.index import KEEP_VERSIONS, ChunkRecord, build_approximate, read_current_version, write_version
from support_bot.knowledge.lexical import lexical_tokens
from support_bot.knowledge.publish import publish_index
from support_bot.knowledge.reader import IndexReader, load_current, load_version


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


def test_row_vectors_give_each_rows_views_in_order(tmp_path):
    vectors = _vectors(5)
    write_version(tmp_path, records=_records(3), vectors=vectors, vec_counts=[2, 1, 2], embedding_model="m")
    version = IndexReader(tmp_path).current()
    got = version.row_vectors([2, 0, 1])
    assert [len(v) for v in got] == [2, 2, 1]
    np.testing.assert_allclose(got[0], vectors[3:5], atol=1e-6)
    np.testing.assert_allclose(got[1], vectors[0:2], atol=1e-6)
    np.testing.assert_allclose(got[2], vectors[2:3], atol=1e-6)
    assert version.row_vectors([]) == []


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


def test_readers_keep_answering_from_the_loaded_version_while_one_loads_the_next(tmp_path, monkeypatch):
    import support_bot.knowledge.reader as reader_module

    write_version(tmp_path, records=_records(1), vectors=_vectors(1), vec_counts=[1], embedding_model="m")
    reader = IndexReader(tmp_path)
    assert reader.current().version == 1
    write_version(tmp_path, records=_records(2), vectors=_vectors(2), vec_counts=[1, 1], embedding_model="m")
    loading, release = threading.Event(), threading.Event()
    real_load = reader_module.load_version

    def slow_load(*args, **kwargs):
        loading.set()
        release.wait(30)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(reader_module, "load_version", slow_load)
    got: list[int] = []
    loader = threading.Thread(target=lambda: got.append(reader.current().version))
    loader.start()
    assert loading.wait(30)
    # Not queued behind the load: the version already loaded answers at once.
    assert reader.current().version == 1
    release.set()
    loader.join()
    assert got == [2] and reader.current().version == 2


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


def _clustered(n: int, dim: int = 64, clusters: int = 30, seed: int = 0) -> np.ndarray:
    """Unit vectors around fixed topic directions (the same for every seed: queries and texts share topics)."""
    centers = np.random.default_rng(12345).normal(size=(clusters, dim)).astype(np.float32)
    rng = np.random.default_rng(seed)
    v = centers[rng.integers(0, clusters, n)] + rng.normal(scale=0.35, size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _write(tmp_path, vectors: np.ndarray, cfg: IndexSettings | None = None, prefix: str = "r") -> int:
    n = len(vectors)
    return write_version(
        tmp_path, records=_records(n, prefix), vectors=vectors, vec_counts=[1] * n, embedding_model="m", index=cfg
    )


def _inline(kind: str = "hnsw", above: int = 100, **extra) -> IndexSettings:
    return IndexSettings(approximate_above=above, approximate_kind=kind, approximate_in_background=False, **extra)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_exact_at_or_below_the_threshold_approximate_above_it(tmp_path, kind):
    assert _write(tmp_path / "small", _clustered(100), _inline(kind)) == 1
    assert sorted(p.name for p in (tmp_path / "small").glob("v*")) == ["v1"]
    small = IndexReader(tmp_path / "small").current()
    assert small.dense_kind == "exact" and small.dense_params == {}

    assert _write(tmp_path / "big", _clustered(400), _inline(kind)) == 1
    assert read_current_version(tmp_path / "big") == 2
    exact, approx = load_version(tmp_path / "big" / "v1"), IndexReader(tmp_path / "big").current()
    assert exact.dense_kind == "exact" and approx.dense_kind == kind
    assert approx.dense_params["from_version"] == 1 and approx.content_id == exact.content_id
    assert approx.dense.ntotal == exact.dense.ntotal == 400
    assert [r.chunk_id for r in approx.records] == [r.chunk_id for r in exact.records]
    # The approximate version shares the exact one's chunk and lexical files instead of copying them.
    assert (tmp_path / "big/v2/chunks.json").stat().st_ino == (tmp_path / "big/v1/chunks.json").stat().st_ino


def test_without_index_settings_every_size_stays_exact(tmp_path):
    _write(tmp_path, _clustered(400))
    assert read_current_version(tmp_path) == 1 and IndexReader(tmp_path).current().dense_kind == "exact"


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_recall_at_10_against_exact_search(tmp_path, kind):
    vectors = _clustered(4000, seed=1)
    # Default search parameters: only the threshold is lowered, so this checks the shipped defaults.
    _write(tmp_path, vectors, _inline(kind, above=1000))
    version = IndexReader(tmp_path).current()
    assert version.dense_kind == kind
    queries = _clustered(60, seed=2)
    overlap = []
    for q in queries:
        exact = set(np.argsort(-(vectors @ q), kind="stable")[:10].tolist())
        got = list(version.dense_search(q, 10))[:10]
        overlap.append(len(exact & set(got)) / 10)
    assert np.mean(overlap) >= 0.95


def test_approximate_index_row_vectors_and_scores_match_the_exact_ones(tmp_path):
    vectors = _vectors(300, dim=16)
    write_version(
        tmp_path, records=_records(100), vectors=vectors, vec_counts=[3] * 100, embedding_model="m", index=_inline()
    )
    for kind in ("hnsw", "ivf"):
        path = tmp_path / kind
        write_version(
            path, records=_records(100), vectors=vectors, vec_counts=[3] * 100, embedding_model="m", index=_inline(kind)
        )
        version = IndexReader(path).current()
        assert version.dense_kind == kind
        got = version.row_vectors([5, 0])
        assert np.allclose(got[0], vectors[15:18]) and np.allclose(got[1], vectors[0:3])
        scores = version.dense_scores(vectors[16], [5, 7])
        assert scores[5] == pytest.approx(1.0, abs=1e-5)
        assert scores[7] == pytest.approx(float((vectors[21:24] @ vectors[16]).max()), abs=1e-5)
        # Rows are chunk rows, not vector positions, whichever index answers.
        assert next(iter(version.dense_search(vectors[16], 5))) == 5


def test_search_parameters_come_from_settings_at_load(tmp_path):
    _write(tmp_path / "h", _clustered(400), _inline("hnsw", hnsw_ef_search=20))
    _write(tmp_path / "i", _clustered(400), _inline("ivf", ivf_nprobe=2))
    import faiss

    def inner(reader):
        return faiss.downcast_index(reader.current().dense.index)

    assert inner(IndexReader(tmp_path / "h")).hnsw.efSearch == 20
    assert inner(IndexReader(tmp_path / "h", settings=IndexSettings(hnsw_ef_search=150))).hnsw.efSearch == 150
    assert inner(IndexReader(tmp_path / "i")).nprobe == 2
    assert inner(IndexReader(tmp_path / "i", settings=IndexSettings(ivf_nprobe=5))).nprobe == 5


def _wait_for(predicate, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_background_build_goes_live_in_a_running_reader(tmp_path):
    vectors = _clustered(600)
    reader = IndexReader(tmp_path)
    cfg = IndexSettings(approximate_above=500, ivf_nprobe=4)
    assert _write(tmp_path, vectors, cfg) == 1
    # The exact version is live as soon as write_version returns, while the build runs elsewhere.
    first = reader.current()
    assert first.version == 1 and first.dense_kind == "exact"
    _wait_for(lambda: reader.current().version == 2)
    live = reader.current()
    assert live.dense_kind == "ivf" and live.dense_params["nprobe"] == 4
    # Same content: the reader kept the records and lexical index it had and only loaded the new dense index.
    assert live.records is first.records and live.lexical is first.lexical
    q = vectors[7]
    assert next(iter(live.dense_search(q, 5))) == next(iter(first.dense_search(q, 5))) == 7


def test_a_build_for_a_superseded_version_publishes_nothing(tmp_path):
    cfg = IndexSettings(approximate_above=100)
    write_version(tmp_path, records=_records(200), vectors=_clustered(200), vec_counts=[1] * 200, embedding_model="m")
    write_version(tmp_path, records=_records(1), vectors=_clustered(1), vec_counts=[1], embedding_model="m")
    assert build_approximate(tmp_path, 1, cfg) is None
    assert read_current_version(tmp_path) == 2 and sorted(p.name for p in tmp_path.glob("v*")) == ["v1", "v2"]
    # A version that is itself approximate is not rebuilt.
    _write(tmp_path, _clustered(200), _inline(above=100))
    assert read_current_version(tmp_path) == 4 and build_approximate(tmp_path, 4, cfg) is None


def test_readers_mid_swap_only_see_whole_versions(tmp_path, caplog):
    _write(tmp_path, _clustered(10), prefix="s1-")
    shared = IndexReader(tmp_path)
    errors: list[BaseException] = []
    seen: list[list[int]] = [[], []]
    stop = threading.Event()

    def read_loop(mine: list[int], fresh: bool):
        while not stop.is_set():
            try:
                # A long-lived reader swapping versions, and a new process starting mid-swap.
                v = IndexReader(tmp_path).current() if fresh else shared.current()
                # Whole: every chunk row has its vectors in the dense index, and the lexical index covers every row.
                assert v.dense.ntotal == v.n_vectors == len(v)
                assert v.lexical_scores("text").size == len(v)
                assert len({r.chunk_id.split("-")[0] for r in v.records}) == 1
                v.dense_search(np.ones(64, dtype=np.float32) / 8, 5)
                mine.append(v.version)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
                return

    threads = [threading.Thread(target=read_loop, args=(mine, i == 1)) for i, mine in enumerate(seen)]
    for t in threads:
        t.start()
    try:
        for i, n in enumerate((300, 20, 500, 400), start=2):
            _write(tmp_path, _clustered(n, seed=i), _inline(("hnsw", "ivf")[i % 2], above=250), prefix=f"s{i}-")
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors
    # No reader ever found a version it could not load (it would have kept serving the old one and logged it).
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert seen[0] == sorted(seen[0]) and seen[0] and seen[1]
    assert shared.current().version == 8 and shared.current().dense_kind == "ivf"


def _write_format_1(path, records, vectors):
    """A version directory exactly as the first index format laid it out: chunks inside meta.json."""
    import bm25s
    import faiss

    path.mkdir(parents=True)
    dense = faiss.IndexIDMap(faiss.IndexFlatIP(vectors.shape[1]))
    dense.add_with_ids(vectors, np.arange(len(vectors), dtype=np.int64))
    faiss.write_index(dense, str(path / "dense.faiss"))
    lexical = bm25s.BM25()
    lexical.index([lexical_tokens(r.lexical_text) for r in records], show_progress=False)
    lexical.save(str(path / "lexical"), show_progress=False)
    meta = {
        "format": 1,
        "version": int(path.name[1:]),
        "created_at": "2025-01-01T00:00:00+00:00",
        "embedding_model": "m",
        "dim": int(vectors.shape[1]),
        "n_chunks": len(records),
        "n_vectors": len(vectors),
        "sources": {"src": {"document_id": 1, "version": 1}},
        "vec_start": list(range(len(records) + 1)),
        "chunks": [
            [r.chunk_id, r.source, r.entry_id, r.title, r.text, r.answer, r.url, r.lexical_text] for r in records
        ],
    }
    (path / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    (path.parent / "CURRENT").write_text(f"{path.name}\n", encoding="utf-8")


def test_format_1_versions_load_and_can_be_made_approximate(tmp_path):
    vectors = _clustered(300)
    _write_format_1(tmp_path / "v3", _records(300), vectors)
    version = IndexReader(tmp_path).current()
    assert version.version == 3 and len(version) == 300 and version.dense_kind == "exact"
    assert next(iter(version.dense_search(vectors[42], 3))) == 42
    assert version.lexical_scores("word42").argmax() == 42
    assert version.sources == {"src": {"document_id": 1, "version": 1}}

    assert build_approximate(tmp_path, 3, IndexSettings(approximate_above=100)) == 4
    approx = IndexReader(tmp_path).current()
    assert approx.dense_kind == "ivf" and [r.chunk_id for r in approx.records] == [r.chunk_id for r in version.records]
    assert approx.sources == version.sources and next(iter(approx.dense_search(vectors[42], 3))) == 42
    # A newer publish still numbers after the old versions.
    assert _write(tmp_path, _clustered(5)) == 5


def test_lexical_top_matches_a_full_sort_with_ties_broken_by_row(tmp_path):
    # Few words and short texts: many rows tie on score, and the cut at n falls inside a tie.
    words = ["refund", "order", "battery", "brake", "tire", "invoice", "charger", "helmet"]
    rng = np.random.default_rng(3)
    texts = [" ".join(rng.choice(words, size=rng.integers(2, 9))) for _ in range(500)]
    records = [ChunkRecord(f"c{i}", "src", f"e{i}", None, t, None, None, t) for i, t in enumerate(texts)]
    write_version(tmp_path, records=records, vectors=_vectors(500), vec_counts=[1] * 500, embedding_model="m")
    version = IndexReader(tmp_path).current()
    for query in ("refund order", "battery battery charger", "helmet", "brake tire invoice order"):
        scores = version.lexical_scores(query)
        order = sorted((r for r in range(500) if scores[r] > 0), key=lambda r: (-scores[r], r))[:20]
        top = version.lexical_top(query, 20)
        assert list(top) == order and all(top[r] == float(scores[r]) for r in order)
    assert version.lexical_top("unknown words", 20) == {}
    assert version.lexical_top("refund", 0) == {}


def test_lexical_top_skips_rows_only_when_the_full_sort_agrees(tmp_path):
    rng = np.random.default_rng(4)
    vocab = [f"w{i}" for i in range(300)]
    # Zipf-like word use, as in real text: a few words in most rows, most words in a few.
    weights = 1.0 / np.arange(1, len(vocab) + 1)
    weights /= weights.sum()
    texts = [" ".join(rng.choice(vocab, size=rng.integers(3, 25), p=weights)) for _ in range(3000)]
    records = [ChunkRecord(f"c{i}", "src", f"e{i}", None, t, None, None, t) for i, t in enumerate(texts)]
    write_version(tmp_path, records=records, vectors=_vectors(3000), vec_counts=[1] * 3000, embedding_model="m")
    version = IndexReader(tmp_path).current()
    pruned = 0
    for _ in range(60):
        query = " ".join(rng.choice(vocab, size=rng.integers(1, 6), p=np.sqrt(weights) / np.sqrt(weights).sum()))
        scores = version.lexical_scores(query)
        for n in (1, 5, 30):
            expected = sorted((r for r in range(3000) if scores[r] > 0), key=lambda r: (-scores[r], r))[:n]
            assert list(version.lexical_top(query, n, scores=scores)) == expected, (query, n)
            pruned += version._lexical_candidates(query, scores, n) is not None
    # The shortcut was taken often enough for the comparison above to test it.
    assert pruned >= 20

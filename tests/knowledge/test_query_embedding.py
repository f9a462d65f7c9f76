"""The live-query embedding path gives the general path's vectors, whatever the model's pooling."""

from __future__ import annotations

import json
import shutil
import threading

import numpy as np
import pytest

from support_bot.core.config import Settings
from support_bot.knowledge.embedder import Embedder, resolve_model_dir

QUERIES = [
    "refund",
    "How long does shipping to Austria take?",
    "Kann ich mit Kreditkarte bezahlen? Und was kostet der Versand in die Schweiz?",
    "¿Dónde está mi pedido? 🚲🚲",
    "<script>alert(1)</script> ' OR 1=1 --",
    "   padded   with   spaces   ",
    # Longer than the model reads: both paths truncate at max_seq_length.
    " ".join(["my order arrived with a broken wheel and a missing bell"] * 60),
]


def test_packaged_model_takes_a_fast_path_with_identical_vectors(embedder):
    general = embedder.encode(QUERIES)
    fast = np.stack([embedder.encode_query(q) for q in QUERIES])
    assert embedder.query_path_used in {"traced", "direct"}
    assert fast.dtype == np.float32 and fast.shape == general.shape
    assert np.allclose(np.linalg.norm(fast, axis=1), 1.0, atol=1e-5)
    assert (np.sum(fast * general, axis=1) >= 0.99999).all()


def test_plain_setting_uses_the_general_path():
    base = Settings()
    embedder = Embedder(base.embedding.model, query_path="plain")
    vector = embedder.encode_query(QUERIES[1])
    assert embedder.query_path_used == "plain"
    assert np.array_equal(vector, embedder.encode([QUERIES[1]])[0])


def test_a_model_pooled_otherwise_falls_back_to_the_general_path(tmp_path):
    """A CLS-pooled model: the mean-pooling fast paths must not be used, and vectors still match encode()."""
    model_dir = tmp_path / "cls-model"
    shutil.copytree(resolve_model_dir(Settings().embedding.model), model_dir)
    pooling = model_dir / "1_Pooling" / "config.json"
    config = json.loads(pooling.read_text())
    config.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True)
    pooling.write_text(json.dumps(config))
    embedder = Embedder(str(model_dir))
    vectors = np.stack([embedder.encode_query(q) for q in QUERIES[:3]])
    assert embedder.query_path_used == "plain"
    assert (np.sum(vectors * embedder.encode(QUERIES[:3]), axis=1) >= 0.99999).all()


def test_concurrent_queries_get_their_own_vectors(embedder):
    expected = {q: embedder.encode([q])[0] for q in QUERIES[:4]}
    results: list[tuple[str, np.ndarray]] = []
    errors: list[BaseException] = []

    def worker(offset: int) -> None:
        try:
            for i in range(12):
                q = QUERIES[(i + offset) % 4]
                results.append((q, embedder.encode_query(q)))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 48
    for q, vector in results:
        assert float(np.dot(vector, expected[q])) == pytest.approx(1.0, abs=1e-5)

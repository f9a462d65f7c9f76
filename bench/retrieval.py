"""Search latency and FAISS exactness at scale, on a synthetic index of n chunks.

python bench/retrieval.py [--n 100000]  ->  {"n_chunks", "p50_ms", "p99_ms", "recall_at_10_vs_exact", ...}

Texts are synthetic; vectors are real model embeddings of topic sentences plus noise, so the index has
the shape and score distribution of a real one without embedding n texts.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [str(HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != HERE]

from bench._synthetic import faq_rows  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="chunks in the index")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--topics", type=int, default=2000, help="distinct embedded sentences the chunks vary around")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    import numpy as np

    from support_bot.config import Settings
    from support_bot.knowledge.embedder import get_embedder
    from support_bot.knowledge.index import ChunkRecord, write_version
    from support_bot.knowledge.retriever import Retriever

    rng = np.random.default_rng(0)
    n_topics = max(1, min(args.topics, args.n))
    rows = faq_rows(n_topics, seed=1)
    settings = Settings()
    embedder = get_embedder(settings)
    print(f"embedding {n_topics} topic sentences", file=sys.stderr)
    topics = embedder.encode([f"{q}\n{a}" for _, q, a in rows])

    topic_of = np.arange(args.n) % n_topics
    noise = rng.normal(scale=0.02, size=(args.n, topics.shape[1])).astype(np.float32)
    vectors = topics[topic_of] + noise
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    records = []
    for i, t in enumerate(topic_of.tolist()):
        _, question, answer = rows[t]
        text = f"{question}\n{answer} (variant {i})"
        records.append(ChunkRecord(f"c{i}", "bench", f"e{i}", question, text, answer, None, f"{question}\n{text}"))

    with tempfile.TemporaryDirectory(prefix="bench-retrieval-") as tmp:
        settings = Settings(data_dir=Path(tmp) / "data")
        print(f"building an index of {args.n} chunks", file=sys.stderr)
        t0 = time.perf_counter()
        write_version(
            settings.index_dir,
            records=records,
            vectors=vectors,
            vec_counts=[1] * args.n,
            embedding_model=settings.embedding.model,
        )
        build_s = time.perf_counter() - t0
        retriever = Retriever(settings, embedder=embedder)
        t0 = time.perf_counter()
        version = retriever.reader.current()
        load_s = time.perf_counter() - t0

        qrng = np.random.default_rng(2)
        picks = qrng.integers(0, n_topics, size=args.queries)
        queries = [f"how can I {rows[t][1].split('How do I ', 1)[-1].split('?')[0]}" for t in picks.tolist()]
        retriever.search(queries[0], k=10)
        latencies, overlap = [], []
        for q in queries:
            t0 = time.perf_counter()
            retriever.search(q, k=10)
            latencies.append((time.perf_counter() - t0) * 1000)
            qvec = embedder.encode([q])[0]
            exact = set(np.argsort(-(vectors @ qvec), kind="stable")[:10].tolist())
            got = set(list(version.dense_search(qvec, 10))[:10])
            overlap.append(len(exact & got) / 10)

    lat = np.asarray(latencies)
    print(
        json.dumps(
            {
                "n_chunks": args.n,
                "p50_ms": round(float(np.percentile(lat, 50)), 2),
                "p99_ms": round(float(np.percentile(lat, 99)), 2),
                "recall_at_10_vs_exact": round(float(np.mean(overlap)), 4),
                "queries": args.queries,
                "build_s": round(build_s, 2),
                "load_s": round(load_s, 2),
            }
        )
    )


if __name__ == "__main__":
    main()

"""Retrieval latency and approximate-search recall on a synthetic index of n chunks.

python bench/retrieval.py [--n 100000] [--queries 200] [--kind hnsw|ivf]
  -> last stdout line: {"n_chunks", "p50_ms", "p99_ms", "recall_at_10_vs_exact", ...}

p50_ms / p99_ms time Retriever.search(query, k=10), the path live chat takes: query embedding, dense search, BM25
over every chunk, rank fusion and the answer-or-abstain decision. The index is published as the product publishes
it: the exact version goes live first and, above settings.index.approximate_above vectors, the approximate index is
built by the same background process the product starts; timing starts once the retriever has swapped to it.

References measured in the same run:
  embed_p50_ms        the query embedding alone (Embedder.encode_query, the live-query path)
  embed_general_p50_ms  the same through sentence-transformers' general encode([query])
  search_p50_ms       Retriever.search with the query vector already computed (everything but the embedding)
  lexical_p50_ms      BM25 scoring of every chunk
  exact_faiss_p50_ms  raw exact FAISS search (flat inner product, k=10) over the same vectors
  exact_p50_ms        Retriever.search with the exact version live (what the approximate index replaces)
recall_at_10_vs_exact: share of exact search's top-10 chunk rows that the live index's dense top-10 holds.

Texts are synthetic FAQ entries; vectors are real model embeddings of --topics FAQ entries, mixed and noised
(bench/_synthetic.py), so the index has the shape and score distribution of a real one without embedding n texts.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [str(HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != HERE]

from bench._synthetic import faq_rows, topic_mixture_vectors  # noqa: E402


class _Precomputed:
    """An embedder double that returns vectors computed beforehand, to time retrieval without the embedding."""

    def __init__(self, vectors: dict):
        self.vectors = vectors

    def encode(self, texts):
        import numpy as np

        return np.stack([self.vectors[t] for t in texts])

    def encode_query(self, text):
        return self.vectors[text]


class _Fixed:
    """A reader double that always hands out one version."""

    def __init__(self, version):
        self.version = version

    def current(self):
        return self.version


def _ms(fn, items) -> list[float]:
    out = []
    for item in items:
        t0 = time.perf_counter()
        fn(item)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="chunks in the index (one vector each)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--topics", type=int, default=2000, help="distinct embedded FAQ entries the chunks mix")
    parser.add_argument("--kind", choices=["hnsw", "ivf"], help="approximate index kind (default: settings)")
    parser.add_argument("--exact-queries", type=int, default=50, help="queries timed on the exact version")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    import numpy as np

    from support_bot.core.config import Settings
    from support_bot.knowledge.embedder import get_embedder
    from support_bot.knowledge.index import ChunkRecord, start_approximate_build, write_version
    from support_bot.knowledge.reader import load_version
    from support_bot.knowledge.retriever import Retriever

    base = Settings()
    embedder = get_embedder(base)
    n_topics = max(1, min(args.topics, args.n))
    rows = faq_rows(n_topics, seed=1)
    print(f"embedding {n_topics} topic entries", file=sys.stderr)
    topics = embedder.encode([f"{q}\n{a}" for _, q, a in rows])
    vectors, topic_of = topic_mixture_vectors(topics, args.n, seed=0)
    records = []
    for i, t in enumerate(topic_of.tolist()):
        _, question, answer = rows[t]
        text = f"{question}\n{answer} (variant {i})"
        records.append(ChunkRecord(f"c{i}", "bench", f"e{i}", question, text, answer, None, f"{question}\n{text}"))

    qrng = np.random.default_rng(2)
    picks = qrng.choice(n_topics, size=args.queries, replace=args.queries > n_topics)
    queries = [f"how can I {rows[t][1].split('How do I ', 1)[-1].split('?')[0]}" for t in picks.tolist()]

    with tempfile.TemporaryDirectory(prefix="bench-retrieval-") as tmp:
        index_cfg = base.index.model_copy(update={"approximate_kind": args.kind} if args.kind else {})
        settings = base.model_copy(update={"data_dir": Path(tmp) / "data", "index": index_cfg})
        print(f"publishing an exact index of {args.n} chunks", file=sys.stderr)
        t0 = time.perf_counter()
        exact_number = write_version(
            settings.index_dir,
            records=records,
            vectors=vectors,
            vec_counts=[1] * args.n,
            embedding_model=settings.embedding.model,
        )
        build_s = time.perf_counter() - t0
        del records, vectors
        retriever = Retriever(settings, embedder=embedder)
        t0 = time.perf_counter()
        retriever.reader.current()
        load_s = time.perf_counter() - t0

        approximate_build_s = None
        if args.n > index_cfg.approximate_above:
            print(f"building the {index_cfg.approximate_kind} index in the background", file=sys.stderr)
            t0 = time.perf_counter()
            # What write_version starts for the product; started here to wait on the process and see it fail.
            proc = start_approximate_build(settings.index_dir, exact_number, index_cfg)
            while proc.poll() is None:
                time.sleep(0.5)
                retriever.reader.current()
            if retriever.reader.current().version == exact_number:
                raise SystemExit(f"the approximate index build failed (exit status {proc.returncode})")
            approximate_build_s = time.perf_counter() - t0
        version = retriever.reader.current()
        exact = version
        if version.version != exact_number:
            # Shares the live version's records and lexical index; only the exact dense index is read again.
            exact = load_version(settings.index_dir / f"v{exact_number}", previous=version)

        print(f"timing {len(queries)} queries on v{version.version} ({version.dense_kind})", file=sys.stderr)
        qvecs = embedder.encode(queries)
        for q in queries[:5]:
            retriever.search(q, k=10)
        full = _ms(lambda q: retriever.search(q, k=10), queries)
        embed = _ms(embedder.encode_query, queries)
        embed_general = _ms(lambda q: embedder.encode([q]), queries)
        no_embed = Retriever(settings, embedder=_Precomputed(dict(zip(queries, qvecs))))
        no_embed.reader = retriever.reader
        search = _ms(lambda q: no_embed.search(q, k=10), queries)
        lexical = _ms(version.lexical_scores, queries)
        _, truth = exact.dense.search(qvecs, 10)
        overlap = [
            len(set(truth[i].tolist()) & set(list(version.dense_search(qvecs[i], 10))[:10])) / 10
            for i in range(len(queries))
        ]
        exact_faiss = _ms(lambda i: exact.dense.search(qvecs[i : i + 1], 10), range(len(queries)))
        on_exact = Retriever(settings, embedder=embedder)
        on_exact.reader = _Fixed(exact)
        exact_path = _ms(lambda q: on_exact.search(q, k=10), queries[: args.exact_queries])

    def pct(values, p):
        return round(float(np.percentile(values, p)), 2)

    print(
        json.dumps(
            {
                "n_chunks": args.n,
                "p50_ms": pct(full, 50),
                "p99_ms": pct(full, 99),
                "recall_at_10_vs_exact": round(float(np.mean(overlap)), 4),
                "queries": len(queries),
                "dense_kind": version.dense_kind,
                "dense_params": version.dense_params,
                "approximate_above": index_cfg.approximate_above,
                "embed_p50_ms": pct(embed, 50),
                "embed_general_p50_ms": pct(embed_general, 50),
                "search_p50_ms": pct(search, 50),
                "search_p99_ms": pct(search, 99),
                "lexical_p50_ms": pct(lexical, 50),
                "exact_faiss_p50_ms": pct(exact_faiss, 50),
                "exact_p50_ms": pct(exact_path, 50),
                "exact_p99_ms": pct(exact_path, 99),
                "build_s": round(build_s, 1),
                "approximate_build_s": None if approximate_build_s is None else round(approximate_build_s, 1),
                "load_s": round(load_s, 2),
                "cpus": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    main()

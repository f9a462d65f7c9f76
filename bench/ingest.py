"""Ingest throughput: the full pipeline (parse, chunk, embed, store, publish) vs bare model encoding, same texts.

python bench/ingest.py [--n 5000]  ->  {"pipeline_chunks_s", "encode_texts_s", "ratio", ...} (last line of stdout)
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
# This file is bench/ingest.py: its folder must not shadow the `ingest` package.
sys.path[:] = [str(HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != HERE]

from bench._synthetic import faq_csv  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="FAQ entries to ingest")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    from ingest.chunking import chunk_faq
    from ingest.loaders.faq_csv import parse_faq_csv
    from ingest.pipeline import ingest_path
    from support_bot.core.config import Settings
    from support_bot.core.db import get_engine, migrate
    from support_bot.knowledge.embedder import get_embedder

    data = faq_csv(args.n)
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        settings = Settings(data_dir=Path(tmp) / "data", database_url=None, redis_url=None)
        migrate(settings)
        embedder = get_embedder(settings)
        drafts = chunk_faq(
            parse_faq_csv(data),
            chunk_tokens=min(settings.ingest.chunk_tokens, embedder.max_tokens),
            chunk_overlap=settings.ingest.chunk_overlap,
            token_offsets=embedder.token_offsets,
        )
        texts = [d.text for d in drafts]
        embedder.encode(texts[:64])  # warm-up outside both timings
        print(f"encoding {len(texts)} chunk texts once (reference)", file=sys.stderr)
        t0 = time.perf_counter()
        embedder.encode(texts)
        encode_s = time.perf_counter() - t0

        path = Path(tmp) / "bench_faq.csv"
        path.write_bytes(data)
        print(f"ingesting {args.n} entries through the pipeline", file=sys.stderr)
        t0 = time.perf_counter()
        job = ingest_path(settings=settings, path=path)
        pipeline_s = time.perf_counter() - t0
        get_engine(settings).dispose()

    n_chunks = job.progress_total
    pipeline_chunks_s = n_chunks / pipeline_s
    encode_texts_s = len(texts) / encode_s
    print(
        json.dumps(
            {
                "n": args.n,
                "n_chunks": n_chunks,
                # The pipeline embeds each chunk's question and answer apart: two texts per chunk against one here.
                "vectors_per_chunk": round(sum(len(d.views) for d in drafts) / len(drafts), 3),
                "pipeline_s": round(pipeline_s, 2),
                "encode_s": round(encode_s, 2),
                "pipeline_chunks_s": round(pipeline_chunks_s, 1),
                "encode_texts_s": round(encode_texts_s, 1),
                "ratio": round(pipeline_chunks_s / encode_texts_s, 3),
            }
        )
    )


if __name__ == "__main__":
    main()

"""Embedder tuning cost: time and peak memory of `support-bot tune embedder` vs embedding the same texts once.

python bench/tune.py [--faq ../shared/data/covid-faq/faq.csv] [--epochs N]
  -> {"tune_s", "tune_cpu_s", "train_s", "encode_texts_s", "encode_cpu_s", "ratio", "peak_rss_mb", ...}
     (last line of stdout)

The FAQ is ingested with the real pipeline into a throw-away data dir (not timed); then the texts tuning learns from
(each example's question and answer) are embedded once with the configured model as the reference, and the product's
own tuning runs: mining hard negatives, training, and evaluating the tuned and the live embedder on the held-out slice.
CPU seconds are given beside wall seconds: on a shared machine they vary less.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [str(HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != HERE]
DEV_FAQ = HERE.parent.parent / "shared" / "data" / "covid-faq" / "faq.csv"
DEMO_FAQ = HERE.parent / "examples" / "demo-faq.csv"


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # kilobytes on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faq", default=str(DEV_FAQ if DEV_FAQ.is_file() else DEMO_FAQ), help="the FAQ to tune on")
    parser.add_argument("--epochs", type=int, default=None, help="passes over the training pairs (default: settings)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    from ingest.pipeline import ingest_path
    from support_bot.adapt import data, service
    from support_bot.core.config import Settings
    from support_bot.core.db import get_engine, migrate, session_scope
    from support_bot.knowledge.embedder import get_embedder

    with tempfile.TemporaryDirectory(prefix="bench-tune-") as tmp:
        settings = Settings(data_dir=Path(tmp) / "data", database_url=None, redis_url=None)
        migrate(settings)
        print(f"ingesting {args.faq}", file=sys.stderr)
        ingest_path(settings=settings, path=Path(args.faq))
        with session_scope(settings) as session:
            examples = data.collect(session, settings)
        texts = [t for e in examples for t in (e.question, e.answer)]
        embedder = get_embedder(settings, None)
        embedder.encode(texts[:32])  # warm-up outside both timings
        print(f"embedding {len(texts)} texts once (reference)", file=sys.stderr)
        wall, cpu = time.perf_counter(), cpu_s()
        embedder.encode(texts)
        encode_s, encode_cpu = time.perf_counter() - wall, cpu_s() - cpu
        rss_before = rss_mb()

        print("tuning", file=sys.stderr)
        overrides = {"epochs": args.epochs} if args.epochs else {}
        wall, cpu = time.perf_counter(), cpu_s()
        record = service.tune_embedder(settings, overrides=overrides)
        tune_s, tune_cpu = time.perf_counter() - wall, cpu_s() - cpu
        get_engine(settings).dispose()

    evaluation = record["evaluation"]
    print(json.dumps({
        "faq": str(args.faq),
        "examples": len(examples),
        "texts": len(texts),
        "params": {k: record["params"][k] for k in ("epochs", "batch_size", "train_layers", "max_tokens", "learning_rate")},
        "train_steps": record["train"]["steps"],
        "tune_s": round(tune_s, 1),
        "tune_cpu_s": round(tune_cpu, 1),
        "train_s": record["train"]["train_s"],
        "encode_texts_s": round(encode_s, 2),
        "encode_cpu_s": round(encode_cpu, 2),
        "ratio": round(tune_s / encode_s, 1) if encode_s else None,
        "cpu_ratio": round(tune_cpu / encode_cpu, 1) if encode_cpu else None,
        "peak_rss_mb": rss_mb(),
        "rss_before_tune_mb": rss_before,
        "heldout": {"live": evaluation["live"], "tuned": evaluation["candidate"]},
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }))


if __name__ == "__main__":
    main()

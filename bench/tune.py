"""Tuning cost: time and peak memory of `support-bot tune embedder` (or `tune chat`) against a reference run alike.

python bench/tune.py [--faq ../shared/data/covid-faq/faq.csv] [--epochs N]
  -> {"tune_s", "tune_cpu_s", "train_s", "encode_texts_s", "encode_cpu_s", "ratio", "peak_rss_mb", ...}
python bench/tune.py --kind chat [--faq FAQ.csv] [--max-examples N] [--epochs N] [--queries QUERIES.jsonl --limit N]
  -> {"tune_s", "tune_cpu_s", "phases_s", "train_s", "train_ms_per_example", "forward_ms_per_example", "ratio",
      "peak_rss_mb", "heldout", "answers": {"base", "tuned"}, ...}
     (last line of stdout)

The FAQ is ingested with the real pipeline into a throw-away data dir (not timed). Embedder: the texts tuning learns
from (each example's question and answer) are embedded once with the configured model as the reference, and the
product's own tuning runs: mining hard negatives, training, and evaluating the tuned and the live embedder on the
held-out slice. Chat: the product's own tuning runs (examples, LoRA training, the gate: both models answering the
held-out questions through the customer turn); the reference is a no-grad forward pass of the configured model over
the same kind of training examples, so train_ms_per_example / forward_ms_per_example is the cost of a training step
in forward passes. With --queries, `eval answers`'s figures of the model as shipped and of the tuned adapter on those
queries (a seeded sample of --limit), asked through the customer turn against the ingested FAQ.
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
    parser.add_argument("--kind", choices=["embedder", "chat"], default="embedder", help="what to tune")
    parser.add_argument("--max-examples", type=int, default=None, help="chat: training questions (default: settings)")
    parser.add_argument("--queries", default=None, help="chat: QUERIES.jsonl to score both models' answers on")
    parser.add_argument("--limit", type=int, default=40, help="chat: a seeded sample of this many queries")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if args.kind == "chat":
        chat(args)
        return

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


class Phases:
    """Progress reports to wall seconds per phase (a phase lasts until the next one begins)."""

    def __init__(self):
        self.started: dict[str, float] = {}
        self.order: list[str] = []

    def __call__(self, phase: str, done: int, total: int) -> None:
        if phase not in self.started:
            self.started[phase] = time.perf_counter()
            self.order.append(phase)
            print(f"{phase}: {done}/{total}", file=sys.stderr, flush=True)

    def seconds(self, end: float) -> dict[str, float]:
        ends = [self.started[p] for p in self.order[1:]] + [end]
        return {p: round(e - self.started[p], 1) for p, e in zip(self.order, ends)}


def forward_ms_per_example(settings, n: int = 24) -> float:
    """Reference: a no-grad forward pass of the configured model over n training examples, as tuning builds them."""
    import torch

    from support_bot.adapt import chat_data, service
    from support_bot.llm.backends.hf.engine import _limit_cpu_threads, pick_device, pick_dtype
    from support_bot.llm.pull import resolve_model
    from support_bot.llm.weights import load_model

    cfg = settings.adapt.chat.model_copy(update={"max_examples": n, "decline_fraction": 0.0})
    settings = settings.model_copy(update={"adapt": settings.adapt.model_copy(update={"chat": cfg})})
    split = service._split(settings, settings.adapt)
    retrieve = chat_data.live_retrieve(settings, settings.retrieval.top_k + 8)
    examples = chat_data.build_examples(settings, split, retrieve, chat_data.live_sources(settings))
    resolved = resolve_model(settings)
    device = pick_device(settings.llm.device)
    tokenizer, model = load_model(settings, resolved, device=device, dtype=pick_dtype(settings.llm.dtype, device))
    _limit_cpu_threads()
    end = chat_data.end_of_turn_id(tokenizer, model.generation_config)
    rows = [chat_data.encode(tokenizer, resolved.prompt_format, x.messages(settings), x.target, end) for x in examples]
    with torch.no_grad():
        model(input_ids=torch.tensor([rows[0].input_ids], device=device))  # warm-up, outside the timing
        wall = time.perf_counter()
        for r in rows:
            model(input_ids=torch.tensor([r.input_ids], device=device), logits_to_keep=r.answer_tokens + 1)
    return (time.perf_counter() - wall) * 1000 / len(rows)


def answer_figures(settings, artifact: str | None, queries: list[dict]) -> dict:
    """`eval answers`'s figures of one model (an adapter, or None: as shipped) on the ingested FAQ."""
    from support_bot.adapt.chat_gate import evaluate
    from support_bot.knowledge.embedder import get_embedder
    from support_bot.llm.backends.hf.engine import TransformersEngine

    engine = TransformersEngine(settings, adapter=artifact)
    try:
        return evaluate(settings, engine, get_embedder(settings, None), queries, progress=Phases(),
                        phase=f"answering with {artifact or 'the model as shipped'}")
    finally:
        engine.close()


def chat(args) -> None:
    from ingest.pipeline import ingest_path
    from support_bot.adapt import service
    from support_bot.chat.evaluation import sample_queries
    from support_bot.core.config import Settings
    from support_bot.core.db import get_engine, migrate
    from support_bot.knowledge.evaluation import load_queries

    with tempfile.TemporaryDirectory(prefix="bench-tune-") as tmp:
        base = Settings()
        # The model stays where it was pulled.
        llm = base.llm.model_copy(update={"cache_dir": base.model_cache_dir})
        settings = Settings(data_dir=Path(tmp) / "data", database_url=None, redis_url=None, llm=llm)
        migrate(settings)
        print(f"ingesting {args.faq}", file=sys.stderr)
        ingest_path(settings=settings, path=Path(args.faq))
        print("reference: forward passes over training examples", file=sys.stderr)
        wall, cpu = time.perf_counter(), cpu_s()
        forward_ms = forward_ms_per_example(settings)
        reference = {
            "forward_ms_per_example": round(forward_ms, 1), "reference_s": round(time.perf_counter() - wall, 1),
            "reference_cpu_s": round(cpu_s() - cpu, 1),
        }
        rss_before = rss_mb()
        overrides = {k: v for k, v in (("epochs", args.epochs), ("max_examples", args.max_examples)) if v is not None}
        phases = Phases()
        print("tuning", file=sys.stderr)
        wall, cpu = time.perf_counter(), cpu_s()
        record = service.tune_chat(settings, overrides=overrides, progress=phases)
        tune_s, tune_cpu = time.perf_counter() - wall, cpu_s() - cpu
        phases_s = phases.seconds(time.perf_counter())
        peak_tune = rss_mb()
        answers = None
        if args.queries:
            queries = sample_queries(load_queries(Path(args.queries)), args.limit, 0)
            answers = {"queries": len(queries), "base": answer_figures(settings, None, queries),
                       "tuned": answer_figures(settings, record["id"], queries)}
        get_engine(settings).dispose()

    evaluation = record["evaluation"]
    examples = record["train"]["examples"]
    seen = record["train"]["steps"] * record["params"]["chat"]["batch_size"]
    train_ms = record["train"]["train_s"] * 1000 / max(1, min(seen, examples * record["params"]["chat"]["epochs"]))
    print(json.dumps({
        "kind": "chat",
        "faq": str(args.faq),
        "model": settings.llm.model,
        "data": record["data"],
        "params": record["params"]["chat"],
        "train_steps": record["train"]["steps"],
        "tune_s": round(tune_s, 1),
        "tune_cpu_s": round(tune_cpu, 1),
        "phases_s": phases_s,
        "train_s": record["train"]["train_s"],
        "loss_first": record["train"]["loss_first"],
        "loss_last": record["train"]["loss_last"],
        "train_ms_per_example": round(train_ms, 1),
        **reference,
        "ratio": round(train_ms / reference["forward_ms_per_example"], 2),
        "peak_rss_mb": peak_tune,
        "rss_before_tune_mb": rss_before,
        "heldout": {"questions": evaluation["questions"], "live": evaluation["live"], "tuned": evaluation["candidate"]},
        "verdict": evaluation["verdict"],
        "answers": answers,
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }))


if __name__ == "__main__":
    main()

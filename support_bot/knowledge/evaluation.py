"""Retrieval and answer-or-abstain evaluation on an FAQ file and labelled queries (see EVAL.md)."""

from __future__ import annotations

import csv
import io
import json
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from support_bot.core.config import Settings, get_settings
from support_bot.core.errors import InvalidInput


def jsonl_objects(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, object) for each non-blank line of a JSON Lines file; InvalidInput naming the line otherwise."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"{path}: no such file")
    with open(path, encoding="utf-8-sig") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield line_no, json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidInput(f"{path.name}: line {line_no} is not JSON ({exc.msg})") from None


def load_queries(path: Path) -> list[dict]:
    """Read QUERIES.jsonl: one {"query": str, "relevant": [faq id, ...]} per line."""
    path = Path(path)
    out: list[dict] = []
    for line_no, obj in jsonl_objects(path):
        query, relevant = obj.get("query") if isinstance(obj, dict) else None, obj.get("relevant", [])
        if not isinstance(query, str) or not query.strip():
            raise InvalidInput(f'{path.name}: line {line_no} has no "query" text')
        if not isinstance(relevant, list):
            raise InvalidInput(f'{path.name}: line {line_no} has a "relevant" that is not a list')
        out.append({"query": query, "relevant": [str(r) for r in relevant]})
    if not out:
        raise InvalidInput(f"{path.name}: no queries")
    return out


def score_run(
    queries: Sequence[dict], ranked: Sequence[Sequence[str]], abstained: Sequence[bool], latencies_ms: Sequence[float]
) -> dict:
    """The EVAL.md figures from per-query ranked entry ids, abstain decisions and latencies."""
    n = len(queries)
    answerable = [i for i, q in enumerate(queries) if q["relevant"]]
    r1 = r5 = mrr = 0.0
    for i in answerable:
        rel = set(queries[i]["relevant"])
        ids = list(ranked[i])
        r1 += bool(ids[:1]) and ids[0] in rel
        r5 += any(e in rel for e in ids[:5])
        mrr += next((1.0 / rank for rank, e in enumerate(ids[:10], 1) if e in rel), 0.0)
    top_ok = [bool(ranked[i]) and ranked[i][0] in set(queries[i]["relevant"]) for i in range(n)]
    answered = [i for i in range(n) if not abstained[i]]
    abst = [i for i in range(n) if abstained[i]]
    unanswerable = [i for i in range(n) if not queries[i]["relevant"]]

    def ratio(a: float, b: int) -> float:
        return round(a / b, 4) if b else 0.0

    lat = np.asarray(latencies_ms, dtype=np.float64)
    return {
        "n": n,
        "n_answerable": len(answerable),
        "recall@1": ratio(r1, len(answerable)),
        "recall@5": ratio(r5, len(answerable)),
        "mrr@10": ratio(mrr, len(answerable)),
        "abstain_precision": ratio(sum(1 for i in abst if not queries[i]["relevant"]), len(abst)),
        "abstain_recall": ratio(sum(1 for i in unanswerable if abstained[i]), len(unanswerable)),
        "answer_precision": ratio(sum(1 for i in answered if top_ok[i]), len(answered)),
        "answer_coverage": ratio(sum(1 for i in answerable if top_ok[i] and not abstained[i]), len(answerable)),
        "p50_ms": round(float(np.percentile(lat, 50)), 2) if lat.size else 0.0,
        "p99_ms": round(float(np.percentile(lat, 99)), 2) if lat.size else 0.0,
    }


def _throwaway_settings(base: Settings, data_dir: Path) -> Settings:
    return base.model_copy(update={"data_dir": data_dir, "database_url": None, "redis_url": None})


def eval_retrieval(
    *,
    faq_path: Path,
    queries_path: Path,
    k: int = 10,
    settings: Settings | None = None,
    ingest: Callable[[Settings, Path], None],
    tune: Callable[[Settings], dict] | None = None,
) -> dict:
    """Ingest the FAQ with the real pipeline into a throw-away data dir and score the live retriever on the queries.

    `tune(settings)`, when given, runs after the ingest and before any query, on what was ingested (the FAQ alone):
    the product's embedder adaptation as ops would run it; what it returns is reported under "tune".
    """
    from support_bot.core.db import get_engine, migrate
    from support_bot.knowledge.retriever import Retriever

    queries = load_queries(queries_path)
    # MRR is reported at 10 whatever k is, so the keys stay those EVAL.md names.
    k = max(k, 10)
    base = settings or get_settings()
    with tempfile.TemporaryDirectory(prefix="support-bot-eval-") as tmp:
        s = _throwaway_settings(base, Path(tmp))
        migrate(s)
        try:
            ingest(s, Path(faq_path))
            tuned = tune(s) if tune is not None else None
            retriever = Retriever(s)
            retriever.search(queries[0]["query"], k=k)  # loads the model and index outside the timings
            ranked, abstained, latencies = [], [], []
            for q in queries:
                t0 = time.perf_counter()
                result = retriever.search(q["query"], k=k)
                latencies.append((time.perf_counter() - t0) * 1000)
                ranked.append([h.entry_id or h.chunk_id for h in result.hits])
                abstained.append(result.abstain)
            calibration = retriever.reader.current().calibration
        finally:
            get_engine(s).dispose()
    result = score_run(queries, ranked, abstained, latencies)
    if calibration is not None:
        # The weights and thresholds this knowledge base was searched with, and the held-out figures behind them.
        result["calibration"] = calibration
    if tuned is not None:
        result["tune"] = tuned
    return result


def _faq_questions(path: Path) -> tuple[list[str], list[str]]:
    text = Path(path).read_bytes().decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    return [r["id"].strip() for r in rows], [r["question"].strip() for r in rows]


# The baseline's top-1 cosine cut-off: the knee of plain all-MiniLM-L6-v2 cosine on covid-faq.
BASELINE_THRESHOLD = 0.65


def eval_baseline(
    *,
    faq_path: Path,
    queries_path: Path,
    k: int = 10,
    settings: Settings | None = None,
    threshold: float = BASELINE_THRESHOLD,
) -> dict:
    """Reference point: plain MiniLM over the FAQ questions, exact FAISS, abstain below a top-1 cosine threshold."""
    import faiss

    from support_bot.knowledge.embedder import get_embedder

    s = settings or get_settings()
    queries = load_queries(queries_path)
    k = max(k, 10)
    ids, questions = _faq_questions(faq_path)
    embedder = get_embedder(s)
    index = faiss.IndexFlatIP(embedder.dim)
    index.add(embedder.encode(questions))
    embedder.encode([queries[0]["query"]])
    ranked, abstained, latencies = [], [], []
    for q in queries:
        t0 = time.perf_counter()
        scores, rows = index.search(embedder.encode([q["query"]]), min(k, len(ids)))
        latencies.append((time.perf_counter() - t0) * 1000)
        ranked.append([ids[r] for r in rows[0].tolist() if r >= 0])
        abstained.append(not len(ids) or float(scores[0][0]) < threshold)
    return score_run(queries, ranked, abstained, latencies)

"""The held-out evaluation of an embedder through the real retriever, the gate before going live, and negative mining.

The evaluation indexes every example except the withheld answer groups, each held-out example by its answer alone
(its question is what is asked), in a scratch index version built by the same code as the live one. Held-out
questions must find an entry with their answer (recall@1/5); questions of withheld groups must be declined. The
retriever, its fusion with BM25 and its answer-or-abstain rule are those live chat uses, with the same settings and
weights and cut-offs calibrated on the scratch index's indexed entries (knowledge.calibration).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from support_bot.adapt.data import Split, group_of
from support_bot.adapt.trainer import Negative
from support_bot.core.config import Settings
from support_bot.knowledge.calibration import stored
from support_bot.knowledge.evaluation import score_run
from support_bot.knowledge.index import ChunkRecord, write_version

Progress = Callable[[str, int, int], None]
# Figures an artifact must not be worse in than the live embedder (by more than settings.adapt.gate_tolerance).
GATED = ("recall@1", "recall@5", "decision_accuracy")
_ENCODE_BATCH = 256


def encode_cached(
    embedder, texts: list[str], cache: dict[str, np.ndarray], *, phase: str, progress: Progress | None = None
) -> np.ndarray:
    """Vectors of the texts, encoding each distinct text not in the cache once (in batches, with progress)."""
    todo = list(dict.fromkeys(t for t in texts if t not in cache))
    for start in range(0, len(todo), _ENCODE_BATCH):
        part = todo[start : start + _ENCODE_BATCH]
        cache.update(zip(part, embedder.encode(part)))
        if progress:
            progress(phase, min(start + _ENCODE_BATCH, len(todo)), len(todo))
    if not texts:
        return np.zeros((0, embedder.dim), dtype=np.float32)
    return np.stack([cache[t] for t in texts]).astype(np.float32, copy=False)


def _records(split: Split) -> tuple[list[ChunkRecord], list[list[str]]]:
    held = {e.key for e in split.heldout}
    records: list[ChunkRecord] = []
    views: list[list[str]] = []
    for e in split.indexed:
        if e.key in held:
            # Indexed by its answer alone, as a single-vector chunk: finding it from the question is the test.
            records.append(ChunkRecord(e.key, e.origin, e.key, None, e.answer, e.answer, None, e.answer))
            views.append([e.answer])
        else:
            text = f"{e.question}\n{e.answer}"
            records.append(ChunkRecord(e.key, e.origin, e.key, e.question, text, e.answer, None, f"{e.question}\n{text}"))
            views.append([e.question, e.answer])
    return records, views


def evaluation_queries(split: Split) -> list[dict]:
    """Held-out questions with every indexed example of their answer group as relevant, then the withheld ones."""
    by_group: dict[str, list[str]] = {}
    for e in split.indexed:
        by_group.setdefault(e.group, []).append(e.key)
    return [{"query": e.question, "relevant": by_group[e.group]} for e in split.heldout] + [
        {"query": e.question, "relevant": []} for e in split.abstain
    ]


def evaluate(
    embedder,
    split: Split,
    settings: Settings,
    *,
    cache: dict[str, np.ndarray] | None = None,
    progress: Progress | None = None,
    phase: str = "evaluating",
) -> dict:
    """Retrieval and abstention figures of `embedder` on the held-out slice (EVAL.md keys plus decision_accuracy)."""
    from support_bot.knowledge.retriever import Retriever

    cache = {} if cache is None else cache
    records, views = _records(split)
    vectors = encode_cached(embedder, [v for vs in views for v in vs], cache, phase=phase, progress=progress)
    queries = evaluation_queries(split)
    with tempfile.TemporaryDirectory(prefix="support-bot-gate-") as tmp:
        scratch = settings.model_copy(update={"data_dir": Path(tmp), "database_url": None, "redis_url": None})
        write_version(
            scratch.index_dir, records=records, vectors=vectors, vec_counts=[len(v) for v in views],
            embedding_model=embedder.name,
            # Each embedder is judged at the weights and cut-offs calibrated on the scratch index's own entries, as a
            # publish would choose them; the figures below are on the held-out slice, never used to choose them.
            calibrate=lambda version: stored(version, scratch.retrieval),
        )
        retriever = Retriever(scratch, embedder=embedder)
        ranked, abstained = [], []
        for i, q in enumerate(queries):
            result = retriever.search(q["query"], k=10)
            ranked.append([h.entry_id for h in result.hits])
            abstained.append(result.abstain)
            if progress and (i % 50 == 49 or i == len(queries) - 1):
                progress(phase, i + 1, len(queries))
    figures = score_run(queries, ranked, abstained, [0.0] * len(queries))
    for key in ("p50_ms", "p99_ms"):
        figures.pop(key, None)
    right = sum(
        (not a and bool(r) and r[0] in q["relevant"]) if q["relevant"] else a
        for q, r, a in zip(queries, ranked, abstained)
    )
    figures["decision_accuracy"] = round(right / len(queries), 4) if queries else 0.0
    return figures


def verdict(live: dict, candidate: dict, tolerance: float) -> dict:
    """Whether the candidate may go live: not worse than the live embedder in any gated figure."""
    worse = [
        {"metric": m, "live": live.get(m, 0.0), "candidate": candidate.get(m, 0.0)}
        for m in GATED
        if candidate.get(m, 0.0) < live.get(m, 0.0) - tolerance - 1e-9
    ]
    return {"passed": not worse, "worse": worse, "tolerance": tolerance}


def describe(v: dict) -> str:
    """The verdict in a sentence with the figures."""
    if v["passed"]:
        return "not worse than the live embedder on the held-out slice"
    parts = [f"{w['metric']} {w['candidate']:.3f} < live {w['live']:.3f}" for w in v["worse"]]
    return "worse than the live embedder on the held-out slice: " + ", ".join(parts)


def mine_negatives(
    settings: Settings,
    split: Split,
    *,
    cache: dict[str, np.ndarray] | None = None,
    progress: Progress | None = None,
    depth: int = 16,
) -> dict[str, Negative]:
    """For each training example, the best-ranked entry of the live index that answers something else.

    Entries that are held out (or whose answer group is) are never chosen: they must not be trained on at all.
    """
    from support_bot.knowledge.embedder import query_embedder
    from support_bot.knowledge.reader import load_current

    version = load_current(settings)
    if not len(version) or not split.train:
        return {}
    embedder = query_embedder(settings, version.version)
    cache = {} if cache is None else cache
    held = split.heldout_keys
    candidates: list[Negative | None] = []
    for rec in version.records:
        body = rec.answer or (rec.text[len(rec.title) + 1 :] if rec.title and rec.text.startswith(rec.title + "\n") else rec.text)
        key = f"kb:{rec.source}:{rec.entry_id or rec.chunk_id}"
        group = group_of(body)
        usable = rec.title and key not in held and group not in split.withheld_groups
        candidates.append(Negative(rec.title, body, group) if usable else None)
    questions = [e.question for e in split.train]
    vectors = encode_cached(embedder, questions, cache, phase="mining negatives", progress=progress)
    _scores, rows = version.dense.search(vectors, min(depth * 2, version.n_vectors))
    out: dict[str, Negative] = {}
    for e, found in zip(split.train, rows.tolist()):
        for row in found:
            neg = candidates[row] if row >= 0 else None
            if neg is not None and neg.group != e.group and neg.question != e.question:
                out[e.key] = neg
                break
    return out

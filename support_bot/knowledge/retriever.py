"""Hybrid retrieval (dense FAISS + BM25, fused by reciprocal rank) and the answer-or-abstain decision."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from support_bot.config import RetrievalSettings, Settings
from support_bot.knowledge.index import IndexReader, IndexVersion


@dataclass
class Hit:
    chunk_id: str
    source: str
    entry_id: str | None
    title: str | None
    # The chunk text shown to the model.
    text: str
    # For FAQ entries the answer alone (what is shown when the model's wording is not supported).
    answer: str | None
    url: str | None
    score: float
    dense_score: float
    lexical_score: float


@dataclass
class RetrievalResult:
    query: str
    hits: list[Hit] = field(default_factory=list)
    abstain: bool = True
    reason: str = ""
    index_version: int = 0


@dataclass
class _Entry:
    key: tuple[str, str]
    dense_row: int | None = None
    dense: float | None = None
    lexical_row: int | None = None
    lexical: float = 0.0
    fused: float = 0.0


def decide(top: Hit | None, runner_up: float | None, cfg: RetrievalSettings) -> tuple[bool, str]:
    """Answer when the best entry is close in meaning, or fairly close and clearly closer than any other entry."""
    if top is None:
        return True, "nothing in the knowledge base matches the question"
    if top.dense_score >= cfg.min_score:
        return False, f"top entry similarity {top.dense_score:.2f} reaches {cfg.min_score:.2f}"
    margin = top.dense_score - (runner_up if runner_up is not None else -1.0)
    if top.dense_score >= cfg.min_score_distinct and margin >= cfg.min_margin:
        return False, f"top entry similarity {top.dense_score:.2f} stands {margin:.2f} above the next entry"
    return True, f"top entry similarity {top.dense_score:.2f} is below {cfg.min_score:.2f}"


def _entry_key(version: IndexVersion, row: int) -> tuple[str, str]:
    rec = version.records[row]
    # Chunks of one FAQ entry (a long answer split in parts) collapse into one hit.
    return (rec.source, rec.entry_id) if rec.entry_id else ("\0chunk", rec.chunk_id)


class Retriever:
    """Searches the live index version; picks up newly published versions on the next search."""

    def __init__(self, settings: Settings, *, embedder=None):
        self.settings = settings
        self.reader = IndexReader(settings.index_dir)
        self._embedder = embedder

    @property
    def embedder(self):
        if self._embedder is None:
            from support_bot.knowledge.embedder import get_embedder

            self._embedder = get_embedder(self.settings)
        return self._embedder

    def search(self, query: str, *, k: int | None = None) -> RetrievalResult:
        """Top-k entries for the query with fused and component scores, plus whether to abstain."""
        cfg = self.settings.retrieval
        k = cfg.top_k if k is None else k
        version = self.reader.current()
        query = (query or "").strip()
        result = RetrievalResult(query=query, index_version=version.version)
        if not len(version):
            result.reason = "the knowledge base is empty"
            return result
        if not query:
            result.reason = "the question is empty"
            return result
        qvec = self.embedder.encode([query])[0]
        entries = self._candidates(version, qvec, query, cfg)
        ranked = sorted(entries.values(), key=lambda e: e.fused, reverse=True)[: max(k, 1)]
        self._fill_dense(version, qvec, ranked)
        result.hits = [self._hit(version, e) for e in ranked][:k] if k > 0 else []
        top = self._hit(version, ranked[0]) if ranked else None
        others = [e.dense for e in entries.values() if e.dense is not None and ranked and e is not ranked[0]]
        result.abstain, result.reason = decide(top, max(others, default=None), cfg)
        return result

    def _candidates(self, version: IndexVersion, qvec: np.ndarray, query: str, cfg: RetrievalSettings) -> dict:
        n = max(cfg.candidates, 1)
        entries: dict[tuple[str, str], _Entry] = {}
        for row, score in version.dense_search(qvec, n).items():
            e = entries.setdefault(_entry_key(version, row), _Entry(_entry_key(version, row)))
            if e.dense is None or score > e.dense:
                e.dense, e.dense_row = score, row
        lex = version.lexical_scores(query)
        if lex.size:
            top = np.argpartition(-lex, min(n, lex.size - 1))[:n] if lex.size > n else np.arange(lex.size)
            for row in top.tolist():
                score = float(lex[row])
                if score <= 0:
                    continue
                key = _entry_key(version, row)
                e = entries.setdefault(key, _Entry(key))
                if score > e.lexical:
                    e.lexical, e.lexical_row = score, row
        by_dense = sorted((e for e in entries.values() if e.dense is not None), key=lambda e: e.dense, reverse=True)
        by_lex = sorted((e for e in entries.values() if e.lexical > 0), key=lambda e: e.lexical, reverse=True)
        for rank, e in enumerate(by_dense[:n], 1):
            e.fused += cfg.dense_weight / (cfg.rrf_k + rank)
        for rank, e in enumerate(by_lex[:n], 1):
            e.fused += cfg.lexical_weight / (cfg.rrf_k + rank)
        return entries

    @staticmethod
    def _fill_dense(version: IndexVersion, qvec: np.ndarray, ranked: list[_Entry]) -> None:
        # Entries found only by words still need their cosine: the abstain decision and the caller rely on it.
        missing = [e for e in ranked if e.dense is None and e.lexical_row is not None]
        if missing:
            scores = version.dense_scores(qvec, [e.lexical_row for e in missing])
            for e in missing:
                e.dense, e.dense_row = scores[e.lexical_row], e.lexical_row

    @staticmethod
    def _hit(version: IndexVersion, e: _Entry) -> Hit:
        row = e.dense_row if e.dense_row is not None else e.lexical_row
        rec = version.records[row]
        return Hit(
            chunk_id=rec.chunk_id,
            source=rec.source,
            entry_id=rec.entry_id,
            title=rec.title,
            text=rec.text,
            answer=rec.answer,
            url=rec.url,
            score=float(e.fused),
            dense_score=float(e.dense if e.dense is not None else -1.0),
            lexical_score=float(e.lexical),
        )


_retrievers: dict[tuple[Path, str, str], Retriever] = {}
_lock = threading.Lock()


def get_retriever(settings: Settings) -> Retriever:
    """The process-wide retriever for this index dir and embedding model."""
    key = (settings.index_dir, settings.embedding.model, settings.embedding.device)
    with _lock:
        retriever = _retrievers.get(key)
        if retriever is None:
            retriever = _retrievers[key] = Retriever(settings)
        return retriever

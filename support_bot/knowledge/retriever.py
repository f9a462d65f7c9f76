"""Hybrid retrieval: dense FAISS + BM25 fused by score, near-duplicates collapsed, and the answer-or-abstain rule."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from support_bot.core.config import RetrievalSettings, Settings
from support_bot.knowledge.reader import IndexReader
from support_bot.knowledge.index import IndexVersion
from support_bot.knowledge.signals import candidate_signals

log = logging.getLogger(__name__)


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
    # The fused score: a weighted mean of the question and answer cosines and the relative BM25 score.
    score: float
    # The best cosine between the query and any of the chunk's vectors.
    dense_score: float
    # The chunk's raw BM25 score for the query.
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
    row: int
    fused: float
    dense: float
    lexical: float
    # The answer (body) vector, compared between entries to collapse near-duplicates.
    body: np.ndarray


def decide(top: Hit | None, runner_up: float | None, cfg: RetrievalSettings) -> tuple[bool, str]:
    """Answer when the best entry scores high, or fairly high and clearly above any other entry."""
    if top is None:
        return True, "nothing in the knowledge base matches the question"
    if top.score >= cfg.min_score:
        return False, f"top entry score {top.score:.2f} reaches {cfg.min_score:.2f}"
    margin = top.score - (runner_up if runner_up is not None else -1.0)
    if top.score >= cfg.min_score_distinct and margin >= cfg.min_margin:
        return False, f"top entry score {top.score:.2f} stands {margin:.2f} above the next entry"
    return True, f"top entry score {top.score:.2f} is below {cfg.min_score:.2f}"


def _entry_key(version: IndexVersion, row: int) -> tuple[str, str]:
    rec = version.records[row]
    # Chunks of one FAQ entry (a long answer split in parts) collapse into one hit.
    return (rec.source, rec.entry_id) if rec.entry_id else ("\0chunk", rec.chunk_id)


class Retriever:
    """Searches the live index version; picks up newly published versions on the next search."""

    def __init__(self, settings: Settings, *, embedder=None):
        self.settings = settings
        self.reader = IndexReader(settings.index_dir, settings=settings.index)
        self._embedder = embedder
        self._calibrated: tuple[IndexVersion, RetrievalSettings] | None = None

    @property
    def embedder(self):
        """The embedder queries against the live index version go through."""
        return self._query_embedder(self.reader.current())

    def _query_embedder(self, version: IndexVersion):
        if self._embedder is not None:
            return self._embedder
        from support_bot.knowledge.embedder import query_embedder

        # Each version is searched with the model its vectors came from, so switching to a tuned embedder (or back)
        # takes effect with the index version that holds its vectors, in every process, without a restart.
        return query_embedder(self.settings, version.version)

    def settings_for(self, version: IndexVersion) -> RetrievalSettings:
        """The retrieval settings a version is searched with: its knowledge base's own weights and thresholds when
        they were chosen for it (knowledge.calibration) and calibration is on, else the configured ones."""
        cfg = self.settings.retrieval
        if not (version.calibration and cfg.calibration.enabled):
            return cfg
        cached = self._calibrated
        if cached is None or cached[0] is not version:
            from support_bot.knowledge.calibration import Calibration

            try:
                chosen = Calibration.from_json(version.calibration).apply(cfg)
            except (TypeError, ValueError) as exc:
                log.warning("index v%d: its calibration cannot be used (%s); the configured settings apply",
                            version.version, exc)
                chosen = cfg
            # One version object, one choice: searches do not rebuild the settings each time.
            cached = self._calibrated = (version, chosen)
        return cached[1]

    def search(self, query: str, *, k: int | None = None) -> RetrievalResult:
        """Top-k distinct entries for the query with fused and component scores, plus whether to abstain."""
        version = self.reader.current()
        cfg = self.settings_for(version)
        k = cfg.top_k if k is None else k
        query = (query or "").strip()
        result = RetrievalResult(query=query, index_version=version.version)
        if not len(version):
            result.reason = "the knowledge base is empty"
            return result
        if not query:
            result.reason = "the question is empty"
            return result
        qvec = self._query_embedder(version).encode_query(query)
        ranked = sorted(self._candidates(version, qvec, query, cfg), key=lambda e: e.fused, reverse=True)
        # One more than asked for: the runner-up's score feeds the abstain decision.
        distinct = self._distinct(ranked, cfg.duplicate_similarity, max(k, 1) + 1)
        result.hits = [self._hit(version, e) for e in distinct[:k]] if k > 0 else []
        top = self._hit(version, distinct[0]) if distinct else None
        runner_up = distinct[1].fused if len(distinct) > 1 else None
        result.abstain, result.reason = decide(top, runner_up, cfg)
        return result

    @staticmethod
    def _candidates(version: IndexVersion, qvec: np.ndarray, query: str, cfg: RetrievalSettings) -> list[_Entry]:
        """The best-scoring chunk of each entry found by either the dense or the lexical top list."""
        found = candidate_signals(version, qvec, query, cfg.candidates)
        if not found.rows:
            return []
        # Views are [title, body] (ingest.chunking); a chunk embedded once counts its one vector as both.
        fused = (
            cfg.question_weight * found.question + cfg.answer_weight * found.answer + cfg.lexical_weight * found.relative
        ) / (cfg.question_weight + cfg.answer_weight + cfg.lexical_weight)
        entries: dict[tuple[str, str], _Entry] = {}
        for i, row in enumerate(found.rows):
            key = _entry_key(version, row)
            known = entries.get(key)
            if known is None or fused[i] > known.fused:
                entries[key] = _Entry(
                    row=row, fused=float(fused[i]), dense=float(found.best[i]), lexical=float(found.lexical[i]),
                    body=found.bodies[i],
                )
        return list(entries.values())

    @staticmethod
    def _distinct(ranked: list[_Entry], threshold: float, limit: int) -> list[_Entry]:
        """The ranked entries less those whose answer nearly repeats a better-scoring one's, up to limit."""
        kept: list[_Entry] = []
        for e in ranked:
            if len(kept) >= limit:
                break
            if all(float(e.body @ other.body) < threshold for other in kept):
                kept.append(e)
        return kept

    @staticmethod
    def _hit(version: IndexVersion, e: _Entry) -> Hit:
        rec = version.records[e.row]
        return Hit(
            chunk_id=rec.chunk_id,
            source=rec.source,
            entry_id=rec.entry_id,
            title=rec.title,
            text=rec.text,
            answer=rec.answer,
            url=rec.url,
            score=float(e.fused),
            dense_score=float(e.dense),
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

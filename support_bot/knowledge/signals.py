"""The signals fusion weighs for a query's candidate chunks: the retriever's search and the calibration's held-out
questions (knowledge.calibration) read them from the same code."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from support_bot.knowledge.index import IndexVersion


@dataclass
class Signals:
    """What fusion weighs for each candidate chunk row of one query (rows ascending)."""

    rows: list[int]
    question: np.ndarray  # cosine to the row's question (first) view
    answer: np.ndarray  # cosine to its answer (last) view
    best: np.ndarray  # the best cosine over its views
    lexical: np.ndarray  # its BM25 score
    relative: np.ndarray  # that score over the best BM25 score among the rows searched
    bodies: np.ndarray  # its answer vectors, to collapse near-duplicates


def candidate_signals(
    version: IndexVersion, qvec: np.ndarray, query: str, n: int, *, exclude: frozenset[int] = frozenset()
) -> Signals:
    """The rows of the dense and the lexical top-n lists for the query, with their signals; rows in `exclude` are
    searched as if absent (knowledge.calibration leaves an entry out to ask its own question)."""
    extra = len(exclude)
    rows = {r for r in version.dense_search(qvec, n + extra) if r not in exclude}
    lex = version.lexical_scores(query)
    if exclude:
        lex[list(exclude)] = 0.0
    # Best first, positive scores only; it skips rows that cannot reach the top n instead of sorting them all.
    lexical_top = version.lexical_top(query, n + extra, scores=lex)
    best_lex = next(iter(lexical_top.values()), 0.0)
    rows.update(r for r in lexical_top if r not in exclude)
    ordered = sorted(rows)
    if not ordered:
        empty = np.zeros(0, dtype=np.float32)
        return Signals([], empty, empty, empty, empty, empty, np.zeros((0, version.dim), dtype=np.float32))
    vectors = version.row_vectors(ordered)
    counts = np.asarray([len(v) for v in vectors])
    ends = np.cumsum(counts)
    starts = ends - counts
    sims = np.concatenate(vectors) @ qvec.reshape(-1).astype(np.float32)
    lexical = lex[ordered]
    return Signals(
        rows=ordered,
        question=sims[starts],
        answer=sims[ends - 1],
        best=np.maximum.reduceat(sims, starts),
        lexical=lexical,
        relative=lexical / best_lex if best_lex > 0 else np.zeros_like(lexical),
        bodies=np.stack([v[-1] for v in vectors]),
    )

"""Fusion weights and answer-or-abstain thresholds chosen for one knowledge base from its own entries.

Held-out self-retrieval: an entry's question is asked against the rest of the index. Where other entries give the same
answer (past chats on one topic, FAQ questions written several ways) the question is asked with its own entry left
out, and one of those siblings on top is right; an entry whose answer is held out whole (every entry that gives it) is
a question the rest cannot answer, and should be declined. Each probe's query vector is its entry's stored question
vector, so nothing is embedded again. The retriever's scores are computed for every probe once per candidate, and the
weights and thresholds are picked on them:

- weights: the highest recall@1 over the answerable probes, then MRR; the configured weights stand unless another
  set beats them by `min_gain` (a few lucky probes do not move a good default);
- the cut-off: with those weights, the min_score of the most value (the median over bootstrap resamples) where a right answer gains 1 and a wrong one (a
  declinable probe answered, or an answerable one answered from the wrong entry) costs `wrong_cost`, answerable and
  declinable probes weighed equally; min_score_distinct keeps its configured distance below it, and the margin stays.

A held-out answer leaves its neighbours in: the declinable probes ask about a topic next to ones the knowledge base
covers, which scores higher than most questions it does not cover at all. That is why a wrong answer costs only half a
right one here: on covid-faq the held-out declinable questions' median top score is 0.65 against 0.60 for the
customers' unanswerable ones, and on clinc150 a cut-off of 0.65 answers 14% of them against 1% of real out-of-scope
requests.

Too few probes of either kind (a small FAQ with one question per answer) leave the configured settings in force.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import re
from dataclasses import asdict, dataclass, field

import numpy as np

from support_bot.core.config import CalibrationSettings, RetrievalSettings
from support_bot.knowledge.index import ChunkRecord, IndexVersion
from support_bot.knowledge.signals import candidate_signals

log = logging.getLogger(__name__)

# The RetrievalSettings a calibration chooses (or keeps).
CHOSEN = ("question_weight", "answer_weight", "lexical_weight", "min_score", "min_score_distinct", "min_margin")

ANSWER_WEIGHTS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
LEXICAL_WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.5)


@dataclass
class Probe:
    """One held-out question: the retriever's signals for its candidate entries, and which of them are right."""

    question: str
    # Per candidate entry (rows of one entry are folded to their best-fused row later): the cosine to its question
    # view, to its answer view, and the BM25 score relative to the best of the candidates.
    q: np.ndarray
    a: np.ndarray
    lex: np.ndarray
    entry: np.ndarray  # candidate -> entry number, for folding chunks of one entry
    right: np.ndarray  # candidate is one of the held-out question's siblings
    body: np.ndarray  # answer vectors, to collapse near-duplicates as the retriever does
    answerable: bool
    _dup: np.ndarray | None = field(default=None, repr=False)

    def duplicates(self, threshold: float) -> np.ndarray:
        """Which candidates' answers nearly repeat which others' (the same for every weighting, so computed once)."""
        if self._dup is None:
            self._dup = (self.body @ self.body.T) >= threshold
        return self._dup


@dataclass
class Calibration:
    """What was chosen and why: the settings to search with and the held-out figures behind them."""

    applied: bool
    reason: str
    question_weight: float
    answer_weight: float
    lexical_weight: float
    min_score: float
    min_score_distinct: float
    min_margin: float
    n_answerable: int = 0
    n_declinable: int = 0
    # Held-out figures for the chosen settings and for the configured ones, on the same probes.
    chosen: dict = field(default_factory=dict)
    configured: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "Calibration":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def summary(self) -> str:
        if not self.applied:
            return self.reason
        return (
            f"weights question {self.question_weight:g} / answer {self.answer_weight:g} / lexical "
            f"{self.lexical_weight:g}, answer at {self.min_score:.3f} (or {self.min_score_distinct:.3f} and "
            f"{self.min_margin:g} above the next entry); held-out recall@1 {self.chosen.get('recall@1')}, answer "
            f"precision {self.chosen.get('answer_precision')} at coverage {self.chosen.get('answer_coverage')} "
            f"({self.reason})"
        )

    def apply(self, cfg: RetrievalSettings) -> RetrievalSettings:
        """cfg with this knowledge base's weights and thresholds (cfg itself when the calibration was not applied)."""
        if not self.applied:
            return cfg
        # Validated: a stored choice is read back from disk, and a bad value must fail here, not in a search.
        return type(cfg).model_validate({**cfg.model_dump(), **{k: getattr(self, k) for k in CHOSEN}})


def _norm(text: str | None) -> str:
    return re.sub(r"\s+", " ", (text or "").strip().casefold())


def text_key(text: str | None) -> str:
    """A short fingerprint of a text, case and spacing aside: what a tuned embedder records of each question it was
    trained on, and the answer group of adapt.data (answers with one key are one answer)."""
    return hashlib.sha1(_norm(text).encode("utf-8")).hexdigest()[:16]


def _rank(key: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def _identity(rec: ChunkRecord) -> str:
    return f"{rec.source}\x00{rec.entry_id}"


def _entries(version: IndexVersion) -> tuple[list[list[int]], list[str], list[int]]:
    """Rows of each FAQ entry (chunks of one entry together), each entry's answer group, and its question row."""
    rows: dict[tuple[str, str], list[int]] = {}
    for i, rec in enumerate(version.records):
        if rec.entry_id and rec.title:
            rows.setdefault((rec.source, rec.entry_id), []).append(i)
    entry_rows = list(rows.values())
    groups = [_norm(version.records[r[0]].answer or version.records[r[0]].text) for r in entry_rows]
    return entry_rows, groups, [r[0] for r in entry_rows]


def build_probes(
    version: IndexVersion, cfg: CalibrationSettings, candidates: int, *, trained: frozenset[str] = frozenset()
) -> list[Probe]:
    """Answerable probes (a question asked with its own entry left out) and declinable ones (its whole answer out).

    Questions in `trained` (text_key) are never asked: an embedder tuned on them finds their answers too easily.
    """
    entry_rows, groups, first = _entries(version)
    if not entry_rows or version.dense is None:
        return []
    members: dict[str, list[int]] = {}
    for e, g in enumerate(groups):
        members.setdefault(g, []).append(e)
    fresh = [text_key(version.records[first[e]].title or "") not in trained for e in range(len(groups))]
    shared = [e for e, g in enumerate(groups) if len(members[g]) > 1 and fresh[e]]
    # Sampled by entry identity (source, entry id), not by chunk ids, which are new at every ingest: re-ingesting the
    # same knowledge asks the same questions and so chooses the same settings.
    answerable = sorted(shared, key=lambda e: _rank(_identity(version.records[first[e]]), cfg.seed))
    answerable = answerable[: cfg.max_probes]
    # A declinable probe holds out a whole answer: one question of it is asked against everything else.
    askable = {g: [e for e in es if fresh[e]] for g, es in members.items()}
    held_groups = sorted((g for g in members if askable[g]), key=lambda g: _rank(g, cfg.seed + 1))[: cfg.max_probes]
    declinable = [min(askable[g], key=lambda e: _rank(str(e), cfg.seed + 2)) for g in held_groups]
    row_entry = np.full(len(version.records), -1, dtype=np.int64)
    for e, rs in enumerate(entry_rows):
        row_entry[rs] = e
    probes = []
    plan = [(e, {e}, True) for e in answerable] + [(e, set(members[groups[e]]), False) for e in declinable]
    for e, out, can in plan:
        probe = _probe(version, e, out, can, entry_rows, groups, row_entry, candidates)
        if probe is not None:
            probes.append(probe)
    return probes


def _probe(version, e, out, can, entry_rows, groups, row_entry, candidates) -> Probe | None:
    """Entry e's question asked with the entries in `out` left out: the retriever's signals for what it finds."""
    row = entry_rows[e][0]
    rec = version.records[row]
    qvec = version.row_vectors([row])[0][0]
    found = candidate_signals(
        version, qvec, rec.title, candidates, exclude=frozenset(r for x in out for r in entry_rows[x])
    )
    if not found.rows:
        return None
    entry = row_entry[found.rows]
    right = np.asarray([x >= 0 and groups[x] == groups[e] for x in entry], dtype=bool)
    # Rows outside any FAQ entry (document chunks) get entry numbers of their own.
    entry = np.where(entry >= 0, entry, -1 - np.arange(len(found.rows)))
    return Probe(
        rec.title or "", found.question, found.answer, found.relative.astype(np.float32), entry, right,
        found.bodies.astype(np.float32), answerable=can,
    )


@dataclass
class _Outcome:
    right: np.ndarray  # top entry is right
    top: np.ndarray  # top fused score
    margin: np.ndarray  # top minus the next distinct entry's score
    rank: np.ndarray  # 1-based rank of the first right entry (0: none among the candidates)


def score(probes: list[Probe], weights: tuple[float, float, float], duplicate_similarity: float) -> _Outcome:
    """Each probe's top entry, its score and margin, and the rank of the first right entry, as the retriever ranks.

    Entries are walked best first, skipping one whose answer nearly repeats a kept one's (the retriever's collapse),
    until the top two and the first right entry are known or ten entries are kept (ranks past ten count as none).
    """
    wq, wa, wl = weights
    total = wq + wa + wl
    n = len(probes)
    right, top, margin, rank = np.zeros(n, bool), np.full(n, -1.0), np.zeros(n), np.zeros(n, np.int64)
    for i, p in enumerate(probes):
        fused = (wq * p.q + wa * p.a + wl * p.lex) / total
        dup = p.duplicates(duplicate_similarity)
        seen: set[int] = set()
        kept: list[int] = []
        for c in np.argsort(-fused, kind="stable").tolist():
            ent = int(p.entry[c])
            if ent in seen:
                continue
            seen.add(ent)
            if kept and dup[c, kept].any():
                continue
            kept.append(c)
            if p.right[c] and not rank[i]:
                rank[i] = len(kept)
            if (len(kept) >= 2 and (rank[i] or not p.answerable)) or len(kept) >= 10:
                break
        if not kept:
            continue
        right[i] = bool(p.right[kept[0]])
        top[i] = fused[kept[0]]
        margin[i] = top[i] - (fused[kept[1]] if len(kept) > 1 else -1.0)
    return _Outcome(right, top, margin, rank)


def _answered(o: _Outcome, min_score: float, distinct: float, margin: float) -> np.ndarray:
    return (o.top >= min_score) | ((o.top >= distinct) & (o.margin >= margin))


def _ranking(ranks: np.ndarray) -> tuple[float, float]:
    """recall@1 and MRR of the answerable probes' ranks of their first right entry (0: none found)."""
    if not len(ranks):
        return 0.0, 0.0
    return float((ranks == 1).mean()), float(np.where(ranks > 0, 1.0 / np.maximum(ranks, 1), 0.0).mean())


def figures(o: _Outcome, answerable: np.ndarray, answered: np.ndarray, wrong_cost: float) -> dict:
    pos, neg = answerable, ~answerable
    good = answered & o.right & pos
    bad_pos = answered & pos & ~o.right
    bad_neg = answered & neg
    n_pos, n_neg = max(int(pos.sum()), 1), max(int(neg.sum()), 1)
    n_answered = int(answered.sum())
    recall1, mrr = _ranking(o.rank[pos])
    return {
        "recall@1": round(recall1, 4),
        "mrr": round(mrr, 4),
        "answer_coverage": round(float(good.sum()) / n_pos, 4),
        "abstain_recall": round(1.0 - float(bad_neg.sum()) / n_neg, 4),
        "answer_precision": round(float(good.sum()) / n_answered, 4) if n_answered else 0.0,
        # Balanced: answerable and declinable probes count half each, whatever their numbers.
        "value": round(
            0.5 * (float(good.sum()) - wrong_cost * float(bad_pos.sum())) / n_pos
            - 0.5 * wrong_cost * float(bad_neg.sum()) / n_neg,
            4,
        ),
    }


def _best_cut(
    o: _Outcome, answerable: np.ndarray, cfg: CalibrationSettings, gap: float, margin: float
) -> tuple[float, dict]:
    """The min_score of the most value, min_score_distinct kept `gap` below it and the margin as configured.

    One free cut-off: the probes are a few hundred at most, and three free thresholds fit their noise. Even one does:
    the value curve is flat near its top, where a few probes decide the maximum. So the cut-off is the median of the
    best cut-offs of `resamples` stratified bootstrap resamples of the probes (seeded), not the best of the one sample.
    Candidates are the probes' own top scores (and one above them all: decline everything).
    """
    wrong_cost = cfg.wrong_cost
    cuts = np.append(np.unique(o.top), float(o.top.max()) + 1e-3)
    answered = np.stack([_answered(o, float(c), float(c) - gap, margin) for c in cuts]).astype(np.float64)
    pos, neg = np.flatnonzero(answerable), np.flatnonzero(~answerable)
    gain = np.zeros(len(answerable))
    gain[pos] = np.where(o.right[pos], 0.5, -0.5 * wrong_cost) / max(len(pos), 1)
    gain[neg] = -0.5 * wrong_cost / max(len(neg), 1)
    rng = np.random.default_rng(cfg.seed)
    weights = np.ones((cfg.resamples + 1, len(answerable)))
    for b in range(1, cfg.resamples + 1):
        weights[b] = 0.0
        for part in (pos, neg):
            if len(part):
                np.add.at(weights[b], rng.choice(part, size=len(part)), 1.0)
    values = answered @ (weights * gain).T  # cuts x resamples
    # Equal value: the stricter cut-off wins (fewer answers on the same evidence).
    best = [cuts[np.flatnonzero(v >= v.max() - 1e-12)[-1]] for v in values.T[1:]] or [cuts[np.argmax(values[:, 0])]]
    cut = float(np.median(best))
    return cut, figures(o, answerable, _answered(o, cut, cut - gap, margin), wrong_cost)


def calibrate(
    version: IndexVersion, retrieval: RetrievalSettings, *, trained: frozenset[str] = frozenset()
) -> Calibration:
    """The weights and thresholds for this index version, from its own entries (those in `trained` never asked)."""
    cfg = retrieval.calibration
    configured_w = (retrieval.question_weight, retrieval.answer_weight, retrieval.lexical_weight)
    keep = {k: getattr(retrieval, k) for k in CHOSEN}
    if not cfg.enabled:
        return Calibration(False, "calibration is turned off", **keep)
    probes = build_probes(version, cfg, retrieval.candidates, trained=trained)
    answerable = np.asarray([p.answerable for p in probes], dtype=bool)
    n_pos, n_neg = int(answerable.sum()), int((~answerable).sum())
    if n_pos < cfg.min_probes or n_neg < cfg.min_probes:
        return Calibration(
            False,
            f"too few held-out questions to choose from ({n_pos} answerable, {n_neg} declinable; "
            f"{cfg.min_probes} of each needed"
            + (f"; the {len(trained)} questions the embedder was tuned on are not asked" if trained else "")
            + "): the configured settings stand",
            n_answerable=n_pos,
            n_declinable=n_neg,
            **keep,
        )
    dup = retrieval.duplicate_similarity
    base = score(probes, configured_w, dup)
    base_f = figures(base, answerable, _answered(base, retrieval.min_score, retrieval.min_score_distinct,
                                                  retrieval.min_margin), cfg.wrong_cost)
    best_w, best_o, best_key = configured_w, base, (base_f["recall@1"] + cfg.min_gain, base_f["mrr"])
    for wa, wl in itertools.product(ANSWER_WEIGHTS, LEXICAL_WEIGHTS):
        w = (1.0, wa, wl)
        o = score(probes, w, dup)
        key = _ranking(o.rank[answerable])
        if key > best_key:
            best_w, best_o, best_key = w, o, key
    gap = max(retrieval.min_score - retrieval.min_score_distinct, 0.0)
    s, chosen = _best_cut(best_o, answerable, cfg, gap, retrieval.min_margin)
    return Calibration(
        True,
        f"chosen on {n_pos} answerable and {n_neg} declinable held-out questions of this knowledge base",
        question_weight=best_w[0],
        answer_weight=best_w[1],
        lexical_weight=best_w[2],
        min_score=round(s, 4),
        min_score_distinct=round(s - gap, 4),
        min_margin=retrieval.min_margin,
        n_answerable=n_pos,
        n_declinable=n_neg,
        chosen=chosen,
        configured=base_f,
    )


def stored(version: IndexVersion, retrieval: RetrievalSettings, *, trained: frozenset[str] = frozenset()) -> dict | None:
    """What to store with a version about to go live (None with calibration off): write_version's `calibrate`."""
    if not retrieval.calibration.enabled:
        return None
    chosen = calibrate(version, retrieval, trained=trained)
    log.info("retrieval calibration for index v%d: %s", version.version, chosen.summary())
    return chosen.to_json()

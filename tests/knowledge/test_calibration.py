"""Per knowledge base weights and thresholds from held-out self-retrieval (knowledge.calibration).

The knowledge bases here are synthetic vectors, so each property is built in on purpose: topics of several past-chat
questions that share one answer, answers that point at the wrong topic, questions that match each other only loosely.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from support_bot.core.config import IndexSettings, RetrievalSettings, Settings
from support_bot.knowledge.calibration import Calibration, build_probes, calibrate, text_key
from support_bot.knowledge.index import CALIBRATION, ChunkRecord, build_approximate, write_version
from support_bot.knowledge.reader import IndexReader
from support_bot.knowledge.retriever import Retriever

DIM = 48


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


class _Topics:
    """Topics with centres in DIM dimensions; a question is its topic's centre plus noise of the given size."""

    def __init__(self, n: int, noise: float, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.centres = _unit(self.rng.normal(size=(n, DIM)))
        self.noise = noise

    def question(self, t: int) -> np.ndarray:
        return _unit(self.centres[t] + self.noise * _unit(self.rng.normal(size=DIM)))

    def stranger(self) -> np.ndarray:
        """A question about none of the topics."""
        return _unit(self.rng.normal(size=DIM))


def _publish(path, topics: _Topics, per_topic: int, *, answer_of=lambda t: t, retrieval=None, calibrate_it=True,
             chunk_ids="c"):
    """Past chats as entries: per topic, per_topic questions sharing one answer (whose vector is answer_of's topic)."""
    records, vectors = [], []
    for t in range(len(topics.centres)):
        for j in range(per_topic):
            # Words of their own: the lexical signal knows nothing, so only the vectors decide.
            records.append(ChunkRecord(f"{chunk_ids}{t}-{j}", "chats", f"{t}-{j}", f"q{t}x{j}", f"q{t}x{j}\nanswer {t}",
                                       f"answer {t}", None, f"q{t}x{j}"))
            vectors += [topics.question(t), topics.centres[answer_of(t)]]
    retrieval = retrieval or RetrievalSettings()
    write_version(path, records=records, vectors=np.stack(vectors), vec_counts=[2] * len(records),
                  embedding_model="synthetic",
                  calibrate=(lambda v: calibrate(v, retrieval).to_json()) if calibrate_it else None)
    return IndexReader(path).current()


class _Embedder:
    def __init__(self):
        self.next: np.ndarray | None = None

    def encode_query(self, text: str) -> np.ndarray:
        return self.next


def _retriever(tmp_path, *, enabled: bool = True) -> tuple[Retriever, _Embedder]:
    settings = Settings(data_dir=tmp_path, retrieval={"calibration": {"enabled": enabled}})
    embedder = _Embedder()
    return Retriever(settings, embedder=embedder), embedder


def _ask(retriever: Retriever, embedder: _Embedder, vector: np.ndarray):
    embedder.next = vector
    return retriever.search("a question")


def _both(tmp_path, topics: _Topics, judge) -> dict[str, int]:
    """How many of one fresh question per topic `judge(result, topic)` accepts, calibrated and configured."""
    searchers = {"calibrated": _retriever(tmp_path), "configured": _retriever(tmp_path, enabled=False)}
    counts = dict.fromkeys(searchers, 0)
    for t in range(len(topics.centres)):
        q = topics.question(t)
        for name, (r, e) in searchers.items():
            counts[name] += bool(judge(_ask(r, e, q), t))
    return counts


def _topic(result) -> str:
    return result.hits[0].entry_id.split("-")[0]


def test_answers_pointing_at_another_topic_lose_their_weight_and_the_right_topic_ranks_first(tmp_path):
    topics = _Topics(40, noise=0.9)
    # Each topic's stored answer reads like the next topic: the configured answer weight ranks the wrong topic first.
    version = _publish(tmp_path / "index", topics, 6, answer_of=lambda t: (t + 1) % 40)
    chosen = Calibration.from_json(version.calibration)
    assert chosen.applied, chosen.reason
    assert chosen.answer_weight < RetrievalSettings().answer_weight
    assert chosen.chosen["recall@1"] > chosen.configured["recall@1"] + 0.1

    right = _both(tmp_path, topics, lambda result, t: _topic(result) == str(t))
    assert right["calibrated"] >= 34 and right["calibrated"] > right["configured"] + 5, right


def test_a_knowledge_base_whose_questions_match_loosely_gets_a_lower_cut_off_and_still_declines_strangers(tmp_path):
    topics = _Topics(40, noise=1.3)  # questions of one topic have cosines around 0.4 with each other
    version = _publish(tmp_path / "index", topics, 6)
    chosen = Calibration.from_json(version.calibration)
    assert chosen.applied and chosen.min_score < RetrievalSettings().min_score - 0.1, chosen.summary()

    answered = _both(tmp_path, topics, lambda result, t: not result.abstain and _topic(result) == str(t))
    assert answered["calibrated"] >= 32 and answered["configured"] <= answered["calibrated"] - 15, answered
    calibrated, e1 = _retriever(tmp_path)
    declined = sum(_ask(calibrated, e1, topics.stranger()).abstain for _ in range(40))
    assert declined >= 30


def test_too_few_held_out_questions_leave_the_configured_settings(tmp_path):
    # An FAQ with one question per answer has nothing to ask with its own entry left out.
    version = _publish(tmp_path / "index", _Topics(20, noise=0.5), 1)
    chosen = Calibration.from_json(version.calibration)
    assert not chosen.applied and "too few held-out questions" in chosen.reason
    cfg = RetrievalSettings()
    assert chosen.apply(cfg) is cfg
    retriever, _ = _retriever(tmp_path)
    assert retriever.settings_for(version) == Settings(data_dir=tmp_path).retrieval


def test_probes_leave_out_their_own_entry_or_their_whole_answer(tmp_path):
    version = _publish(tmp_path / "index", _Topics(35, noise=0.5), 3, calibrate_it=False)
    probes = build_probes(version, RetrievalSettings().calibration, 50)
    answerable = [p for p in probes if p.answerable]
    declinable = [p for p in probes if not p.answerable]
    assert len(answerable) == 105 and len(declinable) == 35
    for p in answerable:
        # Its own entry is not among the candidates; its two siblings are, and they are the right ones.
        own = next(i for i, r in enumerate(version.records) if r.title == p.question)
        assert own not in set(int(x) for x in p.entry) and int(p.right.sum()) == 2
    assert all(not p.right.any() for p in declinable)


def test_the_same_knowledge_ingested_again_is_asked_the_same_sampled_questions(tmp_path):
    """Chunk ids are new at every ingest; the sample of held-out questions follows the entries, not the chunks."""
    cfg = RetrievalSettings().calibration.model_copy(update={"max_probes": 20})
    asked = []
    for ingest in ("first", "second"):
        version = _publish(tmp_path / ingest, _Topics(35, noise=0.5), 3, calibrate_it=False, chunk_ids=ingest)
        asked.append([p.question for p in build_probes(version, cfg, 50) if p.answerable])
    assert len(asked[0]) == 20 and asked[0] == asked[1]


def test_the_choice_is_stored_with_the_version_and_goes_with_its_approximate_index(tmp_path):
    index = tmp_path / "index"
    _publish(index, _Topics(40, noise=0.9), 6, answer_of=lambda t: (t + 1) % 40)
    stored = json.loads((index / "v1" / CALIBRATION).read_text())
    assert stored["applied"] and stored["answer_weight"] < 0.6
    assert build_approximate(index, 1, IndexSettings(approximate_above=10)) == 2
    assert IndexReader(index).current().calibration == stored
    # Turned off, the configured weights hold even for a calibrated version.
    retriever, _ = _retriever(tmp_path, enabled=False)
    assert retriever.settings_for(IndexReader(index).current()).answer_weight == RetrievalSettings().answer_weight


def test_the_configured_weights_stand_unless_others_clearly_beat_them(tmp_path):
    # Answers that fit their own topic: nothing to gain from other weights, so the configured ones are kept.
    version = _publish(tmp_path / "index", _Topics(40, noise=0.9), 6, calibrate_it=False)
    cfg = RetrievalSettings()
    chosen = calibrate(version, cfg)
    assert chosen.applied
    assert (chosen.question_weight, chosen.answer_weight, chosen.lexical_weight) == (
        cfg.question_weight, cfg.answer_weight, cfg.lexical_weight
    )
    off = calibrate(version, cfg.model_copy(update={"calibration": cfg.calibration.model_copy(update={"enabled": False})}))
    assert not off.applied and off.min_score == cfg.min_score


@pytest.mark.parametrize("cost", [0.25, 4.0])
def test_a_dearer_wrong_answer_never_lowers_the_cut_off(tmp_path, cost):
    version = _publish(tmp_path / "index", _Topics(40, noise=1.1), 6, calibrate_it=False)
    base = RetrievalSettings()
    other = base.model_copy(update={"calibration": base.calibration.model_copy(update={"wrong_cost": cost})})
    a, b = calibrate(version, base).min_score, calibrate(version, other).min_score
    assert (b >= a) if cost > base.calibration.wrong_cost else (b <= a)


def test_questions_a_tuned_embedder_learned_are_never_asked(tmp_path):
    version = _publish(tmp_path / "index", _Topics(35, noise=0.5), 3, calibrate_it=False)
    learned = frozenset(text_key(r.title) for r in version.records if not r.entry_id.endswith("-0"))
    probes = build_probes(version, RetrievalSettings().calibration, 50, trained=learned)
    assert probes and all(text_key(p.question) not in learned for p in probes)
    # One fresh question per topic: 35 answerable probes and 35 declinable ones, nothing else.
    assert sum(p.answerable for p in probes) == 35 and sum(not p.answerable for p in probes) == 35
    chosen = calibrate(version, RetrievalSettings(), trained=frozenset(text_key(r.title) for r in version.records))
    assert not chosen.applied and "the 105 questions the embedder was tuned on are not asked" in chosen.reason


@pytest.mark.parametrize("stored", ["{not json", "[1, 2]", '{"applied": true, "reason": "x"}',
                                    '{"applied": true, "reason": "x", "question_weight": 1, "answer_weight": 0, '
                                    '"lexical_weight": 0, "min_score": "high", "min_score_distinct": 0.5, '
                                    '"min_margin": 0.1}'])
def test_a_damaged_calibration_leaves_the_version_searchable_with_the_configured_settings(tmp_path, caplog, stored):
    index = tmp_path / "index"
    topics = _Topics(40, noise=0.9)
    _publish(index, topics, 6, answer_of=lambda t: (t + 1) % 40)
    (index / "v1" / CALIBRATION).write_text(stored, encoding="utf-8")
    retriever, embedder = _retriever(tmp_path)
    result = _ask(retriever, embedder, topics.question(3))
    assert result.hits and retriever.settings_for(retriever.reader.current()) == Settings(data_dir=tmp_path).retrieval
    assert "configured" in caplog.text

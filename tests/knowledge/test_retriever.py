"""Hybrid retriever on the FAQ fixture: paraphrases find the right entry, unrelated questions abstain."""

from __future__ import annotations

import pytest

from ingest.pipeline import ingest_path
from support_bot.core.config import RetrievalSettings
from support_bot.core.errors import ModelNotAvailable
from support_bot.knowledge.embedder import Embedder, get_embedder
from support_bot.knowledge.retriever import Hit, Retriever, decide, get_retriever

from tests.conftest import FAQ

PARAPHRASES = {
    "How many days until my order is delivered?": "ship-01",
    "Can I return a bike I bought last week?": "ret-01",
    "I forgot my password, how do I get back in?": "acc-01",
    "Do you deliver to Germany?": "ship-02",
    "Which frame size should I get for my height?": "fit-01",
    "How do I update my email?": "acc-02",
    "What credit cards can I pay with?": "pay-01",
    "When do I get my money back after returning something?": "ret-02",
}
UNRELATED = [
    "What's the capital of France?",
    "How do I bake sourdough bread?",
    "Who won the football world cup in 2018?",
]


@pytest.fixture
def loaded(kb):
    ingest_path(settings=kb, path=FAQ)
    return kb


def test_embedder_gives_unit_float32_vectors(embedder):
    v = embedder.encode(["hello", "a longer sentence about bikes"])
    assert v.dtype.name == "float32" and v.shape == (2, embedder.dim) and embedder.dim == 384
    assert abs(float((v * v).sum(axis=1).max()) - 1.0) < 1e-4
    assert embedder.encode([]).shape == (0, 384)
    assert embedder.token_offsets("Hello world")[-1] == (6, 11)


def test_get_embedder_is_cached(settings, embedder):
    assert get_embedder(settings) is embedder


def test_missing_embedding_model_is_one_clear_line(tmp_path):
    with pytest.raises(ModelNotAvailable) as info:
        Embedder(str(tmp_path / "nope"))
    assert "SUPPORT_BOT_EMBEDDING__MODEL" in info.value.detail and "\n" not in info.value.detail


@pytest.mark.parametrize("question", list(PARAPHRASES))
def test_paraphrases_find_the_right_entry(loaded, question):
    result = get_retriever(loaded).search(question)
    assert not result.abstain, result.reason
    top = result.hits[0]
    assert top.entry_id == PARAPHRASES[question]
    assert top.dense_score > result.hits[1].dense_score
    assert top.text.startswith(top.title + "\n") and top.text.endswith(top.answer)
    assert top.source == "northwind_faq" and top.chunk_id


@pytest.mark.parametrize("question", UNRELATED)
def test_unrelated_questions_abstain(loaded, question):
    result = get_retriever(loaded).search(question)
    assert result.abstain and "below" in result.reason


def test_hits_are_fused_collapsed_and_sized_by_k(loaded):
    retriever = Retriever(loaded)
    result = retriever.search("refund for a returned bike", k=5)
    assert len(result.hits) == 5 and len({h.entry_id for h in result.hits}) == 5
    scores = [h.score for h in result.hits]
    assert scores == sorted(scores, reverse=True)
    assert {h.entry_id for h in result.hits[:2]} == {"ret-01", "ret-02"}
    assert all(-1.0 <= h.dense_score <= 1.0 and h.lexical_score >= 0 for h in result.hits)
    assert len(retriever.search("refund").hits) == loaded.retrieval.top_k
    assert retriever.search("refund", k=0).hits == []


def test_url_and_answer_come_back(loaded):
    top = Retriever(loaded).search("What does the warranty cover on my frame?").hits[0]
    assert top.entry_id == "war-01"
    assert top.url == "https://northwind-bikes.example/help/warranty"
    assert top.answer.startswith("Every Northwind frame has a lifetime warranty")


def test_empty_knowledge_base_and_empty_question_abstain(kb):
    retriever = Retriever(kb)
    result = retriever.search("How long does shipping take?")
    assert result.abstain and result.hits == [] and "empty" in result.reason
    ingest_path(settings=kb, path=FAQ)
    assert retriever.search("   ").abstain


def test_retriever_created_before_a_publish_sees_it(kb, tmp_path):
    retriever = get_retriever(kb)
    assert retriever.search("Do you sell gift cards?").hits == []
    ingest_path(settings=kb, path=FAQ)
    extra = tmp_path / "gifts.csv"
    extra.write_text("id,question,answer\ng1,Do you sell gift cards?,Yes: digital gift cards from $25 to $500.\n")
    ingest_path(settings=kb, path=extra)
    result = retriever.search("Can I buy a gift card for a friend?")
    assert result.index_version == 2
    assert (result.hits[0].entry_id, result.hits[0].source) == ("g1", "gifts")
    assert not result.abstain
    # Both sources stay searchable side by side.
    assert retriever.search("How long does shipping take?").hits[0].source == "northwind_faq"


SHIPPING_FAQ = """id,question,answer
ship,How long does shipping take?,Orders leave our Portland warehouse within 2 business days and arrive 3-5 days later.
when,When will my parcel arrive?,Orders leave our Portland warehouse in two business days and get there 3 to 5 days on.
seattle,Do you ship from Seattle?,Orders leave our Seattle warehouse within 2 business days; delivery takes a week.
track,How do I track my order?,Track your parcel from the Orders page of your account; the carrier link updates hourly.
"""


def test_near_duplicate_answers_collapse_into_the_best_scoring_entry(kb, tmp_path):
    path = tmp_path / "shipping.csv"
    path.write_text(SHIPPING_FAQ)
    ingest_path(settings=kb, path=path)
    hits = Retriever(kb).search("When is my parcel going to arrive?", k=4).hits
    # "ship" says what "when" says in other words: the better-scoring one stands for both. A similar answer that says
    # something else (another warehouse) is not a duplicate.
    assert [h.entry_id for h in hits][0] == "when" and len(hits) == 3
    assert {h.entry_id for h in hits} == {"when", "seattle", "track"}
    kb.retrieval.duplicate_similarity = 1.0
    assert {h.entry_id for h in Retriever(kb).search("When is my parcel going to arrive?", k=4).hits} == {
        "when", "ship", "seattle", "track"
    }


def test_score_weighs_the_question_and_the_answer_vectors_as_configured(loaded, embedder):
    question = "Can I return a bike I bought last week?"
    q, title = embedder.encode([question, "What is your return policy?"])
    cfg = loaded.retrieval
    cfg.answer_weight, cfg.lexical_weight = 0.0, 0.0
    by_question = _find(Retriever(loaded).search(question, k=20).hits, "ret-01")
    assert by_question.score == pytest.approx(float(q @ title), abs=1e-4)
    cfg.question_weight, cfg.answer_weight = 0.0, 1.0
    by_answer = Retriever(loaded).search(question, k=1).hits[0]
    # The answer's wording carries this question: its cosine is the larger one, the best of the chunk's vectors.
    assert by_answer.entry_id == "ret-01" and by_answer.score > by_question.score
    assert by_answer.score == pytest.approx(by_answer.dense_score, abs=1e-4)


def test_lexical_weight_alone_ranks_by_shared_words(loaded):
    cfg = loaded.retrieval
    cfg.question_weight, cfg.answer_weight, cfg.lexical_weight = 0.0, 0.0, 1.0
    hits = Retriever(loaded).search("Klarna installments", k=3).hits
    assert hits[0].entry_id == "pay-01" and hits[0].score == pytest.approx(1.0)
    assert all(h.score < 1.0 for h in hits[1:])


def _find(hits: list[Hit], entry_id: str) -> Hit:
    return next(h for h in hits if h.entry_id == entry_id)


def _hit(score: float) -> Hit:
    return Hit("c", "s", "e", "t", "text", "a", None, score=score, dense_score=score, lexical_score=0.0)


def test_decide_answers_high_or_distinct_scores_and_abstains_otherwise():
    cfg = RetrievalSettings(min_score=0.65, min_score_distinct=0.5, min_margin=0.2)
    assert decide(None, None, cfg) == (True, "nothing in the knowledge base matches the question")
    assert decide(_hit(0.7), 0.69, cfg)[0] is False
    abstain, reason = decide(_hit(0.55), 0.30, cfg)
    assert abstain is False and "above the next entry" in reason
    # Close to another entry: not distinct enough to answer below min_score.
    abstain, reason = decide(_hit(0.55), 0.40, cfg)
    assert abstain is True and "below 0.65" in reason
    assert decide(_hit(0.45), None, cfg)[0] is True
    assert decide(_hit(0.55), None, cfg)[0] is False


def test_all_weights_zero_is_refused():
    with pytest.raises(ValueError, match="cannot all be 0"):
        RetrievalSettings(question_weight=0, answer_weight=0, lexical_weight=0)

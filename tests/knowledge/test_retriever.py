"""Hybrid retriever on the FAQ fixture: paraphrases find the right entry, unrelated questions abstain."""

from __future__ import annotations

import pytest

from ingest.pipeline import ingest_path
from support_bot.errors import ModelNotAvailable
from support_bot.knowledge.embedder import Embedder, get_embedder
from support_bot.knowledge.retriever import Retriever, get_retriever

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

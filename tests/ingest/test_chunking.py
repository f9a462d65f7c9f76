"""Chunking: one chunk per FAQ entry; long answers split by tokens with overlap under the question."""

from __future__ import annotations

from ingest.chunking import chunk_faq, regex_token_offsets, split_tokens
from ingest.loaders.base import FaqEntry
from ingest.loaders.faq_csv import parse_faq_csv

from tests.conftest import FAQ


def _words(text: str) -> list[str]:
    return text.split()


def test_short_entries_are_one_chunk_each():
    entries = parse_faq_csv(FAQ.read_bytes())
    drafts = chunk_faq(entries, chunk_tokens=256, chunk_overlap=32)
    assert len(drafts) == len(entries)
    first = drafts[0]
    assert first.text == f"{entries[0].question}\n{entries[0].answer}"
    assert first.title == entries[0].question and first.entry_id == entries[0].id
    # Question and answer are embedded apart: the retriever weighs the two cosines separately.
    assert first.views == [entries[0].question, entries[0].answer]
    assert first.answer == entries[0].answer and first.url == entries[0].url
    assert [d.ordinal for d in drafts] == list(range(len(drafts)))


def test_long_answer_is_split_with_overlap_under_the_question():
    answer = " ".join(f"Sentence number {i} explains one more step of the process." for i in range(40))
    entry = FaqEntry(id="long", question="How does the process work?", answer=answer)
    drafts = chunk_faq([entry], chunk_tokens=64, chunk_overlap=12)
    assert len(drafts) > 3
    budget = 64 - len(regex_token_offsets(entry.question)) - 3
    for i, d in enumerate(drafts):
        heading, body = d.text.split("\n", 1)
        assert heading == entry.question
        assert len(regex_token_offsets(body)) <= budget
        assert (d.part, d.parts, d.entry_id, d.answer) == (i, len(drafts), "long", answer)
        # Every part is embedded as [heading, its own part of the answer].
        assert d.views == [entry.question, body]
    bodies = [d.text.split("\n", 1)[1] for d in drafts]
    for prev, nxt in zip(bodies, bodies[1:]):
        assert set(_words(prev)[-6:]) & set(_words(nxt)[:12]), "consecutive parts should overlap"
    covered = set().union(*(_words(b) for b in bodies))
    assert set(_words(answer)) <= covered
    # Parts end at sentence boundaries when one is in reach.
    assert all(b.endswith(".") for b in bodies)


def test_split_never_cuts_words_with_subword_offsets():
    text = "internationalization " * 30

    def subwords(s: str) -> list[tuple[int, int]]:
        # Four-character pieces stand in for a subword tokenizer that splits words.
        return [(i, min(i + 4, len(s))) for i in range(0, len(s), 4) if s[i : i + 4].strip()]

    parts = split_tokens(text, budget=20, overlap=4, offsets=subwords)
    assert len(parts) > 1
    assert all(set(p.split()) == {"internationalization"} for p in parts)


def test_zero_overlap_and_tiny_budget_terminate():
    parts = split_tokens("a b c d e f g h i j", budget=3, overlap=5, offsets=regex_token_offsets)
    assert parts[0] == "a b c" and parts[-1].endswith("j")

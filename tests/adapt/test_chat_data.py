"""Chat training examples: the live turn's exact prompt, the answer the model should write, declines, and nothing of
the held-out slice."""

from __future__ import annotations

import re

import pytest

from support_bot.adapt import chat_data, service
from support_bot.adapt.chat_data import ANSWER, DECLINE, IGNORE
from support_bot.chat.prompt import system_prompt
from support_bot.chat.replies import ABSTAIN_TEXT
from support_bot.llm.prompt import llama2_token_ids, template_token_ids
from support_bot.safety.output_guard import system_prompt_with_canary
from support_bot.core.config import Settings
from tests.adapt.chat_support import chat_settings, demo_kb_dir, tiny_chatml_llama  # noqa: F401 - fixtures
from tests.adapt.conftest import tiny
from tests.llm.conftest import build_tokenizer


def _demo(root, model_dir, **chat) -> Settings:
    """Settings reading the shared demo knowledge base (these tests write nothing to it)."""
    return chat_settings(tiny(Settings(data_dir=root, database_url=None, redis_url=None)), model_dir, **chat)


@pytest.fixture(scope="module")
def built(demo_kb_dir, tiny_chatml_llama):  # noqa: F811 - the fixtures imported above
    """Settings, split and the examples of a run on the demo FAQ (every training question asked, a third declined)."""
    s = _demo(demo_kb_dir, tiny_chatml_llama, max_examples=0, decline_fraction=0.35)
    split = service._split(s, s.adapt)
    retrieve = chat_data.live_retrieve(s, s.retrieval.top_k + 8)
    # Searched once: the seeded-rebuild check below reuses the results.
    ranked = {e.question: retrieve(e.question) for e in split.train}
    return s, split, chat_data.build_examples(s, split, ranked.__getitem__, chat_data.live_sources(s)), ranked


def test_an_example_is_the_live_turn_with_the_right_entry_among_numbered_sources(built):
    s, split, examples, ranked = built
    answers = [x for x in examples if x.kind == ANSWER]
    assert {x.key for x in answers} == {e.key for e in split.train}
    by_key = {e.key: e for e in split.train}
    for x in answers:
        system, user = x.messages(s)
        # The system prompt chat.prompt writes, with the canary verify.py puts first, and the question as asked.
        assert system.content == system_prompt_with_canary(system_prompt(s, list(x.sources)), x.canary)
        assert user.role == "user" and user.content == by_key[x.key].question
        assert len(x.sources) == s.retrieval.top_k
        assert f"\n[{x.right}] {x.sources[x.right - 1].text}" in system.content
        assert x.sources[x.right - 1].key == x.key
        # The target: the entry's own first sentence(s), citing the right source number, nothing more.
        assert x.target.count("[") == 1 and re.search(rf" \[{x.right}\][.!?]?[\"')]*$", x.target)
        plain = x.target.replace(f" [{x.right}]", "")
        assert plain.split()[0] in by_key[x.key].answer and len(plain.split()) <= max(
            s.adapt.chat.answer_words, len(chat_data.short_answer(by_key[x.key].answer, 1).split())
        )
    # The right entry is not always first: the model must find it.
    assert len({x.right for x in answers}) > 1
    # Seeded: the same data and settings make the same examples.
    assert chat_data.build_examples(s, split, ranked.__getitem__, chat_data.live_sources(s)) == examples


def test_decline_examples_show_only_entries_that_answer_something_else(built):
    s, split, examples, _ranked = built
    declines = [x for x in examples if x.kind == DECLINE]
    assert declines
    group = {e.key: e.group for e in split.train}
    for x in declines:
        assert x.target == ABSTAIN_TEXT and x.right is None and x.sources
        assert all(src.group != group[x.key] and src.key != x.key for src in x.sources)


def test_nothing_of_the_held_out_slice_is_asked_or_shown(demo_kb_dir, tiny_chatml_llama):  # noqa: F811
    s = _demo(demo_kb_dir, tiny_chatml_llama, max_examples=0, decline_fraction=0.5)
    s = s.model_copy(update={"adapt": s.adapt.model_copy(update={"heldout_fraction": 0.4, "abstain_fraction": 0.3})})
    split = service._split(s, s.adapt)
    assert split.heldout_keys and split.withheld_groups
    examples = chat_data.build_examples(
        s, split, chat_data.live_retrieve(s, 20), chat_data.live_sources(s)
    )
    held_questions = {e.question for e in [*split.heldout, *split.abstain]}
    assert examples
    for x in examples:
        assert x.key not in split.heldout_keys and x.question not in held_questions
        for src in x.sources:
            assert src.key not in split.heldout_keys and src.group not in split.withheld_groups
    # The live index does hold held-out entries: they were left out, not absent.
    known = chat_data.live_sources(s)
    assert split.heldout_keys & set(known)


@pytest.mark.parametrize("chatml", [True, False], ids=["template", "llama2"])
def test_the_loss_falls_on_the_answer_and_its_end_of_turn_only(built, chatml):
    s, _split, examples, _ranked = built
    tokenizer = build_tokenizer(chatml=chatml)
    fmt = "template" if chatml else "llama2"
    end = chat_data.end_of_turn_id(tokenizer)
    for x in [e for e in examples if e.kind == ANSWER][:3] + [e for e in examples if e.kind == DECLINE][:2]:
        messages = x.messages(s)
        enc = chat_data.encode(tokenizer, fmt, messages, x.target, end)
        prompt = template_token_ids(tokenizer, messages) if chatml else llama2_token_ids(tokenizer, messages)
        # The prompt exactly as the engine renders it, then the answer the model is to write after it.
        assert enc.input_ids[: len(prompt)] == prompt
        assert enc.labels[: len(prompt)] == [IGNORE] * len(prompt)
        answer = enc.labels[len(prompt) :]
        assert IGNORE not in answer and answer == enc.input_ids[len(prompt) :] and answer[-1] == end
        assert tokenizer.decode(answer[:-1]).strip() == x.target
    if not chatml:
        assert tokenizer.decode(enc.input_ids[: len(prompt)]).rstrip().endswith("[/INST]")


def test_an_example_too_long_loses_distractors_and_keeps_its_citation_right(built):
    s, _split, examples, _ranked = built
    tokenizer = build_tokenizer(chatml=True)
    end = chat_data.end_of_turn_id(tokenizer)
    x = next(e for e in examples if e.kind == ANSWER and e.right == len(e.sources))
    full = chat_data.encode(tokenizer, "template", x.messages(s), x.target, end)
    tight = s.model_copy(update={"adapt": s.adapt.model_copy(
        update={"chat": s.adapt.chat.model_copy(update={"max_tokens": len(full.input_ids) - 1})}
    )})
    fitted, enc = chat_data.encode_fitting(tight, tokenizer, "template", x, end)
    assert len(enc.input_ids) < len(full.input_ids) and len(fitted.sources) < len(x.sources)
    assert fitted.sources[fitted.right - 1] == x.sources[x.right - 1]
    assert fitted.target.endswith(f"[{fitted.right}].") or f"[{fitted.right}]" in fitted.target
    tiny = tight.model_copy(update={"adapt": tight.adapt.model_copy(
        update={"chat": tight.adapt.chat.model_copy(update={"max_tokens": 128})}
    )})
    assert chat_data.encode_fitting(tiny, tokenizer, "template", x, end) is None


def test_a_short_answer_is_whole_sentences_and_the_citation_sits_before_the_stop():
    answer = "Refunds take 5 days. They go back to your card.\n- Store credit is instant. Contact us for more."
    assert chat_data.short_answer(answer, 10) == "Refunds take 5 days. They go back to your card."
    assert chat_data.short_answer(answer, 2) == "Refunds take 5 days."
    assert chat_data.short_answer(answer, 14) == (
        "Refunds take 5 days. They go back to your card. Store credit is instant."
    )
    assert chat_data.cite("Refunds take 5 days.", 2) == "Refunds take 5 days [2]."
    assert chat_data.cite("No stop here", 1) == "No stop here [1]"

"""Prompt lookup (lookup.py) on a tiny random-weight Llama (fp32, CPU): the draft index finds what followed the
stream's last tokens earlier, a lone greedy stream that checks drafts emits exactly plain `generate`'s tokens whether
its drafts are right, wrong or cut by its limits, and drafting stays out of batches, sampling and a failing pass."""

from __future__ import annotations

import pytest

from support_bot.llm.backends.hf import lookup
from support_bot.llm.backends.hf.lookup import PromptLookup
from tests.llm.test_scheduler import (  # noqa: F401 - fixtures
    EOS, _prompt, collect, make_batcher, model, reference, request, take,
)


def test_the_draft_is_what_followed_the_latest_earlier_occurrence_of_the_last_tokens():
    tokens = [1, 2, 3, 4, 5, 9, 2, 3, 7, 8, 6, 2, 3]
    index = PromptLookup(tokens)
    # "2 3" last occurred (before the suffix itself) at 6..7, followed by 7 8 6 2 3.
    assert index.draft(3) == [7, 8, 6]
    assert index.draft(10) == [7, 8, 6, 2, 3]
    assert index.draft(0) == []
    tokens.append(4)  # "2 3 4" occurred at 1..3: the 3-gram wins over the 2-gram "3 4"
    assert index.draft(2) == [5, 9]
    tokens.append(11)  # "4 11" and "3 4 11" never occurred before
    assert index.draft(4) == []
    assert PromptLookup([5]).draft(4) == [] and PromptLookup([]).draft(4) == []
    repeated = [7, 7, 7, 7]
    assert PromptLookup(repeated).draft(3) == [7]  # the suffix's own occurrence is not a match; the one before it is


def _quoting_prompt(model) -> tuple[list[int], int]:
    """A prompt that holds the model's own continuation of its last tokens earlier on, as a quoted source does."""
    head = _prompt(12, 900)
    said = reference(model, head, 24, frozenset({EOS}))
    return head + said + _prompt(5, 901) + head, len(said)


def test_a_lone_stream_that_quotes_its_prompt_keeps_drafts_and_emits_generates_tokens(model, make_batcher):
    prompt, _ = _quoting_prompt(model)
    expected = reference(model, prompt, 40, frozenset({EOS}))
    batcher = make_batcher()
    r = request(prompt, 40)
    batcher.submit(r)
    assert collect(r)[0] == expected
    stats = batcher.stats
    assert stats.accepted > 0 and stats.drafted >= stats.accepted
    # Kept drafts save passes: fewer decode steps than tokens after the first.
    assert stats.decode_steps < len(expected) - 1


def _forced(monkeypatch, drafts) -> list[int]:
    calls: list[int] = []

    def draft(self, k):
        calls.append(k)
        return drafts(self, k)

    monkeypatch.setattr(PromptLookup, "draft", draft)
    return calls


@pytest.mark.parametrize("max_new", [7, 33])
def test_right_drafts_are_kept_whole_and_limits_hold(model, make_batcher, monkeypatch, max_new):
    prompt = _prompt(20, 910)
    expected = reference(model, prompt, max_new, frozenset({EOS}))
    # The stream's own future: every draft is what greedy decoding will pick.
    calls = _forced(monkeypatch, lambda self, k: expected[len(self.tokens) - len(prompt) :][:k])
    batcher = make_batcher()
    r = request(prompt, max_new)
    batcher.submit(r)
    tokens, reason = collect(r)
    assert tokens == expected and reason == "length"
    assert batcher.stats.accepted == batcher.stats.drafted > 0
    assert max(calls) == lookup.LOOKUP_TOKENS and min(calls) >= 1  # never drafting past max_new_tokens
    # 1 token from the prompt's pass, then up to LOOKUP_TOKENS + 1 a pass.
    assert batcher.stats.decode_steps <= -(-(max_new - 1) // (lookup.LOOKUP_TOKENS + 1)) + 1


def test_an_end_of_sequence_token_inside_a_kept_draft_ends_the_stream_there(model, make_batcher, monkeypatch):
    prompt = _prompt(20, 920)
    free = reference(model, prompt, 30)
    eos = free[9]  # greedy decoding reaches this token as its 10th
    expected = reference(model, prompt, 30, frozenset({eos}))
    assert len(expected) < 10
    _forced(monkeypatch, lambda self, k: free[len(self.tokens) - len(prompt) :][:k])
    batcher = make_batcher(eos_token_ids={eos})
    r = request(prompt, 30)
    batcher.submit(r)
    assert collect(r) == (expected, "eos")


def test_wrong_drafts_are_dropped_and_the_stream_backs_off(model, make_batcher, monkeypatch):
    prompt = _prompt(20, 930)
    expected = reference(model, prompt, 40, frozenset({EOS}))
    # Drafts that are never what the model picks.
    wrong = lambda self, k: [(t + 1) % 256 or 3 for t in expected[len(self.tokens) - len(prompt) :][:k]]  # noqa: E731
    calls = _forced(monkeypatch, wrong)
    batcher = make_batcher()
    r = request(prompt, 40)
    batcher.submit(r)
    assert collect(r)[0] == expected
    assert batcher.stats.accepted == 0 and batcher.stats.drafted > 0
    # After each pass that kept nothing, BACKOFF_STEPS one-token steps before the next draft.
    assert len(calls) <= -(-40 // (lookup.BACKOFF_STEPS + 1)) + 1


def test_no_drafts_in_batches_when_sampling_or_when_turned_off(model, make_batcher, monkeypatch):
    rows_at_draft: list[int] = []
    holder: list = []
    calls = _forced(monkeypatch, lambda self, k: rows_at_draft.append(len(holder[0]._rows)) or self.tokens[-k:])
    prompts = [_prompt(15, 940), _prompt(9, 941)]
    batcher = make_batcher(max_batch_size=2)
    holder.append(batcher)
    both = [request(p, 30) for p in prompts]
    for r in both:
        batcher.submit(r)
    for r, p in zip(both, prompts, strict=True):
        assert collect(r)[0] == reference(model, p, 30, frozenset({EOS}))
    assert batcher.stats.largest_batch == 2
    # Drafts only while one stream ran (before the other joined, or after it ended), never beside another.
    assert set(rows_at_draft) <= {1}
    for kwargs in ({"temperature": 0.7}, {"lookup_tokens": 0}):
        calls.clear()
        other = make_batcher(**kwargs)
        r = request(prompts[0], 20)
        other.submit(r)
        assert len(collect(r)[0]) > 0
        assert calls == [] and other.stats.drafted == 0


def test_a_failing_lookup_pass_falls_back_to_one_token_steps(model, make_batcher, monkeypatch):
    prompt = _prompt(20, 950)
    expected = reference(model, prompt, 30, frozenset({EOS}))
    _forced(monkeypatch, lambda self, k: expected[len(self.tokens) - len(prompt) :][:k])
    batcher = make_batcher()
    real = batcher._forward_chunk

    def failing(table, ids, start, keep=1):
        if keep > 1:
            raise RuntimeError("simulated kernel failure")
        return real(table, ids, start, keep)

    monkeypatch.setattr(batcher, "_forward_chunk", failing)
    r = request(prompt, 30)
    batcher.submit(r)
    assert collect(r)[0] == expected
    assert batcher.lookup_tokens == 0 and batcher.stats.accepted == 0


def test_the_engine_setting_reaches_the_batcher_and_answers_agree(settings, tiny_llama2_dir):
    from support_bot.llm.backends.hf.engine import TransformersEngine
    from support_bot.llm.prompt import ChatMessage

    settings.llm.model = str(tiny_llama2_dir)
    settings.llm.device = "cpu"
    question = [ChatMessage("user", "Where is my order? Where is my order? Where is my order?")]
    answers = {}
    for tokens in (0, 6):
        settings.llm.prompt_lookup_tokens = tokens
        engine = TransformersEngine(settings)
        try:
            assert engine.batcher.lookup_tokens == tokens
            answers[tokens] = "".join(engine.stream(question, max_new_tokens=24))
        finally:
            engine.close()
    assert answers[0] == answers[6] and answers[0]
    assert type(settings.llm)().prompt_lookup_tokens == lookup.LOOKUP_TOKENS  # the setting's default is the batcher's

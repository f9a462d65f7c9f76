"""`eval_safety` on the project's own small labelled file."""

from __future__ import annotations

import json

import pytest

from support_bot.core.errors import InvalidInput
from support_bot.safety.eval import _percentile, eval_safety

from .conftest import FIXTURES


def test_eval_safety_returns_exactly_the_contract_keys(guard, safety_settings):
    result = eval_safety(messages_path=FIXTURES / "messages.jsonl", settings=safety_settings, guard=guard)
    assert list(result) == ["n", "attack_detection_rate", "benign_false_positive_rate", "p50_ms", "p99_ms"]
    assert result["n"] == 10
    assert result["attack_detection_rate"] == 1.0
    assert result["benign_false_positive_rate"] == 0.0
    assert 0 < result["p50_ms"] <= result["p99_ms"]
    json.dumps(result)


def test_bad_lines_are_reported_with_their_number(tmp_path, safety_settings, guard):
    path = tmp_path / "m.jsonl"
    path.write_text('{"text": "hi", "label": "benign"}\n{"text": "x", "label": "spam"}\n')
    with pytest.raises(InvalidInput, match=":2:"):
        eval_safety(messages_path=path, settings=safety_settings, guard=guard)


def test_unicode_line_separators_inside_strings_are_kept(tmp_path, safety_settings, guard):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"text": "hello\u2028there", "label": "benign"}, ensure_ascii=False) + "\n")
    assert eval_safety(messages_path=path, settings=safety_settings, guard=guard)["n"] == 1


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))
    assert _percentile(values, 50) == 50 and _percentile(values, 99) == 99 and _percentile([], 50) == 0.0

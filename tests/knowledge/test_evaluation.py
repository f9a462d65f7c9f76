"""Retrieval evaluation: exact metric definitions, and a real run through ingestion and the retriever."""

from __future__ import annotations

from pathlib import Path

import pytest

from support_bot.core.errors import InvalidInput
from support_bot.knowledge.evaluation import eval_baseline, eval_retrieval, load_queries, score_run

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
FAQ = FIXTURES / "northwind_faq.csv"
QUERIES = FIXTURES / "northwind_queries.jsonl"
KEYS = {
    "n",
    "n_answerable",
    "recall@1",
    "recall@5",
    "mrr@10",
    "abstain_precision",
    "abstain_recall",
    "answer_precision",
    "answer_coverage",
    "p50_ms",
    "p99_ms",
}


def test_score_run_follows_the_eval_definitions():
    queries = [
        {"query": "a", "relevant": ["1"]},  # right at rank 1, answered
        {"query": "b", "relevant": ["2", "9"]},  # right at rank 3, answered -> wrong top-1
        {"query": "c", "relevant": ["3"]},  # right at rank 1 but abstained
        {"query": "d", "relevant": []},  # abstained: correct
        {"query": "e", "relevant": []},  # answered: counts as wrong
    ]
    ranked = [["1", "4"], ["5", "6", "9"], ["3"], ["7"], ["8"]]
    abstained = [False, False, True, True, False]
    m = score_run(queries, ranked, abstained, [1.0, 2.0, 3.0, 4.0, 100.0])
    assert set(m) == KEYS
    assert (m["n"], m["n_answerable"]) == (5, 3)
    assert m["recall@1"] == pytest.approx(2 / 3, abs=1e-4)
    assert m["recall@5"] == 1.0
    assert m["mrr@10"] == pytest.approx((1 + 1 / 3 + 1) / 3, abs=1e-4)
    assert m["abstain_precision"] == 0.5 and m["abstain_recall"] == 0.5
    assert m["answer_precision"] == pytest.approx(1 / 3, abs=1e-4)
    assert m["answer_coverage"] == pytest.approx(1 / 3, abs=1e-4)
    assert m["p50_ms"] == 3.0 and 90 < m["p99_ms"] <= 100


def test_bad_queries_file_is_refused(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"query": "ok", "relevant": []}\nnot json\n')
    with pytest.raises(InvalidInput, match="line 2 is not JSON"):
        load_queries(path)
    path.write_text('{"relevant": ["1"]}\n')
    with pytest.raises(InvalidInput, match='no "query"'):
        load_queries(path)


def test_eval_retrieval_runs_the_real_pipeline(settings):
    from ingest.pipeline import ingest_path

    calls = []

    def ingest(s, path):
        calls.append(s.data_dir)
        ingest_path(settings=s, path=path)

    m = eval_retrieval(faq_path=FAQ, queries_path=QUERIES, settings=settings, ingest=ingest)
    assert set(m) == KEYS | {"calibration"}
    # The fixture FAQ gives each answer once: nothing to hold out, so the configured settings were searched with.
    assert m["calibration"]["applied"] is False and m["calibration"]["min_score"] == settings.retrieval.min_score
    assert (m["n"], m["n_answerable"]) == (9, 6)
    # Ingestion went to a throw-away data dir, which is gone afterwards.
    assert calls and calls[0] != settings.data_dir and not calls[0].exists()
    assert not settings.index_dir.exists() or not any(settings.index_dir.iterdir())
    assert m["recall@1"] == 1.0 and m["recall@5"] == 1.0 and m["mrr@10"] == 1.0
    assert m["abstain_recall"] == 1.0 and m["answer_precision"] == 1.0 and m["answer_coverage"] >= 0.8
    assert 0 < m["p50_ms"] <= m["p99_ms"]


def test_baseline_returns_the_same_keys(settings):
    m = eval_baseline(faq_path=FAQ, queries_path=QUERIES, settings=settings)
    assert set(m) == KEYS and m["n"] == 9 and 0 <= m["answer_precision"] <= 1


def test_cli_baseline_flag_adds_the_reference_from_the_same_run(embedder, capsys):
    import json

    from support_bot.cli import main

    assert main(["eval", "retrieval", "--faq", str(FAQ), "--queries", str(QUERIES), "--baseline"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result) == KEYS | {"baseline", "calibration"} and set(result["baseline"]) == KEYS
    assert result["recall@1"] == 1.0 and result["baseline"]["n"] == 9

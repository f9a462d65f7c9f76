"""The `support-bot tune embedder`, `adapters` and `eval retrieval --tune` commands, end to end on tiny FAQs."""

from __future__ import annotations

import csv
import json

import pytest

from support_bot import cli
from support_bot.core.config import get_settings
from support_bot.knowledge.calibration import text_key
from support_bot.knowledge.embedder import trained_questions
from support_bot.knowledge.reader import load_current
from tests.adapt.conftest import DEMO_FAQ, NORTHWIND_FAQ, NORTHWIND_QUERIES, install
from tests.knowledge.test_evaluation import KEYS


@pytest.fixture
def tiny_env(monkeypatch, embedder):
    for key, value in {
        "SUPPORT_BOT_ADAPT__EPOCHS": "1", "SUPPORT_BOT_ADAPT__MAX_STEPS": "1", "SUPPORT_BOT_ADAPT__BATCH_SIZE": "16",
        "SUPPORT_BOT_EMBEDDING__QUERY_PATH": "plain",
    }.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()


def run(capsys, *argv) -> tuple[int, dict | None, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    return code, json.loads(lines[-1]) if lines else None, err


def test_tune_list_activate_and_rollback_from_the_command_line(tiny_env, monkeypatch, capsys, broken_model):
    assert run(capsys, "ingest", str(DEMO_FAQ))[0] == 0
    code, record, err = run(capsys, "tune", "embedder")
    assert code == 0, err
    assert record["id"] == "embedder-0001" and record["status"] == "ready"
    assert record["train"]["steps"] == 1 and record["data"]["from_kb"] == 26
    assert {"live", "candidate", "verdict"} <= set(record["evaluation"])
    assert "training: 1/1" in err

    code, listing, _ = run(capsys, "adapters", "list", "--json")
    assert code == 0 and listing["live"] is None and [a["id"] for a in listing["artifacts"]] == ["embedder-0001"]
    assert cli.main(["adapters", "list"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["ID", "STATUS", "LIVE"] and table[1].split()[:2] == ["embedder-0001", "ready"]

    # Ops accept any held-out change here (the gate's own test makes it refuse).
    monkeypatch.setenv("SUPPORT_BOT_ADAPT__GATE_TOLERANCE", "1")
    get_settings.cache_clear()
    code, result, err = run(capsys, "adapters", "activate", "embedder-0001")
    assert code == 0, err
    assert result["index_version"] == 2 and result["chunks"] == 26
    # The artifact records the questions it learned; the calibration of the version it serves does not ask them.
    settings = get_settings()
    trained = trained_questions(settings, "embedder-0001")
    faq = {text_key(r["question"]) for r in csv.DictReader(DEMO_FAQ.open(encoding="utf-8"))}
    assert len(trained) == record["data"]["train"] and trained <= faq
    calibration = load_current(settings).calibration
    assert f"the {len(trained)} questions the embedder was tuned on are not asked" in calibration["reason"]
    code, result, _ = run(capsys, "adapters", "rollback")
    assert code == 0 and result["index_version"] == 3 and result["artifact"] is None

    monkeypatch.setenv("SUPPORT_BOT_ADAPT__GATE_TOLERANCE", "0")
    get_settings.cache_clear()
    worse = install(get_settings(), broken_model)
    code, refused, err = run(capsys, "adapters", "activate", worse)
    assert code == 2 and "was not activated" in err
    assert refused["evaluation"]["verdict"]["passed"] is False
    code, _, err = run(capsys, "adapters", "activate", "embedder-0099")
    assert code == 2 and "no adapter embedder-0099" in err


def test_eval_retrieval_tune_first_tunes_on_the_faq_alone(tiny_env, capsys):
    code, result, err = run(
        capsys, "eval", "retrieval", "--faq", str(NORTHWIND_FAQ), "--queries", str(NORTHWIND_QUERIES), "--tune"
    )
    assert code == 0, err
    assert KEYS <= set(result)
    tune = result["tune"]
    assert tune["artifact"] == "embedder-0001" and tune["data"]["examples"] == 11
    # The FAQ alone: every example is one of its entries, none a query.
    assert tune["data"]["from_kb"] == 11 and set(tune["data"]) >= {"train", "heldout", "abstain"}
    assert tune["activated"] == tune["verdict"]["passed"]
    assert tune["activated"] or "was not activated" in tune["refused"]

"""`support-bot tune chat` end to end on a tiny random Llama: LoRA training steps that change the adapter, the artifact
and its record, the gate's figures from whole customer turns, and `adapters list|activate|rollback --kind chat`."""

from __future__ import annotations

import pytest

from support_bot.adapt import artifacts, chat_gate
from support_bot.core.config import get_settings
from support_bot.llm.adapters import CHAT_KIND, live_chat_adapter
from tests.adapt.chat_support import TINY_CHAT, demo_kb_dir, tiny_chatml_llama  # noqa: F401 - fixtures
from tests.adapt.test_commands import run


@pytest.fixture
def chat_env(monkeypatch, tmp_path, demo_kb_dir, tiny_chatml_llama):  # noqa: F811 - the fixtures imported above
    """The CLI's settings: a copy of the demo knowledge base, the tiny model, tuning in two steps."""
    import shutil

    root = tmp_path / "kb"
    shutil.copytree(demo_kb_dir, root)
    env = {
        "SUPPORT_BOT_DATA_DIR": str(root), "SUPPORT_BOT_LLM__BACKEND": "transformers",
        "SUPPORT_BOT_LLM__MODEL": str(tiny_chatml_llama), "SUPPORT_BOT_LLM__DEVICE": "cpu",
        "SUPPORT_BOT_LLM__MAX_NEW_TOKENS": "8", "SUPPORT_BOT_EMBEDDING__QUERY_PATH": "plain",
        "SUPPORT_BOT_ADAPT__HELDOUT_FRACTION": "0.2",
        **{f"SUPPORT_BOT_ADAPT__CHAT__{k.upper()}": str(v) for k, v in TINY_CHAT.items()},
    }  # fmt: skip
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    return get_settings()


def _lora_tensors(settings, artifact_id: str) -> dict:
    from safetensors.torch import load_file

    root = artifacts.kind_dir(settings, CHAT_KIND) / artifact_id / artifacts.MODEL_DIR
    return load_file(str(root / "adapter_model.safetensors"))


def test_tune_chat_then_list_activate_and_roll_back_from_the_command_line(chat_env, monkeypatch, capsys):
    code, record, err = run(capsys, "tune", "chat")
    assert code == 0, err
    assert record["id"] == "chat-0001" and record["kind"] == CHAT_KIND and record["status"] == "ready"
    assert record["base_model"] == chat_env.llm.model
    assert record["params"]["chat"]["rank"] == chat_env.adapt.chat.rank and record["params"]["seed"] == 0
    # Two optimizer steps on answer and decline examples of the training questions only.
    assert record["train"]["steps"] == 2 and "training the chat model: 2/2" in err
    counts = record["data"]["chat_examples"]
    assert counts["answer"] == TINY_CHAT["max_examples"] and counts["decline"] >= 0
    assert record["data"]["heldout"] >= 1 and record["data"]["from_kb"] == 26
    # LoRA starts with its B matrices at zero: after the steps they are not.
    tensors = _lora_tensors(chat_env, record["id"])
    b = [t for name, t in tensors.items() if "lora_B" in name]
    assert b and all(t.abs().sum() > 0 for t in b)
    # Both models answered the same held-out questions through the customer turn, judged as `eval answers` judges.
    evaluation = record["evaluation"]
    assert evaluation["live_artifact"] is None and evaluation["questions"] == 4
    for side in ("live", "candidate"):
        assert {"n", "correct_rate", "wrong_rate", "model_written_rate", "decline_rate"} <= set(evaluation[side])
        assert evaluation[side]["n"] == 4
    assert evaluation["verdict"] == chat_gate.verdict(evaluation["live"], evaluation["candidate"], 0.0)

    code, listing, _ = run(capsys, "adapters", "list", "--kind", "chat", "--json")
    assert code == 0 and listing["live"] is None and listing["base_model"] == chat_env.llm.model
    assert [a["id"] for a in listing["artifacts"]] == ["chat-0001"] and listing["artifacts"][0]["size_bytes"] > 0
    assert cli_table(capsys, "chat")[0].split()[:6] == ["ID", "STATUS", "LIVE", "CORRECT", "WRONG", "WRITTEN"]

    # Ops accept any held-out change here; the refusal is tested below with figures that are worse.
    monkeypatch.setenv("SUPPORT_BOT_ADAPT__GATE_TOLERANCE", "1")
    get_settings.cache_clear()
    code, result, err = run(capsys, "adapters", "activate", "chat-0001")
    assert code == 0, err
    assert result["kind"] == CHAT_KIND and result["artifact"] == "chat-0001" and result["previous"] is None
    assert live_chat_adapter(chat_env) == "chat-0001" and "answers with it from the next message" in err
    code, result, _ = run(capsys, "adapters", "rollback", "--kind", "chat")
    assert code == 0 and result["artifact"] is None and result["rolled_back_from"] == "chat-0001"
    assert live_chat_adapter(chat_env) is None
    code, _result, err = run(capsys, "adapters", "rollback", "--kind", "chat")
    assert code != 0 and "nothing to roll back" in err

    # Worse figures on the held-out questions (the stored comparison is still current): refused, figures shown.
    monkeypatch.setenv("SUPPORT_BOT_ADAPT__GATE_TOLERANCE", "0")
    get_settings.cache_clear()
    live = {**evaluation["live"], "correct_rate": 0.75, "wrong_rate": 0.0}
    artifacts.update(chat_env, "chat-0001", evaluation={
        **evaluation, "live": live, "candidate": {**live, "correct_rate": 0.5, "wrong_rate": 0.25},
    })
    code, refused, err = run(capsys, "adapters", "activate", "chat-0001")
    assert code == 2 and "was not activated" in err and "correct_rate 0.500 < live 0.750" in err
    assert "wrong_rate 0.250 > live 0.000" in err
    assert {w["metric"] for w in refused["evaluation"]["verdict"]["worse"]} == {"correct_rate", "wrong_rate"}
    assert live_chat_adapter(chat_env) is None


def cli_table(capsys, kind: str) -> list[str]:
    from support_bot import cli

    assert cli.main(["adapters", "list", "--kind", kind]) == 0
    return capsys.readouterr().out.splitlines()


def test_the_gate_compares_figures_in_the_direction_each_is_better():
    live = {"correct_rate": 0.6, "wrong_rate": 0.1, "model_written_rate": 0.2}
    better = {"correct_rate": 0.7, "wrong_rate": 0.05, "model_written_rate": 0.8}
    assert chat_gate.verdict(live, better, 0.0)["passed"]
    more_wrong = {**better, "wrong_rate": 0.2}
    v = chat_gate.verdict(live, more_wrong, 0.0)
    assert not v["passed"] and [w["metric"] for w in v["worse"]] == ["wrong_rate"]
    assert chat_gate.verdict(live, more_wrong, 0.1)["passed"]
    assert "wrong_rate 0.200 > live 0.100" in chat_gate.describe(v)


def test_tuning_the_chat_model_needs_the_transformers_backend(chat_env, monkeypatch, capsys):
    monkeypatch.setenv("SUPPORT_BOT_LLM__BACKEND", "fake")
    get_settings.cache_clear()
    code, _record, err = run(capsys, "tune", "chat")
    assert code != 0 and "transformers backend" in err
    assert artifacts.list_records(get_settings(), CHAT_KIND) == []

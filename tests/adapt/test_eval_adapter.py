"""`support-bot eval answers --adapter`: the whole-answer eval answers with a tuned chat adapter from the data dir's
adapter store (the eval's own data dir is a throw-away one), on a tiny random Llama; the JSON line is unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest

from support_bot.core.config import get_settings
from support_bot.llm.backends.hf.engine import TransformersEngine
from tests.adapt.chat_support import install_random_adapter, set_live, tiny_chatml_llama  # noqa: F401 - a fixture
from tests.adapt.conftest import DEMO_FAQ
from tests.adapt.test_commands import run

QUERIES = DEMO_FAQ.parent / "demo-queries.jsonl"
# EVAL.md's fields of a run without dialogues, in order.
KEYS = [
    "n", "n_answerable", "correct_rate", "wrong_rate", "decline_rate", "unverified_shown", "model_written_rate",
    "first_sentence_ms_p50", "answer_ms_p50",
]  # fmt: skip


@pytest.fixture
def eval_env(monkeypatch, embedder, tiny_chatml_llama):  # noqa: F811 - the fixture imported above
    """The CLI's settings: the tiny model served by the transformers engine on the CPU, a few tokens an answer."""
    for key, value in {
        "SUPPORT_BOT_LLM__BACKEND": "transformers", "SUPPORT_BOT_LLM__MODEL": str(tiny_chatml_llama),
        "SUPPORT_BOT_LLM__DEVICE": "cpu", "SUPPORT_BOT_LLM__MAX_NEW_TOKENS": "8",
        "SUPPORT_BOT_EMBEDDING__QUERY_PATH": "plain",
    }.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    return get_settings()


@pytest.fixture
def written(monkeypatch) -> list[tuple[str | None, str]]:
    """What the transformers engines write, each text with the adapter merged in when it was written."""
    texts: list[tuple[str | None, str]] = []
    original = TransformersEngine.stream_ids

    def recording(self, prompt_ids, **kwargs):
        pieces = original(self, prompt_ids, **kwargs)  # the live adapter is synced by now
        adapter = self.adapter

        def relay():
            seen = []
            try:
                for piece in pieces:
                    seen.append(piece)
                    yield piece
            finally:
                texts.append((adapter, "".join(seen)))

        return relay()

    monkeypatch.setattr(TransformersEngine, "stream_ids", recording)
    return texts


def eval_answers(capsys, written: list, *adapter: str) -> tuple[dict, list[tuple[str | None, str]], str]:
    """One `eval answers` run on two demo queries; -> its JSON line, what the engine wrote, stderr."""
    written.clear()
    argv = ["eval", "answers", "--faq", str(DEMO_FAQ), "--queries", str(QUERIES), "--limit", "2", *adapter]
    code, result, err = run(capsys, *argv)
    assert code == 0, err
    assert written, "the model wrote nothing: every question was declined before generation"
    return result, list(written), err


def test_eval_answers_answers_with_the_adapter_named_or_live(eval_env, capsys, written):
    model_dir = Path(eval_env.llm.model)
    first = install_random_adapter(eval_env, model_dir, seed=1)
    second = install_random_adapter(eval_env, model_dir, seed=2)
    set_live(eval_env, [None, first])

    # Without --adapter: the model as shipped, whichever adapter is live (the eval's data dir has none).
    shipped, shipped_texts, _ = eval_answers(capsys, written)
    assert list(shipped) == KEYS and shipped["n"] == 2
    assert {adapter for adapter, _ in shipped_texts} == {None}

    # --adapter live: the live one, read from the configured data dir; the output's fields are unchanged.
    live, live_texts, err = eval_answers(capsys, written, "--adapter", "live")
    assert list(live) == KEYS and live["n"] == 2
    assert {adapter for adapter, _ in live_texts} == {first} and f"answering with the chat adapter {first}" in err
    assert [t for _, t in live_texts] != [t for _, t in shipped_texts]

    # --adapter ID: that one, whichever is live.
    named, named_texts, _ = eval_answers(capsys, written, "--adapter", second)
    assert list(named) == KEYS
    assert {adapter for adapter, _ in named_texts} == {second}
    assert [t for _, t in named_texts] not in ([t for _, t in shipped_texts], [t for _, t in live_texts])


def test_eval_answers_refuses_an_adapter_it_cannot_answer_with_before_ingesting(eval_env, capsys, monkeypatch):
    from support_bot import cli
    from support_bot.adapt import artifacts
    from support_bot.adapt.commands import eval_chat_model

    adapter = install_random_adapter(eval_env, Path(eval_env.llm.model))
    capsys.readouterr()  # the progress transformers wrote while loading the model
    ingested = []
    monkeypatch.setattr(cli, "_ingest_fn", lambda settings, path: ingested.append(path))

    def refused(*flags: str) -> str:
        code, _result, err = run(capsys, "eval", "answers", "--faq", str(DEMO_FAQ), "--queries", str(QUERIES), *flags)
        assert code == 2 and err.startswith("error: "), err
        return err

    assert "chat adapter (chat-NNNN) or live" in refused("--adapter", "embedder-0001")
    assert "is not an adapter id" in refused("--adapter", "../chat-0001")
    assert "no adapter chat-0099" in refused("--adapter", "chat-0099")
    artifacts.update(eval_env, adapter, status="failed")
    assert f"{adapter} is failed, not ready" in refused("--adapter", adapter)
    artifacts.update(eval_env, adapter, status="ready", base_model="some-other-model")
    assert "a tuning of 'some-other-model'" in refused("--adapter", adapter)
    assert ingested == []  # each refused before the FAQ was ingested

    # Nothing live: --adapter live is the model as shipped, and says so.
    artifacts.update(eval_env, adapter, base_model=eval_env.llm.model)
    assert eval_chat_model(eval_env, "live") is None and "no chat adapter is live" in capsys.readouterr().err
    assert eval_chat_model(eval_env, adapter) == adapter
    assert f"answering with the chat adapter {adapter}" in capsys.readouterr().err
    monkeypatch.setenv("SUPPORT_BOT_LLM__BACKEND", "fake")
    get_settings.cache_clear()
    assert "transformers backend" in refused("--adapter", adapter)

"""Shared by the chat-tuning tests: tiny random Llamas (the tokenizers tests/llm trains), settings that tune them in a
couple of steps on the demo FAQ, and a LoRA adapter with weights far from zero, installed as an artifact."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from support_bot.adapt import artifacts
from support_bot.core.config import Settings
from support_bot.llm.adapters import CHAT_KIND
from tests.adapt.conftest import DEMO_FAQ, tiny
from tests.llm.conftest import _build_tiny_model, build_tokenizer

# A couple of optimizer steps over a handful of questions, and a gate of a few questions: what these tests need.
TINY_CHAT = {
    "max_examples": 10, "batch_size": 4, "max_steps": 2, "train_layers": 0, "learning_rate": 1e-2,
    "gate_questions": 3, "gate_declines": 1, "max_tokens": 4096,
}  # fmt: skip


def build_tiny_llama(directory: Path, tokenizer) -> Path:
    """The tiny random Llama tests/llm builds, with room for a whole prompt of sources in its context window."""
    return _build_tiny_model(directory, tokenizer, max_positions=8192)


@pytest.fixture(scope="session")
def tiny_chatml_llama(tmp_path_factory) -> Path:
    """The tiny Llama with a ChatML chat template, the default SmolLM2 model's prompt style."""
    return build_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-chatml", build_tokenizer(chatml=True))


@pytest.fixture(scope="session")
def demo_kb_dir(tmp_path_factory, embedder) -> Path:
    """A data dir with the demo FAQ ingested and live, made once; tests copy it (chat_kb) or only read it."""
    from ingest.pipeline import ingest_path
    from support_bot.core.db import get_engine, migrate

    root = tmp_path_factory.mktemp("demo-kb") / "data"
    s = tiny(Settings(data_dir=root, database_url=None, redis_url=None))
    migrate(s)
    job = ingest_path(settings=s, path=DEMO_FAQ, source_name="demo-faq")
    assert job.status == "succeeded", job.error
    get_engine(s).dispose()
    return root


@pytest.fixture
def chat_kb(demo_kb_dir, tmp_path, tiny_chatml_llama) -> Settings:
    """A copy of the demo knowledge base of this test's own, serving and tuning the tiny ChatML Llama."""
    root = tmp_path / "kb"
    shutil.copytree(demo_kb_dir, root)
    return chat_settings(tiny(Settings(data_dir=root, database_url=None, redis_url=None)), tiny_chatml_llama)


def chat_settings(settings: Settings, model_dir: Path, **chat) -> Settings:
    """`settings` serving the tiny model with the transformers engine on the CPU, tuning it in a couple of steps."""
    llm = settings.llm.model_copy(
        update={"backend": "transformers", "model": str(model_dir), "device": "cpu", "max_new_tokens": 8}
    )
    adapt = settings.adapt.model_copy(
        update={"chat": settings.adapt.chat.model_copy(update={**TINY_CHAT, **chat}), "heldout_fraction": 0.2}
    )
    return settings.model_copy(update={"llm": llm, "adapt": adapt})


def install_random_adapter(settings: Settings, model_dir: Path, *, seed: int = 1, scale: float = 0.5) -> str:
    """A ready chat artifact whose LoRA weights are seeded noise (not the zeros LoRA starts from), so that serving it
    visibly changes what the model writes; -> its id."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], task_type="CAUSAL_LM")
    wrapped = get_peft_model(model, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in wrapped.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * scale)
    artifact_id, root = artifacts.create(settings, CHAT_KIND, {"status": "ready", "base_model": settings.llm.model})
    wrapped.save_pretrained(str(root / artifacts.MODEL_DIR))
    return artifact_id


def set_live(settings: Settings, history: list) -> None:
    """Write the chat state file as activation and rollback do (atomically, under its lock)."""
    artifacts.change_state(settings, CHAT_KIND, lambda s: {**s, "history": history})


def adapter_config(settings: Settings, artifact_id: str) -> dict:
    root = artifacts.kind_dir(settings, CHAT_KIND) / artifact_id / artifacts.MODEL_DIR
    return json.loads((root / "adapter_config.json").read_text(encoding="utf-8"))

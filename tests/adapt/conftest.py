"""Fixtures for the adaptation tests: a knowledge base, tiny tuning settings, and tuned models made once per session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ingest.pipeline import ingest_path
from support_bot.adapt import artifacts, data, trainer
from support_bot.core.config import AdaptSettings, Settings
from support_bot.core.db import migrate
from support_bot.knowledge.embedder import EMBEDDER_KIND, resolve_model_dir

ROOT = Path(__file__).resolve().parents[2]
# 26 entries with distinct answers: enough for a held-out slice on which the untuned model is right throughout.
DEMO_FAQ = ROOT / "examples" / "demo-faq.csv"
NORTHWIND_FAQ = ROOT / "tests" / "fixtures" / "northwind_faq.csv"
NORTHWIND_QUERIES = ROOT / "tests" / "fixtures" / "northwind_queries.jsonl"
# One epoch of at most two steps: enough to change the weights, which is what these tests need.
TINY = {"epochs": 1, "max_steps": 2, "batch_size": 16}


def tiny(settings: Settings, **adapt) -> Settings:
    """Settings that tune in a couple of steps; queries take the model's general path (no tracing per artifact)."""
    return settings.model_copy(
        update={
            "adapt": settings.adapt.model_copy(update={**TINY, **adapt}),
            "embedding": settings.embedding.model_copy(update={"query_path": "plain"}),
        }
    )


@pytest.fixture
def faq_kb(settings, embedder) -> Settings:
    """A migrated database with the demo FAQ live, and tiny tuning settings."""
    s = tiny(settings)
    migrate(s)
    job = ingest_path(settings=s, path=DEMO_FAQ, source_name="demo-faq")
    assert job.status == "succeeded", job.error
    return s


@pytest.fixture
def small_kb(settings, embedder) -> Settings:
    """The 11-entry northwind FAQ live, tiny tuning settings, and a gate that lets any artifact through."""
    s = tiny(settings, gate_tolerance=1.0)
    migrate(s)
    job = ingest_path(settings=s, path=NORTHWIND_FAQ)
    assert job.status == "succeeded", job.error
    return s


def _examples(path: Path) -> list[data.Example]:
    import csv

    with open(path, encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return [data._example(f"kb:faq:{r['id']}", r["question"], r["answer"], "kb") for r in rows]


@pytest.fixture(scope="session")
def tuned_model(tmp_path_factory) -> Path:
    """A model tuned for two steps on the demo FAQ (sentence-transformers directory), made once."""
    out = tmp_path_factory.mktemp("tuned") / "model"
    cfg = AdaptSettings(**TINY)
    trainer.train(resolve_model_dir(Settings().embedding.model), out, _examples(DEMO_FAQ), {}, cfg)
    return out


def build_broken_model(out: Path) -> Path:
    """The configured model with its transformer weights replaced by seeded noise: worse on purpose."""
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(resolve_model_dir(Settings().embedding.model)), device="cpu")
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, param in model[0].auto_model.named_parameters():
            if "encoder.layer" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    model.save(str(out))
    return out


@pytest.fixture(scope="session")
def broken_model(tmp_path_factory) -> Path:
    return build_broken_model(tmp_path_factory.mktemp("broken") / "model")


def install(settings: Settings, model_dir: Path, **record) -> str:
    """A ready artifact holding a copy of model_dir (as a finished tuning run leaves it); -> its id."""
    artifact_id, root = artifacts.create(
        settings, EMBEDDER_KIND, {"status": "ready", "base_model": settings.embedding.model, **record}
    )
    shutil.copytree(model_dir, root / artifacts.MODEL_DIR)
    return artifact_id

"""The contrastive trainer: its fast path is the model's own forward pass, and it learns only what it may."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer

from support_bot.adapt import trainer
from support_bot.core.config import Settings
from support_bot.knowledge.embedder import Embedder, resolve_model_dir
from tests.adapt.conftest import DEMO_FAQ, _examples

TEXTS = ["ok", "How do I reset my password?", "Vaccines are held to the same safety standards. " * 12]


@pytest.fixture(scope="module")
def model():
    m = SentenceTransformer(str(resolve_model_dir(Settings().embedding.model)), device="cpu")
    m.max_seq_length = 64
    return m


def test_training_through_cached_frozen_layers_gives_the_models_own_vectors(model):
    expected = model.encode(TEXTS, normalize_embeddings=True, convert_to_tensor=True)
    encode = trainer._Encoder(model, train_layers=2)
    assert encode.stack is not None and encode.frozen == 4
    first_trained = next(n for n, p in model.named_parameters() if p.requires_grad)
    assert first_trained.endswith("encoder.layer.4.attention.self.query.weight")
    encode.training = False  # no dropout, to compare
    with torch.no_grad():
        got = encode(TEXTS)
    assert torch.allclose((got * expected).sum(-1), torch.ones(len(TEXTS)), atol=2e-3)
    for param in model.parameters():
        param.requires_grad = True


def test_candidates_answering_the_same_thing_are_not_pushed_away(model):
    encode = trainer._Encoder(model, train_layers=1)
    same = [trainer.Row("Is it safe?", "Yes, it is safe.", "g1"), trainer.Row("Safe at all?", "It is safe, yes.", "g1")]
    # Each anchor's only other candidate answers the same thing: masked, so nothing is left to tell apart.
    assert float(trainer._batch_loss(encode, same, 20.0)) == pytest.approx(0.0, abs=1e-6)
    other = [same[0], trainer.Row("Where is my parcel?", "Track it with the link in your e-mail.", "g2")]
    assert float(trainer._batch_loss(encode, other, 20.0)) > 0
    for param in model.parameters():
        param.requires_grad = True


def test_tuning_pulls_questions_towards_their_answers_and_saves_a_loadable_model(tmp_path):
    examples = _examples(DEMO_FAQ)
    cfg = Settings().adapt.model_copy(update={"epochs": 1, "max_steps": 3, "batch_size": 16, "learning_rate": 1e-4})
    stats = trainer.train(resolve_model_dir(Settings().embedding.model), tmp_path / "m", examples, {}, cfg)
    assert stats["steps"] == 2  # 26 rows in batches of 16
    before = Embedder(Settings().embedding.model, query_path="plain")
    after = Embedder(str(tmp_path / "m"), query_path="plain")
    assert after.max_tokens == before.max_tokens  # the training cut-off is not saved with the model

    def mean_cos(emb):
        q = emb.encode([e.question for e in examples])
        a = emb.encode([e.answer for e in examples])
        return float(np.mean(np.sum(q * a, axis=1)))

    assert mean_cos(after) > mean_cos(before)

"""Contrastive fine-tuning of a sentence-transformers model on question -> answer and question <-> question pairs.

Each batch scores every anchor question against every positive in the batch (in-batch negatives) and against each
row's hard negative: the closest entry of the current index that answers something else. Candidates that answer the
same thing as the anchor are masked out rather than pushed away, so an FAQ that repeats an answer under several
questions does not teach the model that those questions differ.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from support_bot.adapt.data import Example
from support_bot.core.config import AdaptSettings

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Row:
    anchor: str
    positive: str
    group: str
    negative: str | None = None
    negative_group: str | None = None


@dataclass(frozen=True)
class Negative:
    """The closest wrong entry for one training example, as a question and as an answer."""

    question: str
    answer: str
    group: str


def epoch_rows(
    train: list[Example], negatives: dict[str, Negative], cfg: AdaptSettings, rng: random.Random
) -> list[Row]:
    """One epoch's rows, shuffled: question -> answer for each example, and question <-> a random sibling question.

    Large data sets give each epoch a fresh random sample of max_pairs_per_epoch rows.
    """
    rows: list[Row] = []
    siblings: dict[str, list[Example]] = {}
    for e in train:
        siblings.setdefault(e.group, []).append(e)
    for e in train:
        neg = negatives.get(e.key) if cfg.hard_negatives else None
        rows.append(Row(e.question, e.answer, e.group, neg.answer if neg else None, neg.group if neg else None))
        others = [s for s in siblings[e.group] if s.question != e.question]
        if cfg.question_pairs and others:
            pick = rng.choice(others)
            rows.append(Row(e.question, pick.question, e.group, neg.question if neg else None, neg.group if neg else None))
    rng.shuffle(rows)
    return rows[: cfg.max_pairs_per_epoch] if cfg.max_pairs_per_epoch else rows


def planned_steps(n_rows: int, cfg: AdaptSettings) -> int:
    steps = cfg.epochs * math.ceil(n_rows / cfg.batch_size)
    return min(steps, cfg.max_steps) if cfg.max_steps else steps


class _Encoder:
    """The model's forward pass for training: only the top `train_layers` transformer layers learn.

    Everything below them is frozen, so their output for each distinct text is computed once, before training, and
    each step runs only the top layers, pooling and normalization; the step cost falls with the layers left frozen.
    Models that are not a BERT-style stack under mean pooling (or train_layers 0) train whole through their own
    forward pass instead.
    """

    def __init__(self, model, train_layers: int):
        self.model = model
        self.stack = None
        auto = getattr(model[0], "auto_model", None)
        layers = getattr(getattr(auto, "encoder", None), "layer", None)
        pooling = model[1] if len(model) > 1 else None
        from support_bot.knowledge.embedder import _mean_pooling_only

        if train_layers and layers is not None and hasattr(auto, "embeddings") and pooling is not None \
                and _mean_pooling_only(pooling):
            self.stack = auto
            self.frozen = max(0, len(layers) - train_layers)
            for param in model.parameters():
                param.requires_grad = False
            for layer in layers[self.frozen :]:
                for param in layer.parameters():
                    param.requires_grad = True
        # False: no dropout in the layers that learn (checks that the cached path gives the model's own vectors).
        self.training = True
        self._cache: dict = {}
        self._prepare = getattr(model, "preprocess", None) or model.tokenize  # sentence-transformers 6 renamed it

    def _features(self, texts: list[str]) -> dict:
        features = self._prepare(texts)
        return {k: v.to(self.model.device) for k, v in features.items() if hasattr(v, "to")}

    @staticmethod
    def _mask(mask, dtype):
        import torch

        return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min

    def _run(self, layers, hidden, mask):
        extended = self._mask(mask, hidden.dtype)
        for layer in layers:
            out = layer(hidden, attention_mask=extended)
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden

    def cache(self, texts: list[str], batch_size: int = 64, progress: Progress | None = None) -> None:
        """The frozen layers' output for each distinct text not seen yet (stored as float16: memory over digits)."""
        import torch

        if self.stack is None:
            return
        todo = sorted({t for t in texts if t not in self._cache}, key=len)
        layers = self.stack.encoder.layer[: self.frozen]
        self.stack.eval()
        for start in range(0, len(todo), batch_size):
            part = todo[start : start + batch_size]
            f = self._features(part)
            with torch.no_grad():
                hidden = self.stack.embeddings(input_ids=f["input_ids"], token_type_ids=f.get("token_type_ids"))
                hidden = self._run(layers, hidden, f["attention_mask"])
            lengths = f["attention_mask"].sum(1).tolist()
            for text, h, n in zip(part, hidden, lengths):
                self._cache[text] = h[: int(n)].to(torch.float16)
            if progress:
                progress("preparing texts", min(start + batch_size, len(todo)), len(todo))

    def __call__(self, texts: list[str]):
        """Unit vectors of the texts, with gradients through the layers being trained."""
        import torch
        import torch.nn.functional as F

        if self.stack is None:
            return F.normalize(self.model(self._features(texts))["sentence_embedding"], dim=-1)
        self.cache(texts)
        cached = [self._cache[t] for t in texts]
        longest = max(len(h) for h in cached)
        hidden = torch.zeros(len(cached), longest, cached[0].shape[-1])
        mask = torch.zeros(len(cached), longest, dtype=torch.long)
        for i, h in enumerate(cached):
            hidden[i, : len(h)] = h.float()
            mask[i, : len(h)] = 1
        self.stack.encoder.layer[self.frozen :].train(self.training)
        hidden = self._run(self.stack.encoder.layer[self.frozen :], hidden, mask)
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, dim=-1)


def _batch_loss(encode: _Encoder, rows: list[Row], scale: float):
    """Cross-entropy of each anchor against its own positive among every candidate it may be told apart from."""
    import torch
    import torch.nn.functional as F

    anchors = encode([r.anchor for r in rows])
    with_neg = [r for r in rows if r.negative is not None]
    texts = [r.positive for r in rows] + [r.negative for r in with_neg]
    # An answer often comes twice in a batch (a positive here, a negative there): each distinct text runs once.
    distinct = list(dict.fromkeys(texts))
    where = {t: i for i, t in enumerate(distinct)}
    candidates = encode(distinct)[torch.tensor([where[t] for t in texts])]
    groups = [r.group for r in rows] + [r.negative_group for r in with_neg]
    logits = scale * anchors @ candidates.T
    same = torch.tensor([[g == c for c in groups] for g in (r.group for r in rows)], device=logits.device)
    own = torch.zeros_like(same)
    own[torch.arange(len(rows)), torch.arange(len(rows))] = True
    logits = logits.masked_fill(same & ~own, float("-inf"))
    return F.cross_entropy(logits, torch.arange(len(rows), device=logits.device))


def train(
    base_dir: Path,
    out_dir: Path | None,
    train_set: list[Example],
    negatives: dict[str, Negative],
    cfg: AdaptSettings,
    *,
    device: str = "cpu",
    progress: Progress | None = None,
    on_epoch: Callable[[int, object], None] | None = None,
) -> dict:
    """Fine-tune the model in base_dir on the examples and save it (sentence-transformers format) to out_dir.

    The learning rate warms up over the first tenth of an epoch and then stays, so the model after each epoch is
    what fewer epochs would have given: `on_epoch(epoch, model)` sees it (cross-validation scores each one).
    """
    import torch
    from sentence_transformers import SentenceTransformer

    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    model = SentenceTransformer(str(base_dir), device=device)
    saved_length = model.max_seq_length
    model.max_seq_length = min(saved_length or cfg.max_tokens, cfg.max_tokens)
    first = epoch_rows(train_set, negatives, cfg, rng)
    total = planned_steps(len(first), cfg)
    encode = _Encoder(model, cfg.train_layers)
    # Every text any epoch can use: each example's question and answer, and the negatives.
    texts = [t for e in train_set for t in (e.question, e.answer)]
    texts += [t for n in negatives.values() for t in (n.question, n.answer)]
    encode.cache(texts, progress=progress)
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=cfg.learning_rate, weight_decay=0.01)
    warmup = max(1, math.ceil(len(first) / cfg.batch_size) // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))
    step, losses, started = 0, [], time.monotonic()
    if progress:
        progress("training", 0, total)
    for epoch in range(cfg.epochs):
        rows = first if epoch == 0 else epoch_rows(train_set, negatives, cfg, rng)
        for start in range(0, len(rows), cfg.batch_size):
            if step >= total:
                break
            batch = rows[start : start + cfg.batch_size]
            if len(batch) < 2:
                continue  # one row has no in-batch negative to learn from
            loss = _batch_loss(encode, batch, cfg.scale)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trained, 1.0)
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
            step += 1
            if progress:
                progress("training", step, total)
        if on_epoch:
            model.max_seq_length = saved_length
            on_epoch(epoch + 1, model)
            model.max_seq_length = min(saved_length or cfg.max_tokens, cfg.max_tokens)
    model.eval()
    for param in model.parameters():
        param.requires_grad = True
    model.max_seq_length = saved_length
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        model.save(str(out_dir))
    head = losses[: max(1, len(losses) // 10)]
    tail = losses[-max(1, len(losses) // 10) :]
    return {
        "steps": step,
        "rows_per_epoch": len(first),
        "train_s": round(time.monotonic() - started, 1),
        "loss_first": round(sum(head) / len(head), 4) if losses else None,
        "loss_last": round(sum(tail) / len(tail), 4) if losses else None,
    }

"""LoRA tuning of the chat model (peft) on encoded chat examples: the loss only on the answer tokens.

float32 on a CPU (the default SmolLM2 model), bfloat16 weights under autocast on a GPU (Llama-2-7B-chat), the LoRA
weights themselves in float32 either way (peft keeps them so). Only the top `train_layers` blocks are adapted, so
the backward pass stops there. A micro-batch is left-padded, which puts every answer at the end of its row: the
output layer then runs only over the last positions, where the answers are, instead of over the whole prompt.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from support_bot.adapt.chat_data import IGNORE, Encoded
from support_bot.core.chat_tuning import ChatTuningSettings

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]


def lora_config(model: Any, cfg: ChatTuningSettings) -> Any:
    """The peft LoRA configuration for `model`: cfg's rank, alpha, dropout and target modules, top layers only."""
    from peft import LoraConfig

    text_config = getattr(model.config, "text_config", None) or model.config
    layers = int(text_config.num_hidden_layers)
    top = list(range(layers - cfg.train_layers, layers)) if 0 < cfg.train_layers < layers else None
    return LoraConfig(
        r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=list(cfg.target_modules),
        layers_to_transform=top, bias="none", task_type="CAUSAL_LM",
    )


def planned_steps(n_examples: int, cfg: ChatTuningSettings) -> int:
    steps = cfg.epochs * math.ceil(n_examples / cfg.batch_size)
    return min(steps, cfg.max_steps) if cfg.max_steps else steps


def _micro_batches(rows: list[Encoded], size: int) -> list[list[Encoded]]:
    # Rows of similar length together: less padding in a GPU micro-batch (a CPU one holds a single row anyway).
    ordered = sorted(rows, key=lambda r: len(r.input_ids))
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]


def _loss_sum(model: Any, rows: list[Encoded], pad_id: int, device: str) -> Any:
    """Summed cross-entropy over the answer tokens of `rows` (left-padded into one batch)."""
    import torch
    import torch.nn.functional as F

    width = max(len(r.input_ids) for r in rows)
    # Logits of the last `keep` positions predict the last keep - 1 tokens, where every row's answer is.
    keep = max(r.answer_tokens for r in rows) + 1
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r.input_ids)
        ids[i, width - n :] = torch.tensor(r.input_ids)
        labels[i, width - n :] = torch.tensor(r.labels)
        mask[i, width - n :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    ids, labels, mask, positions = (t.to(device) for t in (ids, labels, mask, positions))
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda")):
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False, logits_to_keep=keep)
    logits = out.logits[:, -keep:-1].float()
    gold = labels[:, width - keep + 1 :]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), gold.reshape(-1), ignore_index=IGNORE, reduction="sum")


def train(
    model: Any,
    rows: list[Encoded],
    cfg: ChatTuningSettings,
    *,
    out_dir: Path | None,
    pad_id: int,
    device: str,
    seed: int = 0,
    progress: Progress | None = None,
) -> tuple[Any, dict]:
    """Wrap `model` in a LoRA, train it on `rows`, save the adapter to out_dir; -> (the peft model, figures).

    Each optimizer step takes batch_size examples, its loss the mean over all their answer tokens.
    """
    import torch
    from peft import get_peft_model

    if not rows:
        raise ValueError("no chat examples to train on")
    torch.manual_seed(seed)
    rng = random.Random(f"{seed}:chat-train")
    peft_model = get_peft_model(model, lora_config(model, cfg))
    trained = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=cfg.learning_rate, weight_decay=0.0)
    total = planned_steps(len(rows), cfg)
    warmup = max(1, total // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, (total - s) / total)
    )
    micro = cfg.micro_batch if device.startswith("cuda") else 1
    step, losses, tokens, started = 0, [], 0, time.monotonic()
    peft_model.train()
    if progress:
        progress("training the chat model", 0, total)
    for _epoch in range(cfg.epochs):
        order = list(rows)
        rng.shuffle(order)
        for start in range(0, len(order), cfg.batch_size):
            if step >= total:
                break
            batch = order[start : start + cfg.batch_size]
            n_tokens = sum(r.answer_tokens for r in batch)
            optimizer.zero_grad(set_to_none=True)
            summed = 0.0
            for mb in _micro_batches(batch, micro):
                loss = _loss_sum(peft_model, mb, pad_id, device)
                (loss / n_tokens).backward()
                summed += float(loss.detach())
            torch.nn.utils.clip_grad_norm_(trained, 1.0)
            optimizer.step()
            scheduler.step()
            losses.append(summed / n_tokens)
            tokens += sum(len(r.input_ids) for r in batch)
            step += 1
            if progress:
                progress("training the chat model", step, total)
    peft_model.eval()
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        peft_model.save_pretrained(str(out_dir))
    head = losses[: max(1, len(losses) // 5)]
    tail = losses[-max(1, len(losses) // 5) :]
    return peft_model, {
        "steps": step,
        "examples": len(rows),
        "tokens_seen": tokens,
        "train_s": round(time.monotonic() - started, 1),
        "loss_first": round(sum(head) / len(head), 4) if losses else None,
        "loss_last": round(sum(tail) / len(tail), 4) if losses else None,
        "trainable_params": sum(p.numel() for p in trained),
    }

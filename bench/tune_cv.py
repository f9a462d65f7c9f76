"""Cross-validation of the embedder tuning's hyper-parameters on an FAQ's own entries (never on any queries).

python bench/tune_cv.py --faq FAQ.csv [--folds 5] [--configs JSON] [--epochs 3]
  -> {"folds", "live": {metric: {"mean", "std"}}, "configs": [{"params", "epoch", metric: {"mean", "std"},
      "delta_" + metric: {"mean", "std"}}], ...} (last line of stdout)

The FAQ is ingested with the real pipeline into a throw-away data dir. Each fold holds out a fifth of the entries
(their answers stay indexed, their questions are asked: held-out self-retrieval) and a tenth of the distinct answers
(left out entirely: their questions should be declined), so every entry is held out exactly once; the rest is the
training data. The live (untuned) embedder and each tuned one are scored on the same fold by the product's own gate
evaluation (the real retriever and abstain rule); the model is scored after every epoch of one run.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [str(HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != HERE]

METRICS = ("recall@1", "recall@5", "decision_accuracy", "answer_precision", "answer_coverage")
DEFAULT_CONFIGS = [
    {"learning_rate": 2e-5, "hard_negatives": True},
    {"learning_rate": 5e-5, "hard_negatives": True},
    {"learning_rate": 5e-5, "hard_negatives": False},
]


class InMemory:
    """The model being trained, as the retriever's embedder (no save and reload per epoch)."""

    def __init__(self, model):
        self.model = model
        self.name = "in-training"
        self.dim = int(model.get_sentence_embedding_dimension())

    def encode(self, texts):
        import numpy as np

        return np.asarray(self.model.encode(list(texts), normalize_embeddings=True, batch_size=64), dtype="float32")

    def encode_query(self, text):
        return self.encode([text])[0]


def folds(examples, k: int, seed: int):
    from support_bot.adapt.data import Split, _rank

    groups = sorted({e.group for e in examples})
    for fold in range(k):
        withheld = {g for g in groups if int(_rank(seed, "group", g) * 2 * k) == 2 * fold}
        rest = [e for e in examples if e.group not in withheld]
        held = [e for e in rest if int(_rank(seed, "entry", e.key) * k) == fold]
        keys = {e.key for e in held}
        yield Split(
            train=[e for e in rest if e.key not in keys], heldout=held,
            abstain=[e for e in examples if e.group in withheld], indexed=rest, withheld_groups=withheld,
            heldout_keys=keys,
        )


def summary(values: list[float]) -> dict:
    return {"mean": round(statistics.fmean(values), 4), "std": round(statistics.pstdev(values), 4) if len(values) > 1 else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faq", required=True)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3, help="score after each of this many epochs")
    parser.add_argument("--configs", default=None, help="JSON list of setting overrides (default: a small grid)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only-folds", default=None, help="comma-separated fold numbers to run (to split the work)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    from ingest.pipeline import ingest_path
    from support_bot.adapt import data, gate, trainer
    from support_bot.core.config import AdaptSettings, Settings
    from support_bot.core.db import get_engine, migrate, session_scope
    from support_bot.knowledge.embedder import get_embedder, resolve_model_dir

    configs = json.loads(args.configs) if args.configs else DEFAULT_CONFIGS
    started = time.monotonic()
    rows: dict[tuple[int, int], list[dict]] = {}
    live_rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-tune-cv-") as tmp:
        settings = Settings(data_dir=Path(tmp) / "data", database_url=None, redis_url=None)
        migrate(settings)
        ingest_path(settings=settings, path=Path(args.faq))
        with session_scope(settings) as session:
            examples = data.collect(session, settings)
        live = get_embedder(settings, None)
        base_dir = resolve_model_dir(settings.embedding.model)
        only = {int(x) for x in args.only_folds.split(",")} if args.only_folds else None
        for f, split in enumerate(folds(examples, args.folds, args.seed)):
            if only is not None and f not in only:
                continue
            cache: dict = {}
            live_rows.append(gate.evaluate(live, split, settings, cache=cache))
            negatives = gate.mine_negatives(settings, split, cache=cache)
            print(f"fold {f}: {len(split.train)} train, {len(split.heldout)} held out, {len(split.abstain)} withheld; "
                  f"live {live_rows[-1]['recall@1']:.3f} r@1", file=sys.stderr, flush=True)
            for c, overrides in enumerate(configs):
                cfg = AdaptSettings.model_validate({**settings.adapt.model_dump(), "epochs": args.epochs, **overrides})

                def scored(epoch, model, c=c, split=split):
                    figures = gate.evaluate(InMemory(model), split, settings)
                    rows.setdefault((c, epoch), []).append(figures)
                    print(f"  config {c} epoch {epoch}: r@1 {figures['recall@1']:.3f} r@5 {figures['recall@5']:.3f} "
                          f"decisions {figures['decision_accuracy']:.3f} ({time.monotonic() - started:.0f} s)",
                          file=sys.stderr, flush=True)

                trainer.train(base_dir, None, split.train, negatives, cfg, on_epoch=scored)
        get_engine(settings).dispose()
    out = {"faq": str(args.faq), "folds": args.folds, "n_examples": len(examples),
           "live": {m: summary([r[m] for r in live_rows]) for m in METRICS}, "configs": []}
    for (c, epoch), figures in sorted(rows.items()):
        entry = {"params": {**configs[c], "epochs": epoch}}
        for m in METRICS:
            entry[m] = summary([r[m] for r in figures])
            entry["delta_" + m] = summary([r[m] - lv[m] for r, lv in zip(figures, live_rows)])
        out["configs"].append(entry)
    out["per_fold"] = {"live": live_rows, "configs": {f"{c}:{e}": r for (c, e), r in sorted(rows.items())}}
    out["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()

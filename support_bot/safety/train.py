"""Train the guard's attack classifier and measure how it generalizes to attack styles it never saw.

python -m support_bot.safety.train [--corpus bench/data/redteam/corpus.jsonl]
                                   [--out support_bot/safety/data/classifier.npz] [--no-loso] [--cache FILE.npz]

Trains on the red-team corpus's training fold (folds are by template, so no fill of a test template is seen) plus
the packaged attack library, writes the weights file, and prints one JSON object: the guard's detection and false
positives on the corpus's test fold with the shipped model, and a leave-one-style-out table: for each attack style,
a model trained without any example of that style, inside the whole guard, on every example of it. Needs
scikit-learn (installed with sentence-transformers); the product itself only reads the weights with numpy.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import tempfile
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from support_bot.safety.classifier import (
    MODEL_FILE,
    N_BUCKETS,
    AttackClassifier,
    feature_scale,
    ngram_buckets,
    view,
)
from support_bot.safety.normalize import normalize
from support_bot.safety.similarity import ATTACKS_FILE, BENIGN_FILE, EMBED_CHARS

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "bench" / "data" / "redteam" / "corpus.jsonl"
# The model's probability reaches the guard's caution threshold (where a message stops being simply allowed) at the
# point, chosen on out-of-fold predictions, where this share of the training fold's ordinary messages would.
TARGET_FALSE_POSITIVES = 0.005
# Inverse regularization of the two logistic regressions (n-grams, embedding), chosen by leave-one-style-out.
NGRAM_C = 0.5
EMBED_C = 1.0
PARAM_NAMES = ("ngram_b", "extract_b", "embed_b", "mix_ngram", "mix_embed", "mix_b", "ngram_shift")


@dataclass
class Row:
    text: str
    attack: bool
    style: str
    group: str
    fold: str
    extraction: bool


def load_rows(corpus: Path) -> list[Row]:
    rows = []
    for line in corpus.read_text(encoding="utf-8").split("\n"):
        if not line.strip():
            continue
        r = json.loads(line)
        attack = r["label"] == "attack"
        style = r.get("style", "unknown")
        extraction = attack and (
            r.get("category") == "system_prompt_extraction" or (style != "jailbreak" and "marker" not in r)
        )
        rows.append(Row(r["text"], attack, style, r.get("template", r["text"][:40]), r.get("fold", "test"), extraction))
    return rows


def library_rows() -> list[Row]:
    """The packaged attack library and ordinary turns: always training data (they are the guard's own)."""
    rows = []
    for i, line in enumerate(ATTACKS_FILE.read_text(encoding="utf-8").split("\n")):
        if line.strip():
            r = json.loads(line)
            rows.append(Row(r["text"], True, "library", f"library:{r['family']}", "train",
                            r["category"] == "system_prompt_extraction"))
    for i, line in enumerate(BENIGN_FILE.read_text(encoding="utf-8").split("\n")):
        if line.strip():
            rows.append(Row(json.loads(line)["text"], False, "library_benign", f"library_benign:{i}", "train", False))
    return rows


class Features:
    """n-gram buckets (sparse) and embeddings for every row, computed once."""

    def __init__(self, rows: list[Row], encode: Callable[[list[str]], np.ndarray], cache: Path | None = None):
        from scipy.sparse import csr_matrix

        norms = [normalize(r.text) for r in rows]
        indptr, indices, data = [0], [], []
        for n in norms:
            buckets = ngram_buckets(view(n))
            indices.extend(buckets.tolist())
            data.extend([feature_scale(buckets)] * len(buckets))
            indptr.append(len(indices))
        data = np.asarray(data, dtype=np.float32)
        self.ngrams = csr_matrix((data, np.asarray(indices), np.asarray(indptr)), shape=(len(rows), N_BUCKETS))
        texts = [n.text[:EMBED_CHARS] for n in norms]
        known: dict[str, np.ndarray] = {}
        if cache is not None and cache.is_file():
            with np.load(cache, allow_pickle=False) as data:
                known = dict(zip(data["texts"].tolist(), data["vectors"], strict=True))
        missing = sorted({t for t in texts if t not in known})
        if missing:
            log.info("embedding %d messages", len(missing))
            known.update(zip(missing, encode(missing), strict=True))
            if cache is not None:
                np.savez(cache, texts=np.array(list(known)), vectors=np.stack(list(known.values())))
        self.embeddings = np.stack([known[t] for t in texts]).astype(np.float32)


def _logreg(x, y, c: float):
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=c, class_weight="balanced", max_iter=3000, solver="liblinear")
    model.fit(x, y)
    return model.coef_.ravel().astype(np.float32), float(model.intercept_[0])


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def fit(rows: list[Row], feats: Features, idx: np.ndarray, *, caution_threshold: float = 0.5) -> dict:
    """Train all parts of the model on rows[idx] -> the arrays of a weights file."""
    from sklearn.model_selection import GroupKFold

    y = np.array([rows[i].attack for i in idx], dtype=np.int64)
    groups = np.array([rows[i].group for i in idx])
    xn, xe = feats.ngrams[idx], feats.embeddings[idx]
    # Out-of-fold logits (by template group) to fit the mix and the threshold without reusing training examples.
    oof = np.zeros((len(idx), 2))
    for tr, te in GroupKFold(n_splits=5).split(xn, y, groups):
        wn, bn = _logreg(xn[tr], y[tr], NGRAM_C)
        we, be = _logreg(xe[tr], y[tr], EMBED_C)
        oof[te, 0] = xn[te] @ wn + bn
        oof[te, 1] = xe[te] @ we + be
    mix_w, mix_b = _logreg(oof, y, 1.0)
    wn, bn = _logreg(xn, y, NGRAM_C)
    we, be = _logreg(xe, y, EMBED_C)
    attacks = np.array([i for i in idx if rows[i].attack])
    ye = np.array([rows[i].extraction for i in attacks], dtype=np.int64)
    wx, bx = _logreg(feats.ngrams[attacks], ye, 0.5)
    # Shift each path so that its out-of-fold false-positive rate at the caution threshold is the target.
    benign = y == 0
    mixed = oof @ mix_w + mix_b
    mix_cut = np.quantile(mixed[benign], 1 - TARGET_FALSE_POSITIVES)
    ngram_cut = np.quantile(oof[benign, 0], 1 - TARGET_FALSE_POSITIVES)
    target = _logit(caution_threshold)
    params = {
        "ngram_b": bn, "extract_b": bx, "embed_b": be, "mix_ngram": float(mix_w[0]), "mix_embed": float(mix_w[1]),
        "mix_b": float(mix_b + target - mix_cut), "ngram_shift": float(target - ngram_cut),
    }
    return {
        "ngram_w": wn.astype(np.float16), "extract_w": wx.astype(np.float16), "embed_w": we.astype(np.float32),
        "params": np.array([params[k] for k in PARAM_NAMES], dtype=np.float64),
        "param_names": np.array(",".join(PARAM_NAMES)),
    }


def save(arrays: dict, path: Path) -> AttackClassifier:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return AttackClassifier(path)


def _rates(guard, rows: list[Row]) -> dict:
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r in rows:
        flagged = guard.check(r.text).action != "allow"
        key = "attack" if r.attack else "benign"
        counts[key][0] += flagged
        counts[key][1] += 1
        if r.attack:
            counts[r.style][0] += flagged
            counts[r.style][1] += 1
    return {k: {"rate": round(a / b, 4), "n": b} for k, (a, b) in sorted(counts.items())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--out", type=Path, default=MODEL_FILE)
    parser.add_argument("--no-loso", action="store_true", help="skip the leave-one-style-out table")
    parser.add_argument("--cache", type=Path, help="an .npz file that keeps the messages' embeddings between runs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")

    from support_bot.core.config import Settings
    from support_bot.safety.input_guard import InputGuard
    from support_bot.safety.similarity import get_encoder, get_index

    settings = Settings()
    corpus = load_rows(args.corpus)
    rows = corpus + library_rows()
    feats = Features(rows, get_encoder(settings), cache=args.cache)
    train_idx = np.array([i for i, r in enumerate(rows) if r.fold == "train"])
    index = get_index(settings)

    shipped = save(fit(rows, feats, train_idx), args.out)
    test = [r for r in corpus if r.fold == "test"]
    shipped_guard = InputGuard(settings, index=index, classifier=shipped)
    report = {"train": {"n": len(train_idx)}, "test_fold": _rates(shipped_guard, test)}
    if not args.no_loso:
        benign_test = [r for r in test if not r.attack]
        styles = sorted({r.style for r in corpus if r.attack})
        loso = {}
        # Outside the package, so a run in progress never leaves a stray weights file next to the shipped one.
        scratch = Path(tempfile.mkdtemp(prefix="guard-loso-")) / "loso.npz"
        for style in styles:
            # Every example of the style is left out of training, whatever its fold; benign test templates too.
            keep = np.array([i for i in train_idx if rows[i].style != style])
            model = save(fit(rows, feats, keep), scratch)
            guard = InputGuard(settings, index=index, classifier=model)
            held = [r for r in corpus if r.style == style]
            rates = _rates(guard, held + benign_test)
            loso[style] = {"detection": rates["attack"]["rate"], "n": rates["attack"]["n"],
                           "benign_false_positives": rates["benign"]["rate"]}
            log.info("%s: %s", style, loso[style])
        scratch.unlink(missing_ok=True)
        scratch.parent.rmdir()
        total = sum(v["n"] for v in loso.values())
        report["leave_one_style_out"] = {
            "by_style": loso,
            "detection": round(sum(v["detection"] * v["n"] for v in loso.values()) / total, 4),
            "min_detection": min(v["detection"] for v in loso.values()),
            "benign_false_positives_max": max(v["benign_false_positives"] for v in loso.values()),
        }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Nearest-neighbour similarity of a message to the packaged library of attacks and of ordinary customer turns."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from support_bot.core.config import Settings

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parent / "data"
ATTACKS_FILE = DATA_DIR / "attacks.jsonl"
BENIGN_FILE = DATA_DIR / "benign.jsonl"

# Only the opening of a message is embedded: it is where attacks set up their frame, and the encoder's cost grows
# with length (12-15 ms for 24 word pieces on one core of this 2-core CPU) while the guard has 20 ms in all.
EMBED_TOKENS = 24
EMBED_CHARS = 200

# Logistic calibration of (closest attack, closest ordinary turn) cosine similarities: fitted by leave-one-out on
# the packaged library (`python bench/safety.py --calibrate`, rounded), never on evaluation data, then shifted
# by ln(10) because ordinary turns outnumber attacks in live traffic by far more than in the library.
_BIAS = -3.7
_W_ATTACK = 3.3
_W_MARGIN = 10.8
BENIGN_PRIOR = 10.0


@dataclass(frozen=True)
class LibraryEntry:
    text: str
    category: str
    family: str


@dataclass(frozen=True)
class Match:
    """The closest library attack and how the message compares with attacks and ordinary turns."""

    score: float
    attack_similarity: float
    benign_similarity: float
    category: str
    family: str
    example: str


def load_library(path: Path = ATTACKS_FILE) -> list[LibraryEntry]:
    """Attack examples, one JSON object a line: text, category, family."""
    entries = []
    for line in path.read_text(encoding="utf-8").split("\n"):
        if line.strip():
            row = json.loads(line)
            entries.append(LibraryEntry(text=row["text"], category=row["category"], family=row["family"]))
    return entries


def load_benign(path: Path = BENIGN_FILE) -> list[str]:
    """Ordinary customer turns that anchor the other side of the comparison."""
    return [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


def calibrate(attack_sim: float, benign_sim: float) -> float:
    """Probability-like score that a message with these nearest similarities is an attack."""
    z = _BIAS + _W_ATTACK * attack_sim + _W_MARGIN * (attack_sim - benign_sim)
    return 1.0 / (1.0 + math.exp(-z))


Encode = Callable[[list[str]], np.ndarray]


class AttackIndex:
    """Embeds the library once; `match` embeds one message and compares it with every example."""

    def __init__(self, encode: Encode, *, attacks: list[LibraryEntry] | None = None, benign: list[str] | None = None):
        self.encode = encode
        self.attacks = attacks if attacks is not None else load_library()
        self.benign = benign if benign is not None else load_benign()
        self.attack_vectors = encode([a.text[:EMBED_CHARS] for a in self.attacks])
        self.benign_vectors = encode([b[:EMBED_CHARS] for b in self.benign])

    def embed(self, text: str) -> np.ndarray:
        return self.encode([text[:EMBED_CHARS]])[0]

    def match(self, text: str, *, vector: np.ndarray | None = None) -> Match:
        vec = self.embed(text) if vector is None else vector
        att = self.attack_vectors @ vec
        best = int(np.argmax(att))
        attack_sim = float(att[best])
        benign_sim = float(np.max(self.benign_vectors @ vec)) if len(self.benign_vectors) else 0.0
        entry = self.attacks[best]
        return Match(
            score=calibrate(attack_sim, benign_sim),
            attack_similarity=attack_sim,
            benign_similarity=benign_sim,
            category=entry.category,
            family=entry.family,
            example=entry.text,
        )


def fit_calibration(index: AttackIndex, *, steps: int = 5000) -> dict[str, float]:
    """Leave-one-out logistic fit of the calibration weights on the library itself (balanced, then prior-shifted)."""
    va, vb = index.attack_vectors, index.benign_vectors
    s_aa = va @ va.T
    np.fill_diagonal(s_aa, -1.0)
    s_bb = vb @ vb.T
    np.fill_diagonal(s_bb, -1.0)
    s_ab = va @ vb.T
    att = np.concatenate([s_aa.max(axis=1), s_ab.max(axis=0)])
    ben = np.concatenate([s_ab.max(axis=1), s_bb.max(axis=1)])
    y = np.concatenate([np.ones(len(va)), np.zeros(len(vb))])
    x = np.stack([np.ones_like(att), att, att - ben], axis=1)
    # Weight the classes equally whatever their sizes in the library.
    sample_w = np.where(y == 1, 0.5 / max(1, len(va)), 0.5 / max(1, len(vb)))
    w = np.zeros(3)
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(x @ w)))
        grad = x.T @ ((p - y) * sample_w) + 1e-3 * np.array([0.0, w[1], w[2]])
        w -= 2.0 * grad
    return {"bias": float(w[0] - math.log(BENIGN_PRIOR)), "w_attack": float(w[1]), "w_margin": float(w[2])}


_indexes: dict[str, AttackIndex] = {}
_lock = threading.Lock()


def library_fingerprint() -> str:
    digest = hashlib.sha256(ATTACKS_FILE.read_bytes() + BENIGN_FILE.read_bytes())
    return digest.hexdigest()[:16]


def get_encoder(settings: Settings) -> Encode:
    """The configured embedding model: numpy BERT when it qualifies (fast for one message), else the embedder."""
    from support_bot.knowledge.embedder import get_embedder, resolve_model_dir
    from support_bot.safety.encoder import NumpyBertEncoder

    try:
        return NumpyBertEncoder(resolve_model_dir(settings.embedding.model), max_tokens=EMBED_TOKENS).encode
    except (ValueError, OSError, KeyError) as exc:
        log.info("safety similarity uses the regular embedder (%s)", exc)
        return get_embedder(settings).encode


def get_index(settings: Settings) -> AttackIndex:
    """The process-wide index for the configured embedding model (the library is embedded once)."""
    key = f"{settings.embedding.model}:{library_fingerprint()}"
    index = _indexes.get(key)
    if index is None:
        with _lock:
            index = _indexes.get(key)
            if index is None:
                log.info("embedding the safety attack library with %s", settings.embedding.model)
                index = AttackIndex(get_encoder(settings))
                _indexes[key] = index
    return index

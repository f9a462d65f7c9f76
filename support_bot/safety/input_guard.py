"""Input guard: several independent signals, a combiner and a per-category policy decide what to do with a message."""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from support_bot.core.config import Settings
from support_bot.safety import patterns
from support_bot.safety.classifier import ngram_buckets, view
from support_bot.safety.normalize import Normalized, normalize
from support_bot.safety.policy import policy_action, reply_for

if TYPE_CHECKING:
    import numpy as np

    from support_bot.safety.classifier import AttackClassifier
    from support_bot.safety.llama_guard import LlamaGuard
    from support_bot.safety.similarity import AttackIndex

log = logging.getLogger(__name__)

# How suspicious each disguise is by itself, before looking at what it hides.
_TRICK_WEIGHTS = {
    "tag_characters": 0.75,
    "homoglyphs": 0.45,
    "styled_letters": 0.3,
    "invisible_characters": 0.3,
    "base64": 0.4,
    "hex": 0.35,
    "leetspeak": 0.25,
    "spaced_letters": 0.2,
    "regional_indicators": 0.3,
}
# A similarity match is one opinion among several: scaled so that alone it blocks only close copies of library
# attacks, and otherwise tips over messages that other signals already found suspicious.
_SIMILARITY_WEIGHT = 0.8
# The learned classifier's opinion counts only once it is more than a faint suspicion: below this it would only add
# noise to the other signals of ordinary messages.
_LEARNED_FLOOR = 0.3
# Between these n-gram-only probabilities the embedding is worth its cost: it can still move the verdict.
_LEARNED_OPEN = (0.08, 0.97)
# The classifier learned from customer-sized messages. On longer texts (help-center entries screened for planted
# instructions, long complaints) it is out of its depth, so there it only adds to evidence another signal found, and
# alone never reaches the caution threshold; long attacks are the phrase families' and the similarity's to catch.
_LEARNED_ALONE_CHARS = 240
_LEARNED_LONG_WEIGHT = 0.45
# The classifier alone lets a message through with care (caution), never refuses it: on customers who write unlike
# its training data it is sure of itself about ordinary questions ("How can you correct someone without sounding like
# a know-it-all?" 0.99, "tell me who your boss is" 0.96), and a refused customer loses the answer, while a cautioned
# one still gets only verified text. Refusing takes another attack signal at least this strong beside it.
_CORROBORATES = 0.3
_UNSET = object()
_SIMILARITY_MIN_CHARS = 100
_HISTORY_TURN_CHARS = 600
# Past this combined attack score further attack evidence cannot change the verdict, only the latency.
_ATTACK_ENOUGH = 0.97
# Handing a person in distress to a human beats any other verdict on the same message.
_HANDOFF_FIRST = ("self_harm", "threat", "legal_threat")
_LLAMA_GUARD_CATEGORIES = {
    "O1": "abuse",
    "O2": "disallowed_topic",
    "O3": "disallowed_topic",
    "O4": "disallowed_topic",
    "O5": "disallowed_topic",
    "O6": "self_harm",
}


@dataclass(frozen=True)
class Signal:
    """One piece of evidence: which check, for which category, how strong (0..1), and what it saw."""

    name: str
    category: str
    score: float
    detail: str = ""


@dataclass
class Verdict:
    """The guard's decision on one customer message."""

    action: str  # allow | caution | block | handoff
    # The strongest category, also when allowed with weak evidence; "none" when no signal fired.
    category: str
    score: float
    reason: str
    signals: list[Signal] = field(default_factory=list)
    # What the customer is told instead of an answer (block and handoff only).
    reply: str | None = None
    latency_ms: float = 0.0

    @property
    def flagged(self) -> bool:
        return self.action != "allow"


def noisy_or(scores: list[float]) -> float:
    """Combine independent pieces of evidence: 1 - prod(1 - s)."""
    remaining = 1.0
    for s in scores:
        remaining *= 1.0 - max(0.0, min(1.0, s))
    return 1.0 - remaining


def pattern_signals(text: str, *, attack_enough: float | None = None) -> list[Signal]:
    """Every phrase family and the structure check, on already-normalized text.

    With `attack_enough`, attack families stop being scanned once their combined score reaches it (a long jailbreak
    is decided after a few families; the rest would only add latency). Distress, abuse and legal families always run.
    """
    signals = []
    lowered = text.lower()
    remaining = 1.0
    for family in patterns.CARE_FAMILIES:
        score, hits = family.score(text, lowered)
        if score > 0:
            signals.append(Signal(family.name, family.category, score, "; ".join(repr(h[:60]) for h in hits)))
    for family in patterns.ATTACK_FAMILIES:
        if attack_enough is not None and 1.0 - remaining >= attack_enough:
            return signals
        score, hits = family.score(text, lowered)
        if score > 0:
            remaining *= 1.0 - score
            signals.append(Signal(family.name, family.category, score, "; ".join(repr(h[:60]) for h in hits)))
    structure, features = patterns.structure_score(text, lowered)
    if structure >= 0.05:
        detail = ", ".join(f"{k}={v}" for k, v in features.items())
        signals.append(Signal("structure", "jailbreak", structure, detail))
    return signals


def category_scores(signals: list[Signal]) -> dict[str, float]:
    """Noisy-OR per category; attack categories also pool into one 'attack' score."""
    by_cat: dict[str, list[float]] = {}
    for s in signals:
        by_cat.setdefault(s.category, []).append(s.score)
    scores = {cat: noisy_or(vals) for cat, vals in by_cat.items()}
    attack = [s.score for s in signals if s.category in patterns.ATTACK_CATEGORIES]
    scores["_attack"] = noisy_or(attack) if attack else 0.0
    return scores


def _attack_category(signals: list[Signal], scores: dict[str, float]) -> str:
    if any(s.name == "decoded_payload" for s in signals):
        return "obfuscation"
    attack_cats = {c: v for c, v in scores.items() if c in patterns.ATTACK_CATEGORIES}
    if not attack_cats:
        return "none"
    # Injection and extraction are more specific than the catch-all jailbreak evidence; prefer them when close.
    best = max(attack_cats.values())
    for cat in ("system_prompt_extraction", "prompt_injection", "disallowed_topic", "obfuscation"):
        if attack_cats.get(cat, 0.0) >= best - 0.1 and attack_cats.get(cat, 0.0) >= 0.4:
            return cat
    return max(attack_cats, key=attack_cats.__getitem__)


class InputGuard:
    """Screens customer messages before they reach retrieval or the model."""

    def __init__(
        self,
        settings: Settings,
        *,
        index: AttackIndex | None = None,
        llama_guard: LlamaGuard | None = None,
        classifier: AttackClassifier | None | object = _UNSET,
    ):
        self.settings = settings
        self.cfg = settings.safety
        self._index = index
        self._index_failed = False
        self._llama_guard = llama_guard
        if classifier is _UNSET:
            from support_bot.safety.classifier import get_classifier

            classifier = get_classifier()
        # None: the packaged weights are missing (or a caller turned the model off); the other signals still run.
        self.classifier = classifier
        self._topic_res = [
            (topic, re.compile(r"\b" + r"\s+".join(map(re.escape, topic.lower().split())) + r"\b", re.IGNORECASE))
            for topic in self.cfg.disallowed_topics
            if topic.strip()
        ]
        self._topic_vectors = None

    # --- lazily loaded heavy parts ---------------------------------------------------------------------------------
    @property
    def index(self) -> AttackIndex | None:
        if self._index is None and self.cfg.use_embeddings and not self._index_failed:
            from support_bot.core.errors import ModelNotAvailable
            from support_bot.safety.similarity import get_index

            try:
                self._index = get_index(self.settings)
            except ModelNotAvailable as exc:
                # The pattern signals still work; say so once instead of failing every chat turn.
                log.warning("safety similarity signal disabled: %s", exc.detail)
                self._index_failed = True
        return self._index

    @property
    def llama_guard(self) -> LlamaGuard | None:
        if self._llama_guard is None and self.cfg.llama_guard_model:
            from support_bot.safety.llama_guard import get_llama_guard

            self._llama_guard = get_llama_guard(
                self.cfg.llama_guard_model, device=self.cfg.llama_guard_device, prompt_format=self.cfg.llama_guard_format
            )
        return self._llama_guard

    def warm_up(self) -> None:
        """Load the embedding model and attack library now rather than on the first customer message."""
        if self.index is not None:
            self.index.match("hello")

    # --- signals ----------------------------------------------------------------------------------------------------
    def _obfuscation_signals(self, norm: Normalized, raw_attack: float) -> list[Signal]:
        signals = [
            Signal(f"trick:{t}", "obfuscation", _TRICK_WEIGHTS.get(t, 0.3), t) for t in dict.fromkeys(norm.tricks)
        ]
        best = 0.0
        best_detail = ""
        for payload in norm.decoded:
            decoded_signals = pattern_signals(payload)
            decoded_attack = category_scores(decoded_signals)["_attack"]
            if decoded_attack > best:
                best = decoded_attack
                top = max(decoded_signals, key=lambda s: s.score)
                best_detail = f"hidden text {payload[:80]!r} -> {top.name}"
        # Hiding a request only matters when the hidden version says more than the visible one.
        if best > raw_attack + 0.05:
            signals.append(Signal("decoded_payload", "obfuscation", min(1.0, best + 0.1), best_detail))
        return signals

    def _topic_signals(self, text: str, vector: np.ndarray | None = None) -> list[Signal]:
        signals = []
        for topic, rx in self._topic_res:
            if rx.search(text):
                signals.append(Signal("disallowed_topic", "disallowed_topic", 0.9, topic))
        if not signals and vector is not None and self._topic_res:
            if self._topic_vectors is None:
                self._topic_vectors = self.index.encode([t for t, _ in self._topic_res])
            sims = self._topic_vectors @ vector
            i = int(sims.argmax())
            if sims[i] >= self.cfg.disallowed_topic_similarity:
                signals.append(Signal("disallowed_topic_meaning", "disallowed_topic", 0.85, self._topic_res[i][0]))
        return signals

    def _history_signal(self, text: str, history: list[str], current_attack: float) -> list[Signal]:
        # Escalation happens in short turns; the tails of earlier turns keep this re-scan within the latency budget.
        turns = [h[-_HISTORY_TURN_CHARS:] for h in history[-self.cfg.history_turns :] if h and h.strip()]
        if not turns:
            return []
        joined = normalize("\n".join([*turns, text[:_HISTORY_TURN_CHARS]]), decode=False).text
        joined_attack = category_scores(pattern_signals(joined))["_attack"]
        singles = [category_scores(pattern_signals(normalize(t, decode=False).text))["_attack"] for t in turns]
        # Only evidence that appears when the turns are read together: a single earlier attack must not taint
        # every later, ordinary message.
        if joined_attack - max([current_attack, *singles]) >= 0.2:
            return [Signal("multi_turn", "jailbreak", joined_attack * 0.9, f"{len(turns)} earlier turns")]
        return []

    def _llama_guard_signal(self, text: str) -> list[Signal]:
        guard = self.llama_guard
        if guard is None:
            return []
        result = guard.classify_input(text)
        if result.verdict != "unsafe":
            return []
        cats = result.categories or ["O3"]
        category = _LLAMA_GUARD_CATEGORIES.get(cats[0], "disallowed_topic")
        return [Signal("llama_guard", category, 0.9, ",".join(cats))]

    # --- decision ---------------------------------------------------------------------------------------------------
    def check(self, text: str, *, history: list[str] | None = None, entry: bool = False) -> Verdict:
        """Screen one customer message (with earlier customer turns for multi-turn attacks).

        `entry`: the text is a help-center entry screened for instructions planted for the model, not a customer's
        message. The learned classifier knows customers' wording, not the company's, so there it only adds to what
        another signal found, as on any long text.
        """
        start = time.perf_counter()
        verdict = self._check(text, history or [], entry)
        verdict.latency_ms = (time.perf_counter() - start) * 1000
        return verdict

    def _check(self, text: str, history: list[str], entry: bool = False) -> Verdict:
        cfg = self.cfg
        if not cfg.enabled or not text or not text.strip():
            return Verdict("allow", "none", 0.0, "guard disabled" if not cfg.enabled else "empty message")
        if len(text) > cfg.max_input_chars:
            signal = Signal("oversize", "oversize", 1.0, f"{len(text)} > {cfg.max_input_chars} characters")
            return self._decide([signal])

        norm = normalize(text)
        # A message in another language or in text-speak is also read through its English gloss.
        scan = f"{norm.text}\n{norm.gloss}" if norm.gloss else norm.text
        signals = pattern_signals(scan, attack_enough=_ATTACK_ENOUGH)
        raw_attack = category_scores(signals)["_attack"]
        signals += self._obfuscation_signals(norm, raw_attack)
        signals += self._topic_signals(norm.text)
        if history:
            signals += self._history_signal(norm.text, history, raw_attack)
        buckets = ngram_buckets(view(norm)) if self.classifier is not None else None
        alone = not entry and len(norm.text) <= _LEARNED_ALONE_CHARS
        learned = self._learned_signal(buckets, signals, alone)
        signals += learned
        learned_open = self._learned_open(buckets)

        # Cheap signals first; the embedding model is only consulted when they leave the question open.
        if (
            not self._decided(signals)
            and (learned_open or self._worth_embedding(norm.text, signals))
            and self.index is not None
        ):
            vector = self.index.embed(norm.text)
            if learned or learned_open:
                signals = [s for s in signals if s.name != "learned"]
                signals += self._learned_signal(buckets, signals, alone, vector)
            match = self.index.match(norm.text, vector=vector)
            if match.score >= 0.05:
                signals.append(
                    Signal(
                        "similarity",
                        match.category,
                        match.score * _SIMILARITY_WEIGHT,
                        f"closest known attack ({match.family}) cos={match.attack_similarity:.2f}, "
                        f"closest ordinary message cos={match.benign_similarity:.2f}",
                    )
                )
            if not any(s.category == "disallowed_topic" for s in signals):
                signals += self._topic_signals(norm.text, vector)
        signals += self._llama_guard_signal(text)
        return self._decide(signals)

    def _learned_signal(
        self, buckets: np.ndarray | None, signals: list[Signal], alone: bool, vector: np.ndarray | None = None
    ) -> list[Signal]:
        if self.classifier is None or buckets is None:
            return []
        scores = self.classifier.score("", vector, buckets=buckets)
        if scores.attack < _LEARNED_FLOOR:
            return []
        # The model says whether, not how: a phrase family that names the kind of attack names it for the model too.
        named = [s for s in signals if s.category in patterns.ATTACK_CATEGORIES and s.score >= 0.3]
        attack = scores.attack
        if not alone and not named:
            attack *= _LEARNED_LONG_WEIGHT
        if named:
            category = max(named, key=lambda s: s.score).category
        else:
            category = "system_prompt_extraction" if scores.extraction >= 0.5 else "prompt_injection"
        how = "n-grams and embedding" if scores.used_embedding else "n-grams"
        return [Signal("learned", category, attack, f"classifier ({how}) p={scores.attack:.2f}")]

    def _learned_open(self, buckets: np.ndarray | None) -> bool:
        """Whether the n-gram model alone left the message where the embedding can still change the verdict."""
        if self.classifier is None or buckets is None:
            return False
        low, high = _LEARNED_OPEN
        return low <= self.classifier.score("", buckets=buckets).attack < high

    def _worth_embedding(self, text: str, signals: list[Signal]) -> bool:
        # The encoder costs ~10-17 ms here, most of the latency budget, so it is consulted only where it can change
        # the outcome: messages the cheap signals left unflagged but not clean (a suspicious phrase, or long enough
        # to hold an instruction set). Short clean customer turns, and messages already flagged, skip it.
        if category_scores(signals)["_attack"] >= self.cfg.caution_threshold:
            return False
        # Configured topics are also matched by meaning, which needs every message's vector.
        if self._topic_res:
            return True
        return len(text) >= _SIMILARITY_MIN_CHARS or any(s.score >= 0.1 for s in signals)

    def _decided(self, signals: list[Signal]) -> bool:
        return max(category_scores(signals).values(), default=0.0) >= self.cfg.action_threshold

    def _decide(self, signals: list[Signal]) -> Verdict:
        cfg = self.cfg
        scores = category_scores(signals)
        candidates: dict[str, float] = {
            c: v for c, v in scores.items() if c not in patterns.ATTACK_CATEGORIES and c != "_attack"
        }
        if scores["_attack"] > 0:
            candidates[_attack_category(signals, scores)] = scores["_attack"]
        if not candidates:
            return Verdict("allow", "none", 0.0, "no signal", signals)
        handoff = [c for c in _HANDOFF_FIRST if candidates.get(c, 0.0) >= cfg.action_threshold]
        category = handoff[0] if handoff else max(candidates, key=candidates.__getitem__)
        score = candidates[category]
        if score >= cfg.action_threshold and category in patterns.ATTACK_CATEGORIES and _learned_alone(signals):
            score = min(score, max(cfg.caution_threshold, cfg.action_threshold - 0.01))
        if score >= cfg.action_threshold:
            action = policy_action(self.settings, category)
        elif score >= cfg.caution_threshold:
            action = "caution" if policy_action(self.settings, category) != "allow" else "allow"
        else:
            action = "allow"
        reason = _reason(category, score, signals, action)
        reply = reply_for(self.settings, category) if action in ("block", "handoff") else None
        return Verdict(action, category, round(score, 4), reason, signals, reply)


def _learned_alone(signals: list[Signal]) -> bool:
    """The learned classifier is the only real evidence of an attack (see _CORROBORATES)."""
    attack = [s for s in signals if s.category in patterns.ATTACK_CATEGORIES]
    return any(s.name == "learned" for s in attack) and all(
        s.name == "learned" or s.score < _CORROBORATES for s in attack
    )


def _reason(category: str, score: float, signals: list[Signal], action: str) -> str:
    top = sorted(signals, key=lambda s: s.score, reverse=True)[:3]
    evidence = "; ".join(f"{s.name} {s.score:.2f}" + (f" ({s.detail})" if s.detail else "") for s in top)
    if action == "allow":
        return f"allowed (highest {category} {score:.2f}): {evidence}" if top else "no signal"
    return f"{category} {score:.2f} -> {action}: {evidence}"

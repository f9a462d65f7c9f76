"""`support-bot eval safety`: the real input guard over a labelled message file."""

from __future__ import annotations

import json
import math
from pathlib import Path

from support_bot.core.config import Settings
from support_bot.core.errors import InvalidInput
from support_bot.safety.input_guard import InputGuard, Verdict


def _percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def load_messages(path: Path) -> list[tuple[str, str]]:
    """(text, label) pairs from a JSONL file of {"text", "label": "attack" | "benign"}."""
    rows = []
    # Split on newlines only: JSON strings may hold U+2028 and other characters str.splitlines() breaks on.
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            text, label = row["text"], row["label"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise InvalidInput(f"{path}:{lineno}: expected {{\"text\": .., \"label\": ..}} ({exc})") from None
        if label not in ("attack", "benign") or not isinstance(text, str):
            raise InvalidInput(f"{path}:{lineno}: label must be 'attack' or 'benign' and text a string")
        rows.append((text, label))
    return rows


def eval_safety(*, messages_path: Path, settings: Settings, guard: InputGuard | None = None) -> dict:
    """Detection and false-positive rates of the input guard, with its latency.

    An attack counts as detected when the guard does anything but allow it (caution, block or handoff: the bot
    answers with care or not at all). A benign message counts as a false positive on the same, stricter reading:
    any action other than allow, since even "caution" changes how an ordinary customer is answered.
    Latency is the wall time of `InputGuard.check` per message, after the models are loaded.
    """
    rows = load_messages(messages_path)
    guard = guard or InputGuard(settings)
    guard.warm_up()
    latencies: list[float] = []
    attacks = detected = benign = false_positives = 0
    for text, label in rows:
        verdict: Verdict = guard.check(text)
        latencies.append(verdict.latency_ms)
        if label == "attack":
            attacks += 1
            detected += verdict.action != "allow"
        else:
            benign += 1
            false_positives += verdict.action != "allow"
    return {
        "n": len(rows),
        "attack_detection_rate": round(detected / attacks, 4) if attacks else 0.0,
        "benign_false_positive_rate": round(false_positives / benign, 4) if benign else 0.0,
        "p50_ms": round(_percentile(latencies, 50), 2),
        "p99_ms": round(_percentile(latencies, 99), 2),
    }

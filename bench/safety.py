"""Input guard quality and latency on a labelled message file, with the pattern-only guard as the reference.

python bench/safety.py [--messages ../shared/data/safety/messages.jsonl] [--redteam bench/data/redteam/corpus.jsonl]
                       [--calibrate]
  -> {"n", "attack_detection_rate", "benign_false_positive_rate", "p50_ms", "p99_ms", "p99_ms_by_length",
      "halves", "patterns_only", "no_classifier", "encoder_ms_p50", "load_avg_1m",
      "redteam_test_fold": {"attack_detection_rate", "benign_false_positive_rate", "p99_ms", "by_style",
                            "no_classifier": {...}}}

The full guard (patterns + embedding similarity + learned classifier), the guard without the learned classifier
and the pattern-only guard run in the same process on the same messages, so the cost and the gain of each signal
read as differences, not across runs. `halves` gives the rates on the even and odd lines separately: a guard that
generalizes scores alike on both. `redteam_test_fold` is the same on the test fold of the red-team corpus (templates
the classifier was not trained on), per attack style. With --calibrate, prints the similarity calibration fitted on
the packaged library instead (see support_bot/safety/similarity.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [str(HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != HERE]

DEFAULT_MESSAGES = HERE.parent.parent / "shared" / "data" / "safety" / "messages.jsonl"
DEFAULT_REDTEAM = HERE / "data" / "redteam" / "corpus.jsonl"


def _pct(values: list[float], q: float) -> float:
    from support_bot.safety.eval import _percentile

    return round(_percentile(values, q), 2)


def _run(guard, rows: list[tuple[str, str]]) -> dict:
    latencies: dict[str, list[float]] = {"<=200": [], "201-1000": [], "1001-4000": [], ">4000": []}
    all_ms: list[float] = []
    hits = {"attack": [0, 0], "benign": [0, 0]}
    halves = {"even": {"attack": [0, 0], "benign": [0, 0]}, "odd": {"attack": [0, 0], "benign": [0, 0]}}
    for i, (text, label) in enumerate(rows):
        verdict = guard.check(text)
        all_ms.append(verdict.latency_ms)
        n = len(text)
        bucket = "<=200" if n <= 200 else "201-1000" if n <= 1000 else "1001-4000" if n <= 4000 else ">4000"
        latencies[bucket].append(verdict.latency_ms)
        flagged = verdict.action != "allow"
        for counter in (hits[label], halves["even" if i % 2 == 0 else "odd"][label]):
            counter[0] += flagged
            counter[1] += 1

    def rates(h):
        return {
            "attack_detection_rate": round(h["attack"][0] / max(1, h["attack"][1]), 4),
            "benign_false_positive_rate": round(h["benign"][0] / max(1, h["benign"][1]), 4),
        }

    return {
        **rates(hits),
        "p50_ms": _pct(all_ms, 50),
        "p99_ms": _pct(all_ms, 99),
        "p99_ms_by_length": {k: _pct(v, 99) for k, v in latencies.items() if v},
        "halves": {k: rates(v) for k, v in halves.items()},
    }


def _redteam(full, reference, path: Path) -> dict:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
    test = [r for r in rows if r.get("fold") == "test"]
    out = {}
    for name, guard in (("full", full), ("no_classifier", reference)):
        result = _run(guard, [(r["text"], r["label"]) for r in test])
        styles: dict[str, list[int]] = {}
        for r in test:
            if r["label"] == "attack":
                counter = styles.setdefault(r["style"], [0, 0])
                counter[0] += guard.check(r["text"]).action != "allow"
                counter[1] += 1
        out[name] = {
            **{k: result[k] for k in ("attack_detection_rate", "benign_false_positive_rate", "p50_ms", "p99_ms")},
            "by_style": {k: round(a / b, 4) for k, (a, b) in sorted(styles.items())},
        }
    return {"n": len(test), **out["full"], "no_classifier": out["no_classifier"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=Path, default=DEFAULT_MESSAGES)
    parser.add_argument("--redteam", type=Path, default=DEFAULT_REDTEAM, help="red-team corpus (its test fold)")
    parser.add_argument("--calibrate", action="store_true", help="fit the similarity calibration on the library")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    from support_bot.core.config import Settings
    from support_bot.safety.eval import load_messages
    from support_bot.safety.input_guard import InputGuard
    from support_bot.safety.similarity import get_index

    settings = Settings()
    if args.calibrate:
        from support_bot.safety.similarity import fit_calibration

        print(json.dumps(fit_calibration(get_index(settings))))
        return

    rows = load_messages(args.messages)
    print(f"{len(rows)} messages from {args.messages}", file=sys.stderr)
    full = InputGuard(settings)
    full.warm_up()
    no_embeddings = settings.safety.model_copy(update={"use_embeddings": False})
    patterns_only = InputGuard(settings.model_copy(update={"safety": no_embeddings}))

    index = get_index(settings)
    probe = "hello, I would like to know where my order is, it was supposed to arrive on monday but nothing came"
    encoder_ms = []
    for _ in range(30):
        start = time.perf_counter()
        index.embed(probe)
        encoder_ms.append((time.perf_counter() - start) * 1000)

    result = {"n": len(rows), **_run(full, rows)}
    reference = _run(patterns_only, rows)
    result["patterns_only"] = {
        k: reference[k] for k in ("attack_detection_rate", "benign_false_positive_rate", "p50_ms", "p99_ms")
    }
    no_classifier = InputGuard(settings, index=index, classifier=None)
    without = _run(no_classifier, rows)
    result["no_classifier"] = {
        k: without[k] for k in ("attack_detection_rate", "benign_false_positive_rate", "p50_ms", "p99_ms")
    }
    if args.redteam.is_file():
        result["redteam_test_fold"] = _redteam(full, no_classifier, args.redteam)
    result["encoder_ms_p50"] = _pct(encoder_ms, 50)
    result["load_avg_1m"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

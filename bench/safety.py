"""Input guard quality and latency on a labelled message file, with the pattern-only guard as the reference.

python bench/safety.py [--messages ../shared/data/safety/messages.jsonl] [--calibrate]
  -> {"n", "attack_detection_rate", "benign_false_positive_rate", "p50_ms", "p99_ms", "p99_ms_by_length",
      "halves", "patterns_only", "encoder_ms_p50", "load_avg_1m"}

The full guard (patterns + embedding similarity) and the pattern-only guard run in the same process on the same
messages, so the cost of the similarity signal reads as a difference, not across runs. `halves` gives the rates on
the even and odd lines separately: a guard that generalizes scores alike on both. With --calibrate, prints the
similarity calibration fitted on the packaged library instead (see support_bot/safety/similarity.py).
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=Path, default=DEFAULT_MESSAGES)
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
    result["encoder_ms_p50"] = _pct(encoder_ms, 50)
    result["load_avg_1m"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

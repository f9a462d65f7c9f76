"""Real answers on an FAQ: is the right entry cited, and how long does a whole answer take?

python bench/answers.py [--faq examples/demo-faq.csv] [--model smollm2-135m-instruct] [--cache-dir DIR]
  -> {"device", "model", "questions", "stop_on_loop": {"right_entry", "median_s", "mean_s", "p90_s"},
      "reference": {...the same...}, "median_ratio"}

Every FAQ question is asked, each in a new conversation, through the assistant's own turn (retrieval, the real model
on the local device, grounding, output guard), first with `llm.stop_on_loop` (generation stops once the model repeats
a finished sentence or re-lists its sources) and then, as the reference in the same run, without it (generation runs
to its end or to max_new_tokens). `right_entry` counts answers whose first citation is the asked entry.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [str(HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != HERE]

log = logging.getLogger("bench.answers")


def _run(settings, rows: list[dict]) -> dict:
    from support_bot.chat.service import Assistant
    from support_bot.chat.store import start_conversation
    from support_bot.core.db import session_scope

    assistant = Assistant(settings)
    assistant.warm_up()
    seconds, right = [], 0
    for row in rows:
        with session_scope(settings) as session:
            conversation, _token = start_conversation(session=session, settings=settings)
            conversation_id = conversation.id
        started = time.perf_counter()
        done = [e for e in assistant.turn(conversation_id=conversation_id, text=row["question"]) if e.event == "done"]
        seconds.append(time.perf_counter() - started)
        cites = (done[-1].data.get("citations") or []) if done else []
        right += bool(cites) and cites[0].get("entry_id") == row["id"]
        log.info("%.1fs %s -> %s", seconds[-1], row["id"], (done[-1].data.get("text") or "")[:80] if done else "")
    assistant.wait_background()
    ordered = sorted(seconds)
    return {
        "right_entry": right,
        "median_s": round(statistics.median(seconds), 2),
        "mean_s": round(statistics.fmean(seconds), 2),
        "p90_s": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faq", type=Path, default=HERE.parent / "examples" / "demo-faq.csv")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--cache-dir", type=Path, help="model cache (default: settings, then the test cache)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")

    from ingest.pipeline import ingest_path
    from support_bot.core.config import Settings
    from support_bot.core.db import migrate
    from support_bot.core.errors import ModelNotAvailable
    from support_bot.llm.pull import resolve_model

    rows = list(csv.DictReader(args.faq.read_text(encoding="utf-8-sig").splitlines()))
    caches = [args.cache_dir] if args.cache_dir else [None, Path.home() / ".cache" / "support-bot-test"]
    with tempfile.TemporaryDirectory(prefix="support-bot-answers-") as tmp:
        base = None
        for cache in caches:
            candidate = Settings(data_dir=Path(tmp), llm={"model": args.model, "cache_dir": cache})
            try:
                resolve_model(candidate)
            except ModelNotAvailable:
                continue
            base = candidate
            break
        if base is None:
            raise SystemExit(f"model {args.model} is not pulled; run: support-bot models pull {args.model}")
        migrate(base)
        job = ingest_path(settings=base, path=args.faq, source_name="faq")
        if job.status != "succeeded":
            raise SystemExit(f"ingest failed: {job.error}")
        results = {}
        for name, stop in (("stop_on_loop", True), ("reference", False)):
            settings = base.model_copy(update={"llm": base.llm.model_copy(update={"stop_on_loop": stop})})
            results[name] = _run(settings, rows)
        from support_bot.llm.registry import get_engine

        device = str(getattr(get_engine(base), "device", "cpu"))
    out = {
        "device": device,
        "model": args.model,
        "questions": len(rows),
        **results,
        "median_ratio": round(results["stop_on_loop"]["median_s"] / results["reference"]["median_s"], 3),
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

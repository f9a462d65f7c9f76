"""Real answers on an FAQ: is the right entry cited, and how long does a whole answer take?

python bench/answers.py [--faq examples/demo-faq.csv] [--model smollm2-135m-instruct] [--cache-dir DIR]
                         [--compare stop_on_loop|prompt_lookup]
  -> {"device", "model", "questions", "stop_on_loop": {"right_entry", "median_s", "mean_s", "p90_s"},
      "reference": {...the same...}, "median_ratio"}

Every FAQ question is asked, each in a new conversation, through the assistant's own turn (retrieval, the real model
on the local device, grounding, output guard), first with `llm.stop_on_loop` (generation stops once the model repeats
a finished sentence or re-lists its sources) and then, as the reference in the same run, without it (generation runs
to its end or to max_new_tokens). `right_entry` counts answers whose first citation is the asked entry.

--compare prompt_lookup: the figure is the configured engine (prompt lookup on, `llm.prompt_lookup_tokens`) and the
reference the same with prompt lookup off, both with `llm.stop_on_loop`; "same_answers" counts questions whose final
answer text is the same in both. Whole turns stop at the first unsupported sentence, which leaves prompt lookup little
to save, so "decode" also continues each question's own prompt (as the assistant built it, sources included) for up
to --decode-tokens tokens straight through the engine, with prompt lookup and without, alternating: tokens/s both ways,
"same_tokens" (prompts whose tokens are identical both ways) and the draft tokens checked and kept.
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


def _decode(engine, prompts: list[list[int]], lookup: int, max_new_tokens: int) -> dict:
    """Each prompt continued greedily through the engine's batcher, one at a time: both ways, alternating."""
    from support_bot.llm.backends.hf.scheduler import Finished, GenerationRequest

    batcher = engine.batcher
    seconds = {"on": 0.0, "off": 0.0}
    same, tokens = 0, 0
    drafted, accepted = batcher.stats.drafted, batcher.stats.accepted
    for prompt in prompts:
        outputs = {}
        for way, n in (("off", 0), ("on", lookup)):
            batcher.lookup_tokens = n
            request = GenerationRequest(prompt_ids=prompt, max_new_tokens=max_new_tokens, deadline=time.monotonic() + 600)
            started = time.perf_counter()
            batcher.submit(request)
            out: list[int] = []
            while not isinstance(item := request.output.get(timeout=600), Finished):
                if isinstance(item, BaseException):
                    raise item
                out.append(item)
            seconds[way] += time.perf_counter() - started
            outputs[way] = out
        same += outputs["on"] == outputs["off"]
        tokens += len(outputs["off"])
    batcher.lookup_tokens = lookup
    return {
        "prompts": len(prompts),
        "tokens": tokens,
        "tok_s": round(tokens / seconds["on"], 2),
        "reference_tok_s": round(tokens / seconds["off"], 2),
        "ratio": round(seconds["off"] / seconds["on"], 3),
        "same_tokens": same,
        "drafted": batcher.stats.drafted - drafted,
        "accepted": batcher.stats.accepted - accepted,
    }


def _run(settings, rows: list[dict], lookup: int | None = None) -> dict:
    from support_bot.chat.service import Assistant
    from support_bot.chat.store import start_conversation
    from support_bot.core.db import session_scope
    from support_bot.llm.registry import get_engine

    assistant = Assistant(settings)
    assistant.warm_up()
    if lookup is not None:
        # The process's one engine for this model serves both runs (models load once); its scheduler reads the draft
        # length at every step.
        get_engine(settings).batcher.lookup_tokens = lookup
    seconds, right, texts = [], 0, []
    for row in rows:
        with session_scope(settings) as session:
            conversation, _token = start_conversation(session=session, settings=settings)
            conversation_id = conversation.id
        started = time.perf_counter()
        done = [e for e in assistant.turn(conversation_id=conversation_id, text=row["question"]) if e.event == "done"]
        seconds.append(time.perf_counter() - started)
        cites = (done[-1].data.get("citations") or []) if done else []
        texts.append(done[-1].data.get("text") if done else None)
        right += bool(cites) and cites[0].get("entry_id") == row["id"]
        log.info("%.1fs %s -> %s", seconds[-1], row["id"], (done[-1].data.get("text") or "")[:80] if done else "")
    assistant.wait_background()
    ordered = sorted(seconds)
    return {
        "right_entry": right,
        "median_s": round(statistics.median(seconds), 2),
        "mean_s": round(statistics.fmean(seconds), 2),
        "p90_s": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], 2),
        "texts": texts,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faq", type=Path, default=HERE.parent / "examples" / "demo-faq.csv")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--cache-dir", type=Path, help="model cache (default: settings, then the test cache)")
    parser.add_argument("--compare", choices=["stop_on_loop", "prompt_lookup"], default="stop_on_loop",
                        help="what the reference run turns off")
    parser.add_argument("--decode-tokens", type=int, default=128, help="--compare prompt_lookup: tokens per prompt")
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
        lookup = base.llm.prompt_lookup_tokens
        runs = {
            "stop_on_loop": (("stop_on_loop", True, None), ("reference", False, None)),
            "prompt_lookup": (("prompt_lookup", True, lookup), ("reference", True, 0)),
        }[args.compare]
        from support_bot.llm.backends.hf.engine import TransformersEngine
        from support_bot.llm.registry import get_engine

        prompts: list[list[int]] = []
        calls: list[tuple[str, list[int]]] = []
        if args.compare == "prompt_lookup":
            # The prompts the assistant builds to answer (found by their last message, the question), for the
            # straight decode below; background summaries use the engine too.
            stream = TransformersEngine.stream

            def recording(self, messages, **kwargs):
                calls.append((messages[-1].content, self.prompt_ids(messages)))
                return stream(self, messages, **kwargs)

            TransformersEngine.stream = recording
        for name, stop, tokens in runs:
            settings = base.model_copy(update={"llm": base.llm.model_copy(update={"stop_on_loop": stop})})
            results[name] = _run(settings, rows, tokens)
        engine = get_engine(base)
        device = str(getattr(engine, "device", "cpu"))
        if calls:
            TransformersEngine.stream = stream
            for row in rows:
                prompts.extend([ids for text, ids in calls if text == row["question"]][:1])
            results["decode"] = _decode(engine, prompts, lookup, args.decode_tokens)
    ours, reference = results[runs[0][0]], results["reference"]
    pairs = list(zip(ours.pop("texts"), reference.pop("texts"), strict=True))
    for row, (a, b) in zip(rows, pairs, strict=True):
        if a != b:
            log.warning("%s answered differently:\n  %s: %r\n  reference: %r", row["id"], runs[0][0], a, b)
    same = sum(a == b for a, b in pairs)
    out = {
        "device": device,
        "model": args.model,
        "questions": len(rows),
        **results,
        "median_ratio": round(ours["median_s"] / reference["median_s"], 3),
        **({"same_answers": same} if args.compare == "prompt_lookup" else {}),
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

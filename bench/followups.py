"""Follow-up questions at the retrieval level: is the last turn of a dialogue resolved to its right entry?

python bench/followups.py [--set NAME FAQ.csv DIALOGUES.jsonl ...] [--stress NAME FAQ.csv QUERIES.jsonl]
                          [--margins 0,0.05,...] [--details]
  -> last stdout line: {"margin", "sets": {NAME: {"n", "new_rule", "old_rule", "alone", "by_margin"}}, "all",
      "cross_validation": {"folds", "mean", "min", "max"}, "stress": {...}}

Each FAQ is ingested with the real pipeline into a throw-away data dir. Each dialogue (EVAL.md's
`{"turns": [...], "relevant": [...]}`, plus `"kind": "follow-up" | "new"`) is played in a new conversation: its
earlier turns are stored with a reply (the top entry's answer, or a decline), so the last turn's memory is what the
real `remember` step reads, and the last turn goes through the real `retrieve(turn, retriever)`.

A dialogue is resolved when its last turn's search answers (does not abstain) with a relevant entry on top; `top1`
counts a relevant top entry whether or not it answers. Per rule, over all dialogues and apart for follow-ups and
for new (stand-alone) second questions:
  new_rule   `retrieve` as the product runs it (retrieval.follow_up_margin from the settings)
  old_rule   the reference, measured in the same run: the retrieve step before the rewrite (search the question;
             only when that abstains and the question looks like a follow-up, retry with "previous question +
             question")
  alone      the last question searched without the conversation
by_margin: new_rule's resolved rate at each margin of --margins (the same two searches, the choice made again by
the pure `prefer_rewrite`, with the floor `rewrite_floor` takes from the knowledge base's own calibrated cut-offs). cross_validation: the margin picked on the other sets' dialogues (the middle of the
best plateau), and this set's resolved rate at it.

stress: real questions asked right after an unrelated question (a seeded random FAQ question of another entry):
the harm of reading a new question with the previous one. `answered_right` over the answerable questions,
`declined` over those nothing answers (empty `relevant`), per rule and by margin.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import re
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [str(HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != HERE]

log = logging.getLogger("bench.followups")

COVID = HERE.parent.parent / "shared" / "data" / "covid-faq"
DEFAULT_SETS = [
    ("demo", HERE.parent / "examples" / "demo-faq.csv", HERE.parent / "examples" / "demo-dialogues.jsonl"),
    ("covid", COVID / "faq.csv", HERE / "data" / "covid-faq-dialogues.jsonl"),
]
DEFAULT_STRESS = ("covid", COVID / "faq.csv", COVID / "queries.jsonl")
DEFAULT_MARGINS = "0,0.02,0.05,0.08,0.1,0.12,0.15,0.2,0.25,0.3,0.4,1"
DECLINE = "Sorry, I could not find that in our help center."

# The follow-up test of the retrieve step before the rewrite (the reference), as it was.
_OLD_START = re.compile(r"^\W*(and|but|also|so|or|plus|then|what about|how about|what if)\b", re.I)
_OLD_REFERRING = re.compile(
    r"\b(it|its|it's|that|this|those|these|they|them|their|there|one|ones|same|such|he|she|him|her|his)\b", re.I
)


def _old_looks_like_follow_up(text: str) -> bool:
    return bool(_OLD_START.search(text) or _OLD_REFERRING.search(text) or len(re.findall(r"[\w']+", text)) <= 3)


def old_rule(turn, retriever):
    """The retrieve step before the rewrite: retry with the previous question only when the question abstains."""
    settings, text = turn.settings, turn.question.text
    k = max(settings.retrieval.top_k, settings.retrieval.related_questions)
    result = retriever.search(text, k=k)
    history = turn.memory.history
    if result.abstain and history and _old_looks_like_follow_up(text):
        previous = next((m.content for m in reversed(history) if m.role == "user"), "")
        retry = retriever.search(f"{previous} {text}", k=k)
        if not retry.abstain:
            result = retry
    return result


def load_dialogues(path: Path) -> list[dict]:
    """DIALOGUES.jsonl: {"turns": [str, ...], "relevant": [faq id, ...], "kind": "follow-up" | "new"} a line."""
    out = []
    for line_no, line in enumerate(Path(path).read_text(encoding="utf-8-sig").splitlines(), 1):
        if not line.strip():
            continue
        obj = json.loads(line)
        turns, relevant = obj.get("turns"), obj.get("relevant")
        if not (isinstance(turns, list) and len(turns) >= 2 and all(isinstance(t, str) and t.strip() for t in turns)):
            raise SystemExit(f"{path}: line {line_no} needs at least two turns")
        if not isinstance(relevant, list):
            raise SystemExit(f'{path}: line {line_no} has no "relevant" list')
        out.append({"turns": turns, "relevant": [str(r) for r in relevant], "kind": obj.get("kind", "follow-up")})
    return out


def stress_dialogues(faq: Path, queries: Path, seed: int = 0) -> list[dict]:
    """Each labelled query asked right after the question of a random FAQ entry that does not answer it."""
    import csv

    rows = list(csv.DictReader(Path(faq).read_text(encoding="utf-8-sig").splitlines()))
    rng = random.Random(seed)
    out = []
    for line in Path(queries).read_text(encoding="utf-8-sig").splitlines():
        if not line.strip():
            continue
        query = json.loads(line)
        relevant = [str(r) for r in query.get("relevant", [])]
        others = [r["question"] for r in rows if r["id"] not in relevant]
        out.append({"turns": [rng.choice(others), query["query"]], "relevant": relevant, "kind": "new"})
    return out


def _turn(settings, conversation_id: str, text: str):
    from support_bot.chat.memory import remember
    from support_bot.chat.store import record_customer_message
    from support_bot.chat.turn import Turn

    question, _reply, _created = record_customer_message(
        settings, conversation_id=conversation_id, text=text, client_message_id=None
    )
    return Turn(settings=settings, question=question, original=text, memory=remember(settings, question),
                summaries=None)


def _outcome(result, relevant: list[str]) -> dict:
    top = result.hits[0].entry_id if result.hits else None
    answered = bool(result.hits) and not result.abstain
    return {
        # Unrounded: `choose` makes the product's choice again from it.
        "top": top, "score": result.hits[0].score if result.hits else None, "answered": answered,
        # Answered with a relevant entry on top; for a question nothing answers, declined.
        "ok": (answered and top in relevant) if relevant else not answered,
        "top1": top in relevant,
    }


def play(settings, retriever, dialogue: dict) -> dict:
    """One dialogue in a new conversation: the last turn under each rule, and both searches behind the new one."""
    from support_bot.chat.retrieve import (
        customer_questions, looks_like_follow_up, rests_on_last_answer, retrieve, rewrite_floor, rewrite_follow_up,
    )
    from support_bot.chat.grounding import citation
    from support_bot.chat.store import start_conversation, store_reply
    from support_bot.core.db import session_scope

    with session_scope(settings) as session:
        conversation, _token = start_conversation(session=session, settings=settings)
        conversation_id = conversation.id
    for text in dialogue["turns"][:-1]:
        turn = _turn(settings, conversation_id, text)
        result = retrieve(turn, retriever)
        answered = bool(result.hits) and not result.abstain
        reply = (result.hits[0].answer or result.hits[0].text) if answered else DECLINE
        # Cited as the product cites an answer's source: the next turn reads which entry the bot rested on.
        store_reply(settings, turn.question, reply, [citation(1, result.hits[0])] if answered else [],
                    abstained=not answered)
    turn = _turn(settings, conversation_id, dialogue["turns"][-1])
    relevant = dialogue["relevant"]
    k = max(settings.retrieval.top_k, settings.retrieval.related_questions)
    text = turn.question.text
    follow_up = looks_like_follow_up(text)
    rewritten = rewrite_follow_up(text, customer_questions(turn)) if follow_up else None
    retry = retriever.search(rewritten, k=k) if rewritten else None
    # The knowledge base's own cut-offs, as `retrieve` reads them: calibrated ones when the index has them.
    # Where the rewrite lands on the entry the last answer rested on, its floor is lower (rewrite_floor).
    stays = retry is not None and rests_on_last_answer(turn, retry)
    floor = rewrite_floor(text, retriever.settings_for(retriever.reader.current()), stays_on_entry=stays)
    return {
        "turns": dialogue["turns"], "kind": dialogue["kind"], "relevant": relevant,
        "follow_up": follow_up, "rewritten": rewritten, "floor": floor,
        "new_rule": _outcome(retrieve(turn, retriever), relevant),
        "old_rule": _outcome(old_rule(turn, retriever), relevant),
        "alone": _outcome(retriever.search(text, k=k), relevant),
        "rewrite": _outcome(retry, relevant) if retry else None,
    }


def _rate(rows: list[dict], key: str, field: str = "ok") -> float | None:
    return round(sum(r[key][field] for r in rows) / len(rows), 4) if rows else None


def _summary(rows: list[dict], key: str) -> dict:
    follow = [r for r in rows if r["kind"] != "new"]
    new = [r for r in rows if r["kind"] == "new"]
    return {"resolved": _rate(rows, key), "top1": _rate(rows, key, "top1"),
            "follow_up_resolved": _rate(follow, key), "new_question_resolved": _rate(new, key)}


def choose(row: dict, margin: float) -> dict:
    """The last turn's outcome under the new rule had retrieval.follow_up_margin been `margin`."""
    from support_bot.chat.retrieve import Searched, prefer_rewrite

    alone, rewrite = row["alone"], row["rewrite"]
    if rewrite is None:
        return alone
    use = prefer_rewrite(Searched(alone["score"], not alone["answered"]),
                         Searched(rewrite["score"], not rewrite["answered"]),
                         follow_up=row["follow_up"], margin=margin, floor=row["floor"])
    if not use:
        return alone
    # Taken, it is answered, as `retrieve` answers it, even where its own search declines (the floor).
    relevant = row["relevant"]
    return {**rewrite, "answered": True, "ok": rewrite["top"] in relevant if relevant else False}


def resolved_at(rows: list[dict], margin: float) -> float:
    return round(sum(choose(r, margin)["ok"] for r in rows) / len(rows), 4)


def best_margin(by_margin: dict[float, float]) -> float:
    """The middle of the margins with the best rate, away from the edges of the plateau."""
    best = max(by_margin.values())
    tied = sorted(m for m, v in by_margin.items() if v == best)
    return tied[(len(tied) - 1) // 2]


def run(base, name: str, faq: Path, dialogues: list[dict]) -> list[dict]:
    """Ingest the FAQ into a throw-away data dir and play every dialogue over it."""
    from ingest.pipeline import ingest_path
    from support_bot.core.db import get_engine, migrate
    from support_bot.knowledge.retriever import Retriever

    with tempfile.TemporaryDirectory(prefix=f"support-bot-followups-{name}-") as tmp:
        settings = base.model_copy(update={"data_dir": Path(tmp), "database_url": None, "redis_url": None})
        migrate(settings)
        try:
            job = ingest_path(settings=settings, path=faq, source_name=name)
            if job.status != "succeeded":
                raise SystemExit(f"{name}: ingest failed: {job.error}")
            retriever = Retriever(settings)
            rows = []
            for dialogue in dialogues:
                row = play(settings, retriever, dialogue)
                log.info("%s %-9s new=%s old=%s alone=%s | %s -> %s", name, row["kind"], row["new_rule"]["top"],
                         row["old_rule"]["top"], row["alone"]["top"], " / ".join(row["turns"]), row["rewritten"])
                rows.append(row)
        finally:
            get_engine(settings).dispose()
    return rows


def _stress_summary(rows: list[dict], key: str) -> dict:
    answerable = [r for r in rows if r["relevant"]]
    unanswerable = [r for r in rows if not r["relevant"]]
    return {"answered_right": _rate(answerable, key), "declined": _rate(unanswerable, key)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", nargs=3, action="append", metavar=("NAME", "FAQ", "DIALOGUES"),
                        help="a dialogue set over an FAQ (default: the demo and covid-faq sets)")
    parser.add_argument("--stress", nargs=3, metavar=("NAME", "FAQ", "QUERIES"),
                        help="labelled queries asked after an unrelated question (default: covid-faq's)")
    parser.add_argument("--no-stress", action="store_true")
    parser.add_argument("--margins", default=DEFAULT_MARGINS, help="margins for by_margin and cross-validation")
    parser.add_argument("--seed", type=int, default=0, help="picks the unrelated first questions of the stress run")
    parser.add_argument("--details", action="store_true", help="include every dialogue's outcome")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")

    from support_bot.core.config import get_settings

    base = get_settings()
    margin = base.retrieval.follow_up_margin
    sets = [(n, Path(f), Path(d)) for n, f, d in args.set] if args.set else DEFAULT_SETS
    margins = sorted({float(m) for m in args.margins.split(",")} | {margin})
    out: dict = {"margin": margin, "sets": {}}
    played: dict[str, list[dict]] = {}
    for name, faq, path in sets:
        rows = played[name] = run(base, name, faq, load_dialogues(path))
        out["sets"][name] = {
            "n": len(rows), "n_follow_up": sum(r["kind"] != "new" for r in rows),
            "n_new_question": sum(r["kind"] == "new" for r in rows),
            "new_rule": _summary(rows, "new_rule"), "old_rule": _summary(rows, "old_rule"),
            "alone": _summary(rows, "alone"),
            "by_margin": {str(m): resolved_at(rows, m) for m in margins},
            **({"dialogues": rows} if args.details else {}),
        }
    every = [r for rows in played.values() for r in rows]
    out["all"] = {"n": len(every), "new_rule": _summary(every, "new_rule"), "old_rule": _summary(every, "old_rule"),
                  "alone": _summary(every, "alone")}
    if len(played) > 1:
        folds = {}
        for held_out, rows in played.items():
            tuning = [r for name, other in played.items() if name != held_out for r in other]
            picked = best_margin({m: resolved_at(tuning, m) for m in margins})
            folds[held_out] = {"margin": picked, "resolved": resolved_at(rows, picked)}
        held = [f["resolved"] for f in folds.values()]
        out["cross_validation"] = {"folds": folds, "mean": round(statistics.fmean(held), 4), "min": min(held),
                                   "max": max(held)}
    stress = None if args.no_stress else (args.stress or DEFAULT_STRESS)
    if stress:
        name, faq, queries = stress[0], Path(stress[1]), Path(stress[2])
        rows = run(base, f"{name}-stress", faq, stress_dialogues(faq, queries, args.seed))
        out["stress"] = {
            "set": name, "n": len(rows), "n_answerable": sum(bool(r["relevant"]) for r in rows),
            "follow_up_like": round(sum(r["follow_up"] for r in rows) / len(rows), 4),
            "new_rule": _stress_summary(rows, "new_rule"), "old_rule": _stress_summary(rows, "old_rule"),
            "alone": _stress_summary(rows, "alone"),
            "by_margin": {
                str(m): _stress_summary([{**r, "m": choose(r, m)} for r in rows], "m") for m in margins
            },
        }
        if args.details:
            # The ones the product's rule gets wrong: what reading a new question with the previous one cost.
            out["stress"]["misses"] = [r for r in rows if not r["new_rule"]["ok"] and r["alone"]["ok"]]
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

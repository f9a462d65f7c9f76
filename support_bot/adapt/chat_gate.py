"""The chat model's gate: the live and the tuned model answer the same held-out questions, judged as `eval answers`.

Every example of the evaluation index (data.Split.indexed: all but the withheld answers) is indexed whole, question
and answer, in a throw-away data dir with its own SQLite database, with the live embedder. The held-out questions
(never trained on) and questions of withheld answers (which should be declined) are then asked, each in a new
conversation, through the whole customer turn (chat.service.Assistant: guards, retrieval, the answer-or-abstain
decision, generation, grounding, the output check, the quote fallback), once with each model, and the answers scored
by chat.evaluation's judge: correct_rate, wrong_rate, model_written_rate and the rest of its figures.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from support_bot.adapt.data import Split
from support_bot.adapt.gate import encode_cached
from support_bot.core.chat_tuning import ChatTuningSettings
from support_bot.core.config import Settings
from support_bot.knowledge.index import ChunkRecord, write_version

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
# Figures the tuned model must not be worse in than the live one (by more than settings.adapt.gate_tolerance).
HIGHER_IS_BETTER = ("correct_rate", "model_written_rate")
LOWER_IS_BETTER = ("wrong_rate",)


def gate_questions(split: Split, cfg: ChatTuningSettings) -> list[dict]:
    """Held-out questions with every indexed entry of their answer as relevant, then questions of withheld answers."""
    by_group: dict[str, list[str]] = {}
    for e in split.indexed:
        by_group.setdefault(e.group, []).append(e.key)
    answerable = [{"query": e.question, "relevant": by_group[e.group]} for e in split.heldout[: cfg.gate_questions]]
    return answerable + [{"query": e.question, "relevant": []} for e in split.abstain[: cfg.gate_declines]]


@contextmanager
def scratch_kb(
    settings: Settings, split: Split, embedder: Any, *, progress: Progress | None = None
) -> Iterator[Settings]:
    """Settings of a throw-away data dir holding the evaluation index and a migrated database (the model stays where
    it was pulled, the adapters where they were tuned)."""
    from support_bot.core.db import get_engine, migrate

    with tempfile.TemporaryDirectory(prefix="support-bot-chat-gate-") as tmp:
        llm = settings.llm.model_copy(update={"cache_dir": settings.model_cache_dir})
        scratch = settings.model_copy(
            update={"data_dir": Path(tmp), "database_url": None, "redis_url": None, "llm": llm}
        )
        migrate(scratch)
        records, views = [], []
        for e in split.indexed:
            text = f"{e.question}\n{e.answer}"
            lexical = f"{e.question}\n{text}"
            records.append(ChunkRecord(e.key, e.origin, e.key, e.question, text, e.answer, None, lexical))
            views.append([e.question, e.answer])
        vectors = encode_cached(embedder, [v for vs in views for v in vs], {}, phase="indexing the held-out slice",
                                progress=progress)
        write_version(scratch.index_dir, records=records, vectors=vectors, vec_counts=[len(v) for v in views],
                      embedding_model=embedder.name)
        try:
            yield scratch
        finally:
            get_engine(scratch).dispose()


def evaluate(
    scratch: Settings,
    engine: Any,
    embedder: Any,
    questions: list[dict],
    *,
    progress: Progress | None = None,
    phase: str = "answering held-out questions",
) -> dict:
    """`eval answers`'s figures of `engine` on the questions, each asked in a new conversation of the scratch dir."""
    from support_bot.chat.evaluation import EntryTexts, ask, judge, score_answers
    from support_bot.chat.service import Assistant
    from support_bot.chat.store import start_conversation
    from support_bot.core.db import session_scope
    from support_bot.knowledge.retriever import Retriever

    assistant = Assistant(scratch, engine=engine, retriever=Retriever(scratch, embedder=embedder))
    # Every reply says whether it quotes an entry (done's "quoted"), so the judge needs no entry texts.
    entries = EntryTexts()
    outcomes = []
    for i, q in enumerate(questions):
        with session_scope(scratch) as session:
            conversation, _token = start_conversation(session=session, settings=scratch)
            conversation_id = conversation.id
        events = ask(assistant, conversation_id, q["query"])
        assistant.wait_background()
        outcomes.append(judge(q["relevant"], events, entries))
        if progress:
            progress(phase, i + 1, len(questions))
    figures = score_answers(outcomes)
    for key in ("first_sentence_ms_p50", "answer_ms_p50"):
        figures.pop(key, None)  # timings of two runs on a shared machine say nothing about the models
    return figures


def verdict(live: dict, candidate: dict, tolerance: float) -> dict:
    """Whether the tuned model may go live: not worse than the live one in any gated figure."""
    worse = [
        {"metric": m, "live": live.get(m, 0.0), "candidate": candidate.get(m, 0.0)}
        for m in HIGHER_IS_BETTER
        if candidate.get(m, 0.0) < live.get(m, 0.0) - tolerance - 1e-9
    ] + [
        {"metric": m, "live": live.get(m, 0.0), "candidate": candidate.get(m, 0.0)}
        for m in LOWER_IS_BETTER
        if candidate.get(m, 0.0) > live.get(m, 0.0) + tolerance + 1e-9
    ]
    return {"passed": not worse, "worse": worse, "tolerance": tolerance}


def describe(v: dict) -> str:
    """The verdict in a sentence with the figures."""
    if v["passed"]:
        return "not worse than the live chat model on the held-out questions"
    parts = [
        f"{w['metric']} {w['candidate']:.3f} {'>' if w['metric'] in LOWER_IS_BETTER else '<'} live {w['live']:.3f}"
        for w in v["worse"]
    ]
    return "worse than the live chat model on the held-out questions: " + ", ".join(parts)

"""Whole-answer evaluation: labelled questions asked through the customer turn the chat API runs (see EVAL.md)."""

from __future__ import annotations

import json
import logging
import random
import re
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support_bot.core.config import Settings, get_settings
from support_bot.core.errors import InvalidInput, SupportBotError
from support_bot.core.threads import torch_on_one_thread_while
from support_bot.knowledge.evaluation import jsonl_objects, load_queries
from support_bot.llm.prompt import CITATION_RE

log = logging.getLogger(__name__)

# What a client of the chat API receives for one message post: (ms since the post, event name, event data).
TimedEvent = tuple[float, str, dict[str, Any]]

# A sentence is complete at its closing punctuation or at a line break. A point ending the text so far counts though
# it may be a decimal point still streaming ("$14." then "95"): that misjudges by one token, while waiting for the
# next piece would misjudge an answer streamed a whole sentence at a time by a whole sentence.
_SENTENCE_DONE = re.compile(r"[.!?][\"')\]]*(?:\s|$)|\S[ \t]*\n")


def load_dialogues(path: Path) -> list[dict]:
    """Read DIALOGUES.jsonl: one {"turns": [str, ...], "relevant": [faq id, ...]} per line."""
    path = Path(path)
    out: list[dict] = []
    for line_no, obj in jsonl_objects(path):
        turns = obj.get("turns") if isinstance(obj, dict) else None
        relevant = obj.get("relevant", []) if isinstance(obj, dict) else None
        if not isinstance(turns, list) or not turns or not all(isinstance(t, str) and t.strip() for t in turns):
            raise InvalidInput(f'{path.name}: line {line_no} needs "turns": a list of non-empty texts')
        if not isinstance(relevant, list):
            raise InvalidInput(f'{path.name}: line {line_no} has a "relevant" that is not a list')
        out.append({"turns": list(turns), "relevant": [str(r) for r in relevant]})
    if not out:
        raise InvalidInput(f"{path.name}: no dialogues")
    return out


def sample_queries(queries: Sequence[dict], limit: int | None, seed: int) -> list[dict]:
    """`limit` queries drawn with `seed` (the same ones on every run), kept in file order; all without a limit."""
    if limit is None or limit >= len(queries):
        return list(queries)
    if limit < 1:
        raise InvalidInput("--limit must be at least 1")
    picked = sorted(random.Random(seed).sample(range(len(queries)), limit))
    return [queries[i] for i in picked]


def _squash(text: str) -> str:
    return " ".join(text.split())


@dataclass
class EntryTexts:
    """The help center's own text of each entry, to tell an answer quoting an entry from one the model wrote."""

    by_chunk: dict[str, str] = field(default_factory=dict)
    by_entry: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, settings: Settings) -> EntryTexts:
        """What the grounding fallback quotes for each stored chunk: the FAQ answer, else the chunk's text."""
        from sqlalchemy import select

        from support_bot.core.db import session_scope
        from support_bot.models import Chunk

        texts = cls()
        with session_scope(settings) as session:
            for chunk_id, entry_id, text, extra in session.execute(
                select(Chunk.id, Chunk.entry_id, Chunk.text, Chunk.extra)
            ):
                quoted = (extra or {}).get("answer") or text
                texts.by_chunk[chunk_id] = quoted
                if entry_id is not None:
                    texts.by_entry.setdefault(str(entry_id), quoted)
        return texts

    def quotes_a_cited_entry(self, text: str, citations: Sequence[Mapping[str, Any]]) -> bool:
        """Whether `text`, less its citation markers, is word for word the text of an entry it cites."""
        plain = _squash(CITATION_RE.sub("", text))
        for c in citations:
            for own in (self.by_chunk.get(str(c.get("chunk_id"))), self.by_entry.get(str(c.get("entry_id")))):
                if own is not None and _squash(own) == plain:
                    return True
        return False


@dataclass(frozen=True)
class Outcome:
    """One answer as judged: what the customer was finally told, whether it was shown truthfully, and when."""

    relevant: tuple[str, ...]
    declined: bool
    # The entry ids of the final answer's citations.
    cited: tuple[str, ...]
    grounded: bool
    quoted: bool
    # Streamed text that the final answer does not begin with: the customer saw something that was withdrawn.
    unverified: bool
    first_sentence_ms: float
    answer_ms: float
    # What the customer was finally told (done.text), for reading the answers back (--details).
    text: str = ""

    @property
    def correct(self) -> bool:
        return not self.declined and any(e in self.relevant for e in self.cited)

    @property
    def wrong(self) -> bool:
        return not self.declined and not any(e in self.relevant for e in self.cited)

    @property
    def model_written(self) -> bool:
        # Citations are what grounding leaves on an answer it passed; an apology or a guard's text has none.
        return not self.declined and self.grounded and not self.quoted


def first_sentence_ms(events: Sequence[TimedEvent]) -> float:
    """When the customer had a whole first sentence: the token completing one, or the end of the answer."""
    shown = ""
    for ms, name, data in events:
        if name == "token":
            shown += str(data.get("text") or "")
            if shown.strip() and _SENTENCE_DONE.search(shown):
                return ms
        elif name in ("done", "error"):
            return ms
    return events[-1][0] if events else 0.0


def shows_withdrawn_text(events: Sequence[TimedEvent]) -> bool:
    """Whether the streamed tokens, concatenated as a client shows them, are not how the final answer begins.

    Whitespace is compared as a client renders it (runs of it alike), so only words and signs shown and then taken
    back count. A turn that ends without a `done` withdraws whatever it streamed.
    """
    shown = _squash("".join(str(d.get("text") or "") for _, name, d in events if name == "token"))
    done = next((d for _, name, d in events if name == "done"), None)
    final = _squash(str((done or {}).get("text") or ""))
    return not final.startswith(shown)


def judge(relevant: Sequence[str], events: Sequence[TimedEvent], entries: EntryTexts) -> Outcome:
    """The outcome of one answer from the events of its message post, as a client of the chat API sees them."""
    done = next((d for _, name, d in events if name == "done"), None)
    text = str((done or {}).get("text") or "")
    citations = list((done or {}).get("citations") or [])
    # No done (an error event) or an empty one (a person has the chat) tells the customer nothing either.
    declined = done is None or bool(done.get("abstained")) or bool(done.get("handoff")) or not text.strip()
    quoted = done.get("quoted") if done is not None else None
    if quoted is None:
        quoted = entries.quotes_a_cited_entry(text, citations)
    end = next((ms for ms, name, _ in events if name in ("done", "error")), events[-1][0] if events else 0.0)
    return Outcome(
        relevant=tuple(relevant),
        declined=declined,
        cited=tuple(str(c["entry_id"]) for c in citations if c.get("entry_id") is not None),
        grounded=bool(citations),
        quoted=bool(quoted),
        unverified=shows_withdrawn_text(events),
        first_sentence_ms=first_sentence_ms(events),
        answer_ms=end,
        text=text,
    )


def detail(question: str, outcome: Outcome, *, judged: bool = True, **extra: Any) -> dict[str, Any]:
    """One answer as a line of the --details file: what was asked, what the customer read, and the verdict.

    A dialogue's earlier turns are context, not judged: its labels name what its last turn should find.
    """
    verdict = "declined" if outcome.declined else "correct" if outcome.correct else "wrong"
    return {
        **extra, "question": question, "relevant": list(outcome.relevant) if judged else [],
        "verdict": verdict if judged else "not judged",
        "cited": list(outcome.cited), "quoted": outcome.quoted, "model_written": outcome.model_written,
        "text": outcome.text, "answer_ms": round(outcome.answer_ms, 1),
    }


def _ratio(a: int, b: int) -> float:
    return round(a / b, 4) if b else 0.0


def _median(values: Sequence[float]) -> float:
    return round(float(statistics.median(values)), 2) if values else 0.0


def score_answers(answers: Sequence[Outcome], dialogues: Sequence[Sequence[Outcome]] | None = None) -> dict:
    """The EVAL.md figures from the queries' outcomes and, when given, every turn of each dialogue (last judged).

    unverified_shown counts every answer the run received, dialogue turns included: no customer may be shown text
    that is then withdrawn. The latencies are the queries' own.
    """
    answerable = [a for a in answers if a.relevant]
    answered = [a for a in answers if not a.declined]
    every = [*answers, *(turn for d in dialogues or () for turn in d)]
    result: dict[str, Any] = {
        "n": len(answers),
        "n_answerable": len(answerable),
        "correct_rate": _ratio(sum(a.correct for a in answerable), len(answerable)),
        "wrong_rate": _ratio(sum(a.wrong for a in answers), len(answers)),
        "decline_rate": _ratio(sum(a.declined for a in answers), len(answers)),
        "unverified_shown": sum(a.unverified for a in every),
        "model_written_rate": _ratio(sum(a.model_written for a in answered), len(answered)),
    }
    if dialogues is not None:
        result["followup_rate"] = _ratio(sum(d[-1].correct for d in dialogues if d), len(dialogues))
    result["first_sentence_ms_p50"] = _median([a.first_sentence_ms for a in answers])
    result["answer_ms_p50"] = _median([a.answer_ms for a in answers])
    return result


def ask(assistant: Any, conversation_id: str, text: str) -> list[TimedEvent]:
    """Post one customer message as the chat API does, and record each event it streams and when it came."""
    stop = threading.Event()
    events: list[TimedEvent] = []
    started = time.perf_counter()

    def record(name: str, data: dict[str, Any]) -> None:
        # Through JSON, as the event stream carries it: what is judged is what a client could parse.
        events.append(((time.perf_counter() - started) * 1000, name, json.loads(json.dumps(data))))

    try:
        # As on the server's turn threads: the turn's own torch work leaves the cores' thread team to the model.
        with torch_on_one_thread_while():
            for event in assistant.turn(
                conversation_id=conversation_id, text=text, client_message_id=str(uuid.uuid4()), stop=stop
            ):
                record(event.event, event.data)
    except SupportBotError as exc:
        record("error", {"detail": exc.detail})
    except Exception:
        # The API answers a failed turn with an error event, and so does the eval: one failure is one declined answer.
        log.exception("a turn failed on %r", text)
        record("error", {"detail": "the turn failed"})
    finally:
        stop.set()
    return events


def _new_conversation(settings: Settings) -> str:
    from support_bot.chat.store import start_conversation
    from support_bot.core.db import session_scope

    with session_scope(settings) as session:
        conversation, _token = start_conversation(session=session, settings=settings)
        return conversation.id


def _throwaway_settings(base: Settings, data_dir: Path) -> Settings:
    # The model stays where it was pulled; only the knowledge base and the conversations are thrown away.
    llm = base.llm.model_copy(update={"cache_dir": base.model_cache_dir})
    return base.model_copy(update={"data_dir": data_dir, "database_url": None, "redis_url": None, "llm": llm})


def _conversation(assistant: Any, settings: Settings, turns: Sequence[str], relevant: Sequence[str],
                  entries: EntryTexts) -> list[Outcome]:
    conversation_id = _new_conversation(settings)
    outcomes = []
    for text in turns:
        events = ask(assistant, conversation_id, text)
        # Summaries the turn queued are written before the next question, so no answer waits on another's work.
        assistant.wait_background()
        outcomes.append(judge(relevant, events, entries))
        done = next((d for _, name, d in events if name == "done"), {})
        log.info("%.0f ms %r -> %r", outcomes[-1].answer_ms, text[:60], str(done.get("text", ""))[:80])
    return outcomes


def eval_answers(
    *,
    faq_path: Path,
    queries_path: Path,
    ingest: Callable[[Settings, Path], None],
    limit: int | None = None,
    seed: int = 0,
    dialogues_path: Path | None = None,
    settings: Settings | None = None,
    progress: bool = False,
    adapter: str | None = None,
    details_path: Path | None = None,
) -> dict:
    """Ingest the FAQ with the real pipeline into a throw-away data dir, ask each query in a new conversation (each
    dialogue turn by turn in one) through the assistant's turn with the configured model, and score the answers.

    `adapter`: a tuned chat adapter of the configured model to answer with (support_bot.adapt.commands.eval_chat_model
    checks it), read from the adapter store of `settings`' data dir; None: the model as shipped, whichever is live.
    `details_path`: also write every answer there, a JSON line each (see `detail`), queries then dialogues.
    """
    from tqdm import tqdm

    from support_bot.chat.service import Assistant
    from support_bot.core.db import get_engine, migrate
    from support_bot.knowledge.retriever import Retriever

    queries = sample_queries(load_queries(queries_path), limit, seed)
    dialogues = load_dialogues(dialogues_path) if dialogues_path is not None else None
    base = settings or get_settings()
    with tempfile.TemporaryDirectory(prefix="support-bot-eval-") as tmp:
        s = _throwaway_settings(base, Path(tmp))
        migrate(s)
        engine = None
        try:
            ingest(s, Path(faq_path))
            engine = _adapter_engine(base, adapter) if adapter is not None else None
            # Its own retriever, not the process-wide one for this index dir, which would outlive the dir.
            assistant = Assistant(s, engine=engine, retriever=Retriever(s))
            # As the server does at start-up: loading the model is not part of any answer's time.
            assistant.warm_up()
            entries = EntryTexts.load(s)
            total = len(queries) + len(dialogues or ())
            with tqdm(total=total, desc="Asking", unit="question", file=sys.stderr, disable=not progress) as bar:
                answers = []
                for q in queries:
                    answers.extend(_conversation(assistant, s, [q["query"]], q["relevant"], entries))
                    bar.update()
                talks = None if dialogues is None else []
                for d in dialogues or ():
                    talks.append(_conversation(assistant, s, d["turns"], d["relevant"], entries))
                    bar.update()
        finally:
            if engine is not None:
                engine.close()
            get_engine(s).dispose()
    if details_path is not None:
        lines = [detail(q["query"], a, kind="query") for q, a in zip(queries, answers, strict=True)]
        for n, (d, turns) in enumerate(zip(dialogues or (), talks or (), strict=True)):
            lines += [
                detail(t, a, kind="dialogue", dialogue=n, turn=i, judged=i == len(turns) - 1)
                for i, (t, a) in enumerate(zip(d["turns"], turns, strict=True))
            ]
        Path(details_path).write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))
    return score_answers(answers, talks)


def _adapter_engine(settings: Settings, adapter: str) -> Any:
    """The configured model with `adapter` merged in, and no other. Made here, not by the engine registry: the
    registry's engine follows the live adapter of the data dir it was made for, and the throw-away one has none."""
    from support_bot.llm.backends.hf.engine import TransformersEngine

    return TransformersEngine(settings, adapter=adapter)

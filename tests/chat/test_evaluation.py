"""Whole-answer evaluation: the EVAL.md figures on hand-checked answers, and real runs through the chat turn."""

from __future__ import annotations

import json

import pytest

from support_bot.chat.evaluation import (
    EntryTexts,
    eval_answers,
    first_sentence_ms,
    judge,
    load_dialogues,
    sample_queries,
    score_answers,
)
from support_bot.cli import main
from support_bot.core.errors import InvalidInput
from support_bot.llm.registry import get_engine
from tests.conftest import FAQ, FIXTURES

QUERIES = FIXTURES / "northwind_queries.jsonl"
DIALOGUES = FIXTURES / "northwind_dialogues.jsonl"
KEYS = [
    "n", "n_answerable", "correct_rate", "wrong_rate", "decline_rate", "unverified_shown", "model_written_rate",
    "followup_rate", "first_sentence_ms_p50", "answer_ms_p50",
]
SHIP_01 = (
    "Orders ship from our Portland warehouse within 2 business days. Standard delivery takes 3-5 business days in "
    "the continental US; express delivery takes 1-2 business days."
)
ENTRIES = EntryTexts(by_chunk={"c-ship-01": SHIP_01}, by_entry={"ship-01": SHIP_01})


def cite(entry_id: str) -> dict:
    return {"n": 1, "chunk_id": f"c-{entry_id}", "source": "faq", "entry_id": entry_id, "title": "", "url": None}


def answer(text: str, *, cites: list[str] = (), abstained: bool = False, handoff: bool = False, **extra) -> list:
    """The events of one message post: the text word by word (10 ms apart), then done."""
    words = text.split(" ")
    events = [(10.0 * (i + 1), "token", {"text": w if i == 0 else f" {w}"}) for i, w in enumerate(words)]
    done = {"message_id": "m", "text": text, "citations": [cite(e) for e in cites], "abstained": abstained,
            "handoff": handoff, "related": [], **extra}
    return [*events, (10.0 * (len(words) + 1), "done", done)]


def test_the_eval_definitions_on_hand_checked_answers():
    outcomes = [
        # Answerable, model-written, citing the relevant entry: correct.
        judge(["ship-01"], answer("Orders ship within 2 business days. [1]", cites=["ship-01"]), ENTRIES),
        # Answerable, quoting the relevant entry (an older done without "quoted"): correct, not model-written.
        judge(["ship-01"], answer(f"{SHIP_01} [1]", cites=["ship-01"]), ENTRIES),
        # Answerable, citing another entry: wrong.
        judge(["ret-01"], answer("Orders ship within 2 business days. [1]", cites=["ship-01"]), ENTRIES),
        # Answerable, declined.
        judge(["ret-01"], answer("I'm sorry, I couldn't find an answer.", abstained=True), ENTRIES),
        # Unanswerable, declined by handing the chat to a person.
        judge([], answer("A person will be with you shortly.", handoff=True), ENTRIES),
        # Unanswerable, yet answered: wrong whatever it cites.
        judge([], answer("From our help center: it ships in 2 days. [1]", cites=["ship-01"], quoted=True), ENTRIES),
    ]
    assert [o.correct for o in outcomes] == [True, True, False, False, False, False]
    assert [o.wrong for o in outcomes] == [False, False, True, False, False, True]
    assert [o.declined for o in outcomes] == [False, False, False, True, True, False]
    assert [o.quoted for o in outcomes] == [False, True, False, False, False, True]
    m = score_answers(outcomes)
    assert list(m) == [k for k in KEYS if k != "followup_rate"]
    assert (m["n"], m["n_answerable"]) == (6, 4)
    assert m["correct_rate"] == 0.5  # 2 of the 4 answerable
    assert m["wrong_rate"] == pytest.approx(2 / 6, abs=1e-4)
    assert m["decline_rate"] == pytest.approx(2 / 6, abs=1e-4)
    assert m["model_written_rate"] == 0.5  # of the 4 answered: the first and the third
    assert m["unverified_shown"] == 0


def test_the_quoted_field_wins_over_the_text_comparison():
    quoted = judge(["ship-01"], answer("Orders ship within 2 business days. [1]", cites=["ship-01"], quoted=True),
                   ENTRIES)
    written = judge(["ship-01"], answer(f"{SHIP_01} [1]", cites=["ship-01"], quoted=False), ENTRIES)
    assert quoted.quoted and not quoted.model_written
    assert not written.quoted and written.model_written


def test_an_answer_without_citations_is_answered_but_not_model_written():
    # The model failed and the bot apologised (no person to hand over to): an answer, with nothing grounded in it.
    apology = judge(["ship-01"], answer("I'm sorry, I'm having trouble answering right now."), ENTRIES)
    assert not apology.declined and apology.wrong and not apology.model_written


def test_a_withdrawn_stream_is_counted_as_unverified_shown():
    withdrawn = [
        (10.0, "token", {"text": "Shipping is free"}),
        (20.0, "token", {"text": " worldwide."}),
        (90.0, "done", {"text": f"From our help center: *Shipping*\n\n{SHIP_01} [1]", "citations": [cite("ship-01")],
                        "abstained": False, "handoff": False, "quoted": True}),
    ]
    # A failed turn: text was shown, then an error instead of an answer.
    cut_off = [(10.0, "token", {"text": "Orders ship"}), (40.0, "error", {"detail": "try again"})]
    # Sentence by sentence, with whitespace laid out differently from the final text: nothing was withdrawn.
    kept = [
        (10.0, "token", {"text": "Orders ship within 2 business days."}),
        (20.0, "token", {"text": "\nStandard delivery takes 3-5 business days."}),
        (30.0, "token", {"text": " [1]"}),
        (31.0, "done", {"text": "Orders ship within 2 business days. Standard delivery takes 3-5 business days. [1]",
                        "citations": [cite("ship-01")], "abstained": False, "handoff": False}),
    ]
    outcomes = [judge(["ship-01"], events, ENTRIES) for events in (withdrawn, cut_off, kept)]
    assert [o.unverified for o in outcomes] == [True, True, False]
    assert outcomes[1].declined and outcomes[1].answer_ms == 40.0
    assert score_answers(outcomes)["unverified_shown"] == 2


def test_first_sentence_and_answer_times():
    events = [
        (10.0, "token", {"text": "Orders"}),
        (20.0, "token", {"text": " ship in 2 days."}),
        (30.0, "token", {"text": " More"}),
        (50.0, "done", {"text": "Orders ship in 2 days. More", "citations": [], "abstained": False, "handoff": False}),
    ]
    assert first_sentence_ms(events) == 20.0
    # A single unfinished sentence is whole when the answer is; with no tokens, the done counts.
    unfinished = [(10.0, "token", {"text": "Orders ship"}), (25.0, "done", {"text": "Orders ship"})]
    assert first_sentence_ms(unfinished) == 25.0
    assert first_sentence_ms([(7.0, "done", {"text": ""})]) == 7.0
    o = judge(["ship-01"], events, ENTRIES)
    assert (o.first_sentence_ms, o.answer_ms) == (20.0, 50.0)
    m = score_answers([o, judge([], [(5.0, "done", {"text": "", "handoff": True})], ENTRIES)])
    assert (m["first_sentence_ms_p50"], m["answer_ms_p50"]) == (12.5, 27.5)


def test_dialogues_are_judged_on_their_last_answer():
    right = judge(["ship-01"], answer("Orders ship within 2 business days. [1]", cites=["ship-01"]), ENTRIES)
    declined = judge(["ship-01"], answer("I'm sorry.", abstained=True), ENTRIES)
    withdrawn_first_turn = judge(["ship-01"], [(1.0, "token", {"text": "Nope"}), (2.0, "error", {})], ENTRIES)
    m = score_answers([right], [[declined, right], [right, declined], [withdrawn_first_turn, right]])
    assert list(m) == KEYS
    assert m["followup_rate"] == pytest.approx(2 / 3, abs=1e-4)
    # Every answer shown counts, a dialogue's earlier turns too.
    assert m["unverified_shown"] == 1
    assert (m["n"], m["correct_rate"]) == (1, 1.0)


def test_limit_takes_the_same_seeded_sample_every_time():
    queries = [{"query": f"q{i}", "relevant": []} for i in range(20)]
    picked = sample_queries(queries, 5, seed=1)
    assert len(picked) == 5 and picked == sample_queries(queries, 5, seed=1)
    assert [queries.index(q) for q in picked] == sorted(queries.index(q) for q in picked)
    assert picked != sample_queries(queries, 5, seed=2)
    assert sample_queries(queries, None, seed=1) == queries == sample_queries(queries, 50, seed=1)
    with pytest.raises(InvalidInput):
        sample_queries(queries, 0, seed=1)


def test_bad_dialogues_file_is_refused(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"turns": ["hi"], "relevant": []}\n{"turns": []}\n')
    with pytest.raises(InvalidInput, match="line 2"):
        load_dialogues(path)
    path.write_text('{"turns": ["hi"], "relevant": "ship-01"}\n')
    with pytest.raises(InvalidInput, match='"relevant"'):
        load_dialogues(path)
    assert load_dialogues(DIALOGUES)[0]["relevant"] == ["ret-02"]


# What the fake model answers to each question the eval asks below.
REPLIES = {
    "How many days until my order is delivered?": "Orders ship from our Portland warehouse within 2 business days [1].",
    "Do you deliver to Germany?": "We ship to Canada, Mexico and most of the European Union [1].",
    "I forgot my password, how do I get back in?": (
        'Click "Forgot password" on the sign-in page and enter your email address [1].'
    ),
    # Nothing a source supports: the best entry is quoted instead.
    "Can I return a bike I bought last week?": "Bananas are yellow and very tasty in the summer.",
    "How long does a refund take?": (
        "Refunds are issued to the original payment method within 5 business days [1]."
    ),
    "Do you ship internationally?": "Yes. We ship to Canada, Mexico and most of the European Union [1].",
}


@pytest.fixture
def fake_model(settings, monkeypatch):
    engine = get_engine(settings)
    monkeypatch.setattr(engine, "reply_for", lambda messages: REPLIES.get(messages[-1].content, "Fake answer."))
    return engine


def test_eval_answers_asks_through_the_chat_turn(settings, embedder, fake_model, tmp_path):
    from ingest.pipeline import ingest_path

    queries = tmp_path / "queries.jsonl"
    rows = [
        {"query": "How many days until my order is delivered?", "relevant": ["ship-01"]},  # correct, model-written
        {"query": "Do you deliver to Germany?", "relevant": ["ret-02"]},  # labelled with another entry: wrong, quoted
        {"query": "How do I bake sourdough bread?", "relevant": []},  # declined
        {"query": "I forgot my password, how do I get back in?", "relevant": []},  # labelled unanswerable: wrong
        {"query": "Can I return a bike I bought last week?", "relevant": ["ret-01"]},  # correct, quoted
    ]
    queries.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data_dirs = []

    def ingest(s, path):
        data_dirs.append(s.data_dir)
        ingest_path(settings=s, path=path)

    details = tmp_path / "details.jsonl"
    m = eval_answers(faq_path=FAQ, queries_path=queries, dialogues_path=DIALOGUES, settings=settings, ingest=ingest,
                     details_path=details)
    assert list(m) == KEYS
    assert (m["n"], m["n_answerable"]) == (5, 3)
    assert m["correct_rate"] == pytest.approx(2 / 3, abs=1e-4)
    assert m["wrong_rate"] == 0.4 and m["decline_rate"] == 0.2
    # Of the 4 answers, 2 are the model's: the bike answer is quoted (nothing supports it), and so is the Germany one
    # ("We ship to Canada, ..." takes up no word of "Do you deliver to Germany?": the entry is shown as its own text).
    assert m["model_written_rate"] == 0.5
    assert m["unverified_shown"] == 0
    # The refund follow-up cites its entry; the other dialogue ends on a question the bot declines.
    assert m["followup_rate"] == 0.5
    assert 0 < m["first_sentence_ms_p50"] <= m["answer_ms_p50"]
    # Each dialogue is one conversation: the follow-up was asked with the first question in its history.
    follow_up = next(c for c in fake_model.calls if c[-1].content == "How long does a refund take?")
    assert any(msg.content == "Can I return a bike I bought last week?" for msg in follow_up[:-1])
    # Each query had a conversation of its own: no other question in its prompt.
    first = next(c for c in fake_model.calls if c[-1].content == rows[0]["query"])
    assert [msg.role for msg in first] == ["system", "user"]
    # Every judged answer, to read back: the queries in order, then each dialogue's turns.
    lines = [json.loads(line) for line in details.read_text().splitlines()]
    assert [line["question"] for line in lines[:5]] == [r["query"] for r in rows]
    assert [line["verdict"] for line in lines[:5]] == ["correct", "wrong", "declined", "wrong", "correct"]
    assert lines[0]["text"].startswith("Orders ship from our Portland warehouse") and lines[0]["model_written"]
    assert lines[4]["quoted"] and lines[4]["cited"] == ["ret-01"]
    dialogue_lines = [line for line in lines if line["kind"] == "dialogue"]
    assert len(dialogue_lines) == len(lines) - 5 and {line["turn"] for line in dialogue_lines} == {0, 1}
    # Only a dialogue's last turn is judged: its labels are about that turn, not the question before it.
    assert {line["verdict"] for line in dialogue_lines if line["turn"] == 0} == {"not judged"}
    assert all(line["relevant"] == [] for line in dialogue_lines if line["turn"] == 0)
    assert {line["verdict"] for line in dialogue_lines if line["turn"] == 1} <= {"correct", "wrong", "declined"}
    assert any(line["question"] == "How long does a refund take?" for line in dialogue_lines)
    # Ingested into a throw-away data dir, gone afterwards; nothing written to the configured one.
    assert data_dirs and data_dirs[0] != settings.data_dir and not data_dirs[0].exists()
    assert not settings.index_dir.exists() or not any(settings.index_dir.iterdir())


def test_cli_prints_the_eval_keys_on_its_last_line(embedder, capsys):
    argv = ["eval", "answers", "--faq", str(FAQ), "--queries", str(QUERIES), "--limit", "4", "--seed", "7",
            "--dialogues", str(DIALOGUES)]
    assert main(argv) == 0
    out = capsys.readouterr().out.strip().splitlines()
    m = json.loads(out[-1])
    assert list(m) == KEYS
    assert m["n"] == 4 and 0 <= m["n_answerable"] <= 4
    assert all(0.0 <= m[k] <= 1.0 for k in KEYS if k.endswith("_rate"))


def test_cli_names_a_missing_queries_file(tmp_path, capsys):
    argv = ["eval", "answers", "--faq", str(FAQ), "--queries", str(tmp_path / "none.jsonl")]
    assert main(argv) == 2
    assert "none.jsonl" in capsys.readouterr().err

"""The learning loop: resolved chats become suggested FAQ entries that ops review and the bot then answers from."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest
from sqlalchemy import func, select

from ingest import learned
from ingest.pipeline import ingest_path, run_job
from ingest.worker import get_worker
from support_bot.ops import audit
from support_bot import handoff, learning
from support_bot.core.db import migrate, session_scope
from support_bot.core.errors import Conflict, InvalidInput
from support_bot.knowledge.retriever import Retriever
from support_bot.models import AuditLog, Conversation, FaqSuggestion, IngestJob, Source, User
from tests.handoff.conftest import make_agent, make_conversation
from tests.web.conftest import app_settings, client  # noqa: F401 - fixtures for the API tests
from tests.web.helpers import ask, new_conversation
from tests.web.test_handoff_api import Console, add_user, fast_hashing  # noqa: F401 - fast_hashing is autouse

DEMO_FAQ = Path(__file__).resolve().parents[2] / "examples" / "demo-faq.csv"
SOURCE = "learned-faq"

LOCKER_Q = "Can I ship my order to a parcel locker?"
LOCKER_PARAPHRASE = "Is delivery to a parcel locker possible?"
LOCKER_A = (
    "Yes. At checkout choose Parcel locker delivery and pick a locker on the map; the parcel waits there for 72 hours "
    "and the opening code comes by text message."
)
PRICE_Q = "Do you price match other stores?"
PRICE_A = "We match the price of any authorised dealer for the same item in stock; show us the offer within 14 days."


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request, settings, embedder):
    """A migrated database with the demo FAQ live, so learned entries compete with real ones."""
    if request.param == "postgres":
        settings = settings.model_copy(update={"database_url": request.getfixturevalue("postgres_url")})
    migrate(settings)
    job = ingest_path(settings=settings, path=DEMO_FAQ, source_name="demo-faq")
    assert job.status == "succeeded", job.error
    return settings


def resolved_chat(settings, agent_id: str, customer: list[str], agent: list[str]) -> str:
    """A chat handed to a person through the real handoff functions: queued, claimed, answered and resolved."""
    conv = make_conversation(settings, *customer)
    with session_scope(settings) as session:
        handoff.start_handoff(session, settings, session.get(Conversation, conv), reason="request")
    with session_scope(settings) as session:
        user = session.get(User, agent_id)
        handoff.claim(session, settings, conversation_id=conv, agent=user)
        for text in agent:
            handoff.agent_reply(session, settings, conversation_id=conv, agent=user, text=text)
    with session_scope(settings) as session:
        handoff.resolve(session, settings, conversation_id=conv, agent=session.get(User, agent_id))
    return conv


def suggestion_of(settings, conv_id: str) -> FaqSuggestion | None:
    with session_scope(settings) as session:
        row = session.scalar(select(FaqSuggestion).where(FaqSuggestion.conversation_id == conv_id))
        if row is not None:
            session.expunge(row)
        return row


def learned_jobs(settings) -> list[IngestJob]:
    with session_scope(settings) as session:
        rows = list(session.scalars(select(IngestJob).where(IngestJob.source_name == SOURCE)))
        session.expunge_all()
        return rows


def approve_and_ingest(settings, suggestion_id: str, actor_id: str, **edits) -> learned.Review:
    """Approve as ops, commit, then run the learned source's job here (instead of on a worker thread)."""
    with session_scope(settings) as session:
        review = learned.approve(
            session, settings, suggestion_id=suggestion_id, actor=session.get(User, actor_id), **edits
        )
    assert review.job is not None
    job = run_job(review.job.id, settings)
    assert job.status == "succeeded", job.error
    return review


def top_hit(settings, question: str):
    result = Retriever(settings).search(question)
    return result, (result.hits[0] if result.hits else None)


# --- suggesting --------------------------------------------------------------------------------------------------


def test_a_resolved_conversation_yields_one_suggestion_with_pii_redacted(db):
    agent = make_agent(db, "alice")
    conv = resolved_chat(
        db, agent,
        customer=[
            "I want to talk to a real person please",
            "The locker code for my order never came. Write to sam.jones@example.com or call +1 415 555 0134.",
        ],
        agent=[
            "Hi, I'm Alice.",
            "Locker codes are sent by text message when the parcel is placed; I have sent yours again to "
            "+1 415 555 0134 and it stays valid for 72 hours.",
            "Thanks for chatting with us!",
        ],
    )
    with session_scope(db) as session:
        assert session.get(Conversation, conv).status == "resolved"
        rows = list(session.scalars(select(FaqSuggestion)))
    assert len(rows) == 1
    s = rows[0]
    assert (s.conversation_id, s.status, s.occurrences, s.examples) == (conv, "pending", 1, [])
    # The problem, not the request for a person; the answer, not the greeting or the sign-off.
    assert s.question == "The locker code for my order never came. Write to [EMAIL] or call [PHONE]."
    assert s.answer == (
        "Locker codes are sent by text message when the parcel is placed; I have sent yours again to [PHONE] and it "
        "stays valid for 72 hours."
    )
    assert s.embedding is not None and len(s.embedding) == 384 * 4
    # Resolving again later (a new episode) does not suggest the same conversation twice.
    with session_scope(db) as session:
        assert learning.suggest_from_conversation(session, conv, db) is None
        assert session.scalar(select(func.count()).select_from(FaqSuggestion)) == 1


def test_conversations_without_a_person_or_a_usable_answer_yield_none(db):
    agent = make_agent(db, "alice")
    bot_only = make_conversation(db, "How long does shipping take?", status="resolved")
    only_greetings = resolved_chat(db, agent, customer=[LOCKER_Q], agent=["Hi, I'm Alice.", "Have a great day!"])
    too_short = resolved_chat(db, agent, customer=["Help?", "Locker?"], agent=["Yes it works that way, sure."])
    open_chat = make_conversation(db, LOCKER_Q)
    with session_scope(db) as session:
        for conv in (bot_only, only_greetings, too_short, open_chat):
            assert learning.suggest_from_conversation(session, conv, db) is None
        assert learning.suggest_from_conversation(session, "no-such-conversation", db) is None
    assert all(suggestion_of(db, c) is None for c in (bot_only, only_greetings, too_short, open_chat))


def test_paraphrased_duplicates_merge_into_the_pending_suggestion(db):
    agent = make_agent(db, "alice")
    first = resolved_chat(db, agent, customer=[LOCKER_Q], agent=[LOCKER_A])
    second = resolved_chat(
        db, agent, customer=[LOCKER_PARAPHRASE], agent=["Sure, choose the locker option at checkout."]
    )
    other = resolved_chat(db, agent, customer=[PRICE_Q], agent=[PRICE_A])

    target, merged, separate = (suggestion_of(db, c) for c in (first, second, other))
    assert (target.status, target.occurrences, target.examples) == ("pending", 2, [second])
    # The pending suggestion keeps its own wording; the merged one stays visible beside it.
    assert (target.question, target.answer) == (LOCKER_Q, LOCKER_A)
    assert (merged.status, merged.merged_into_id) == ("merged", target.id)
    assert (separate.status, separate.occurrences, separate.merged_into_id) == ("pending", 1, None)
    with session_scope(db) as session:
        detail = learning.detail_payload(session, learning.get_suggestion(session, target.id))
        pending, total = learning.list_suggestions(session, status="pending")
    assert [m["answer"] for m in detail["merged"]] == ["Sure, choose the locker option at checkout."]
    assert [line["role"] for line in detail["transcript"]][:2] == ["customer", "bot"]
    # The most asked first.
    assert [p.id for p in pending] == [target.id, separate.id] and total == 2

    # Approving the merged one on its own splits it off again.
    ops = make_agent(db, "olga", role="ops")
    with session_scope(db) as session:
        learning.approve(session, db, suggestion_id=merged.id, actor=session.get(User, ops))
    target = suggestion_of(db, first)
    assert (target.occurrences, target.examples) == (1, [])


def test_a_failing_suggestion_never_fails_the_resolve(db, monkeypatch, caplog):
    agent = make_agent(db, "alice")

    def broken(*_args, **_kwargs):
        raise RuntimeError("embedding service on fire")

    monkeypatch.setattr(learning, "suggest_from_conversation", broken)
    with caplog.at_level(logging.ERROR, logger="support_bot.learning"):
        conv = resolved_chat(db, agent, customer=[LOCKER_Q], agent=[LOCKER_A])
    with session_scope(db) as session:
        assert session.get(Conversation, conv).status == "resolved"
    assert "could not suggest" in caplog.text
    assert suggestion_of(db, conv) is None

    # The backfill makes it later.
    monkeypatch.undo()
    report = learning.backfill(db)
    assert (report.checked, report.suggested, report.failed) == (1, 1, 0)
    assert suggestion_of(db, conv).question == LOCKER_Q
    assert learning.backfill(db).checked == 0


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_cli_backfill_suggests_from_chats_resolved_before(db, monkeypatch, capsys):
    import json

    from support_bot.cli import main

    agent = make_agent(db, "alice")
    # Resolved while the learning loop was off: no suggestions yet.
    off = db.model_copy(update={"learning": db.learning.model_copy(update={"enabled": False})})
    chats = [
        resolved_chat(off, agent, customer=[LOCKER_Q], agent=[LOCKER_A]),
        resolved_chat(off, agent, customer=[LOCKER_PARAPHRASE], agent=[LOCKER_A]),
        resolved_chat(off, agent, customer=[PRICE_Q], agent=["Hi, I'm Alice.", "Bye!"]),
    ]
    assert all(suggestion_of(db, c) is None for c in chats)
    assert main(["learn", "backfill"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report == {"checked": 3, "suggested": 1, "merged": 1, "skipped": 1, "failed": 0}
    assert suggestion_of(db, chats[0]).occurrences == 2
    # Again: only the chat without a usable answer is looked at (and skipped) once more.
    assert main(["learn", "backfill"]) == 0
    assert json.loads(capsys.readouterr().out) == {"checked": 1, "suggested": 0, "merged": 0, "skipped": 1, "failed": 0}


def test_a_rolled_back_resolve_suggests_nothing(db):
    agent = make_agent(db, "alice")
    conv = make_conversation(db, LOCKER_Q)
    with session_scope(db) as session:
        handoff.start_handoff(session, db, session.get(Conversation, conv), reason="request")
    with session_scope(db) as session:
        user = session.get(User, agent)
        handoff.claim(session, db, conversation_id=conv, agent=user)
        handoff.agent_reply(session, db, conversation_id=conv, agent=user, text=LOCKER_A)
    with pytest.raises(RuntimeError), session_scope(db) as session:
        handoff.resolve(session, db, conversation_id=conv, agent=session.get(User, agent))
        raise RuntimeError("the request failed after the resolve")
    assert suggestion_of(db, conv) is None
    with session_scope(db) as session:
        assert session.get(Conversation, conv).status == "assigned"


# --- reviewing -----------------------------------------------------------------------------------------------------


def test_approve_ingests_the_entry_and_the_retriever_finds_a_paraphrase(db):
    agent, ops = make_agent(db, "alice"), make_agent(db, "olga", role="ops")
    result, hit = top_hit(db, LOCKER_PARAPHRASE)
    assert hit is None or hit.source != SOURCE

    conv = resolved_chat(db, agent, customer=[LOCKER_Q], agent=[LOCKER_A])
    s = suggestion_of(db, conv)
    review = approve_and_ingest(db, s.id, ops)
    assert review.suggestion.status == "approved"

    result, hit = top_hit(db, LOCKER_PARAPHRASE)
    assert not result.abstain, result.reason
    assert (hit.source, hit.entry_id, hit.answer) == (SOURCE, s.id, LOCKER_A)
    with session_scope(db) as session:
        source = session.scalar(select(Source).where(Source.name == SOURCE))
        assert (source.kind, source.active_version) == ("faq_json", 1)
        entry = session.scalar(select(AuditLog).where(AuditLog.action == "suggestion.approve"))
        assert (entry.actor_id, entry.target_id) == (ops, s.id)
        reviewed = session.get(FaqSuggestion, s.id)
        assert (reviewed.reviewed_by, reviewed.status) == (ops, "approved")

    # A second approval makes a new version holding both entries.
    other = suggestion_of(db, resolved_chat(db, agent, customer=[PRICE_Q], agent=[PRICE_A]))
    approve_and_ingest(db, other.id, ops)
    assert top_hit(db, LOCKER_PARAPHRASE)[1].entry_id == s.id
    assert top_hit(db, "Will you match a lower price from another shop?")[1].entry_id == other.id

    # Deciding twice is refused, and nothing is queued for it.
    with pytest.raises(Conflict), session_scope(db) as session:
        learned.approve(session, db, suggestion_id=s.id, actor=session.get(User, ops))
    assert len(learned_jobs(db)) == 2


def test_reject_ingests_nothing_and_withdrawing_takes_the_entry_out(db):
    agent, ops = make_agent(db, "alice"), make_agent(db, "olga", role="ops")
    s = suggestion_of(db, resolved_chat(db, agent, customer=[LOCKER_Q], agent=[LOCKER_A]))
    with session_scope(db) as session:
        review = learned.reject(session, db, suggestion_id=s.id, actor=session.get(User, ops), reason="one-off")
    assert (review.suggestion.status, review.job, review.drop_source) == ("rejected", None, False)
    assert learned_jobs(db) == []
    hit = top_hit(db, LOCKER_PARAPHRASE)[1]
    assert hit is None or hit.source != SOURCE
    with session_scope(db) as session:
        assert session.scalar(select(Source).where(Source.name == SOURCE)) is None
        entry = session.scalar(select(AuditLog).where(AuditLog.action == "suggestion.reject"))
        assert entry.detail["reason"] == "one-off" and entry.actor_id == ops
    # A rejected conversation is not suggested again, and a rejected suggestion cannot be edited or approved.
    with session_scope(db) as session:
        assert learning.suggest_from_conversation(session, s.conversation_id, db) is None
        with pytest.raises(Conflict):
            learning.edit(session, db, suggestion_id=s.id, actor=session.get(User, ops), answer="Something else.")
        with pytest.raises(Conflict):
            learning.approve(session, db, suggestion_id=s.id, actor=session.get(User, ops))

    # Withdrawing the only approved entry removes the source from the knowledge base.
    other = suggestion_of(db, resolved_chat(db, agent, customer=[PRICE_Q], agent=[PRICE_A]))
    approve_and_ingest(db, other.id, ops)
    assert top_hit(db, PRICE_Q)[1].source == SOURCE
    with session_scope(db) as session:
        review = learned.reject(session, db, suggestion_id=other.id, actor=session.get(User, ops))
    assert (review.job, review.drop_source) == (None, True)
    learned.apply(db, review)
    hit = top_hit(db, PRICE_Q)[1]
    assert hit is None or hit.source != SOURCE


def test_edits_are_validated_audited_and_re_ingest_an_approved_entry(db):
    agent, ops = make_agent(db, "alice"), make_agent(db, "olga", role="ops")
    s = suggestion_of(db, resolved_chat(db, agent, customer=[LOCKER_Q], agent=[LOCKER_A]))
    with session_scope(db) as session:
        user = session.get(User, ops)
        with pytest.raises(InvalidInput):
            learning.edit(session, db, suggestion_id=s.id, actor=user, question="   ")
        with pytest.raises(InvalidInput):
            learning.edit(session, db, suggestion_id=s.id, actor=user, answer="x" * (learning.MAX_ANSWER_CHARS + 1))
    assert suggestion_of(db, s.conversation_id).question == LOCKER_Q  # nothing stored changed

    with session_scope(db) as session:
        review = learned.edit(
            session, db, suggestion_id=s.id, actor=session.get(User, ops), question="Can I ship to a parcel locker?"
        )
    assert review.job is None  # still pending: nothing to re-ingest
    with session_scope(db) as session:
        entry = session.scalar(select(AuditLog).where(AuditLog.action == "suggestion.edit"))
        assert entry.actor_id == ops and entry.target_id == s.id
        assert entry.detail["fields"] == ["question"]
        assert entry.detail["before"]["question"] == LOCKER_Q
        assert entry.detail["after"]["question"] == "Can I ship to a parcel locker?"

    approve_and_ingest(db, s.id, ops)
    new_answer = LOCKER_A + " Lockers take parcels up to 20 kg."
    with session_scope(db) as session:
        review = learned.edit(session, db, suggestion_id=s.id, actor=session.get(User, ops), answer=new_answer)
    assert review.job is not None
    assert run_job(review.job.id, db).status == "succeeded"
    assert top_hit(db, LOCKER_PARAPHRASE)[1].answer == new_answer
    with session_scope(db) as session:
        edits = audit.entries(session, action="suggestion.edit", target_id=s.id)
    assert len(edits) == 2 and edits[0].detail["status"] == "approved"


def test_two_ops_approving_at_once_ingest_once(db):
    agent = make_agent(db, "alice")
    ops = [make_agent(db, f"ops{i}", role="ops") for i in range(4)]
    s = suggestion_of(db, resolved_chat(db, agent, customer=[LOCKER_Q], agent=[LOCKER_A]))
    barrier = threading.Barrier(len(ops))
    wins: list[str] = []
    errors: list[Exception] = []
    lock = threading.Lock()

    def approve(user_id: str) -> None:
        try:
            with session_scope(db) as session:
                user = session.get(User, user_id)
                session.get(FaqSuggestion, s.id)
                barrier.wait(timeout=30)
                learned.approve(session, db, suggestion_id=s.id, actor=user)
            with lock:
                wins.append(user_id)
        except Exception as exc:  # collected and checked below
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=approve, args=(u,)) for u in ops]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert len(wins) == 1, errors
    assert len(errors) == len(ops) - 1 and all(isinstance(e, Conflict) for e in errors), errors
    jobs = learned_jobs(db)
    assert len(jobs) == 1
    assert run_job(jobs[0].id, db).status == "succeeded"
    with session_scope(db) as session:
        assert suggestion_of(db, s.conversation_id).reviewed_by == wins[0]
        assert len(audit.entries(session, action="suggestion.approve")) == 1


# --- the console API and page ----------------------------------------------------------------------------------


def console_user(client, settings, username: str, role: str) -> Console:
    add_user(settings, username, role, username.title())
    return Console(client.app, username)


def chat_resolved_by_agent(client, settings) -> str:
    """Over HTTP: a customer asks, asks for a person, an agent claims, answers and resolves."""
    conv, headers = new_conversation(client)
    ask(client, conv, headers, LOCKER_Q)
    ask(client, conv, headers, "I want to talk to a real person please")
    agent = console_user(client, settings, "alice", "agent")
    assert agent.post(f"/conversations/{conv}/claim").status_code == 200
    res = agent.post(f"/conversations/{conv}/messages", {"text": LOCKER_A})
    assert res.status_code == 201, res.text
    assert agent.post(f"/conversations/{conv}/resolve").status_code == 200
    return conv


def test_api_story_approve_then_a_new_customer_gets_the_learned_answer(client, app_settings):
    conv = chat_resolved_by_agent(client, app_settings)
    ops = console_user(client, app_settings, "olga", "ops")

    listing = ops.get("/suggestions").json()
    assert listing["counts"]["pending"] == 1 and listing["total"] == 1
    item = listing["items"][0]
    assert (item["conversation_id"], item["question"], item["answer"]) == (conv, LOCKER_Q, LOCKER_A)
    detail = ops.get(f"/suggestions/{item['id']}").json()
    assert [m["role"] for m in detail["transcript"]][0] == "customer"

    res = ops.http.patch(
        f"/api/console/suggestions/{item['id']}", json={"question": "Can I have my order shipped to a parcel locker?"},
        headers=ops.headers,
    )
    assert res.status_code == 200 and res.json()["job"] is None, res.text
    res = ops.post(f"/suggestions/{item['id']}/approve", {})
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["suggestion"]["status"] == "approved" and body["job"]["source"] == SOURCE
    assert get_worker().wait_idle(timeout=120)
    source = ops.get("/suggestions/source").json()
    assert source["last_job"]["status"] == "succeeded", source
    assert (source["source"]["status"], source["source"]["entries"]) == ("live", 1)
    assert ops.post(f"/suggestions/{item['id']}/approve", {}).status_code == 409

    customer, headers = new_conversation(client)
    events = ask(client, customer, headers, LOCKER_PARAPHRASE)
    done = events[-1][1]
    assert events[-1][0] == "done" and not done["abstained"], done
    assert done["citations"][0]["source"] == SOURCE and done["citations"][0]["entry_id"] == item["id"]
    assert "Parcel locker delivery" in done["text"]


@pytest.mark.parametrize("app_settings", ["sqlite"], indirect=True)
def test_roles_csrf_and_bad_input(client, app_settings):
    chat_resolved_by_agent(client, app_settings)
    agent = Console(client.app, "alice")
    ops = console_user(client, app_settings, "olga", "ops")
    admin = console_user(client, app_settings, "ada", "admin")
    sid = ops.get("/suggestions").json()["items"][0]["id"]

    assert client.get("/api/console/suggestions").status_code == 401
    assert agent.get("/suggestions").status_code == 403
    assert agent.post(f"/suggestions/{sid}/approve", {}).status_code == 403
    assert agent.http.get("/console/suggestions").status_code == 403
    assert admin.get("/suggestions").status_code == 200

    # No CSRF token: refused, nothing changed.
    res = ops.http.post(f"/api/console/suggestions/{sid}/approve", json={})
    assert res.status_code == 403 and "CSRF" in res.json()["detail"]
    res = ops.http.patch(f"/api/console/suggestions/{sid}", json={"answer": "changed"})
    assert res.status_code == 403
    assert ops.get(f"/suggestions/{sid}").json()["status"] == "pending"
    assert ops.get(f"/suggestions/{sid}").json()["answer"] == LOCKER_A

    res = ops.http.patch(f"/api/console/suggestions/{sid}", json={"answer": "  "}, headers=ops.headers)
    assert res.status_code == 422 and "answer" in res.json()["detail"]
    assert ops.get("/suggestions?status=bogus").status_code == 422
    assert ops.get("/suggestions/nope").status_code == 404
    assert ops.post("/suggestions/nope/approve", {}).status_code == 404
    assert ops.get(f"/suggestions/{sid}").json()["answer"] == LOCKER_A

    res = ops.post(f"/suggestions/{sid}/reject", {"reason": "too specific"})
    assert res.status_code == 200 and res.json()["suggestion"]["status"] == "rejected"
    assert ops.post(f"/suggestions/{sid}/reject", {}).status_code == 409
    assert ops.get("/suggestions?status=rejected").json()["total"] == 1
    assert learned_jobs(app_settings) == []


@pytest.mark.parametrize("app_settings", ["sqlite"], indirect=True)
def test_page_lists_suggestions_escaped_with_the_learned_source_status(client, app_settings):
    from tests.web.console_html import ConsolePage

    xss = "<img src=x onerror=window.__xss=1> my parcel locker code never arrived"
    conv, headers = new_conversation(client)
    ask(client, conv, headers, xss)
    ask(client, conv, headers, "I want to talk to a real person please")
    agent = console_user(client, app_settings, "alice", "agent")
    agent.post(f"/conversations/{conv}/claim")
    agent.post(f"/conversations/{conv}/messages", {"text": LOCKER_A})
    agent.post(f"/conversations/{conv}/resolve")
    ops = console_user(client, app_settings, "olga", "ops")

    res = ops.http.get("/console/suggestions")
    assert res.status_code == 200
    page = ConsolePage(res.text)
    assert "/console/suggestions" in [link.attrs.get("href") for link in page.nav]
    assert page.by_id["learned-source"].attrs["data-state"] == "empty"
    sid = ops.get("/suggestions").json()["items"][0]["id"]
    # Escaped: the parser reads the customer's markup back as text, not as an element.
    assert page.by_id[f"sg-question-{sid}"].text == xss
    assert page.by_id[f"sg-answer-{sid}"].text == LOCKER_A
    # Ops cannot open the agents' conversation page, so no link to it; an admin gets one.
    assert "/console/conversations/" not in res.text
    admin = console_user(client, app_settings, "ada", "admin")
    assert f"/console/conversations/{conv}" in admin.http.get("/console/suggestions").text
    assert ops.http.get("/console/suggestions?status=approved").status_code == 200
    assert ops.http.get("/console/suggestions?status=bogus").status_code == 422

"""The handoff service: state machine, queue order and waits, presence, capacity, transfer, notes, tickets, audit."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from support_bot import handoff
from support_bot.core.db import session_scope
from support_bot.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from support_bot.handoff import queue as handoff_queue
from support_bot.live import events
from support_bot.llm.registry import get_engine
from support_bot.models import Conversation, Message, User, utcnow
from support_bot.ops import audit
from tests.handoff.conftest import make_agent, make_conversation


def status_of(settings, conv_id: str) -> Conversation:
    with session_scope(settings) as session:
        conversation = session.get(Conversation, conv_id)
        session.expunge(conversation)
        return conversation


def queue(settings, conv_id: str, reason: str = "request", detail: str = "") -> handoff.QueueInfo:
    with session_scope(settings) as session:
        return handoff.start_handoff(
            session, settings, session.get(Conversation, conv_id), reason=reason, detail=detail
        )


def act(settings, fn, agent_id: str, conv_id: str, **kw):
    with session_scope(settings) as session:
        return fn(session, settings, conversation_id=conv_id, agent=session.get(User, agent_id), **kw)


def actions(settings, conv_id: str) -> list[str]:
    with session_scope(settings) as session:
        return [e.action for e in reversed(audit.entries(session, target_id=conv_id))]


def live(settings, conv_id: str, audience=events.CUSTOMER_AUDIENCE) -> list[tuple[str, dict]]:
    with session_scope(settings) as session:
        rows = events.events_after(session, conversation_id=conv_id, after_seq=0, audience=audience)
        return [(e.kind, e.data) for e in rows]


def test_the_whole_way_through_the_state_machine(db):
    alice = make_agent(db, "alice")
    bob = make_agent(db, "bob")
    conv = make_conversation(db, "my order never arrived")

    info = queue(db, conv, "request", "talk to a human")
    assert (info.status, info.position, info.agents_online) == ("queued", 1, 2)
    c = status_of(db, conv)
    assert (c.status, c.handoff_reason, c.handoff_detail, c.priority) == ("queued", "request", "talk to a human", 10)
    assert c.queued_at is not None

    act(db, handoff.claim, alice, conv)
    c = status_of(db, conv)
    assert (c.status, c.assigned_agent_id) == ("assigned", alice)
    act(db, handoff.transfer, alice, conv, to_agent_id=bob)
    assert status_of(db, conv).assigned_agent_id == bob
    act(db, handoff.resolve, bob, conv)
    c = status_of(db, conv)
    assert (c.status, c.resolved_by) == ("resolved", bob) and c.resolved_at is not None

    with session_scope(db) as session:
        handoff.reopen(session, db, session.get(Conversation, conv))
    c = status_of(db, conv)
    assert (c.status, c.bot_turns, c.abstain_streak, c.assigned_agent_id) == ("bot", 0, 0, None)

    queue(db, conv, "button")
    act(db, handoff.return_to_bot, alice, conv)
    assert status_of(db, conv).status == "bot"
    queue(db, conv, "sentiment")
    act(db, handoff.claim, alice, conv)
    act(db, handoff.return_to_bot, alice, conv)
    assert status_of(db, conv).status == "bot"

    assert actions(db, conv) == [
        "conversation.queue", "conversation.claim", "conversation.transfer", "conversation.resolve",
        "conversation.reopen", "conversation.queue", "conversation.return_to_bot", "conversation.queue",
        "conversation.claim", "conversation.return_to_bot",
    ]
    statuses = [d["status"] for kind, d in live(db, conv) if kind == "status"]
    assert statuses == ["queued", "assigned", "assigned", "resolved", "bot", "queued", "bot", "queued", "assigned", "bot"]


def test_every_pair_outside_the_state_machine_is_refused(db):
    conv = make_conversation(db, "hello")
    for start in handoff.STATUSES:
        for to in handoff.STATUSES:
            with session_scope(db) as session:
                c = session.get(Conversation, conv)
                c.status = start
            with session_scope(db) as session:
                c = session.get(Conversation, conv)
                if (start, to) in handoff.TRANSITIONS:
                    handoff_queue._transition(session, c, to, values={})
                    assert c.status == to
                else:
                    with pytest.raises(Conflict):
                        handoff_queue._transition(session, c, to, values={})
                    assert status_of(db, conv).status == start


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)  # the same conditional UPDATE runs on both databases
@pytest.mark.parametrize(
    "status,action",
    [
        ("bot", "claim"), ("assigned", "claim"), ("resolved", "claim"),
        ("bot", "resolve"), ("queued", "resolve"), ("resolved", "resolve"),
        ("bot", "transfer"), ("queued", "transfer"), ("resolved", "transfer"),
        ("bot", "return_to_bot"), ("resolved", "return_to_bot"),
        ("bot", "reply"), ("queued", "reply"), ("resolved", "reply"),
        ("queued", "queue"), ("assigned", "queue"),
        ("bot", "reopen"), ("queued", "reopen"), ("assigned", "reopen"),
    ],
)
def test_actions_refused_in_the_wrong_status_change_nothing(db, status, action):
    alice = make_agent(db, "alice")
    bob = make_agent(db, "bob")
    holder = alice if status == "assigned" else None
    conv = make_conversation(db, "hello", status=status, assigned_agent_id=holder, queued_at=utcnow())
    with pytest.raises(Conflict), session_scope(db) as session:
        c = session.get(Conversation, conv)
        agent = session.get(User, alice)
        if action == "claim":
            handoff.claim(session, db, conversation_id=conv, agent=agent)
        elif action == "resolve":
            handoff.resolve(session, db, conversation_id=conv, agent=agent)
        elif action == "transfer":
            handoff.transfer(session, db, conversation_id=conv, agent=agent, to_agent_id=bob)
        elif action == "return_to_bot":
            handoff.return_to_bot(session, db, conversation_id=conv, agent=agent)
        elif action == "reply":
            handoff.agent_reply(session, db, conversation_id=conv, agent=agent, text="hi")
        elif action == "queue":
            handoff.start_handoff(session, db, c, reason="request")
        else:
            handoff.reopen(session, db, c)
    after = status_of(db, conv)
    assert (after.status, after.assigned_agent_id) == (status, holder)
    assert actions(db, conv) == []


def test_queue_order_is_priority_then_waiting_time_with_positions_and_waits(db):
    db.handoff.minutes_per_position = 3
    convs = {}
    for name, reason in (("first", "request"), ("second", "max_turns"), ("third", "sentiment"), ("fourth", "request")):
        convs[name] = make_conversation(db, f"{name} question")
        queue(db, convs[name], reason)
    with session_scope(db) as session:
        items = handoff.queue_entries(session, db)
    assert [i["id"] for i in items] == [convs["third"], convs["first"], convs["fourth"], convs["second"]]
    assert [i["position"] for i in items] == [1, 2, 3, 4]
    assert items[0]["reason"] == "sentiment" and items[0]["priority"] == 20
    assert items[1]["preview"] == "first question" and items[1]["waiting_s"] >= 0
    assert items[1]["reason_label"] == "Customer asked for a person"

    # Nobody online: no estimate, and the customer is offered to leave a message.
    with session_scope(db) as session:
        info = handoff.queue_info(session, db, session.get(Conversation, convs["fourth"]))
    assert (info.position, info.eta_s, info.agents_online) == (3, None, 0)
    assert "no one from our team is online" in handoff.handoff_text(db, info)

    make_agent(db, "alice")
    make_agent(db, "bob")
    make_agent(db, "carol", presence="away")
    with session_scope(db) as session:
        info = handoff.queue_info(session, db, session.get(Conversation, convs["fourth"]))
        first = handoff.queue_info(session, db, session.get(Conversation, convs["third"]))
    # Two agents online share the queue: places 1-2 wait one slot (3 min), place 3 waits two (6 min).
    assert (first.position, first.eta_s) == (1, 180)
    assert (info.position, info.eta_s, info.agents_online) == (3, 360, 2)
    text = handoff.handoff_text(db, info)
    assert "number 3 in the queue" in text and "about 6 minutes" in text
    assert info.payload() == {"status": "queued", "position": 3, "eta_s": 360, "agent": None, "agents_online": True}


def test_claiming_moves_everyone_up_and_tells_them(db):
    alice = make_agent(db, "alice")
    a, b = make_conversation(db, "a"), make_conversation(db, "b")
    queue(db, a)
    queue(db, b)
    act(db, handoff.claim, alice, a)
    queue_events = [d for kind, d in live(db, b) if kind == "queue"]
    assert queue_events[-1]["position"] == 1
    with session_scope(db) as session:
        assert handoff.customer_status(session, db, session.get(Conversation, b))["position"] == 1
        assert handoff.customer_status(session, db, session.get(Conversation, a))["agent"] == "Alice"


def test_presence_online_away_offline_and_stale(db):
    alice = make_agent(db, "alice", presence="offline")
    make_agent(db, "stale", presence="online", seen_ago_s=db.handoff.presence_timeout_s + 60)
    make_agent(db, "ops", role="ops", presence="online")
    with session_scope(db) as session:
        assert handoff.agents_online(session, db) == 0
        handoff.set_presence(session, db, agent=session.get(User, alice), status="online")
    with session_scope(db) as session:
        assert handoff.agents_online(session, db) == 1
        listed = {a["username"]: a["presence"] for a in handoff.agent_list(session, db)}
        assert listed == {"alice": "online", "stale": "offline"}
        assert [a["username"] for a in handoff.agent_list(session, db, online_only=True)] == ["alice"]
        handoff.set_presence(session, db, agent=session.get(User, alice), status="away")
    with session_scope(db) as session:
        assert handoff.agents_online(session, db) == 0
        with pytest.raises(InvalidInput):
            handoff.set_presence(session, db, agent=session.get(User, alice), status="busy")
        # A heartbeat with the same status is not a new audit entry.
        handoff.set_presence(session, db, agent=session.get(User, alice), status="away")
    with session_scope(db) as session:
        presence = [e.detail for e in audit.entries(session, action="agent.presence")]
    assert presence == [{"from": "online", "to": "away"}, {"from": "offline", "to": "online"}]


def test_capacity_stops_a_claim_until_a_conversation_is_done(db):
    alice = make_agent(db, "alice", capacity=1)
    a, b = make_conversation(db, "a"), make_conversation(db, "b")
    queue(db, a)
    queue(db, b)
    act(db, handoff.claim, alice, a)
    with pytest.raises(Conflict, match="capacity"):
        act(db, handoff.claim, alice, b)
    assert status_of(db, b).status == "queued"
    act(db, handoff.resolve, alice, a)
    act(db, handoff.claim, alice, b)
    assert status_of(db, b).assigned_agent_id == alice


def test_a_claimed_conversation_names_who_has_it(db):
    alice, bob = make_agent(db, "alice"), make_agent(db, "bob")
    conv = make_conversation(db, "a")
    queue(db, conv)
    act(db, handoff.claim, alice, conv)
    with pytest.raises(Conflict, match="Alice already took this conversation"):
        act(db, handoff.claim, bob, conv)


def test_transfer_rules(db):
    alice = make_agent(db, "alice")
    bob = make_agent(db, "bob", capacity=1)
    carol = make_agent(db, "carol", presence="offline")
    admin = make_agent(db, "root", role="admin")
    ops = make_agent(db, "olga", role="ops")
    conv = make_conversation(db, "a")
    queue(db, conv)
    act(db, handoff.claim, alice, conv)

    with pytest.raises(Forbidden):
        act(db, handoff.transfer, bob, conv, to_agent_id=bob)
    with pytest.raises(Conflict, match="not online"):
        act(db, handoff.transfer, alice, conv, to_agent_id=carol)
    with pytest.raises(NotFound):
        act(db, handoff.transfer, alice, conv, to_agent_id=ops)
    with pytest.raises(NotFound):
        act(db, handoff.transfer, alice, conv, to_agent_id="nobody")
    with pytest.raises(Conflict, match="already holds"):
        act(db, handoff.transfer, alice, conv, to_agent_id=alice)

    # Bob is full: the refusal leaves the conversation with Alice.
    other = make_conversation(db, "b")
    queue(db, other)
    act(db, handoff.claim, bob, other)
    with pytest.raises(Conflict, match="capacity"):
        act(db, handoff.transfer, alice, conv, to_agent_id=bob)
    assert status_of(db, conv).assigned_agent_id == alice

    # An admin may move anyone's conversation.
    act(db, handoff.transfer, admin, conv, to_agent_id=admin)
    assert status_of(db, conv).assigned_agent_id == admin
    with session_scope(db) as session:
        [entry] = audit.entries(session, action="conversation.transfer", target_id=conv)
    assert entry.detail == {"from": alice, "to": admin} and entry.actor_name == "Root"
    assert [d["agent"] for kind, d in live(db, conv) if kind == "status"][-1] == "Root"
    with pytest.raises(Forbidden):
        act(db, handoff.claim, ops, other)


def test_replies_and_notes(db):
    alice, bob = make_agent(db, "alice", display_name="Alice Agent"), make_agent(db, "bob")
    conv = make_conversation(db, "where is my parcel")
    queue(db, conv)
    act(db, handoff.claim, alice, conv)
    with pytest.raises(Forbidden):
        act(db, handoff.agent_reply, bob, conv, text="I can take this")
    with pytest.raises(InvalidInput):
        act(db, handoff.agent_reply, alice, conv, text="   ")
    reply = act(db, handoff.agent_reply, alice, conv, text="Hi, I'm looking at it now.")
    note = act(db, handoff.add_note, bob, conv, text="Customer called yesterday too")
    assert (reply.role, reply.private, reply.author_id) == ("agent", False, alice)
    assert (note.role, note.private, note.author_id) == ("agent", True, bob)

    with session_scope(db) as session:
        shown = handoff.customer_messages(session, conv)
        detail = handoff.conversation_detail(session, db, conv)
    assert "Customer called yesterday too" not in str(shown)
    assert shown[-1] == {**shown[-1], "role": "agent", "author": "Alice Agent", "text": "Hi, I'm looking at it now."}
    assert [m.get("private", False) for m in detail["messages"]][-2:] == [False, True]
    assert detail["messages"][-1]["author"] == "Bob"

    customer_side = live(db, conv)
    assert all(kind != "note" and "yesterday" not in str(d) for kind, d in customer_side)
    assert [d["text"] for kind, d in customer_side if kind == "message"] == [
        "Alice Agent joined the chat.", "Hi, I'm looking at it now."
    ]
    console_side = live(db, conv, events.CONSOLE_AUDIENCE)
    [(kind, data)] = [(k, d) for k, d in console_side if k == "note"]
    assert data["private"] is True and data["author"] == "Bob" and data["conversation_id"] == conv
    assert actions(db, conv)[-2:] == ["conversation.reply", "conversation.note"]


def test_resolve_rate_and_a_new_episode(db):
    alice = make_agent(db, "alice")
    conv = make_conversation(db, "a")
    with session_scope(db) as session:
        with pytest.raises(Conflict, match="once a person has resolved it"):
            handoff.rate(session, session.get(Conversation, conv), rating=5)
    queue(db, conv)
    act(db, handoff.claim, alice, conv)
    act(db, handoff.resolve, alice, conv)
    with session_scope(db) as session:
        c = session.get(Conversation, conv)
        with pytest.raises(InvalidInput):
            handoff.rate(session, c, rating=6)
        handoff.rate(session, c, rating=4, comment="  quick  ")
    c = status_of(db, conv)
    assert (c.rating, c.rating_comment) == (4, "quick")
    assert actions(db, conv)[-1] == "conversation.rate"
    # A new episode: the customer can be queued again; the rating stays with the conversation.
    info = queue(db, conv, "button")
    assert info.status == "queued" and status_of(db, conv).rating == 4
    assert actions(db, conv)[-2:] == ["conversation.reopen", "conversation.queue"]


def test_resolve_calls_each_subscribed_hook_once_in_its_transaction(db, monkeypatch):
    # Only this test's hooks: whatever this process subscribed before (the learning loop) stays out of it.
    monkeypatch.setattr(handoff_queue, "_resolved_hooks", [])
    seen = []

    def hook(session, settings, conversation_id):
        seen.append((conversation_id, session.get(Conversation, conversation_id).status, settings is db))

    handoff.on_resolved(hook)
    handoff.on_resolved(hook)
    alice = make_agent(db, "alice")
    conv = make_conversation(db, "a")
    queue(db, conv)
    act(db, handoff.claim, alice, conv)
    act(db, handoff.return_to_bot, alice, conv)
    assert seen == []
    queue(db, conv)
    act(db, handoff.claim, alice, conv)
    act(db, handoff.resolve, alice, conv)
    assert seen == [(conv, "resolved", True)]
    # A hook that fails fails the resolve with it: hooks that must not (the learning loop's) catch their own errors.
    def failing(*_args):
        raise RuntimeError("hook failed")

    handoff.on_resolved(failing)
    queue(db, conv)
    act(db, handoff.claim, alice, conv)
    with pytest.raises(RuntimeError, match="hook failed"):
        act(db, handoff.resolve, alice, conv)
    assert status_of(db, conv).status == "assigned"


def test_return_to_bot_resets_the_episode_counts(db):
    alice = make_agent(db, "alice")
    conv = make_conversation(db, "a", bot_turns=7, abstain_streak=1)
    queue(db, conv)
    act(db, handoff.claim, alice, conv)
    act(db, handoff.return_to_bot, alice, conv)
    c = status_of(db, conv)
    assert (c.status, c.bot_turns, c.abstain_streak, c.assigned_agent_id, c.queued_at) == ("bot", 0, 0, None, None)


def test_offline_ticket(db):
    conv = make_conversation(db, "my invoice is wrong")
    with session_scope(db) as session:
        with pytest.raises(InvalidInput, match="e-mail"):
            handoff.leave_offline_message(
                session, db, session.get(Conversation, conv), message="call me", email="not-an-address"
            )
    assert status_of(db, conv).status == "bot"
    with session_scope(db) as session:
        info = handoff.leave_offline_message(
            session, db, session.get(Conversation, conv),
            message="Please call me back on +44 20 7946 0958 about invoice 42", email="jane@example.com",
        )
    assert info.status == "queued"
    c = status_of(db, conv)
    assert (c.status, c.handoff_reason, c.contact_email) == ("queued", "offline", "jane@example.com")
    with session_scope(db) as session:
        last = session.scalars(select(Message).where(Message.conversation_id == conv).order_by(Message.seq)).all()[-1]
        item = handoff.queue_entries(session, db)[0]
    assert last.role == "customer" and "invoice 42" in last.text and "7946" not in last.text
    assert item["contact_email"] == "jane@example.com" and item["reason"] == "offline"
    # Already waiting: a second message just joins the ticket.
    with session_scope(db) as session:
        handoff.leave_offline_message(
            session, db, session.get(Conversation, conv), message="also my address changed", email="jane@example.com"
        )
    assert status_of(db, conv).handoff_reason == "offline"
    alice = make_agent(db, "alice")
    act(db, handoff.claim, alice, conv)
    with pytest.raises(Conflict), session_scope(db) as session:
        handoff.leave_offline_message(session, db, session.get(Conversation, conv), message="hi", email="j@example.com")


def test_the_button_is_idempotent_while_queued(db):
    conv = make_conversation(db, "a")
    with session_scope(db) as session:
        first = handoff.request_handoff(session, db, session.get(Conversation, conv), detail="customer_request")
        second = handoff.request_handoff(session, db, session.get(Conversation, conv))
    assert first.status == second.status == "queued"
    assert actions(db, conv) == ["conversation.queue"]
    assert status_of(db, conv).handoff_reason == "button"
    alice = make_agent(db, "alice")
    act(db, handoff.claim, alice, conv)
    with pytest.raises(Conflict), session_scope(db) as session:
        handoff.request_handoff(session, db, session.get(Conversation, conv))
    db.handoff.button_enabled = False
    other = make_conversation(db, "b")
    with pytest.raises(Forbidden), session_scope(db) as session:
        handoff.request_handoff(session, db, session.get(Conversation, other))


def test_canned_responses(db):
    alice = make_agent(db, "alice")
    conv = make_conversation(db, "a")
    with session_scope(db) as session:
        agent = session.get(User, alice)
        canned = handoff.create_canned(session, db, actor=agent, title="greeting", text="Hi! I'm here to help.")
        canned_id = canned.id
        with pytest.raises(InvalidInput):
            handoff.create_canned(session, db, actor=agent, title="", text="x")
    with pytest.raises(Conflict), session_scope(db) as session:
        handoff.create_canned(session, db, actor=session.get(User, alice), title="greeting", text="other")
    queue(db, conv)
    act(db, handoff.claim, alice, conv)
    msg = act(db, handoff.agent_reply, alice, conv, canned_id=canned_id)
    assert msg.text == "Hi! I'm here to help."
    with session_scope(db) as session:
        assert [c.title for c in handoff.list_canned(session)] == ["greeting"]
        handoff.delete_canned(session, actor=session.get(User, alice), canned_id=canned_id)
    with session_scope(db) as session:
        assert handoff.list_canned(session) == []
        with pytest.raises(NotFound):
            handoff.delete_canned(session, actor=session.get(User, alice), canned_id=canned_id)
        assert [e.action for e in audit.entries(session, target_id=str(canned_id))] == ["canned.delete", "canned.create"]


def test_agent_summary_uses_the_model_only_when_there_is_something_to_condense(db):
    engine = get_engine(db)
    engine.calls.clear()
    one = make_conversation(db, "I want to talk to a real person please")
    assert handoff.write_agent_summary(db, engine, one) == "I want to talk to a real person please"
    assert engine.calls == []

    two = make_conversation(db, "my e-bike battery won't charge", "I already tried another charger")
    with session_scope(db) as session:
        session.add(Message(conversation_id=two, role="agent", text="secret internal remark", private=True))
    engine.queue_reply("Battery of the customer's e-bike does not charge, even with another charger.")
    summary = handoff.write_agent_summary(db, engine, two)
    assert summary == "Battery of the customer's e-bike does not charge, even with another charger."
    [prompt] = engine.calls
    assert "I already tried another charger" in prompt[-1].content
    assert "secret internal remark" not in prompt[-1].content
    assert status_of(db, two).handoff_summary == summary
    console = live(db, two, events.CONSOLE_AUDIENCE)
    assert ("summary", {"conversation_id": two, "summary": summary}) in console
    assert all(kind != "summary" for kind, _ in live(db, two))


def test_audit_names_the_agent_for_claims_replies_and_resolutions(db):
    alice = make_agent(db, "alice", display_name="Alice Agent")
    conv = make_conversation(db, "a")
    queue(db, conv)
    act(db, handoff.claim, alice, conv)
    act(db, handoff.agent_reply, alice, conv, text="Hello")
    act(db, handoff.resolve, alice, conv)
    with session_scope(db) as session:
        rows = list(reversed(audit.entries(session, target_id=conv)))
    assert [(e.action, e.actor_id, e.actor_name) for e in rows] == [
        ("conversation.queue", None, "system"),
        ("conversation.claim", alice, "Alice Agent"),
        ("conversation.reply", alice, "Alice Agent"),
        ("conversation.resolve", alice, "Alice Agent"),
    ]
    assert all(e.created_at is not None and e.target_type == "conversation" for e in rows)


def test_touch_presence_keeps_an_open_console_online(db):
    alice = make_agent(db, "alice", seen_ago_s=db.handoff.presence_timeout_s + 5)
    with session_scope(db) as session:
        agent = session.get(User, alice)
        assert handoff.effective_presence(agent, db) == "offline"
        handoff.touch_presence(agent, db)
    with session_scope(db) as session:
        assert handoff.effective_presence(session.get(User, alice), db) == "online"
        user = session.get(User, alice)
        user.presence, user.presence_at = "offline", utcnow() - timedelta(hours=1)
    with session_scope(db) as session:
        agent = session.get(User, alice)
        handoff.touch_presence(agent, db)
        assert handoff.effective_presence(agent, db) == "offline"

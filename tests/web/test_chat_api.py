"""The public chat API (shared/API.md) on SQLite and PostgreSQL, with the fake model backend."""

from __future__ import annotations

import threading

from support_bot.chat.replies import ABSTAIN_TEXT
from support_bot.core.security import sign_customer_id
from tests.web.helpers import ask, new_conversation


def test_answer_streams_tokens_then_done_with_citation(client, fake_engine):
    fake_engine.queue_reply("Returns are accepted within 30 days of delivery for a full refund [1].")
    conv_id, headers = new_conversation(client)
    events = ask(client, conv_id, headers, "What is your return policy?")
    names = [e for e, _ in events]
    assert names[-1] == "done" and names[:-1] and set(names[:-1]) == {"token"}
    streamed = "".join(d["text"] for e, d in events if e == "token")
    done = events[-1][1]
    # Only the verified sentence streams, then its citation: what streamed is exactly the final text.
    assert streamed == done["text"] == "Returns are accepted within 30 days of delivery for a full refund. [1]"
    assert done["quoted"] is False
    assert done["abstained"] is False and done["handoff"] is False
    assert done["citations"][0]["entry_id"] == "ret-01"
    assert done["citations"][0]["n"] == 1
    assert done["citations"][0]["url"] == "https://acme.example/help/returns"
    assert done["citations"][0]["source"] == "demo-faq"


def test_history_is_stored_with_citations(client, fake_engine):
    fake_engine.queue_reply("Standard shipping takes 3 to 5 business days [1].")
    conv_id, headers = new_conversation(client)
    done = ask(client, conv_id, headers, "how many days does delivery take?")[-1][1]
    res = client.get(f"/api/conversations/{conv_id}/messages", headers=headers)
    assert res.status_code == 200
    msgs = res.json()["messages"]
    assert [m["role"] for m in msgs] == ["customer", "bot"]
    assert msgs[0]["text"] == "how many days does delivery take?"
    assert msgs[1]["id"] == done["message_id"]
    assert msgs[1]["citations"][0]["entry_id"] == "ship-01"
    assert all(m["created_at"] for m in msgs)


def test_unsupported_model_wording_is_replaced_by_the_source(client, fake_engine):
    fake_engine.queue_reply("Our premium llama grooming service costs 99 galactic credits [7].")
    conv_id, headers = new_conversation(client)
    done = ask(client, conv_id, headers, "Do gift cards expire?")[-1][1]
    assert "galactic" not in done["text"]
    assert "never expire" in done["text"]
    assert [c["entry_id"] for c in done["citations"]] == ["gift-01"]


def test_citation_to_a_source_not_given_is_removed(client, fake_engine):
    fake_engine.queue_reply("Acme gift cards never expire and have no fees [1][9].")
    conv_id, headers = new_conversation(client)
    done = ask(client, conv_id, headers, "Do gift cards expire?")[-1][1]
    assert done["text"] == "Acme gift cards never expire and have no fees. [1]"
    assert [c["n"] for c in done["citations"]] == [1]


def test_unrelated_question_abstains_without_generation(client, fake_engine):
    fake_engine.queue_reply("The capital of Mongolia is Ulaanbaatar.")
    conv_id, headers = new_conversation(client)
    done = ask(client, conv_id, headers, "What is the boiling point of liquid nitrogen on Neptune?")[-1][1]
    assert done["abstained"] is True
    assert done["text"] == ABSTAIN_TEXT
    assert done["citations"] == []


def test_conversation_memory_reaches_the_prompt(client, fake_engine):
    conv_id, headers = new_conversation(client)
    fake_engine.queue_reply("Standard shipping takes 3 to 5 business days [1].")
    ask(client, conv_id, headers, "How long does shipping take?")
    fake_engine.queue_reply("Express shipping costs $14.95 on any order [1].")
    ask(client, conv_id, headers, "And how much does express shipping cost?")
    prompt = fake_engine.calls[-1]
    roles = [m.role for m in prompt]
    assert roles == ["system", "user", "assistant", "user"]
    assert prompt[1].content == "How long does shipping take?"
    assert "3 to 5 business days" in prompt[2].content
    assert prompt[-1].content == "And how much does express shipping cost?"


def test_wrong_or_missing_token_reveals_nothing(client, fake_engine):
    conv_a, headers_a = new_conversation(client)
    conv_b, headers_b = new_conversation(client)
    fake_engine.queue_reply("Standard shipping takes 3 to 5 business days [1].")
    ask(client, conv_a, headers_a, "How long does shipping take? my email is a@example.com")
    for headers in ({}, {"Authorization": "Bearer nope"}, headers_b, {"Authorization": "Basic xyz"}):
        res = client.get(f"/api/conversations/{conv_a}/messages", headers=headers)
        assert res.status_code in (401, 404)
        assert "a@example.com" not in res.text and "shipping" not in res.text
        res = client.post(f"/api/conversations/{conv_a}/messages", json={"text": "hi"}, headers=headers)
        assert res.status_code in (401, 404)
    # The other customer's own conversation is still empty.
    assert client.get(f"/api/conversations/{conv_b}/messages", headers=headers_b).json() == {"messages": []}
    assert client.get("/api/conversations/does-not-exist/messages", headers=headers_a).status_code == 404


def test_reposting_a_client_message_id_creates_nothing_new(client, fake_engine):
    conv_id, headers = new_conversation(client)
    fake_engine.queue_reply("Refunds are issued within 5 business days [1].")
    first = ask(client, conv_id, headers, "How long do refunds take?", client_message_id="c0ffee-1")[-1][1]
    second = ask(client, conv_id, headers, "How long do refunds take?", client_message_id="c0ffee-1")[-1][1]
    assert second["message_id"] == first["message_id"] and second["text"] == first["text"]
    msgs = client.get(f"/api/conversations/{conv_id}/messages", headers=headers).json()["messages"]
    assert [m["role"] for m in msgs] == ["customer", "bot"]


def test_concurrent_reposts_store_one_message(client, fake_engine):
    conv_id, headers = new_conversation(client)
    results: list = []

    def post():
        results.append(ask(client, conv_id, headers, "Is return shipping free?", client_message_id="dup-42")[-1])

    threads = [threading.Thread(target=post) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4 and all(name == "done" for name, _ in results)
    assert len({data["message_id"] for _, data in results}) == 1
    msgs = client.get(f"/api/conversations/{conv_id}/messages", headers=headers).json()["messages"]
    assert [m["role"] for m in msgs] == ["customer", "bot"]


def test_bad_message_bodies_get_clear_4xx(client):
    conv_id, headers = new_conversation(client)
    url = f"/api/conversations/{conv_id}/messages"
    res = client.post(url, json={"text": "   "}, headers=headers)
    assert res.status_code == 422 and "empty" in res.json()["detail"]
    res = client.post(url, json={"text": "x" * 5000}, headers=headers)
    assert res.status_code == 422 and "too long" in res.json()["detail"]
    res = client.post(url, json={}, headers=headers)
    assert res.status_code == 422 and "text" in res.json()["detail"]
    res = client.post(url, content=b"{not json", headers={**headers, "Content-Type": "application/json"})
    assert res.status_code == 422
    assert client.get(url, headers=headers).json() == {"messages": []}


def test_feedback_is_stored_once_per_answer(client, fake_engine, app_settings):
    from sqlalchemy import select

    from support_bot.core.db import session_scope
    from support_bot.models import Feedback

    conv_id, headers = new_conversation(client)
    fake_engine.queue_reply("Acme gift cards never expire [1].")
    done = ask(client, conv_id, headers, "Do gift cards expire?")[-1][1]
    url = f"/api/messages/{done['message_id']}/feedback"
    assert client.post(url, json={"rating": "up"}, headers=headers).status_code == 204
    assert client.post(url, json={"rating": "down", "comment": "too short"}, headers=headers).status_code == 204
    assert client.post(url, json={"rating": "meh"}, headers=headers).status_code == 422
    _, other = new_conversation(client)
    assert client.post(url, json={"rating": "up"}, headers=other).status_code == 404
    with session_scope(app_settings) as session:
        rows = list(session.scalars(select(Feedback)))
    assert [(r.rating, r.comment) for r in rows] == [("down", "too short")]


def test_identified_customer_needs_a_valid_signature(client, app_settings):
    res = client.post("/api/conversations", json={"customer": {"id": "cust-1", "signature": "abc"}})
    assert res.status_code == 403 and "not enabled" in res.json()["detail"]
    app_settings.customer_hmac_secret = "s3cret-for-tests-only"
    good = sign_customer_id("cust-1", "s3cret-for-tests-only")
    res = client.post("/api/conversations", json={"customer": {"id": "cust-1", "signature": good}})
    assert res.status_code == 201
    res = client.post("/api/conversations", json={"customer": {"id": "cust-2", "signature": good}})
    assert res.status_code == 403 and "signature" in res.json()["detail"]


def test_an_answer_that_goes_on_to_relist_the_sources_is_cut_there(client, fake_engine):
    fake_engine.queue_reply(
        "Acme gift cards never expire and have no fees [1].\n\n[2] Which payment methods do you accept?\n"
        "We accept credit and debit cards (Visa, Mastercard, American Express and Discover), PayPal, Apple Pay and "
        "Acme gift cards."
    )
    conv_id, headers = new_conversation(client)
    done = ask(client, conv_id, headers, "Do gift cards expire?")[-1][1]
    assert done["text"] == "Acme gift cards never expire and have no fees. [1]"
    assert [c["entry_id"] for c in done["citations"]] == ["gift-01"]


def test_generation_stops_once_the_model_repeats_itself(client, fake_engine):
    loop = "Acme gift cards never expire and have no fees [1]. " + "You can check the balance on our gift card page. " * 40
    total_words = len(loop.split())
    fake_engine.queue_reply(loop)
    # Paced like a model, so that how far it got shows when it was stopped.
    fake_engine.delay_s = 0.005
    conv_id, headers = new_conversation(client)
    before = fake_engine.pieces_streamed
    events = ask(client, conv_id, headers, "Do gift cards expire?")
    # The model is stopped at the first repeated sentence (word 29) instead of running through the whole loop (409
    # words); the stop reaches the engine's thread a few pieces later on a busy machine, so allow two sentences more.
    assert fake_engine.pieces_streamed - before <= 50 < total_words
    assert events[-1][1]["text"] == (
        "Acme gift cards never expire and have no fees. You can check the balance on our gift card page. [1]"
    )

    settings = client.app.state.assistant.settings
    settings.llm.stop_on_loop = False
    try:
        fake_engine.queue_reply(loop)
        before = fake_engine.pieces_streamed
        events = ask(client, conv_id, headers, "Do gift cards expire?")
        # Without the stop it runs to the end of the loop or the token limit; the repeats are still never shown.
        assert fake_engine.pieces_streamed - before == min(total_words, settings.llm.max_new_tokens)
        assert events[-1][1]["text"] == (
            "Acme gift cards never expire and have no fees. You can check the balance on our gift card page. [1]"
        )
    finally:
        settings.llm.stop_on_loop = True

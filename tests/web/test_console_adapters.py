"""The console's Adaptation page and its API: ops train, compare, activate and roll back the embedder and (on a tiny
random Llama) the chat model; agents, requests without the CSRF token and unknown kinds are refused."""

from __future__ import annotations

from typing import get_args

import pytest
from fastapi.testclient import TestClient

from ingest.pipeline import ingest_path
from support_bot.adapt import artifacts, jobs
from support_bot.core.db import migrate, session_scope
from support_bot.llm.adapters import live_chat_adapter
from support_bot.ops import audit
from tests.adapt.chat_support import chat_settings, tiny_chatml_llama  # noqa: F401 - a fixture
from tests.adapt.conftest import DEMO_FAQ, build_broken_model, install, tiny
from tests.conftest import add_user
from tests.web.console_html import ConsolePage
from tests.web.helpers import csrf, login
from web.api import console_adapters
from web.app import create_app

pytestmark = pytest.mark.usefixtures("fast_hashing")
API = "/api/console/adapters"
PAGE = "/console/knowledge/adaptation"


@pytest.fixture
def adapt_settings(settings, embedder, monkeypatch):
    """A knowledge base with the demo FAQ; jobs run inline instead of in a detached process, to wait for them."""
    s = tiny(settings, gate_tolerance=1.0)
    migrate(s)
    assert ingest_path(settings=s, path=DEMO_FAQ, source_name="demo-faq").status == "succeeded"
    for name, role in (("olga", "ops"), ("ann", "agent")):
        add_user(s, name, role)
    monkeypatch.setattr(jobs, "start_job", lambda settings, job: jobs.run_job(settings, job["id"]))
    return s


@pytest.fixture(scope="module")
def broken_model(tmp_path_factory):
    return build_broken_model(tmp_path_factory.mktemp("broken") / "model")


@pytest.fixture
def web(adapt_settings):
    with TestClient(create_app(adapt_settings), follow_redirects=False) as client:
        yield client


def start(web, headers, path, body=None) -> dict:
    res = web.post(API + path, json=body, headers=headers)
    assert res.status_code == 202, res.text
    return web.get(f"{API}/jobs/{res.json()['job']['id']}").json()


def test_ops_train_compare_activate_and_roll_back(web, adapt_settings):
    headers = csrf(login(web, "olga"))
    page = ConsolePage(web.get("/console/knowledge/adaptation").text)
    assert "configured model" in page.text("live-embedder") and page.by_id["rollback-btn"].attrs.get("disabled") == ""
    assert page.by_id["tune-form"] and page.by_id["artifacts-empty"]
    # The demo FAQ gives each answer once: the page says the configured cut-off holds, and why.
    fit = page.text("retrieval-fit")
    assert "cut-off of 0.655 hold" in fit and "too few held-out questions" in fit, fit
    assert any(link.attrs.get("href") == "/console/knowledge/adaptation"
               for link in ConsolePage(web.get("/console/knowledge").text).links)

    job = start(web, headers, "/tune", {"epochs": 1})
    assert job["status"] == "succeeded", job["error"]
    assert job["result"]["id"] == "embedder-0001" and job["phase"].startswith("evaluating")
    listing = web.get(API).json()
    (artifact,) = listing["artifacts"]
    assert artifact["status"] == "ready" and not artifact["live"]
    assert set(artifact["evaluation"]["live"]) >= {"recall@1", "recall@5", "decision_accuracy"}
    assert web.get(f"{API}/embedder-0001").json()["params"]["epochs"] == 1
    page = ConsolePage(web.get("/console/knowledge/adaptation").text)
    row = next(r for r in page.rows if r.attrs.get("data-artifact") == "embedder-0001")
    assert "Activate" in row.text and "live" in row.text  # figures beside the live embedder's

    job = start(web, headers, "/embedder-0001/activate")
    assert job["status"] == "succeeded" and job["result"]["index_version"] == 2
    assert web.get(API).json()["live"] == "embedder-0001"
    assert "embedder-0001" in ConsolePage(web.get("/console/knowledge/adaptation").text).text("live-embedder")

    job = start(web, headers, "/rollback")
    assert job["status"] == "succeeded" and job["result"]["index_version"] == 3
    assert web.get(API).json()["live"] is None
    assert web.post(API + "/rollback", headers=headers).status_code == 409
    with session_scope(adapt_settings) as session:
        actions = [e.action for e in audit.entries(session) if e.action.startswith("adapters.")]
    assert sorted(actions) == ["adapters.activate", "adapters.rollback", "adapters.tune"]


def test_a_worse_artifact_is_refused_with_the_figures(web, adapt_settings, broken_model):
    settings = adapt_settings.model_copy(update={"adapt": adapt_settings.adapt.model_copy(update={"gate_tolerance": 0.0})})
    worse = install(settings, broken_model)
    with TestClient(create_app(settings), follow_redirects=False) as client:
        headers = csrf(login(client, "olga"))
        job = start(client, headers, f"/{worse}/activate")
        assert job["status"] == "failed" and "was not activated" in job["error"]
        assert job["result"]["evaluation"]["verdict"]["passed"] is False
        assert client.get(API).json()["live"] is None


def test_agents_and_requests_without_the_csrf_token_are_refused(web):
    login(web, "ann")
    assert web.get(API).status_code == 403
    assert web.get("/console/knowledge/adaptation").status_code == 403
    assert web.post(API + "/tune", json={}).status_code == 403
    headers = csrf(login(web, "olga"))
    assert web.post(API + "/tune", json={}).status_code == 403  # no CSRF token
    assert web.post(API + "/tune", json={"epochs": 0}, headers=headers).status_code == 422
    assert web.post(API + "/embedder-0042/activate", headers=headers).status_code == 404
    assert web.post(API + "/..%2Fx/activate", headers=headers).status_code in (404, 422)
    assert web.get(API + "/jobs/nope").status_code == 404
    assert web.get(API + "/jobs").json()["jobs"] == []


def test_tuning_the_chat_model_is_refused_at_once_without_the_backend_that_serves_adapters(web):
    headers = csrf(login(web, "olga"))
    res = web.post(API + "/tune", json={"kind": "chat"}, headers=headers)
    assert res.status_code == 409 and "transformers backend" in res.text and "'fake'" in res.text
    assert web.get(API + "/jobs").json()["jobs"] == []
    page = ConsolePage(web.get(PAGE).text)
    assert "fake backend" in page.text("chat-tune-unavailable")
    assert page.by_id["chat-tune-submit"].attrs.get("disabled") == ""
    # The embedder's half is unchanged.
    assert page.by_id["tune-submit"].attrs.get("disabled") is None


@pytest.fixture
def chat_adapt_settings(adapt_settings, tiny_chatml_llama):  # noqa: F811 - the fixture imported above
    """The demo knowledge base answered by the tiny random Llama, which tunes in two steps; any figures pass."""
    return chat_settings(adapt_settings, tiny_chatml_llama)


@pytest.fixture
def chat_web(chat_adapt_settings):
    with TestClient(create_app(chat_adapt_settings), follow_redirects=False) as client:
        yield client


def chat_row(web, artifact_id: str):
    page = ConsolePage(web.get(PAGE).text)
    return next(r for r in page.rows if r.attrs.get("data-artifact") == artifact_id)


def test_ops_tune_the_chat_model_compare_activate_and_roll_back(chat_web, chat_adapt_settings):
    web, settings = chat_web, chat_adapt_settings
    headers = csrf(login(web, "olga"))
    page = ConsolePage(web.get(PAGE).text)
    assert "configured model" in page.text("live-chat") and page.by_id["chat-rollback-btn"].attrs.get("disabled") == ""
    assert page.by_id["chat-tune-form"] and page.by_id["chat-artifacts-empty"]
    assert "chat-tune-unavailable" not in page.by_id and page.by_id["chat-tune-submit"].attrs.get("disabled") is None

    job = start(web, headers, "/tune", {"kind": "chat", "max_examples": 6})
    assert job["status"] == "succeeded", job["error"]
    assert job["kind"] == "chat" and job["params"] == {"max_examples": 6}
    # Progress to the end of the gate, the last phase of a chat tuning.
    assert job["phase"] == "answering held-out questions with the tuned model" and job["done"] == job["total"] > 0
    record = job["result"]
    assert record["id"] == "chat-0001" and record["status"] == "ready" and record["base_model"] == settings.llm.model
    assert record["params"]["chat"]["max_examples"] == 6 and record["data"]["chat_examples"]["answer"] == 6

    listing = web.get(API, params={"kind": "chat"}).json()
    assert listing["kind"] == "chat" and listing["live"] is None and listing["base_model"] == settings.llm.model
    (artifact,) = listing["artifacts"]
    assert artifact["id"] == "chat-0001" and not artifact["live"] and artifact["size_bytes"] > 0
    evaluation = artifact["evaluation"]
    for side in ("live", "candidate"):
        assert {"correct_rate", "wrong_rate", "model_written_rate"} <= set(evaluation[side])
    # The kinds are kept apart: the embedder has no artifact, and the listing without a kind is the embedder's.
    assert web.get(API).json()["kind"] == "embedder" and web.get(API).json()["artifacts"] == []
    assert web.get(f"{API}/chat-0001").json()["params"]["chat"]["max_examples"] == 6
    row = chat_row(web, "chat-0001")
    assert "Activate" in row.text
    # Each figure of the tuned model beside the live model's, measured in the same run.
    for metric in ("correct_rate", "wrong_rate", "model_written_rate"):
        shown = f"{evaluation['candidate'][metric]:.3f} (live {evaluation['live'][metric]:.3f})"
        assert shown in " ".join(row.text.split())

    job = start(web, headers, "/chat-0001/activate")
    assert job["status"] == "succeeded", job["error"]
    assert job["kind"] == "chat" and job["result"]["artifact"] == "chat-0001" and job["result"]["previous"] is None
    assert live_chat_adapter(settings) == "chat-0001"
    assert web.get(API, params={"kind": "chat"}).json()["live"] == "chat-0001"
    assert web.get(API).json()["live"] is None
    page = ConsolePage(web.get(PAGE).text)
    assert "chat-0001" in page.text("live-chat") and page.by_id["chat-rollback-btn"].attrs.get("disabled") is None
    assert "Activate" not in chat_row(web, "chat-0001").text
    assert web.post(API + "/rollback", headers=headers).status_code == 409  # the embedder has nothing to go back to

    job = start(web, headers, "/rollback", {"kind": "chat"})
    assert job["status"] == "succeeded", job["error"]
    assert job["kind"] == "chat"
    assert job["result"] == {"artifact": None, "kind": "chat", "rolled_back_from": "chat-0001"}
    assert live_chat_adapter(settings) is None
    res = web.post(API + "/rollback", json={"kind": "chat"}, headers=headers)
    assert res.status_code == 409 and "chat model" in res.text
    jobs_text = [r.text for r in ConsolePage(web.get(PAGE).text).rows if "ad-job" in r.attrs.get("class", "")]
    assert [" ".join(t.split()[:2]) for t in jobs_text] == ["rollback chat", "activate chat-0001", "tune chat"]
    with session_scope(settings) as session:
        logged = {e.action: e.detail for e in audit.entries(session) if e.action.startswith("adapters.")}
    assert set(logged) == {"adapters.tune", "adapters.activate", "adapters.rollback"}
    assert all(detail["kind"] == "chat" for detail in logged.values()) and logged["adapters.tune"]["max_examples"] == 6

    # Worse figures on the held-out questions (the stored comparison is still current) and no tolerance: refused.
    live = {**evaluation["live"], "correct_rate": 0.75, "wrong_rate": 0.0}
    artifacts.update(settings, "chat-0001", evaluation={
        **evaluation, "live": live, "candidate": {**live, "correct_rate": 0.5, "wrong_rate": 0.25},
    })
    strict = settings.model_copy(update={"adapt": settings.adapt.model_copy(update={"gate_tolerance": 0.0})})
    with TestClient(create_app(strict), follow_redirects=False) as client:
        job = start(client, csrf(login(client, "olga")), "/chat-0001/activate")
    assert job["status"] == "failed" and "was not activated" in job["error"]
    assert "correct_rate 0.500 < live 0.750" in job["error"] and "wrong_rate 0.250 > live 0.000" in job["error"]
    assert {w["metric"] for w in job["result"]["evaluation"]["verdict"]["worse"]} == {"correct_rate", "wrong_rate"}
    assert live_chat_adapter(settings) is None


def test_chat_requests_with_an_unknown_kind_or_parameters_are_refused(chat_web):
    assert set(get_args(console_adapters.Kind)) == set(artifacts.KINDS)  # the API's kinds are the store's
    login(chat_web, "ann")
    assert chat_web.get(API, params={"kind": "chat"}).status_code == 403
    assert chat_web.post(API + "/tune", json={"kind": "chat"}).status_code == 403
    headers = csrf(login(chat_web, "olga"))
    assert chat_web.post(API + "/rollback", json={"kind": "chat"}).status_code == 403  # no CSRF token
    assert chat_web.get(API, params={"kind": "nope"}).status_code == 422
    for body in (
        {"kind": "nope"},
        {"kind": "chat", "epochs": 21},  # a chat run allows at most 20 (settings.adapt.chat.epochs)
        {"kind": "chat", "max_examples": -1},
        {"max_examples": 5},  # a setting of the chat model's tuning only
    ):
        assert chat_web.post(API + "/tune", json=body, headers=headers).status_code == 422, body
    assert chat_web.post(API + "/rollback", json={"kind": "nope"}, headers=headers).status_code == 422
    assert chat_web.post(API + "/rollback", json={"kind": "chat"}, headers=headers).status_code == 409
    assert chat_web.post(API + "/chat-0042/activate", headers=headers).status_code == 404
    assert chat_web.get(API + "/chat-0042").status_code == 404
    assert chat_web.get(API + "/jobs").json()["jobs"] == []


def _topics_faq(path) -> None:
    """40 answers, each under three wordings of its question: enough held-out questions to calibrate on."""
    import csv

    verbs = ["reset", "change", "cancel", "renew", "update", "close", "open", "transfer", "verify", "replace"]
    nouns = ["password", "subscription", "card", "address"]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["id", "question", "answer"])
        for i, (verb, noun) in enumerate((v, n) for v in verbs for n in nouns):
            answer = f"To {verb} your {noun}, open Settings, choose {noun.title()} and press {verb.title()} (ref {i})."
            for j, q in enumerate((f"How do I {verb} my {noun}?", f"Can I {verb} the {noun} online?",
                                   f"I need to {verb} my {noun}, what do I do?")):
                out.writerow([f"t{i}-{j}", q, answer])


def test_the_page_shows_the_cut_off_a_knowledge_base_chose_for_itself(settings, embedder, tmp_path):
    s = tiny(settings)
    migrate(s)
    faq = tmp_path / "topics.csv"
    _topics_faq(faq)
    assert ingest_path(settings=s, path=faq, source_name="topics").status == "succeeded"
    add_user(s, "olga", "ops")
    with TestClient(create_app(s), follow_redirects=False) as client:
        login(client, "olga")
        body = client.get("/api/knowledge/calibration").json()
        cal = body["calibration"]
        assert cal["applied"] and (cal["n_answerable"], cal["n_declinable"]) == (120, 40), cal["reason"]
        assert body["in_force"]["min_score"] == cal["min_score"] != body["configured"]["min_score"]
        fit = ConsolePage(client.get(PAGE).text).text("retrieval-fit")
    assert f"answers at a score of {cal['min_score']:.3f}" in fit and "120 answerable and 40 declinable" in fit, fit

"""The console's Adaptation page and its API: ops train, compare, activate and roll back; agents are refused."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from ingest.pipeline import ingest_path
from support_bot.adapt import jobs
from support_bot.core.db import migrate, session_scope
from support_bot.ops import audit
from tests.adapt.conftest import DEMO_FAQ, build_broken_model, install, tiny
from tests.conftest import add_user
from tests.web.console_html import ConsolePage
from tests.web.helpers import csrf, login
from web.app import create_app

pytestmark = pytest.mark.usefixtures("fast_hashing")
API = "/api/console/adapters"


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

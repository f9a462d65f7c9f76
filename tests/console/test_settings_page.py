"""The admin settings page and API: changes are validated, audited, and apply without a restart."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from support_bot.ops import audit
from support_bot.core.db import session_scope
from support_bot.llm.registry import get_engine
from support_bot.models import AuditLog, RuntimeSetting
from support_bot.ops.runtime_settings import EDITABLE
from tests.conftest import add_user
from tests.web.conftest import app_settings, fake_engine  # noqa: F401  (SQLite and PostgreSQL, demo FAQ)
from tests.web.console_html import ConsolePage
from tests.web.helpers import ask, new_conversation
from tests.web.test_handoff_api import Console
from web.app import create_app

SQLITE = pytest.mark.parametrize("app_settings", ["sqlite"], indirect=True)
SHOP = "https://shop.example"
OTHER = "https://other.example"
CSRF_FAILED = "CSRF token missing or wrong"
# Logging in is not what these tests check.
pytestmark = pytest.mark.usefixtures("fast_hashing")


def with_refresh(settings, seconds: float):
    """The same settings, with console changes from other processes picked up within `seconds`."""
    return settings.model_copy(
        update={"console": settings.console.model_copy(update={"settings_refresh_s": seconds})}
    )


@pytest.fixture
def client(app_settings):
    with TestClient(create_app(app_settings), follow_redirects=False) as c:
        yield c


@pytest.fixture
def admin(client, app_settings) -> Console:
    add_user(app_settings, "ada", "admin", "Ada Admin")
    return Console(client.app, "ada")


def put(console: Console, values, **kw):
    return console.http.put("/api/console/settings", json=values, headers=kw.pop("headers", console.headers), **kw)


def item(listing: dict, key: str) -> dict:
    return next(i for i in listing["settings"] if i["key"] == key)


def preflight(http: TestClient, origin: str):
    return http.options(
        "/api/conversations",
        headers={
            "Origin": origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"
        },
    )


def stored(settings) -> dict:
    with session_scope(settings) as session:
        return {row.key: row.value for row in session.scalars(select(RuntimeSetting))}


def audit_rows(settings, action: str) -> list[tuple]:
    with session_scope(settings) as session:
        return [(e.actor_name, e.target_id, e.detail) for e in reversed(audit.entries(session, action=action))]


def wait_for(check, what: str, deadline_s: float = 15.0):
    """Poll until check() is truthy; the bound under test is far below the deadline."""
    end = time.monotonic() + deadline_s
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)


# --- the widget, CORS and the greeting in the same running app ------------------------------------------------------


def test_widget_looks_and_allowed_sites_change_in_the_running_app(client, admin, app_settings):
    before = client.get("/api/widget/config").json()
    assert before["bot_name"] == "Support Bot" and before["title"] == "Acme support"
    assert "access-control-allow-origin" not in preflight(client, SHOP).headers

    res = put(admin, {
        "chat.bot_name": "Max", "widget.greeting": "Moin! Ask me anything.", "widget.primary_color": "#112233",
        "widget.title": "Northwind help", "widget.position": "left", "widget.allowed_origins": [SHOP + "/"],
    })
    assert res.status_code == 200, res.text
    body = res.json()
    assert sorted(body["changed"]) == sorted([
        "chat.bot_name", "widget.greeting", "widget.primary_color", "widget.title", "widget.position",
        "widget.allowed_origins",
    ])
    assert item(body, "widget.allowed_origins")["value"] == [SHOP]
    bot = item(body, "chat.bot_name")
    assert bot["source"] == "console" and bot["updated_by"] == "Ada Admin"

    config = client.get("/api/widget/config").json()
    assert (config["bot_name"], config["greeting"], config["primary_color"], config["title"], config["position"]) == (
        "Max", "Moin! Ask me anything.", "#112233", "Northwind help", "left"
    )
    allowed = preflight(client, SHOP)
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == SHOP
    assert "access-control-allow-origin" not in preflight(client, OTHER).headers
    created = client.post("/api/conversations", json={}, headers={"Origin": SHOP})
    assert created.status_code == 201 and created.headers["access-control-allow-origin"] == SHOP

    # Taking a site off the list takes effect as quickly.
    assert put(admin, {"widget.allowed_origins": []}).status_code == 200
    assert "access-control-allow-origin" not in preflight(client, SHOP).headers
    # The console API never gets CORS, whatever the list says.
    assert put(admin, {"widget.allowed_origins": ["*"]}).status_code == 200
    assert preflight(client, OTHER).headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-origin" not in client.get("/api/console/settings", headers={"Origin": OTHER}).headers


def test_another_web_process_sees_a_change_within_the_refresh_bound(app_settings):
    add_user(app_settings, "ada", "admin")
    fast = with_refresh(app_settings, 0.2)
    # Two apps over one database, each with its own settings cache: two web processes as far as settings go.
    with TestClient(create_app(fast)) as first:
        second = create_app(fast)
        admin = Console(second, "ada")
        assert first.get("/api/widget/config").json()["greeting"] == app_settings.widget.greeting
        assert put(admin, {"widget.greeting": "Hello from the other process"}).status_code == 200
        wait_for(lambda: first.get("/api/widget/config").json()["greeting"] == "Hello from the other process",
                 "the first app to see the new greeting")
        assert admin.delete("/settings/widget.greeting").json()["reset"] is True
        wait_for(lambda: first.get("/api/widget/config").json()["greeting"] == app_settings.widget.greeting,
                 "the first app to see the greeting reset")


# --- the assistant's turn -----------------------------------------------------------------------------------------


def test_bot_name_tone_and_instructions_reach_the_model_on_the_next_turn(client, admin, fake_engine):
    assert put(admin, {
        "chat.bot_name": "Max", "chat.tone": "cheerful and brief",
        "chat.system_prompt": "Always mention our 30-day guarantee.",
    }).status_code == 200
    conv_id, headers = new_conversation(client)
    ask(client, conv_id, headers, "How long does shipping take?")
    system = fake_engine.calls[-1][0].content
    assert "\nYou are Max, the customer-support assistant of Acme. Your tone is cheerful and brief.\n" in system
    assert "Instructions from Acme:\nAlways mention our 30-day guarantee." in system
    assert system.index("Instructions from Acme") < system.index("Sources:")

    assert admin.delete("/settings/chat.system_prompt").status_code == 200
    ask(client, conv_id, headers, "How much does shipping cost?")
    assert "Instructions from" not in fake_engine.calls[-1][0].content


def test_a_handoff_rule_change_applies_to_the_next_turn(client, admin, fake_engine):
    conv_id, headers = new_conversation(client)
    assert ask(client, conv_id, headers, "talk to a human")[-1][1]["handoff"] is True

    assert put(admin, {"handoff.request_enabled": False}).status_code == 200
    conv_id, headers = new_conversation(client)
    done = ask(client, conv_id, headers, "talk to a human")[-1][1]
    assert done["handoff"] is False

    res = put(admin, {"handoff.request_enabled": True, "handoff.request_phrases": ["speak with a manager"]})
    assert res.status_code == 200
    conv_id, headers = new_conversation(client)
    assert ask(client, conv_id, headers, "Let me speak with a manager now")[-1][1]["handoff"] is True
    # The widget's button follows its switch as well.
    assert put(admin, {"handoff.button_enabled": False}).status_code == 200
    assert client.get("/api/widget/config").json()["handoff_enabled"] is False
    conv_id, headers = new_conversation(client)
    assert client.post(f"/api/conversations/{conv_id}/handoff", json={}, headers=headers).status_code >= 400


# --- the model ----------------------------------------------------------------------------------------------------


def test_an_unknown_model_is_refused_and_nothing_changes(client, admin, app_settings):
    res = put(admin, {"llm.backend": "transformers", "llm.model": "gpt-17"})
    assert res.status_code == 422
    assert res.json()["detail"].startswith("llm.model: Unknown model 'gpt-17'; known models: smollm2-135m-instruct")
    res = put(admin, {"llm.backend": "openai"})
    assert res.status_code == 422 and "SUPPORT_BOT_LLM__OPENAI_MODEL" in res.json()["detail"]
    assert stored(app_settings) == {} and audit_rows(app_settings, "setting.change") == []


@SQLITE
def test_the_next_answer_uses_the_model_chosen_now(client, admin, app_settings, fake_engine):
    res = put(admin, {"llm.model": "northwind-tuned"})
    assert res.status_code == 200 and res.json()["changed"] == ["llm.model"]
    chosen = client.app.state.assistant.settings
    new_engine = get_engine(chosen)
    assert new_engine is not fake_engine and new_engine.name == "fake:northwind-tuned"
    conv_id, headers = new_conversation(client)
    ask(client, conv_id, headers, "How long does shipping take?")
    assert fake_engine.calls == [] and len(new_engine.calls) == 1
    wait_for(lambda: client.get("/readyz").json()["checks"]["model"] == "ok", "the new model to be ready")


@SQLITE
def test_a_model_that_fails_to_load_is_reported_and_a_reset_recovers(client, admin, app_settings, tmp_path):
    # Passes the checks before saving (a model directory with a config) but cannot be loaded.
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    res = put(admin, {"llm.backend": "transformers", "llm.model": str(broken)})
    assert res.status_code == 200, res.text
    status = wait_for(
        lambda: (s := client.get("/readyz").json()["checks"]["model"]) != "loading" and s, "the load to finish"
    )
    assert status.startswith("failed to load:")
    assert client.get("/readyz").status_code == 503
    page = ConsolePage(admin.http.get("/console/settings").text)
    assert page.by_id["model-status"].attrs["data-status"].startswith("failed to load:")
    # A chat still gets an answer that says something went wrong, not a broken stream.
    conv_id, headers = new_conversation(client)
    events = ask(client, conv_id, headers, "How long does shipping take?")
    assert events[-1][0] in ("done", "error")

    assert admin.delete("/settings/llm.backend").status_code == 200
    assert admin.delete("/settings/llm.model").status_code == 200
    wait_for(lambda: client.get("/readyz").json()["checks"]["model"] == "ok", "the configured model to be ready")
    fake = get_engine(client.app.state.assistant.settings)
    fake.calls.clear()
    conv_id, headers = new_conversation(client)
    assert ask(client, conv_id, headers, "How long does shipping take?")[-1][0] == "done"
    assert len(fake.calls) == 1


# --- access, CSRF, validation, audit and reset -------------------------------------------------------------------


def test_only_admins_may_read_or_change_settings(client, app_settings):
    for name, role in (("alice", "agent"), ("olga", "ops")):
        add_user(app_settings, name, role)
        console = Console(client.app, name)
        assert console.get("/settings").status_code == 403
        res = put(console, {"chat.bot_name": "Mallory"})
        assert res.status_code == 403 and "admin" in res.json()["detail"]
        assert console.delete("/settings/chat.bot_name").status_code == 403
        assert console.http.get("/console/settings").status_code == 403
        form = {"chat.bot_name": "Mallory", "csrf_token": console.me["csrf_token"]}
        res = console.http.post("/console/settings", data=form)
        assert res.status_code == 403
    anonymous = TestClient(client.app, follow_redirects=False)
    assert anonymous.get("/api/console/settings").status_code == 401
    assert anonymous.put("/api/console/settings", json={"chat.bot_name": "Mallory"}).status_code == 401
    res = anonymous.get("/console/settings")
    assert res.status_code == 303 and res.headers["location"] == "/console/login?next=/console/settings"
    assert stored(app_settings) == {}
    assert client.get("/api/widget/config").json()["bot_name"] == "Support Bot"


def test_changes_need_the_csrf_token(client, admin, app_settings):
    res = put(admin, {"chat.bot_name": "Mallory"}, headers={})
    assert res.status_code == 403 and res.json()["detail"] == CSRF_FAILED
    res = admin.http.delete("/api/console/settings/chat.bot_name", headers={"X-CSRF-Token": "wrong"})
    assert res.status_code == 403
    res = admin.http.post("/console/settings", data={"chat.bot_name": "Mallory"})
    assert res.status_code == 403
    res = admin.http.post("/console/settings/chat.bot_name/reset", data={})
    assert res.status_code == 403
    assert stored(app_settings) == {}


def test_bad_values_are_refused_whole_and_nothing_is_lost(client, admin, app_settings):
    assert put(admin, {"chat.bot_name": "Max"}).status_code == 200
    res = put(admin, {"chat.bot_name": "Maximilian", "widget.primary_color": "red; background: url(x)"})
    assert res.status_code == 422
    assert "widget.primary_color: must be a hex colour" in res.json()["detail"]
    res = put(admin, {"secret_key": "s" * 40})
    assert res.status_code == 422 and "secret_key: not a setting that can be changed" in res.json()["detail"]
    assert put(admin, ["chat.bot_name", "x"]).status_code == 422
    assert put(admin, {}).status_code == 422
    assert admin.delete("/settings/secret_key").status_code == 404
    assert stored(app_settings) == {"chat.bot_name": "Max"}
    assert client.get("/api/widget/config").json()["bot_name"] == "Max"


def test_changes_are_audited_and_a_reset_returns_to_the_file_value(app_settings):
    # The operator's file/env value, not the built-in default, is what a reset goes back to.
    base = app_settings.model_copy(
        update={"chat": app_settings.chat.model_copy(update={"bot_name": "Northwind Bot"})}
    )
    add_user(base, "ada", "admin", "Ada Admin")
    with TestClient(create_app(base), follow_redirects=False) as client:
        admin = Console(client.app, "ada")
        listing = admin.get("/settings").json()
        bot = item(listing, "chat.bot_name")
        assert (bot["value"], bot["default"], bot["file_value"], bot["source"], bot["differs_from_default"]) == (
            "Northwind Bot", "Support Bot", "Northwind Bot", "file-env", True
        )
        tone = item(listing, "chat.tone")
        assert (tone["source"], tone["differs_from_default"], tone["updated_by"]) == ("default", False, None)

        assert put(admin, {"chat.bot_name": "Max", "chat.tone": "cheerful"}).status_code == 200
        # Saving the same values again changes nothing and writes no audit entries.
        assert put(admin, {"chat.bot_name": "Max"}).json()["changed"] == []
        assert audit_rows(base, "setting.change") == [
            ("Ada Admin", "chat.bot_name", {"old": "Northwind Bot", "new": "Max"}),
            ("Ada Admin", "chat.tone", {"old": "friendly, concise and professional", "new": "cheerful"}),
        ]
        bot = item(admin.get("/settings").json(), "chat.bot_name")
        assert (bot["value"], bot["source"], bot["updated_by"]) == ("Max", "console", "Ada Admin")
        assert bot["updated_at"]

        res = admin.delete("/settings/chat.bot_name")
        assert res.status_code == 200 and res.json()["reset"] is True
        bot = item(res.json(), "chat.bot_name")
        assert (bot["value"], bot["source"]) == ("Northwind Bot", "file-env")
        assert client.get("/api/widget/config").json()["bot_name"] == "Northwind Bot"
        assert admin.delete("/settings/chat.bot_name").json()["reset"] is False
        assert audit_rows(base, "setting.reset") == [
            ("Ada Admin", "chat.bot_name", {"old": "Max", "new": "Northwind Bot"})
        ]
        with session_scope(base) as session:
            actions = {e.action for e in session.scalars(select(AuditLog).where(AuditLog.target_type == "setting"))}
        assert actions == {"setting.change", "setting.reset"}


# --- the page -----------------------------------------------------------------------------------------------------


def field_id(key: str) -> str:
    return "setting-" + key.replace(".", "-")


def form_values(page: ConsolePage) -> dict[str, list[str]]:
    """What a browser would send for the settings form as shown, without touching anything."""
    form = page.form(form_id="settings-form")
    values: dict[str, list[str]] = {"csrf_token": [form.fields["csrf_token"]]}
    for spec in EDITABLE:
        el = page.by_id[field_id(spec.key)]
        if el.tag == "textarea":
            values[spec.key] = [el.text.replace("\n", "\r\n")]
        elif el.attrs.get("type") == "checkbox":
            values[spec.key] = ["false", "true"] if "checked" in el.attrs else ["false"]
        elif el.tag == "select":
            values[spec.key] = [form.fields[spec.key]]
        else:
            values[spec.key] = [el.attrs.get("value", "")]
    return values


def test_the_page_shows_saves_and_resets_settings(client, admin, app_settings):
    res = admin.http.get("/console/settings")
    assert res.status_code == 200 and res.headers["cache-control"] == "no-store"
    page = ConsolePage(res.text)
    assert "Settings" in page.nav_labels()
    assert page.by_id["group-bot"].tag == "fieldset" and page.by_id["group-model"].tag == "fieldset"
    assert page.by_id[field_id("chat.bot_name")].attrs["value"] == "Support Bot"
    assert "checked" in page.by_id[field_id("handoff.request_enabled")].attrs
    assert page.form(form_id="settings-form").fields["widget.position"] == "right"

    # The whole form sent back untouched changes nothing.
    unchanged = form_values(page)
    assert admin.http.post("/console/settings", data=unchanged).status_code == 303
    assert stored(app_settings) == {} and audit_rows(app_settings, "setting.change") == []

    edited = {**unchanged, "chat.bot_name": ["<b>Max</b>"], "handoff.request_enabled": ["false"],
              "widget.allowed_origins": [f"{SHOP}\r\n{OTHER}\r\n"]}
    res = admin.http.post("/console/settings", data=edited)
    assert res.status_code == 303 and res.headers["location"] == "/console/settings?done=saved"
    assert stored(app_settings) == {
        "chat.bot_name": "<b>Max</b>", "handoff.request_enabled": False, "widget.allowed_origins": [SHOP, OTHER]
    }
    res = admin.http.get(res.headers["location"])
    page = ConsolePage(res.text)
    assert "saved" in page.text("notice")
    # Shown as text, never as markup.
    assert "&lt;b&gt;Max&lt;/b&gt;" in res.text and "<b>Max</b>" not in res.text
    assert page.by_id[field_id("chat.bot_name")].attrs["value"] == "<b>Max</b>"
    assert "checked" not in page.by_id[field_id("handoff.request_enabled")].attrs
    assert page.by_id[field_id("widget.allowed_origins")].text == f"{SHOP}\n{OTHER}"
    reset_form = page.form(action="/console/settings/chat.bot_name/reset")
    assert reset_form.fields["csrf_token"] == admin.me["csrf_token"]

    # A bad value: the form comes back with what was typed and why; nothing of that save is stored.
    bad = {**form_values(page), "chat.tone": ["calm"], "widget.primary_color": ["blue"], "handoff.max_bot_turns": ["x"]}
    res = admin.http.post("/console/settings", data=bad)
    assert res.status_code == 422
    page = ConsolePage(res.text)
    assert "handoff.max_bot_turns: must be a whole number" in page.text("error")
    assert page.by_id[field_id("widget.primary_color")].attrs["value"] == "blue"
    res = admin.http.post("/console/settings", data={**bad, "handoff.max_bot_turns": ["3"]})
    assert res.status_code == 422
    assert "widget.primary_color: must be a hex colour" in ConsolePage(res.text).text("error")
    assert "chat.tone" not in stored(app_settings)

    res = admin.http.post("/console/settings/chat.bot_name/reset", data={"csrf_token": admin.me["csrf_token"]})
    assert res.status_code == 303 and res.headers["location"] == "/console/settings?done=reset"
    assert "chat.bot_name" not in stored(app_settings)
    assert client.get("/api/widget/config").json()["bot_name"] == "Support Bot"

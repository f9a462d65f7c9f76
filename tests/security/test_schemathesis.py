"""Generated requests against the OpenAPI schema: whatever is sent, and by whom, the answer is never a 5xx."""

from __future__ import annotations

import pytest
import schemathesis
from schemathesis import GenerationMode
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance

from support_bot.core.config import Settings
from support_bot.chat.store import start_conversation
from support_bot.core.db import migrate, session_scope
from tests.conftest import PASSWORD, add_user
from tests.security.conftest import security_settings, wait_ready
from web.app import create_app
from web.console_deps import SESSION_COOKIE

pytestmark = pytest.mark.slow

# Per operation and caller; enough to reach every parameter's edge cases, bounded so the run stays short.
EXAMPLES = 10
CHECKS = [not_a_server_error, response_schema_conformance]
# A console session must survive the run: calls that would end or lock it are left to the route table.
SESSION_ENDING = {("POST", "/api/console/logout"), ("POST", "/api/console/password")}


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory):
    """One app for the whole run (fake model, SQLite): building it per operation would dominate the time."""
    data = tmp_path_factory.mktemp("fuzz")
    base = Settings(data_dir=data, llm={"backend": "fake"}, safety={"use_embeddings": False})
    # Streams end at once, whatever timeout the generator picks; the stream code is not what this looks at.
    base = base.model_copy(update={"events": base.events.model_copy(update={"max_stream_s": 0.2})})
    settings = security_settings(base)
    settings.ensure_dirs()
    migrate(settings)
    add_user(settings, "fuzzadmin", "admin")
    app = create_app(settings)
    with TestClient(app) as client:
        wait_ready(client)
        yield app, settings, client


@pytest.fixture(scope="module")
def admin_session(fuzz_app):
    _, _, client = fuzz_app
    res = client.post("/api/console/login", json={"username": "fuzzadmin", "password": PASSWORD})
    assert res.status_code == 200, res.text
    return {"cookie": client.cookies.get(SESSION_COOKIE), "csrf": res.json()["csrf_token"]}


def _callers(settings: Settings, session: dict) -> dict[str, dict]:
    return {
        "anonymous": {},
        "admin token": {"headers": {"Authorization": f"Bearer {settings.admin_token}"}},
        "admin session": {
            "headers": {"X-CSRF-Token": session["csrf"]},
            "cookies": {SESSION_COOKIE: session["cookie"]},
        },
    }


def _strategy(operation, **fixed):
    return operation.as_strategy(GenerationMode.POSITIVE, **fixed) | operation.as_strategy(
        GenerationMode.NEGATIVE, **fixed
    )


def _fuzz(operation, callers: dict[str, dict], strategy=None) -> list[str]:
    """Run up to EXAMPLES valid and invalid requests for one operation as each caller; the failures, if any."""
    failures: list[str] = []
    label = f"{operation.method.upper()} {operation.path}"
    strategy = strategy if strategy is not None else _strategy(operation)

    @given(case=strategy)
    @settings(
        max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
    )
    def run(case) -> None:
        for who, kwargs in callers.items():
            if who == "admin session" and (case.method.upper(), case.path) in SESSION_ENDING:
                continue
            response = case.call(**kwargs)
            try:
                case.validate_response(response, checks=CHECKS)
            except Exception as exc:
                raise AssertionError(f"as {who}: {exc}") from None

    try:
        run()
    except Exception as exc:  # noqa: BLE001  (Hypothesis re-raises the shrunk failure; report it, go on)
        failures.append(f"{label} {type(exc).__name__}: {str(exc).strip()[:1500]}")
    return failures


def test_no_generated_request_gets_a_server_error(fuzz_app, admin_session):
    """Every operation, valid and invalid input, as anonymous, with the admin token and as a logged-in admin."""
    app, app_settings, _ = fuzz_app
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    callers = _callers(app_settings, admin_session)
    failures: list[str] = []
    operations = 0
    with session_scope(app_settings) as session:
        conversation, token = start_conversation(session=session, settings=app_settings)
        conversation_id = conversation.id
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        failures.extend(_fuzz(operation, callers))
        if "{conversation_id}" in operation.path and operation.path.startswith("/api/conversations/"):
            # The customer's own conversation, so generated bodies reach the chat code behind the token check.
            own = _strategy(operation, path_parameters={"conversation_id": conversation_id})
            failures.extend(_fuzz(operation, {"customer": {"headers": {"Authorization": f"Bearer {token}"}}}, own))
    assert operations >= 40
    assert failures == [], "\n\n".join(failures)

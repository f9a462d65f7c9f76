"""Generated requests against the OpenAPI schema: whatever is sent, and by whom, the answer is never a 5xx."""

from __future__ import annotations

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error, response_schema_conformance

from support_bot.chat.store import start_conversation
from support_bot.core.config import Settings
from support_bot.core.db import migrate, session_scope
from tests.conftest import PASSWORD, add_user
from tests.security.conftest import security_settings, wait_ready
from web.app import create_app
from web.console_deps import SESSION_COOKIE

pytestmark = pytest.mark.slow

# Per operation and caller; enough to reach every parameter's edge cases, bounded so the run stays short.
EXAMPLES = 10
# Generated customer sequences (of up to 8 steps each).
STATEFUL_EXAMPLES = 15
CHECKS = [not_a_server_error, response_schema_conformance]
# A console session must survive the run: calls that would end or lock it are left to the route table.
SESSION_ENDING = {("POST", "/api/console/logout"), ("POST", "/api/console/password")}


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory):
    """One app for the whole run (fake model, SQLite): building it per operation would dominate the time."""
    data = tmp_path_factory.mktemp("fuzz")
    # Identified customers on: their signatures are checked, so generated ones reach the comparison.
    base = Settings(
        data_dir=data, llm={"backend": "fake"}, safety={"use_embeddings": False},
        customer_hmac_secret="fuzz-customer-secret",
    )
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


def _fuzz(operation, callers: dict[str, dict], strategy=None, *, examples: int = EXAMPLES) -> list[str]:
    """Run up to `examples` valid and invalid requests for one operation as each caller; the failures, if any."""
    failures: list[str] = []
    label = f"{operation.method.upper()} {operation.path}"
    strategy = strategy if strategy is not None else _strategy(operation)

    @given(case=strategy)
    @settings(
        max_examples=examples, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
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


# -- hostile input: bytes a client may put in headers and queries, text in bodies --------------------------------

# Header values as the server reads them (Latin-1): "²" and "¹³" pass str.isdigit() and fail int(); a non-ASCII token
# cannot be compared as ASCII; very long and empty ones.
HOSTILE_HEADERS = [
    {"Last-Event-ID": "\xb2"},
    {"Last-Event-ID": "\xb9\xb3"},
    {"Last-Event-ID": "1\xbd"},
    {"Last-Event-ID": "9" * 40},
    {"Last-Event-ID": "-1"},
    {"Authorization": "Bearer \xe9\xe9"},
    {"Authorization": "Bearer \xb2"},
    {"Authorization": "Bearer " + "\xff" * 300},
    {"Authorization": "\xe9"},
    {"Authorization": "Bearer "},
    {"Content-Type": "application/json; charset=\xe9"},
]
HOSTILE_QUERIES = [
    {"after": "9" * 40},
    {"after": str(2**63)},
    {"after": "\xb2"},
    {"timeout": "nan"},
    {"timeout": "inf"},
    {"timeout": "1e999"},
]
HOSTILE_CUSTOMERS = [
    {"id": "cust-1", "signature": "\xe9" * 64},
    {"id": "cust-1", "signature": "\U0001f600"},
    {"id": "\u00e9t\u00e9-\U0001f600", "signature": "0" * 64},
    {"id": "cust-1", "signature": "\uff11" * 64},
]
PUBLIC = r"^/api/(conversations|messages|widget)"


def _hostile(operation, own: dict, extra: dict) -> object:
    """Valid requests for the operation, each made hostile in one way (`extra`: headers, query or a customer)."""

    def apply(case):
        if "headers" in extra:
            case.headers = {**(case.headers or {}), **extra["headers"]}
        if "query" in extra:
            case.query = {**(case.query or {}), **extra["query"]}
        if "customer" in extra:
            case.body = {"customer": extra["customer"]}
        return case

    return operation.as_strategy(GenerationMode.POSITIVE, **own).map(apply)


def test_hostile_headers_queries_and_bodies_get_4xx_never_a_server_error(fuzz_app):
    """Every public operation with each hostile header and query, as anonymous and as the conversation's customer;
    identified customers with non-ASCII ids and signatures."""
    app, app_settings, _ = fuzz_app
    schema = schemathesis.openapi.from_asgi("/openapi.json", app).include(path_regex=PUBLIC)
    with session_scope(app_settings) as session:
        conversation, token = start_conversation(session=session, settings=app_settings)
        conversation_id = conversation.id
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        own = {"path_parameters": {"conversation_id": conversation_id}} if "{conversation_id}" in operation.path else {}
        callers = {"anonymous": {}, "customer": {"headers": {"Authorization": f"Bearer {token}"}}}
        extras = [{"headers": h} for h in HOSTILE_HEADERS] + [{"query": q} for q in HOSTILE_QUERIES]
        if operation.method.upper() == "POST" and operation.path == "/api/conversations":
            extras += [{"customer": c} for c in HOSTILE_CUSTOMERS]
        for extra in extras:
            # As the customer, their own token stands in for a hostile Authorization; the other headers stay.
            failures.extend(_fuzz(operation, callers, _hostile(operation, own, extra), examples=2))
    assert operations >= 8
    assert failures == [], "\n\n".join(failures)


# -- stateful: sequences a customer's client may send, each step's ids and token taken from earlier answers ------


def test_stateful_customer_sequences_never_get_a_server_error(fuzz_app):
    """Conversations opened, messages posted and re-posted, history and events read, feedback, handoff and rating,
    in generated orders, with ids and tokens carried from one answer to the next request."""
    app, _app_settings, _ = fuzz_app
    schema = schemathesis.openapi.from_asgi("/openapi.json", app).include(path_regex=r"^/api/(conversations|messages)")
    workflow = schema.as_state_machine()
    reached: set[tuple[str, str, int]] = set()

    class Customer(workflow):  # type: ignore[misc, valid-type]
        def setup(self) -> None:
            self.tokens: dict[str, str] = {}
            self.last_token: str | None = None

        def before_call(self, case) -> None:
            conversation = (case.path_parameters or {}).get("conversation_id")
            token = self.tokens.get(conversation, self.last_token)
            if token is not None and "Authorization" not in (case.headers or {}):
                case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}

        def after_call(self, response, case) -> None:
            reached.add((case.method.upper(), case.path, response.status_code))
            if case.method.upper() == "POST" and case.path == "/api/conversations" and response.status_code == 201:
                created = response.json()
                self.tokens[created["id"]] = self.last_token = created["token"]

        def validate_response(self, response, case, additional_checks=None, **kwargs) -> None:
            case.validate_response(response, checks=CHECKS)

    Customer.run(
        settings=settings(
            max_examples=STATEFUL_EXAMPLES, stateful_step_count=8, deadline=None, derandomize=True, database=None,
            suppress_health_check=list(HealthCheck),
        )
    )
    # The sequences went past the token check: messages were answered and history read with the right token.
    assert ("POST", "/api/conversations/{conversation_id}/messages", 200) in reached
    assert ("GET", "/api/conversations/{conversation_id}/messages", 200) in reached

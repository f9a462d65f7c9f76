"""Console logins over HTTP: a stranger's wrong passwords never keep an account's owner out; guessing slows down."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from support_bot.core.ratelimit import MemoryFailureCounter
from support_bot.ops import auth
from support_bot.ops.login_throttle import DEVICE_COOKIE, LoginThrottle
from tests.conftest import PASSWORD, add_user
from tests.web.console_html import ConsolePage
from web.app import create_app

pytestmark = pytest.mark.usefixtures("fast_hashing")


@pytest.fixture
def app(console_settings):
    add_user(console_settings, "admin", "admin")
    app = create_app(console_settings)
    # Time stands still here, so a back-off started by one request still holds at the next.
    app.state.login_throttle = LoginThrottle(console_settings, counter=MemoryFailureCounter(lambda: 1000.0))
    with TestClient(app):  # started once; the clients below are browsers at other addresses
        yield app


def browser(app, address: str) -> TestClient:
    return TestClient(app, client=(address, 40000), follow_redirects=False)


def login(client: TestClient, password: str, username: str = "admin"):
    return client.post("/api/console/login", json={"username": username, "password": password})


def test_a_strangers_wrong_passwords_never_keep_the_admin_out(app, console_settings):
    admin = browser(app, "192.0.2.10")
    assert login(admin, PASSWORD).status_code == 200
    assert admin.cookies.get(DEVICE_COOKIE)
    admin.post("/api/console/logout", headers={"X-CSRF-Token": admin.get("/api/console/me").json()["csrf_token"]})

    # Far more wrong passwords than any lock-out would allow, from several addresses.
    for n in range(4 * console_settings.console.lockout_attempts):
        stranger = browser(app, f"203.0.113.{n % 4}")
        assert login(stranger, f"guess-{n}").status_code in (401, 429)

    # A browser that never logged in as admin waits a little (never long), and is told how long.
    newcomer = browser(app, "192.0.2.99")
    held = login(newcomer, PASSWORD)
    assert held.status_code == 429
    assert 1 <= int(held.headers["retry-after"]) <= 60
    assert held.json()["detail"].startswith("Too many failed logins. Please wait ")
    assert "set-cookie" not in held.headers

    # The admin's own browser (it logged in before) gets straight in, password checked as always.
    assert login(admin, "still-wrong").status_code == 401
    res = login(admin, PASSWORD)
    assert res.status_code == 200 and res.json()["username"] == "admin"


def test_guessing_from_one_address_is_slowed_on_the_form_too(app):
    guesser = browser(app, "203.0.113.50")
    answers = [guesser.post("/console/login", data={"username": f"user{n}", "password": "guess"}) for n in range(12)]
    assert {a.status_code for a in answers[:10]} == {401}
    held = answers[-1]
    assert held.status_code == 429 and int(held.headers["retry-after"]) >= 1
    page = ConsolePage(held.text)
    assert page.text("error").startswith("Too many failed logins. Please wait ")
    # While held back, even the right password is not checked (so it cannot be guessed meanwhile).
    assert login(guesser, PASSWORD).status_code == 429
    # Someone else, elsewhere, is not affected.
    assert login(browser(app, "198.51.100.3"), PASSWORD).status_code == 200
    assert auth.LOGIN_FAILED not in held.text

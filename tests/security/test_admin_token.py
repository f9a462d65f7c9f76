"""A development server never takes the published default admin token from anyone else: `support-bot serve` makes
its own (kept owner-only under the data dir, printed once), and an app served otherwise takes the default from
loopback only."""

from __future__ import annotations

import stat
import threading

import pytest
from fastapi.testclient import TestClient

from support_bot.cli import main
from support_bot.core.config import DEV_SECRET, get_settings
from support_bot.core.errors import ConfigurationError
from support_bot.core.security import admin_token_path, own_admin_token
from web.app import create_app

SOURCES = "/api/knowledge/sources"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def served(monkeypatch) -> list:
    """`support-bot serve` up to the point where it would listen: the apps it would serve."""
    apps: list = []
    monkeypatch.setattr("web.server.serve", lambda app, **kwargs: apps.append((app, kwargs)))
    return apps


def serve(served: list, *args: str):
    get_settings.cache_clear()
    assert main(["serve", "--host", "0.0.0.0", "--port", "8999", *args]) == 0
    app, kwargs = served[-1]
    assert kwargs["host"] == "0.0.0.0"
    return app


def test_serve_in_development_uses_its_own_admin_token_printed_once(served, capsys):
    app = serve(served)
    token = app.state.settings.admin_token
    assert token != DEV_SECRET and len(token) >= 32
    path = admin_token_path(app.state.settings)
    assert path.read_text().strip() == token
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    out = capsys.readouterr().out
    assert out.count(token) == 1 and str(path) in out

    with TestClient(app, client=("203.0.113.7", 40000)) as client:
        assert client.get(SOURCES, headers=bearer(DEV_SECRET)).status_code == 401
        assert client.get(SOURCES, headers=bearer(token)).status_code == 200
    with TestClient(app, client=("127.0.0.1", 40000)) as client:
        assert client.get(SOURCES, headers=bearer(DEV_SECRET)).status_code == 401  # not the token any more

    # A restart keeps the token and does not print it again.
    again = serve(served)
    assert again.state.settings.admin_token == token
    assert token not in capsys.readouterr().out


def test_serve_keeps_an_admin_token_that_was_set(served, monkeypatch):
    monkeypatch.setenv("SUPPORT_BOT_ADMIN_TOKEN", "s" * 24)
    app = serve(served)
    assert app.state.settings.admin_token == "s" * 24
    assert not admin_token_path(app.state.settings).exists()


def test_an_app_on_the_default_token_takes_it_from_loopback_only(settings):
    app = create_app(settings)
    with TestClient(app, client=("203.0.113.7", 40000)) as client:
        res = client.get(SOURCES, headers=bearer(DEV_SECRET))
        assert res.status_code == 401 and "only from this machine" in res.json()["detail"]
        res = client.get("/metrics", headers=bearer(DEV_SECRET))
        assert res.status_code == 401
        # Other bearer tokens (a customer's conversation token) are not its business.
        assert client.get("/healthz").status_code == 200
    for loopback in ("127.0.0.1", "::1"):
        with TestClient(app, client=(loopback, 40000)) as client:
            assert client.get(SOURCES, headers=bearer(DEV_SECRET)).status_code == 200


def test_processes_starting_together_agree_on_one_token(settings):
    tokens: list[tuple[str, bool]] = []
    barrier = threading.Barrier(6)

    def start():
        barrier.wait()
        tokens.append(own_admin_token(settings))

    threads = [threading.Thread(target=start) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({token for token, _made in tokens}) == 1
    assert sum(made for _token, made in tokens) == 1
    assert sorted(p.name for p in settings.data_dir.iterdir() if "admin-token" in p.name) == ["admin-token.txt"]


def test_a_token_file_that_holds_no_usable_token_is_refused(settings):
    path = admin_token_path(settings)
    for content in ("", "short\n", DEV_SECRET):
        path.write_text(content)
        with pytest.raises(ConfigurationError, match="admin-token.txt"):
            own_admin_token(settings)


def test_a_data_dir_that_cannot_keep_the_token_still_gets_one_for_this_run(settings, monkeypatch):
    def refuse(*_args, **_kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("support_bot.core.security.os.link", refuse)
    token, made = own_admin_token(settings)
    assert made and len(token) >= 32 and token != DEV_SECRET
    assert [p.name for p in settings.data_dir.iterdir() if "admin-token" in p.name] == []

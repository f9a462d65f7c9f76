"""A served app freezes its start-up heap once the model has warmed up, so full collections stop walking it."""

from __future__ import annotations

import gc
import sys

import pytest
from fastapi import FastAPI

import web.server
from web.app import _warm_up


@pytest.fixture
def unfrozen():
    gc.unfreeze()
    yield
    gc.unfreeze()


class _Assistant:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def warm_up(self) -> None:
        if self.fail:
            raise RuntimeError("no weights")


def _app(assistant, *, served: bool) -> FastAPI:
    app = FastAPI()
    app.state.assistant = assistant
    if served:
        app.state.freeze_heap_after_warm_up = True
    return app


def test_a_served_app_freezes_what_is_alive_after_warm_up(unfrozen):
    alive = [object() for _ in range(3)]  # a start-up object the collector should stop looking at
    app = _app(_Assistant(), served=True)
    _warm_up(app)
    assert app.state.model_status == "ok"
    assert gc.get_freeze_count() > 0
    assert not any(o is alive for o in gc.get_objects())
    # What is made afterwards is still collected as usual.
    cycle: list = []
    cycle.append(cycle)
    del cycle
    assert gc.collect() >= 1


def test_an_app_not_served_by_the_server_freezes_nothing(unfrozen):
    alive = [object()]
    _warm_up(_app(_Assistant(), served=False))
    assert gc.get_freeze_count() == 0
    assert any(o is alive for o in gc.get_objects())


def test_a_failed_warm_up_freezes_nothing(unfrozen):
    app = _app(_Assistant(fail=True), served=True)
    _warm_up(app)
    assert app.state.model_status.startswith("failed to load")
    assert gc.get_freeze_count() == 0


def test_serve_asks_for_the_freeze_rarer_full_collections_and_a_short_switch_interval(monkeypatch):
    ran: list = []
    monkeypatch.setattr(web.server._Server, "run", lambda self, sockets=None: ran.append(self))
    monkeypatch.setattr(sys, "setswitchinterval", lambda s: ran.append(s))
    thresholds = gc.get_threshold()
    try:
        app = FastAPI()
        web.server.serve(app, host="127.0.0.1", port=0)
        assert gc.get_threshold() == (*thresholds[:2], web.server.FULL_COLLECTION_EVERY)
    finally:
        gc.set_threshold(*thresholds)
    assert ran[0] == web.server.SWITCH_INTERVAL_S and len(ran) == 2
    assert app.state.freeze_heap_after_warm_up is True
    assert web.server.FULL_COLLECTION_EVERY > thresholds[2]


def test_serve_sizes_the_pool_of_plain_function_routes(monkeypatch):
    monkeypatch.setattr(web.server._Server, "run", lambda self, sockets=None: None)
    monkeypatch.setattr(sys, "setswitchinterval", lambda s: None)
    thresholds = gc.get_threshold()
    try:
        app = FastAPI()
        web.server.serve(app, host="127.0.0.1", port=0)
    finally:
        gc.set_threshold(*thresholds)
    assert app.state.worker_threads == web.server.WORKER_THREADS
    assert 8 <= web.server.WORKER_THREADS


def test_the_app_started_with_a_pool_size_uses_it_and_a_plain_app_keeps_the_default(settings):
    import anyio.to_thread
    from fastapi.testclient import TestClient

    from support_bot.core.db import migrate
    from web.app import create_app

    migrate(settings)

    def pool_size(client):
        return client.portal.call(lambda: anyio.to_thread.current_default_thread_limiter().total_tokens)

    served = create_app(settings)
    served.state.worker_threads = 5
    with TestClient(served) as client:
        assert pool_size(client) == 5
        assert client.get("/healthz").status_code == 200
    with TestClient(create_app(settings)) as client:
        assert pool_size(client) == 40

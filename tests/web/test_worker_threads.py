"""Open answers and waiting re-posts hold no worker thread, and health checks need none: with the shared pool cut to
a few threads, many answers stream at once and every other route still answers."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import anyio
import pytest
from fastapi.testclient import TestClient

from support_bot.chat.service import Assistant
from support_bot.core.config import Settings
from support_bot.core.db import migrate
from support_bot.llm.backends.fake import FakeEngine
from tests.security.conftest import wait_ready
from tests.web.helpers import new_conversation, parse_sse
from web.app import create_app

DEMO_FAQ = Path(__file__).resolve().parents[2] / "examples" / "demo-faq.csv"
POOL = 3  # worker threads left to the whole app
STREAMS = 8  # answers open at once: more than the pool


class GatedEngine(FakeEngine):
    """Streams nothing until `gate` opens; counts the answers it has begun."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.begun = 0

    def stream(self, messages, **kwargs):
        pieces = super().stream(messages, **kwargs)
        with self._lock:
            self.begun += 1

        def gated():
            self.gate.wait(60)
            yield from pieces

        return gated()


@pytest.fixture
def gated(settings: Settings):
    settings = settings.model_copy(
        update={"widget": settings.widget.model_copy(update={"rate_limit_enabled": False})}
    )
    migrate(settings)
    from ingest.pipeline import ingest_path

    assert ingest_path(settings=settings, path=DEMO_FAQ, source_name="demo-faq").status == "succeeded"
    engine = GatedEngine()
    with TestClient(create_app(settings, assistant=Assistant(settings, engine=engine))) as client:
        wait_ready(client)
        client.portal.call(_cut_pool, POOL)
        try:
            yield client, engine
        finally:
            engine.gate.set()


def _cut_pool(tokens: int) -> None:
    anyio.to_thread.current_default_thread_limiter().total_tokens = tokens


def _in_thread(call, results: list) -> threading.Thread:
    thread = threading.Thread(target=lambda: results.append(call()), daemon=True)
    thread.start()
    return thread


def _until(condition, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _post(client: TestClient, conv_id: str, headers: dict, cid: str):
    res = client.post(
        f"/api/conversations/{conv_id}/messages",
        json={"text": "How long does shipping take?", "client_message_id": cid},
        headers=headers,
    )
    return parse_sse(res.text)


def test_open_answers_and_waiting_reposts_leave_the_pool_free(gated):
    client, engine = gated
    convs = [new_conversation(client) for _ in range(STREAMS)]
    answers: list = []
    threads = [_in_thread(lambda c=c, i=i: _post(client, *c, f"m-{i}"), answers) for i, c in enumerate(convs)]
    # Each answer reaches the model and waits there for its first piece; a thread held per waiting answer would let
    # only POOL of them get this far.
    assert _until(lambda: engine.begun == STREAMS), f"only {engine.begun} of {STREAMS} answers began"

    # Re-posts of a message still being answered wait for that answer, holding no thread either.
    reposts: list = []
    repost_threads = [_in_thread(lambda: _post(client, *convs[0], "m-0"), reposts) for _ in range(POOL + 1)]
    time.sleep(0.5)  # they are waiting now (or will be): the routes below must answer regardless

    conv_id, headers = convs[1]
    history: list = []
    _in_thread(lambda: client.get(f"/api/conversations/{conv_id}/messages", headers=headers), history)
    assert _until(lambda: bool(history)), "a plain route stalled behind open answers"
    assert history[0].status_code == 200

    engine.gate.set()
    for thread in threads + repost_threads:
        thread.join(60)
    assert len(answers) == STREAMS and all(events[-1][0] == "done" for events in answers)
    # Every re-post got the one answer to its message; nothing was answered twice.
    assert len(reposts) == POOL + 1
    ids = {events[-1][1]["message_id"] for events in reposts}
    assert len(ids) == 1 and all(events[-1][0] == "done" for events in reposts)
    stored = client.get(f"/api/conversations/{convs[0][0]}/messages", headers=convs[0][1]).json()["messages"]
    assert [m["role"] for m in stored] == ["customer", "bot"] and stored[1]["id"] in ids


def test_health_checks_answer_while_every_worker_thread_is_busy(gated):
    client, _engine = gated
    release = threading.Event()
    for _ in range(POOL):
        client.portal.start_task_soon(anyio.to_thread.run_sync, release.wait)
    try:
        answers: list = []
        _in_thread(lambda: (client.get("/healthz"), client.get("/readyz")), answers)
        assert _until(lambda: bool(answers)), "health checks waited for a worker thread"
        health, ready = answers[0]
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        assert ready.status_code == 200 and ready.json()["checks"]["database"] == "ok"
    finally:
        release.set()


@pytest.mark.skipif(not hasattr(__import__("os"), "setpriority"), reason="no per-thread priority on this system")
def test_a_thread_that_ran_a_turn_step_runs_below_the_event_loop_and_on_one_torch_thread():
    from support_bot.core.threads import BACKGROUND_NICE
    from tests.core.test_threads import thread_nice
    from support_bot.llm.base import Wakeup
    from web.api.chat import _steps

    seen: dict = {}
    loop = asyncio.new_event_loop()

    def step():
        import torch

        seen["before"] = thread_nice()
        seen["result"] = _steps(Wakeup(loop), iter(()))
        seen["after"] = thread_nice()
        seen["torch_threads"] = torch.get_num_threads()

    t = threading.Thread(target=step)
    t.start()
    t.join()
    loop.close()
    assert seen["result"] == ([], "end")
    assert seen["after"] == min(19, seen["before"] + BACKGROUND_NICE)
    # Its torch work (a query's embedding) runs on the thread alone, leaving the cores' thread team to the model.
    assert seen["torch_threads"] == 1

"""The upload route: a file is parsed and stored off the event loop, and a broker that is down loses no upload."""

from __future__ import annotations

import threading
from pathlib import Path

import anyio
import httpx
import pytest
from fastapi.testclient import TestClient

from ingest import uploads
from ingest.worker import get_worker
from support_bot.core.db import session_scope
from support_bot.models import IngestJob
from tests.conftest import free_port
from web.app import create_app

CSV = b"id,question,answer\nk-1,Do you rent kayaks?,Yes: kayaks rent for $40 a day.\n"
TOKEN = "upload-route-test-token-0123456789"


@pytest.fixture
def route_settings(kb):
    settings = kb.model_copy(update={"admin_token": TOKEN})
    yield settings
    get_worker().stop()


def _auth() -> dict:
    return {"Authorization": f"Bearer {TOKEN}"}


def test_a_file_being_parsed_does_not_hold_up_other_requests(route_settings, monkeypatch):
    """While an upload's file is parsed, the same process answers another request (the event loop is free)."""
    parsing, answered = threading.Event(), threading.Event()
    seen: list[bool] = []
    real_parse = uploads.parse

    def parse(name, data):
        parsing.set()
        # With the parse on the event loop the other request cannot be answered until this gives up.
        seen.append(answered.wait(5))
        return real_parse(name, data)

    monkeypatch.setattr(uploads, "parse", parse)
    app = create_app(route_settings)

    async def scenario() -> tuple[int, int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            result: dict[str, int] = {}

            async def upload() -> None:
                res = await client.post(
                    "/api/knowledge/uploads", files={"file": ("kayaks.csv", CSV)}, headers=_auth()
                )
                result["upload"] = res.status_code

            async with anyio.create_task_group() as tg:
                tg.start_soon(upload)
                await anyio.to_thread.run_sync(parsing.wait, 30)
                health = await client.get("/healthz")
                answered.set()
            return result["upload"], health.status_code

    assert anyio.run(scenario) == (202, 200)
    assert seen == [True]


def test_an_upload_while_the_broker_is_down_is_answered_with_its_queued_job(route_settings):
    # Nothing listens on this port: handing the job to the broker fails after the commit.
    settings = route_settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    with TestClient(create_app(settings)) as client:
        res = client.post("/api/knowledge/uploads", files={"file": ("kayaks.csv", CSV)}, headers=_auth())
    assert res.status_code == 202, res.text
    job = res.json()["job"]
    assert job["status"] == "queued" and job["filename"] == "kayaks.csv"
    with session_scope(settings) as s:
        row = s.get(IngestJob, job["id"])
        # Not taken by any worker: the workers' sweep hands it over once the broker is back.
        assert (row.status, row.dispatched_at) == ("queued", None)
        assert Path(row.path).read_bytes() == CSV

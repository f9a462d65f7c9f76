"""Structured logs: the JSON and text formats, request ids in and out, access lines, job ids, and `serve`'s output."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import subprocess
import sys
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from support_bot.core.config import Settings
from support_bot.core.db import migrate, session_scope
from support_bot.core.logs import JsonFormatter, TextFormatter, configure_logging, log_context, request_id_var
from support_bot.models import IngestJob
from web.middleware.observability import RequestContextMiddleware, request_id_from

FRESH_ID = re.compile(r"[0-9a-f]{32}")


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


@pytest.fixture
def json_logs():
    """Every log line of the test, as the JSON formatter writes it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
def app_client(settings):
    """The real app over an empty migrated database (no knowledge, no embeddings needed)."""
    from web.app import create_app

    migrate(settings)
    settings = settings.model_copy(update={"safety": settings.safety.model_copy(update={"use_embeddings": False})})
    app = create_app(settings)

    def logs_inside(name: str) -> dict:
        logging.getLogger("tests.inside").info("handling %s", name)
        return {"request_id": request_id_var.get()}

    app.add_api_route("/test-logs-inside/{name}", logs_inside)
    with TestClient(app) as client:
        yield client


def access_lines(stream: io.StringIO) -> list[dict]:
    return [line for line in lines(stream) if line["logger"] == "support_bot.access"]


def test_json_lines_carry_the_fields_extras_and_exception():
    stream = io.StringIO()
    log = logging.getLogger("tests.json_unit")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.INFO)
    try:
        log.warning("two\nlines %s", "here", extra={"status": 503, "path": "/x"})
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
        token = request_id_var.set("req-1")
        try:
            with log_context(job_id="job-1"):
                log.info("inside")
            log.info("after")
        finally:
            request_id_var.reset(token)
    finally:
        log.removeHandler(handler)
        log.propagate = True
    raw = stream.getvalue().splitlines()
    assert len(raw) == 4  # the newline in a message stays inside its JSON line
    first, failed, inside, after = (json.loads(line) for line in raw)
    assert first["message"] == "two\nlines here" and first["level"] == "WARNING"
    assert first["logger"] == "tests.json_unit"
    assert first["status"] == 503 and first["path"] == "/x" and re.fullmatch(r"\d{4}-\d\d-\d\dT.*\+00:00", first["ts"])
    assert "request_id" not in first and "exception" not in first
    assert isinstance(failed["exception"], str) and "ValueError: boom" in failed["exception"]
    assert inside["request_id"] == "req-1" and inside["job_id"] == "job-1"
    assert after["request_id"] == "req-1" and "job_id" not in after


def test_text_lines_show_the_request_id_and_escape_it():
    record = logging.LogRecord("tests.text", logging.INFO, __file__, 1, "hello", (), None)
    token = request_id_var.set("abc")
    try:
        with log_context(job_id="j\n2"):
            line = TextFormatter().format(record)
    finally:
        request_id_var.reset(token)
    assert line.endswith("INFO tests.text: hello [job_id=j\\x0a2 request_id=abc]") and "\n" not in line
    assert TextFormatter().format(record).endswith("INFO tests.text: hello")


def test_a_request_gets_an_id_echoed_in_its_access_line(app_client, json_logs):
    res = app_client.get("/healthz")
    request_id = res.headers["x-request-id"]
    assert FRESH_ID.fullmatch(request_id)
    [line] = [a for a in access_lines(json_logs) if a["request_id"] == request_id]
    assert line["method"] == "GET" and line["path"] == "/healthz" and line["route"] == "/healthz"
    assert line["status"] == 200 and isinstance(line["duration_ms"], float) and line["level"] == "INFO"
    assert line["message"].startswith("GET /healthz 200 ")
    assert app_client.get("/healthz").headers["x-request-id"] != request_id  # a new id per request


def test_a_sane_incoming_request_id_is_kept_and_reaches_lines_logged_inside(app_client, json_logs):
    incoming = "edge-proxy:7f3a_9.B/x=" + "a" * 100
    res = app_client.get("/test-logs-inside/demo", headers={"X-Request-ID": incoming})
    assert res.headers["x-request-id"] == incoming
    assert res.json()["request_id"] == incoming  # the id is visible inside a (threadpool) endpoint too
    inside = [line for line in lines(json_logs) if line["logger"] == "tests.inside"]
    assert [(line["message"], line["request_id"]) for line in inside] == [("handling demo", incoming)]
    [access] = [a for a in access_lines(json_logs) if a["request_id"] == incoming]
    assert access["route"] == "/test-logs-inside/{name}" and access["path"] == "/test-logs-inside/demo"


@pytest.mark.parametrize(
    "hostile",
    ["a" * 129, "abc\ndef", "abc\r\nX-Injected: 1", "has space", '"quoted"', "<script>", "", "ü-umlaut".encode()],
)
def test_a_hostile_request_id_is_replaced(app_client, json_logs, hostile):
    res = app_client.get("/healthz", headers={"X-Request-ID": hostile})
    assert res.status_code == 200
    assert FRESH_ID.fullmatch(res.headers["x-request-id"])
    assert "x-injected" not in res.headers
    assert res.headers.get_list("x-request-id") == [res.headers["x-request-id"]]
    [line] = access_lines(json_logs)
    assert line["request_id"] == res.headers["x-request-id"]


def test_a_path_cannot_forge_log_lines(app_client, json_logs):
    res = app_client.get("/no-such-page%0a%7B%22level%22%3A%22ERROR%22%7D")
    assert res.status_code == 404
    [line] = access_lines(json_logs)
    assert line["route"] == "unmatched" and line["status"] == 404
    assert "\n" not in line["path"] and line["path"].startswith("/no-such-page\\x0a")


def test_request_ids_from_raw_headers():
    assert request_id_from({"headers": [(b"x-request-id", b"abc-1")]}) == "abc-1"
    assert FRESH_ID.fullmatch(request_id_from({"headers": [(b"x-request-id", b"a\x00b")]}))
    assert FRESH_ID.fullmatch(request_id_from({"headers": []}))
    assert request_id_from({"headers": [(b"x-request-id", b"x" * 128)]}) == "x" * 128


def _transport(events: dict):
    """A server's side of one request: the messages the middleware sent, and its receive and send callables."""
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)
        events["sent"].set()

    return sent, receive, send


def test_a_streamed_response_passes_through_chunk_by_chunk(json_logs):
    """The middleware forwards each body chunk at once and times the request to the end of the body."""
    scope = {"type": "http", "method": "GET", "path": "/stream", "headers": [], "client": ("127.0.0.1", 1)}

    async def scenario():
        release = asyncio.Event()
        events = {"sent": asyncio.Event()}

        async def app(_scope, _receive, send):
            await send({"type": "http.response.start", "status": 200, "headers": [(b"x-request-id", b"app-set")]})
            await send({"type": "http.response.body", "body": b"data: one\n\n", "more_body": True})
            await release.wait()
            await send({"type": "http.response.body", "body": b"data: two\n\n", "more_body": False})

        sent, receive, send = _transport(events)
        task = asyncio.create_task(RequestContextMiddleware(app, settings=Settings())(scope, receive, send))
        while len(sent) < 2:
            events["sent"].clear()
            await events["sent"].wait()
        # The first chunk is out while the app still holds the stream open; nothing is logged yet.
        assert [m.get("body") for m in sent] == [None, b"data: one\n\n"]
        assert access_lines(json_logs) == []
        release.set()
        await task
        return sent

    sent = asyncio.run(scenario())
    headers = dict(sent[0]["headers"])
    assert list(h for h, _ in sent[0]["headers"]).count(b"x-request-id") == 1
    assert FRESH_ID.fullmatch(headers[b"x-request-id"].decode())  # the app cannot choose a different id
    assert sent[-1]["body"] == b"data: two\n\n"
    [line] = access_lines(json_logs)
    assert line["status"] == 200 and line["request_id"] == headers[b"x-request-id"].decode()


def test_an_unhandled_error_is_logged_as_500_and_still_raised(json_logs):
    scope = {"type": "http", "method": "POST", "path": "/boom", "headers": [(b"x-request-id", b"r-500")]}

    async def app(_scope, _receive, _send):
        raise RuntimeError("broken handler")

    async def scenario():
        sent, receive, send = _transport({"sent": asyncio.Event()})
        with pytest.raises(RuntimeError, match="broken handler"):
            await RequestContextMiddleware(app, settings=Settings())(scope, receive, send)

    asyncio.run(scenario())
    [line] = access_lines(json_logs)
    assert line["status"] == 500 and line["level"] == "WARNING" and line["request_id"] == "r-500"


def test_access_lines_can_be_switched_off(settings, json_logs):
    from web.app import create_app

    migrate(settings)
    quiet = settings.model_copy(update={"log": Settings(log={"access_log": False}).log})
    with TestClient(create_app(quiet)) as client:
        assert FRESH_ID.fullmatch(client.get("/healthz").headers["x-request-id"])
    assert access_lines(json_logs) == []


def test_an_ingest_job_logs_with_its_job_id(settings, json_logs):
    from ingest.pipeline import run_job

    migrate(settings)
    with session_scope(settings) as session:
        job = IngestJob(source_name="gone", filename="gone.csv", path="/nonexistent/gone.csv", sha256="0" * 64)
        session.add(job)
        session.flush()
        job_id = job.id
    assert run_job(job_id, settings).status == "failed"
    failures = [line for line in lines(json_logs) if line["logger"] == "ingest.pipeline"]
    assert failures and all(line["job_id"] == job_id for line in failures)
    assert any("no longer stored" in line["message"] for line in failures)


@pytest.fixture
def restore_root_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers = handlers
    root.setLevel(level)
    logging.captureWarnings(False)


@pytest.mark.parametrize(
    ("env", "fmt", "expected"),
    [("development", None, TextFormatter), ("production", None, JsonFormatter), ("development", "json", JsonFormatter),
     ("production", "text", TextFormatter)],
)
def test_configure_logging_picks_the_format_by_environment(restore_root_logging, env, fmt, expected):
    secrets = {"admin_token": "a" * 32} if env == "production" else {}
    settings = Settings(env=env, log={"format": fmt, "level": "warning"}, **secrets)
    stream = io.StringIO()
    handler = configure_logging(settings, stream=stream)
    root = logging.getLogger()
    assert root.handlers == [handler] and isinstance(handler.formatter, expected)
    assert root.level == logging.WARNING
    logging.getLogger("tests.configure").info("dropped below the level")
    logging.getLogger("tests.configure").warning("kept")
    assert "dropped" not in stream.getvalue() and "kept" in stream.getvalue()


@pytest.mark.slow
def test_serve_writes_json_lines_with_request_ids(tmp_path):
    """`support-bot serve` with JSON logs: every stderr line (uvicorn's included) is JSON; access lines carry ids."""
    from tests.conftest import free_port

    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SUPPORT_BOT_")},
        "SUPPORT_BOT_DATA_DIR": str(tmp_path / "data"),
        "SUPPORT_BOT_LLM__BACKEND": "fake",
        "SUPPORT_BOT_SAFETY__USE_EMBEDDINGS": "false",
        "SUPPORT_BOT_LOG__FORMAT": "json",
    }
    stderr_path = tmp_path / "stderr.log"
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "support_bot.cli", "serve", "--port", str(port)],
            env=env, stdout=subprocess.DEVNULL, stderr=stderr,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, stderr_path.read_text()[-3000:]
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, stderr_path.read_text()[-3000:]
            time.sleep(0.3)
        res = httpx.get(f"{url}/healthz", headers={"X-Request-ID": "probe-123"})
        assert res.headers["x-request-id"] == "probe-123"
        metrics = httpx.get(f"{url}/metrics")  # development: loopback may scrape
        assert metrics.status_code == 200 and "support_bot_http_request_duration_seconds" in metrics.text
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    raw = [line for line in stderr_path.read_text().splitlines() if line.strip()]
    parsed = [json.loads(line) for line in raw]  # every line is one JSON object
    assert not any("color_message" in p for p in parsed)
    assert any(p["logger"].startswith("uvicorn") for p in parsed)
    assert any(p["logger"] == "support_bot.cli" and "serving on" in p["message"] for p in parsed)
    [probe] = [p for p in parsed if p.get("request_id") == "probe-123"]
    assert probe["logger"] == "support_bot.access" and probe["path"] == "/healthz" and probe["status"] == 200


def test_the_worker_command_logs_through_the_same_formatter(restore_root_logging, monkeypatch):
    """`support-bot worker` answers Celery's setup_logging signal, so Celery keeps its hands off and lines are JSON."""
    from celery.signals import setup_logging

    import ingest.celery_app
    from support_bot import cli

    monkeypatch.setenv("SUPPORT_BOT_REDIS_URL", "redis://127.0.0.1:6379/15")
    monkeypatch.setenv("SUPPORT_BOT_LOG__FORMAT", "json")
    monkeypatch.setenv("SUPPORT_BOT_LOG__LEVEL", "warning")
    started: list[list[str]] = []

    class Worker:
        def worker_main(self, argv):
            # What Celery does first when a worker starts; no broker is contacted here.
            answers = setup_logging.send(sender=None, loglevel=argv[1], logfile=None, format="", colorize=False)
            assert answers, "nobody answered setup_logging: Celery would install its own handlers"
            started.append(argv)

    monkeypatch.setattr(ingest.celery_app, "app", Worker(), raising=False)
    try:
        assert cli.main(["worker", "--concurrency", "3"]) == 0
    finally:
        setup_logging.disconnect(dispatch_uid=ingest.celery_app.LOGGING_RECEIVER)
    assert started == [["worker", "--loglevel=WARNING", "--concurrency=3"]]
    root = logging.getLogger()
    assert len(root.handlers) == 1 and isinstance(root.handlers[0].formatter, JsonFormatter)
    assert root.level == logging.WARNING

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from support_bot.core.errors import ConfigurationError, ModelNotAvailable, ModelTimeout
from support_bot.llm.backends.openai import OpenAIEngine
from support_bot.llm.base import AnswerTruncated
from support_bot.llm.prompt import ChatMessage
from support_bot.llm.registry import get_engine

ASK = [ChatMessage("system", "Be brief."), ChatMessage("user", "Where is my order?")]
REPLY_PIECES = ["Your", " order", " ships", " on", " Monday", "."]


class FakeOpenAIServer:
    """An OpenAI-compatible chat completions server on a random loopback port, run by uvicorn in a thread."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.pieces = list(REPLY_PIECES)
        self.delay_s = 0.0
        self.sent = 0
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            body = await request.json()
            self.requests.append(body)
            self.headers.append(dict(request.headers))
            if request.headers.get("authorization") != "Bearer sk-test":
                return JSONResponse({"error": {"message": "Invalid API key"}}, status_code=401)
            if body["model"] == "overloaded":
                return JSONResponse({"error": {"message": "model is overloaded"}}, status_code=503)
            limit = body.get("max_tokens") or len(self.pieces)

            async def events():
                yield ": keep-alive comment\n\n"
                first = {"choices": [{"index": 0, "delta": {"role": "assistant"}}]}
                yield f"data: {json.dumps(first)}\n\n"
                for piece in self.pieces[:limit]:
                    if self.delay_s:
                        await asyncio.sleep(self.delay_s)
                    self.sent += 1
                    delta = {"index": 0, "delta": {"content": piece}}
                    chunk = {"id": "c1", "object": "chat.completion.chunk", "choices": [delta]}
                    yield f"data: {json.dumps(chunk)}\n\n"
                yield f"data: {json.dumps({'choices': [{'index': 0, 'delta': {}, 'finish_reason': 'stop'}]})}\n\n"
                yield "data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")

        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fake OpenAI server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.socket.close()


@pytest.fixture
def server():
    srv = FakeOpenAIServer()
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def openai_settings(settings, server):
    settings.llm.backend = "openai"
    settings.llm.openai_base_url = server.base_url
    settings.llm.openai_api_key = "sk-test"
    settings.llm.openai_model = "llama-2-7b-chat"
    return settings


def test_streams_deltas_from_the_server(openai_settings, server):
    engine = get_engine(openai_settings)
    assert isinstance(engine, OpenAIEngine) and get_engine(openai_settings) is engine
    pieces = list(engine.stream(ASK, max_new_tokens=50))
    assert pieces == REPLY_PIECES
    body = server.requests[-1]
    assert body["stream"] is True and body["model"] == "llama-2-7b-chat" and body["max_tokens"] == 50
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Where is my order?"},
    ]
    assert body["temperature"] == 0.0
    assert engine.generate(ASK) == "Your order ships on Monday."
    assert server.requests[-1]["max_tokens"] == openai_settings.llm.max_new_tokens


def test_max_new_tokens_is_sent_and_enforced(openai_settings, server):
    engine = get_engine(openai_settings)
    assert engine.generate(ASK, max_new_tokens=2) == "Your order"
    assert server.requests[-1]["max_tokens"] == 2


def test_stop_event_ends_the_stream_early(openai_settings, server):
    server.pieces = [f" w{i}" for i in range(200)]
    server.delay_s = 0.01
    stop = threading.Event()
    pieces = []
    for piece in get_engine(openai_settings).stream(ASK, stop=stop, max_new_tokens=500):
        pieces.append(piece)
        if len(pieces) == 3:
            stop.set()
    assert pieces == [" w0", " w1", " w2"]


def test_a_timeout_midway_raises_after_the_pieces_so_far(openai_settings, server):
    # Ending quietly would pass a cut-off answer for a whole one.
    server.pieces = [f" w{i}" for i in range(200)]
    server.delay_s = 0.02
    started = time.monotonic()
    pieces = []
    with pytest.raises(AnswerTruncated, match="did not finish"):
        for piece in get_engine(openai_settings).stream(ASK, timeout_s=0.3, max_new_tokens=500):
            pieces.append(piece)
    assert time.monotonic() - started < 2.0
    assert 0 < len(pieces) < 100


def test_timeout_with_a_silent_server(openai_settings, server):
    server.pieces = [" late"]
    server.delay_s = 1.5
    started = time.monotonic()
    with pytest.raises(ModelTimeout, match="sent nothing in time") as raised:
        list(get_engine(openai_settings).stream(ASK, timeout_s=0.3))
    assert not isinstance(raised.value, AnswerTruncated)
    assert time.monotonic() - started < 1.2


def test_server_errors_become_clear_messages(openai_settings, server):
    openai_settings.llm.openai_api_key = "wrong"
    with pytest.raises(ModelNotAvailable, match="answered 401: Invalid API key"):
        OpenAIEngine(openai_settings).generate(ASK)
    openai_settings.llm.openai_api_key = "sk-test"
    openai_settings.llm.openai_model = "overloaded"
    with pytest.raises(ModelNotAvailable, match="answered 503: model is overloaded"):
        OpenAIEngine(openai_settings).generate(ASK)


def test_unreachable_server(settings):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    settings.llm.openai_base_url = f"http://127.0.0.1:{port}/v1"
    settings.llm.openai_model = "m"
    with pytest.raises(ModelNotAvailable, match="Cannot reach the model server"):
        OpenAIEngine(settings).generate(ASK)


def test_needs_a_model_name(settings):
    settings.llm.openai_model = ""
    with pytest.raises(ConfigurationError, match="OPENAI_MODEL"):
        OpenAIEngine(settings)


def test_token_counts_are_approximate_without_a_local_tokenizer(settings):
    settings.llm.openai_model = "m"
    engine = OpenAIEngine(settings)
    assert engine.count_tokens("abcdefgh") == 2
    assert engine.count_tokens("abcdefghi") == 3
    assert engine.prompt_tokens(ASK) == 3 + 4 + 5 + 4
    assert engine.context_window == 4096


def test_uses_the_local_tokenizer_when_the_model_is_named(settings, tiny_llama2_dir, llama_tokenizer):
    settings.llm.openai_model = "m"
    settings.llm.model = str(tiny_llama2_dir)
    engine = OpenAIEngine(settings)
    text = "How do I reset my password?"
    assert engine.count_tokens(text) == len(llama_tokenizer.encode(text, add_special_tokens=False))
    from support_bot.llm.prompt import llama2_token_ids

    assert engine.prompt_tokens(ASK) == len(llama2_token_ids(llama_tokenizer, ASK))
    assert engine.context_window == 512

"""Generation through any OpenAI-compatible server (vLLM, TGI, llama.cpp server) with streamed chat completions."""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx

from support_bot.core.config import Settings
from support_bot.core.errors import (
    ConfigurationError,
    ModelNotAvailable,
    ModelTimeout,
    SupportBotError,
)
from support_bot.llm.base import AnswerTruncated, StreamingEngine
from support_bot.llm.prompt import (
    ChatMessage,
    count_tokens,
    render_prompt_ids,
    validate_messages,
)

log = logging.getLogger(__name__)

# Llama-2's window; used unless a local copy of the served model says otherwise.
DEFAULT_CONTEXT_WINDOW = 4096


class OpenAIEngine(StreamingEngine):
    """Streams `/chat/completions` over SSE; the server applies the model's chat format."""

    def __init__(self, settings: Settings) -> None:
        llm = settings.llm
        if not llm.openai_model:
            raise ConfigurationError("Set SUPPORT_BOT_LLM__OPENAI_MODEL to the model name the server serves")
        self.settings = settings
        self.base_url = llm.openai_base_url.rstrip("/")
        self.model = llm.openai_model
        self.name = f"openai:{self.model}"
        self.context_window = DEFAULT_CONTEXT_WINDOW
        self._tokenizer: Any = None
        self._prompt_format = "template"
        self._load_local_tokenizer(settings)
        headers = {"Authorization": f"Bearer {llm.openai_api_key}"} if llm.openai_api_key else {}
        self._client = httpx.Client(headers=headers)

    def _load_local_tokenizer(self, settings: Settings) -> None:
        # Only when the operator named the served model's weights explicitly: the default preset is unrelated.
        if "model" not in settings.llm.model_fields_set:
            return
        from support_bot.llm.pull import resolve_model

        try:
            resolved = resolve_model(settings)
        except SupportBotError:
            return
        from support_bot.llm.weights import load_tokenizer

        try:
            self._tokenizer = load_tokenizer(settings, resolved)
        except Exception as exc:  # noqa: BLE001 - counting falls back to the approximation
            log.warning("could not load the tokenizer of %s for token counting: %s", resolved.name, exc)
            return
        self._prompt_format = resolved.prompt_format
        self.context_window = resolved.context_window

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()

    def count_tokens(self, text: str) -> int:
        """Exact with a local tokenizer, else approximate (about four characters a token)."""
        if self._tokenizer is not None:
            return count_tokens(self._tokenizer, text)
        return math.ceil(len(text) / 4)

    def prompt_tokens(self, messages: list[ChatMessage]) -> int:
        """Exact with a local tokenizer, else approximate (content plus a fixed overhead per message)."""
        if self._tokenizer is not None:
            return len(render_prompt_ids(self._tokenizer, messages, self._prompt_format))
        return self.approx_prompt_tokens(messages)

    def stream(
        self,
        messages: list[ChatMessage],
        *,
        max_new_tokens: int | None = None,
        stop: threading.Event | None = None,
        timeout_s: float | None = None,
    ) -> Iterator[str]:
        """Yield content deltas as the server sends them."""
        validate_messages(messages)
        llm = self.settings.llm
        limit = llm.max_new_tokens if max_new_tokens is None else max_new_tokens
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m.role, "content": m.content.strip()} for m in messages],
            "stream": True,
            "max_tokens": limit,
            "temperature": llm.temperature,
        }
        timeout = llm.timeout_s if timeout_s is None else timeout_s
        return self._pieces(payload, limit, stop, time.monotonic() + timeout)

    def _pieces(
        self, payload: dict[str, Any], limit: int, stop: threading.Event | None, deadline: float
    ) -> Iterator[str]:
        if limit <= 0 or (stop is not None and stop.is_set()):
            return
        remaining = max(0.01, deadline - time.monotonic())
        url = f"{self.base_url}/chat/completions"
        sent = 0
        finished = False
        try:
            with self._client.stream(
                "POST", url, json=payload, timeout=httpx.Timeout(remaining, connect=min(remaining, 10.0))
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise ModelNotAvailable(
                        f"The model server at {self.base_url} answered {response.status_code}: {_error_text(response)}"
                    )
                for line in response.iter_lines():
                    if stop is not None and stop.is_set():
                        return
                    if time.monotonic() >= deadline:
                        raise _past_deadline(self.base_url, sent)
                    # SSE: only "data:" lines carry chunks; comments, event names and blank separators don't.
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    texts, done = _delta_texts(data, self.base_url)
                    finished = finished or done
                    for text in texts:
                        yield text
                        sent += 1
                        # Servers send about one token per delta; a safety net if one ignores max_tokens.
                        if sent >= limit:
                            return
        except httpx.TimeoutException:
            if stop is not None and stop.is_set():
                return
            raise _past_deadline(self.base_url, sent) from None
        except httpx.HTTPError as exc:
            raise ModelNotAvailable(f"Cannot reach the model server at {self.base_url}: {exc}") from exc
        if not finished:
            # The body ended with neither [DONE] nor a finish_reason: the server (or a proxy) went away mid-answer,
            # and a cut-off answer must not pass for a whole one.
            raise ModelNotAvailable(
                f"The model server at {self.base_url} ended the stream before the answer was complete"
            )


def _past_deadline(base_url: str, sent: int) -> ModelTimeout:
    # A cut-off answer must not pass for a whole one: the caller decides what to do with the part it has.
    if sent:
        return AnswerTruncated(f"The model server at {base_url} did not finish the answer in time")
    return ModelTimeout(f"The model server at {base_url} sent nothing in time")


def _delta_texts(data: str, base_url: str) -> tuple[list[str], bool]:
    """The content pieces of one stream chunk, and whether it says the answer is complete (a finish_reason)."""
    try:
        chunk = json.loads(data)
    except ValueError:
        raise ModelNotAvailable(f"The model server at {base_url} sent a malformed stream chunk") from None
    if isinstance(chunk, dict) and chunk.get("error"):
        error = chunk["error"]
        message = error.get("message") if isinstance(error, dict) else error
        raise ModelNotAvailable(f"The model server at {base_url} reported an error: {message}")
    texts = []
    finished = False
    for choice in chunk.get("choices") or []:
        content = (choice.get("delta") or {}).get("content")
        if content:
            texts.append(content)
        finished = finished or bool(choice.get("finish_reason"))
    return texts, finished


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip().splitlines()[0][:200] if response.text.strip() else response.reason_phrase
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])[:200]
    if isinstance(body, dict) and body.get("detail"):
        return str(body["detail"])[:200]
    return json.dumps(body)[:200]

"""Incremental detokenization: text pieces from token ids as they arrive, never splitting a character.

Fast tokenizers are streamed with `tokenizers.decoders.DecodeStream`, which holds back text while it ends inside a
multi-byte character and decodes new tokens in the window of the last piece given out. The Python code that does the
same is kept only where DecodeStream is missing or cannot be used: slow tokenizers and ones whose `decode` adds its own
steps, tokenizers releases without DecodeStream or whose `step` takes no list, and sentencepiece byte-fallback tokens.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

try:
    from tokenizers.decoders import DecodeStream
except ImportError:  # tokenizers < 0.21
    DecodeStream = None

REPLACEMENT = "\ufffd"
# Sentencepiece byte-fallback tokens (Llama-2): a run of them decodes as one unit, and one invalid byte anywhere in
# the run turns the whole run into U+FFFD, so text from a run is only final once the run has ended.
_BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")


def _stream_backend(tokenizer: Any) -> Any | None:
    """The `tokenizers.Tokenizer` to stream with DecodeStream, or None where only the Python fallback is right."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if DecodeStream is None or backend is None:
        return None
    # The class that defines `decode`'s work must be the fast base that only calls the backend (Whisper's adds steps).
    for cls in type(tokenizer).__mro__:
        if "_decode" in vars(cls):
            if "backend_tokenizer" not in vars(cls):
                return None
            break
    # Fallback for byte-fallback models: DecodeStream gives out a valid byte ("k") before a later invalid byte of the
    # same run turns it into U+FFFD, and then fails with "Invalid prefix".
    if getattr(backend.model, "byte_fallback", False) or any(
        backend.token_to_id(f"<0x{byte:02X}>") is not None for byte in (0x00, 0x41, 0x80, 0xFF)
    ):
        return None
    return backend


class IncrementalDecoder:
    """Turns a growing list of token ids into text pieces whose concatenation is the decode of all ids."""

    def __init__(self, tokenizer: Any, *, skip_special_tokens: bool = True) -> None:
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.ids: list[int] = []
        # Decoding restarts at `_prefix` (the start of the last piece given out) rather than at 0: the cost per token
        # stays flat, and the already-given-out tokens in the window still give the new ones their context (leading
        # spaces, merged bytes), so the difference against the window's old text is exactly the new text. DecodeStream
        # keeps the same window; the two are tracked here too for flush() and for falling back mid-stream.
        self._prefix = 0
        self._read = 0
        self._backend = _stream_backend(tokenizer)
        self._stream = self._new_stream()
        self._byte_token: dict[int, bool] = {}
        self._skipped = set(tokenizer.all_special_ids) if skip_special_tokens else set()

    def _new_stream(self) -> Any | None:
        return None if self._backend is None else DecodeStream(skip_special_tokens=self.skip_special_tokens)

    def _is_byte_token(self, token_id: int) -> bool:
        known = self._byte_token.get(token_id)
        if known is None:
            piece = self.tokenizer.convert_ids_to_tokens(token_id)
            known = self._byte_token[token_id] = isinstance(piece, str) and _BYTE_TOKEN.fullmatch(piece) is not None
        return known

    def _in_byte_run(self) -> bool:
        """Whether the last token that shows in the text is a byte token (skipped special tokens don't end a run)."""
        for token_id in reversed(self.ids):
            if token_id not in self._skipped:
                return self._is_byte_token(token_id)
        return False

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(
            ids, skip_special_tokens=self.skip_special_tokens, clean_up_tokenization_spaces=False
        )

    def push(self, ids: Iterable[int]) -> str:
        """Add generated ids; return the text they complete ("" while a character is still incomplete)."""
        start = len(self.ids)
        self.ids.extend(ids)
        if self._stream is not None and len(self.ids) > start:
            try:
                # The whole chunk in one step: its text is held back while the chunk ends inside a character.
                piece = self._stream.step(self._backend, self.ids[start:])
            except Exception:  # noqa: BLE001 - a release whose step takes one id, or "Invalid prefix": Python from here
                self._stream = None
            else:
                if piece is None:
                    return ""
                self._prefix, self._read = self._read, len(self.ids)
                return piece
        return self._push_python()

    def _push_python(self) -> str:
        # The pre-DecodeStream code, kept as the fallback where DecodeStream is missing or cannot be used (see above).
        if len(self.ids) == self._read or self._in_byte_run():
            return ""
        before = self._decode(self.ids[self._prefix : self._read])
        text = self._decode(self.ids[self._prefix :])
        # A trailing U+FFFD means the last token ended inside a multi-byte character: wait for its other bytes.
        if len(text) <= len(before) or text.endswith(REPLACEMENT):
            return ""
        self._prefix, self._read = self._read, len(self.ids)
        return text[len(before) :]

    def flush(self) -> str:
        """The text still held back at the end of generation (an incomplete character decodes as U+FFFD)."""
        before = self._decode(self.ids[self._prefix : self._read])
        text = self._decode(self.ids[self._prefix :])
        self._prefix = self._read = len(self.ids)
        if self._stream is not None:
            # The stream still holds the flushed ids; later ones start a new window, as in the Python path.
            self._stream = self._new_stream()
        return text[len(before) :]

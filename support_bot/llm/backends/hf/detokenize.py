"""Incremental detokenization: text pieces from token ids as they arrive, never splitting a character."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

REPLACEMENT = "\ufffd"
# Sentencepiece byte-fallback tokens (Llama-2): a run of them decodes as one unit, and one invalid byte anywhere in
# the run turns the whole run into U+FFFD, so text from a run is only final once the run has ended.
_BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")


class IncrementalDecoder:
    """Turns a growing list of token ids into text pieces whose concatenation is the decode of all ids."""

    def __init__(self, tokenizer: Any, *, skip_special_tokens: bool = True) -> None:
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.ids: list[int] = []
        # Decoding restarts at `_prefix` (the start of the last piece given out) rather than at 0: the cost per token
        # stays flat, and the already-given-out tokens in the window still give the new ones their context (leading
        # spaces, merged bytes), so the difference against the window's old text is exactly the new text.
        self._prefix = 0
        self._read = 0
        self._byte_token: dict[int, bool] = {}
        self._skipped = set(tokenizer.all_special_ids) if skip_special_tokens else set()

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
        self.ids.extend(ids)
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
        return text[len(before) :]

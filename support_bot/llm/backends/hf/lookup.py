"""Prompt lookup: a greedy stream checks several of its next tokens in one forward pass when its own prompt suggests
them.

Support answers quote their sources: after "Orders ship within", the retrieved FAQ text in the prompt often goes on
"two business days". When the stream's last few tokens also occur earlier in its prompt or answer, the tokens that
followed them there are a draft; one forward pass over the newest token and the draft gives the model's own greedy
choice after each, and the stream keeps the draft up to the first token the model would not have chosen, plus the
model's token at that point. Every token kept is the one plain greedy decoding picks (the pass computes the logits
one-token steps would, up to floating-point rounding, as a batch does), so the answer is unchanged; only the number of
passes falls. Keys and values a rejected draft wrote past the stream's length are never read and are overwritten by
the next pass.

Taken only by a lone greedy stream on an eager (CPU) scheduler: batching already shares each pass among concurrent
streams, and captured GPU steps have a fixed shape. A pass over a few tokens costs little more than one on a CPU
(cpu_linear.py), and a stream whose drafts keep failing stops drafting for a while.
"""

from __future__ import annotations

import logging
from typing import Any

from support_bot.llm.backends.hf.steps import to_host

log = logging.getLogger(__name__)

# Draft tokens checked per pass by default (llm.prompt_lookup_tokens): with the newest token a pass of 4 rows, which a
# CPU's weight-first product (cpu_linear.py) runs for about the cost of one row. On 8 demo-FAQ answers (991 tokens)
# 3 and 4 gave the same speed within this machine's noise (24.9 and 20.1 vs 23.2 and 20.8 tokens/s).
LOOKUP_TOKENS = 3
# N-gram lengths matched against the stream's earlier tokens, longest first (one token matches too often).
NGRAM_SIZES = (3, 2)
# After a pass that kept none of its draft, the stream decodes this many steps one token at a time before drafting again.
BACKOFF_STEPS = 4


class PromptLookup:
    """An index of one stream's tokens (prompt, then answer): where each 2- and 3-gram last occurred."""

    def __init__(self, tokens: list[int], sizes: tuple[int, ...] = NGRAM_SIZES) -> None:
        self.tokens = tokens  # the stream's own list, appended to as tokens come
        self.sizes = sizes
        # n-gram -> the index just after its latest occurrence that is not the stream's current suffix.
        self._after: dict[int, dict[tuple[int, ...], int]] = {n: {} for n in sizes}
        self._indexed = 0  # n-grams ending before this index are in `_after`
        self.backoff = 0

    def _catch_up(self) -> None:
        # The n-grams ending at every index but the last (that one is the suffix a draft is looked up for).
        last = len(self.tokens) - 1
        for end in range(self._indexed, last):
            for n in self.sizes:
                if end + 1 >= n:
                    self._after[n][tuple(self.tokens[end + 1 - n : end + 1])] = end + 1
        self._indexed = max(self._indexed, last)

    def draft(self, k: int) -> list[int]:
        """Up to `k` tokens that followed the latest earlier occurrence of the stream's last n tokens; [] if none."""
        self._catch_up()
        for n in self.sizes:
            if len(self.tokens) < n:
                continue
            start = self._after[n].get(tuple(self.tokens[-n:]))
            if start is not None:
                return self.tokens[start : start + k]
        return []


class LookupSteps:
    """The prompt-lookup step of a ContinuousBatcher, which this is mixed into: it holds the rows, the cache, the
    chunked forward (`_forward_chunk`) and `lookup_tokens` (0: never)."""

    def _lookup_step(self, decoding: list[Any]) -> bool:
        """Decode the lone stream with a draft from its own tokens, if it has one; True when the step ran."""
        if (self.lookup_tokens <= 0 or self.temperature > 0 or self._graphs is not None or self.overlap
                or len(decoding) != 1 or len(self._rows) != 1):  # fmt: skip
            return False
        row = decoding[0]
        if row.done or row.queued:
            return False
        if row.lookup is None:
            row.lookup = PromptLookup(row.history)
        if row.lookup.backoff > 0:
            row.lookup.backoff -= 1
            return False
        request = row.request
        # Every position written must be in the row's blocks; no more tokens than the request may still take.
        room = min(self.lookup_tokens, row.capacity - row.length - 1, request.max_new_tokens - request.generated - 1)
        draft = row.lookup.draft(room) if room > 0 else []
        if not draft:
            return False
        try:
            table = self.rows.tables[row.slot]
            logits = self._forward_chunk(table, [row.last, *draft], row.length, keep=len(draft) + 1)
            chosen = logits.argmax(dim=-1)
            predicted = to_host(chosen)
        except Exception:  # noqa: BLE001 - one-token steps serve on; a rejected draft's writes are never read
            log.exception("%s: a prompt-lookup step failed; one token per step from now on", self.name)
            self.lookup_tokens = 0
            return False
        kept = 0
        while kept < len(draft) and predicted[kept] == draft[kept]:
            kept += 1
        self.stats.drafted += len(draft)
        self.stats.accepted += kept
        self.stats.decode_steps += 1
        self.stats.largest_batch = max(self.stats.largest_batch, 1)
        if kept == 0:
            row.lookup.backoff = BACKOFF_STEPS
        for token in [*draft[:kept], predicted[kept]]:
            row.length += 1
            row.last = token
            self._emit(row, token)
            if row.done:
                break
        self.rows.started(row.slot, row.length, chosen[kept : kept + 1])
        return True

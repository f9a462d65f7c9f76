"""The decode step of the continuous batcher (scheduler.py): one new token for every decoding row, replayed from a
captured graph or run eagerly, with FlexAttention over each row's own blocks (flex.py) or the dense masked span; and
the masks and sampling it uses. Kept apart from the scheduler's admission and bookkeeping for size."""

from __future__ import annotations

import logging
from typing import Any

from support_bot.llm.backends.hf.steps import HostCopy

log = logging.getLogger(__name__)


def _additive(visible: Any, dtype: Any) -> Any:
    """0 where `visible`, the dtype's most negative value elsewhere (what attention adds to its scores)."""
    import torch

    zero = torch.zeros((), dtype=dtype, device=visible.device)
    return torch.where(visible, zero, torch.full((), torch.finfo(dtype).min, dtype=dtype, device=visible.device))


def decode_mask(positions: Any, span: int, dtype: Any) -> Any:
    """Additive [batch, 1, 1, span] mask: row i sees its columns 0..positions[i] (the new token included)."""
    import torch

    columns = torch.arange(span, device=positions.device)
    return _additive(columns[None, :] <= positions[:, None], dtype)[:, None, None, :]


def chunk_mask(start: int, n: int, dtype: Any, device: Any) -> Any:
    """Additive [1, 1, n, start + n] mask: query i of a prompt chunk at `start` sees columns 0..start + i."""
    import torch

    columns = torch.arange(start + n, device=device)
    queries = torch.arange(start, start + n, device=device)
    return _additive(columns[None, :] <= queries[:, None], dtype)[None, None]


def sample(logits: Any, temperature: float, top_p: float) -> Any:
    """The next token of every row, on the logits' device: greedy at temperature 0, else top-p sampling."""
    import torch

    if temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # Keep the smallest set of tokens whose mass reaches top_p (always at least the most likely one).
        outside = sorted_probs.cumsum(dim=-1) - sorted_probs > top_p
        sorted_probs = sorted_probs.masked_fill(outside, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return torch.multinomial(probs, 1)[:, 0]



class DecodeSteps:
    """Decode steps of a ContinuousBatcher, which this is mixed into and which holds what they use: the model's
    forward (`_forward`), the paged cache and row state, the fixed step inputs and flex block mask, the decode
    attention in use, the captured graphs, the launched-steps queue and the stats."""

    def _decode_step(self, decoding: list[Any]) -> None:
        decoding = [row for row in decoding if not row.done]
        if not decoding:
            self._launched.flush()
            return
        # The device's lengths: a row whose last step's tokens are still on their way is one further on.
        lengths = [row.length + row.queued for row in decoding]
        try:
            index = self.rows.index(tuple(row.slot for row in decoding))
            logits = None
            if self._graphs is not None:
                logits = self._graphs.run(index, max(lengths) + 1)
            if logits is None:
                logits = self._eager_logits(decoding, index, lengths)
            chosen = sample(logits, self.temperature, self.top_p)
            self.rows.advanced(index, chosen)
            launched = (decoding, HostCopy(chosen))
        except Exception as exc:  # noqa: BLE001 - the batch's requests fail; the scheduler keeps serving
            log.exception("%s: decode step failed", self.name)
            for row in decoding:
                row.end = exc
            self._launched.flush()
            return
        self.stats.decode_steps += 1
        self.stats.largest_batch = max(self.stats.largest_batch, len(decoding))
        self._launched.add(*launched)

    def _eager_logits(self, decoding: list[Any], index: Any, lengths: list[int]) -> Any:
        """An uncaptured decode step. A FlexAttention step that fails (a kernel that cannot be compiled for a new
        shape) is run again with dense attention, which serves from then on: the retry writes the same keys and
        values to the same slots, and the batch's requests go on instead of failing."""
        one = decoding[0].run if len(decoding) == 1 else None
        uniform = min(lengths) == max(lengths)
        try:
            return self._eager_step(index, max(lengths) + 1, uniform=uniform, run=one)
        except Exception:
            if self.attention != "flex":
                raise
            log.exception("%s: a FlexAttention decode step failed; dense decode attention from now on", self.name)
            self.attention = "dense"
            return self._eager_step(index, max(lengths) + 1, uniform=uniform, run=one)

    def _eager_step(self, index: Any, span: int, *, uniform: bool = False, run: int | None = None) -> Any:
        n = index.shape[0]
        self.inputs.fill(self.rows, index, n)
        return self.decode_forward(n, span, uniform=uniform, run=run)

    def decode_forward(self, rows: int, span: int, *, uniform: bool = False, run: int | None = None) -> Any:
        """One decode step of the first `rows` rows of `self.inputs` (the graphs capture this): with flex attention
        each row reads its own blocks of the pool; dense attention gathers `span` columns per row under a mask.

        Dense, eager: rows of one length (`uniform`: one stream, or a batch that started together) see every column
        of the span, so no mask is passed and sdpa takes its unmasked kernel, as `generate` does (other attention code
        builds a causal mask from the cache's length, which a paged cache does not report: it always gets the
        explicit one); `run`, one row's first block when its blocks are consecutive, reads a view of the pool."""
        inputs = self.inputs
        tokens, positions, tables = inputs.tokens[:rows], inputs.positions[:rows], inputs.tables[:rows]
        if self.attention == "flex":
            self.cache.plan.decode(tables, positions, 0, pool=True)
            mask = self.flex_mask.build(rows)
        else:
            size = self.cache.block_size
            self.cache.plan.decode(tables, positions, span, run=None if run is None else run * size)
            mask = None if uniform and self._mask_free_decode else self.decode_mask(positions, span)
        out = self._forward(
            input_ids=tokens[:, None], position_ids=positions[:, None], attention_mask=mask, cache=self.cache
        )
        return out.logits[:, -1]

    def decode_mask(self, positions: Any, span: int) -> Any:
        return decode_mask(positions, span, self.dtype)


"""Chunking: one chunk per FAQ entry; long answers split by tokens with overlap under the question as heading."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ingest.loaders.base import FaqEntry

TokenOffsets = Callable[[str], list[tuple[int, int]]]

_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)
_SENTENCE_END = (".", "!", "?", ":", ";")
# The encoder's [CLS]/[SEP] and the newline between heading and text.
_RESERVED = 3


def regex_token_offsets(text: str) -> list[tuple[int, int]]:
    """Word and punctuation spans: a model-free stand-in for a subword tokenizer."""
    return [m.span() for m in _TOKEN.finditer(text)]


@dataclass
class ChunkDraft:
    ordinal: int
    entry_id: str | None
    title: str | None
    text: str
    url: str | None
    answer: str | None
    # Texts embedded for this chunk: [title, body]. The retriever weighs the two cosines separately (see
    # RetrievalSettings), so the order is part of the index format.
    views: list[str] = field(default_factory=list)
    lexical_text: str = ""
    part: int = 0
    parts: int = 1


def _snap(text: str, start: int, end: int) -> tuple[int, int]:
    # Subword spans may cut words; widen to whole words so a chunk never starts or ends mid-word.
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    while end < len(text) and not text[end].isspace():
        end += 1
    return start, end


def split_tokens(text: str, *, budget: int, overlap: int, offsets: TokenOffsets) -> list[str]:
    """Split text into windows of at most `budget` tokens overlapping by `overlap`, preferring sentence ends."""
    spans = offsets(text)
    if len(spans) <= budget:
        return [text.strip()]
    overlap = max(0, min(overlap, budget // 2))
    parts: list[str] = []
    i = 0
    while i < len(spans):
        j = min(i + budget, len(spans))
        if j < len(spans):
            # End on a sentence boundary in the window's second half when there is one.
            for t in range(j - 1, i + budget // 2, -1):
                if text[spans[t][0] : spans[t][1]].endswith(_SENTENCE_END):
                    j = t + 1
                    break
        start, end = _snap(text, spans[i][0], spans[j - 1][1])
        piece = text[start:end].strip()
        if piece and (not parts or piece != parts[-1]):
            parts.append(piece)
        if j >= len(spans):
            break
        i = max(j - overlap, i + 1)
    return parts


def chunk_faq(
    entries: Sequence[FaqEntry],
    *,
    chunk_tokens: int,
    chunk_overlap: int,
    token_offsets: TokenOffsets | None = None,
) -> list[ChunkDraft]:
    """Chunks for FAQ entries: text is "question\\nanswer"; the question and the answer part are embedded apart."""
    offsets = token_offsets or regex_token_offsets
    drafts: list[ChunkDraft] = []
    for entry in entries:
        heading = len(offsets(entry.question)) + _RESERVED
        budget = max(chunk_tokens - heading, chunk_tokens // 4, 8)
        pieces = split_tokens(entry.answer, budget=budget, overlap=chunk_overlap, offsets=offsets)
        for part, piece in enumerate(pieces):
            text = f"{entry.question}\n{piece}"
            # Customers phrase questions like FAQ questions, so the bare question is the sharpest dense target; the
            # answer alone catches questions only its wording matches. Scored apart they beat the question with a
            # question+answer vector (covid-faq recall@1 0.68 vs 0.61). Every part carries its short heading.
            views = [entry.question, piece]
            drafts.append(
                ChunkDraft(
                    ordinal=len(drafts),
                    entry_id=entry.id,
                    title=entry.question,
                    text=text,
                    url=entry.url,
                    answer=entry.answer,
                    views=views,
                    # The question twice: customers' words match FAQ questions more often than answers.
                    lexical_text=f"{entry.question}\n{text}",
                    part=part,
                    parts=len(pieces),
                )
            )
    return drafts
